"""Global agglomeration of the fragment graph, as waterz's ``IterativeRegionMerging`` does it.

Greedy: while the cheapest edge scores below the threshold, merge its two regions; the edges of the
merged region to a shared neighbour are combined (histograms added) and rescored. Thresholds are
handled in one ascending pass with a snapshot at each.

Determinism: fragments are indexed by key rank (first voxel in C order, chunk-invariant) and edges
by their (rank u, rank v) pair. Equal scores are broken by the smallest fragment pair among an edge's
constituent fragment pairs (a combined edge keeps the smaller index), so the merge sequence is a
function of the chunk-invariant graph only: never of packed ids, chunk order or insertion order.

Scores (waterz ``ScoreValue`` = float32, the values below are exact in float32):

* ``aff{Q}_his256``: ``OneMinus<HistogramQuantileAffinity<RG, Q, ScoreValue, 256, InitWithMax>>``,
  score = 1 - (b + 0.5) / 256 where b is the first bin whose cumulative count reaches
  ``Q * total // 100 + 1``. With ``init_with_max`` (waterz's default) each fragment pair starts with
  one count at its largest affinity's bin; without it every voxel-edge is counted.
* ``aff50_mean`` / ``mean``: ``OneMinus<MeanAffinity>``, 1 - mean affinity over the voxel-edges
  (exact here: fixed-point sums; waterz averages incrementally in float32).
"""

from __future__ import annotations

import heapq
import re
import struct
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from em_chunks.errors import InputError
from em_chunks.ops.affinity import BINS, FIXED_ONE
from em_chunks.ops.fragments import FragmentTable
from em_chunks.ops.region_graph import EdgeHistograms

SEGMENT_ID_MODES = ("packed", "first_voxel")
BACKENDS = ("auto", "python", "waterz")
# "auto" picks waterz for graphs with more fragments than this; None = never. Measured
# (benchmarks/agglomerate.py, fib_medulla_250 cubes, noise 0.2): waterz is 1.6x faster at 30-75k
# fragments, no faster at 260k, and needs ~4x the memory (waterz keeps a dense 256-bin histogram,
# 1 KB, per edge), so "auto" stays on the Python backend until a native sparse backend exists.
WATERZ_AUTO_MIN_FRAGMENTS: int | None = None
MERGE_FUNCTIONS = ("aff85_his256", "aff75_his256", "aff50_his256", "aff25_his256", "aff15_his256", "aff50_mean")

_SHORT = re.compile(r"^aff(\d{1,2})_his256$")
_WATERZ_Q = re.compile(
    r"^OneMinus<HistogramQuantileAffinity<RegionGraphType,(\d{1,2}),ScoreValue,256(?:,(true|false))?>>$"
)
_WATERZ_MEAN = re.compile(r"^OneMinus<MeanAffinity<RegionGraphType,ScoreValue>>$")


@dataclass(frozen=True)
class MergeFunction:
    """A parsed merge function: ``kind`` "quantile" (with ``quantile`` Q) or "mean"."""

    kind: str
    quantile: int = 50
    init_with_max: bool | None = None  # set only when the name says so (waterz spelling)


def parse_merge_function(name: str) -> MergeFunction:
    """Parse ``aff85_his256``, ``aff50_mean``/``mean`` or the waterz C++ spelling of either."""
    text = re.sub(r"\s+", "", str(name))
    if text in ("mean", "aff50_mean"):
        return MergeFunction("mean")
    m = _SHORT.match(text)
    if m and 0 < int(m.group(1)) < 100:
        return MergeFunction("quantile", int(m.group(1)))
    m = _WATERZ_Q.match(text)
    if m and 0 < int(m.group(1)) < 100:
        flag = None if m.group(2) is None else m.group(2) == "true"
        return MergeFunction("quantile", int(m.group(1)), flag)
    if _WATERZ_MEAN.match(text):
        return MergeFunction("mean")
    raise InputError(
        f"decode.merge_function {name!r}: expected aff<Q>_his256 with Q in 1..99 (e.g. aff85_his256) or "
        "aff50_mean"
    )


def _initial_scores(fn: MergeFunction, init_with_max: bool, e: EdgeHistograms, order: np.ndarray):
    """Vectorised scores of the initial edges (in ``order``) and the sparse histograms if needed."""
    n = order.size
    if fn.kind == "mean":
        return 1.0 - (e.aff_sum[order] / FIXED_ONE) / e.count[order], None
    if init_with_max:
        return 1.0 - (e.max_bin[order].astype(np.float64) + 0.5) / BINS, None
    if not e.has_histograms:
        raise ValueError("init_with_max=False needs full histograms (region_graph_chunk(full_histograms=True))")
    new_index = np.empty(n, np.int64)
    new_index[order] = np.arange(n)
    rows = new_index[e.hist_edge]
    hsort = np.lexsort((e.hist_bin, rows))
    rows, bins, counts = rows[hsort], e.hist_bin[hsort].astype(np.int64), e.hist_count[hsort]
    total = np.bincount(rows, weights=counts, minlength=n).astype(np.int64)
    starts = np.searchsorted(rows, np.arange(n))
    cum = np.cumsum(counts)
    within = cum - (cum[starts] - counts[starts])[rows]
    pivot = fn.quantile * total // 100 + 1
    hit = np.flatnonzero(within >= pivot[rows])
    first = hit[np.r_[True, rows[hit][1:] != rows[hit][:-1]]]
    qbin = np.empty(n, np.int64)
    qbin[rows[first]] = bins[first]
    return 1.0 - (qbin + 0.5) / BINS, (starts, bins, counts)


_F32 = struct.Struct("<f")
_U32 = struct.Struct("<I")


def _score_key(score: float) -> int:
    """Order-preserving integer of a non-negative score rounded to float32 (waterz's ScoreValue)."""
    return _U32.unpack(_F32.pack(max(score, 0.0)))[0]


def _score_keys(score: np.ndarray) -> np.ndarray:
    """Vectorised ``_score_key``: float32 bit patterns of non-negative floats sort like the floats."""
    return np.maximum(score, 0.0).astype(np.float32).view(np.uint32).astype(np.int64)


class _Merger:
    """Mutable agglomeration state over fragments indexed by key rank (0..N-1).

    Queue entries are Python ints ``score_key << 64 | seq << 32 | edge``: one integer comparison
    orders them by (float32 score, seq), and an entry is current iff the edge is alive and its code
    matches. ``seq`` is the edge index for the initial edges and a counter for rescored edges (after
    all initial ones, in order of rescoring): among equal scores, edges queued earlier go first, as in
    waterz's FIFO bins.
    Edges scoring at or above the largest threshold are never queued: combining edges yields a score
    between the two, so such an edge can only become mergeable by combining with a cheaper one, and
    it is rescored (and queued) then.
    """

    def __init__(self, table: FragmentTable, edges: EdgeHistograms, fn: MergeFunction, init_with_max: bool,
                 max_threshold: float):
        n = len(table)
        self.fn, self.init_with_max = fn, init_with_max
        ru = table.index_of(edges.u) if len(edges) else np.zeros(0, np.int64)
        rv = table.index_of(edges.v) if len(edges) else np.zeros(0, np.int64)
        a, b = np.minimum(ru, rv), np.maximum(ru, rv)
        order = np.lexsort((b, a))  # canonical edge order: by the keys of the two fragments
        a, b = a[order], b[order]
        ne = order.size
        if ne >= 1 << 32:
            raise ValueError("more than 2**32 edges")
        score, self.hist0 = _initial_scores(fn, init_with_max, edges, order)
        self.score = score.tolist()
        self.max_bin = edges.max_bin[order].tolist()
        self.count = edges.count[order].tolist() if fn.kind == "mean" else None
        self.aff_sum = edges.aff_sum[order].tolist() if fn.kind == "mean" else None
        self.hist: dict[int, dict[int, int]] = {}
        self.alive = bytearray(b"\x01") * ne
        keys = _score_keys(score)
        edge_ids = np.arange(ne, dtype=np.int64)
        self.code = [(k << 64) | (e << 32) | e for k, e in zip(keys.tolist(), edge_ids.tolist())]
        self.seq = ne
        self.parent = list(range(n))
        self.rkey = list(range(n))
        self.size = table.sizes.astype(np.int64).tolist()
        adj: list[dict[int, int] | None] = [dict() for _ in range(n)]
        for e, (x, y) in enumerate(zip(a.tolist(), b.tolist())):
            adj[x][y] = e
            adj[y][x] = e
        self.adj = adj
        self.ea, self.eb = a.tolist(), b.tolist()
        self.stop_max = self.stop_code(max_threshold)
        # initial edges below the largest threshold as a presorted stream; rescored ones go to a heap
        below = np.flatnonzero(keys < (self.stop_max >> 64))
        below = below[np.lexsort((below, keys[below]))]
        code = self.code
        self.stream = [code[e] for e in below.tolist()]
        self.pos = 0
        self.heap: list[int] = []

    @staticmethod
    def stop_code(threshold: float) -> int:
        """Entries with a code at or above this score >= threshold (compared in float32, as waterz)."""
        t = float(np.float32(threshold))
        if t <= 0.0:
            return 0
        return _score_key(t) << 64

    # -- statistics of merged edges ---------------------------------------------------------------
    def _histogram0(self, e: int) -> dict[int, int]:
        """The initial histogram of edge ``e`` (one count at the max bin, or the full one)."""
        if self.hist0 is None:
            return {self.max_bin[e]: 1}
        starts, bins, counts = self.hist0
        lo = starts[e]
        hi = starts[e + 1] if e + 1 < starts.size else bins.size
        return dict(zip(bins[lo:hi].tolist(), counts[lo:hi].tolist()))

    def _combine(self, keep: int, gone: int) -> float:
        """Add edge ``gone``'s statistics to edge ``keep`` and return ``keep``'s new score."""
        if self.fn.kind == "mean":
            self.count[keep] += self.count[gone]
            self.aff_sum[keep] += self.aff_sum[gone]
            return 1.0 - (self.aff_sum[keep] / FIXED_ONE) / self.count[keep]
        hist = self.hist
        hk = hist.pop(keep, None)
        hg = hist.pop(gone, None)
        if hk is None:
            hk = self._histogram0(keep)
        if hg is None:
            hg = self._histogram0(gone)
        for b, c in hg.items():
            hk[b] = hk.get(b, 0) + c
        hist[keep] = hk
        pivot = self.fn.quantile * sum(hk.values()) // 100 + 1
        acc = 0
        for b in sorted(hk):
            acc += hk[b]
            if acc >= pivot:
                return 1.0 - (b + 0.5) / BINS
        raise AssertionError("empty histogram")

    # -- union-find -------------------------------------------------------------------------------
    def find(self, x: int) -> int:
        parent = self.parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def _merge(self, e: int) -> None:
        ra, rb = self.find(self.ea[e]), self.find(self.eb[e])
        adj, rkey = self.adj, self.rkey
        # the region with more neighbours absorbs the other: O(E log N) dictionary work overall
        if (len(adj[ra]), -rkey[ra]) >= (len(adj[rb]), -rkey[rb]):
            w, l = ra, rb
        else:
            w, l = rb, ra
        self.parent[l] = w
        rkey[w] = min(rkey[w], rkey[l])
        self.size[w] += self.size[l]
        self.alive[e] = 0
        aw, al = adj[w], adj[l]
        del aw[l]
        del al[w]
        alive, score = self.alive, self.score
        combine = self._combine
        aw_get = aw.get
        rescored = []
        for nb, el in al.items():
            an = adj[nb]
            del an[l]
            ew = aw_get(nb)
            if ew is None:
                aw[nb] = el
                an[w] = el
                continue
            # a shared neighbour: the edge with the smaller index (= smaller fragment-key pair)
            # survives with the summed statistics and is rescored
            if ew < el:
                keep, gone = ew, el
            else:
                keep, gone = el, ew
                aw[nb] = keep
                an[w] = keep
            s = combine(keep, gone)
            alive[gone] = 0
            score[keep] = s
            rescored.append((rkey[nb], keep, s))
        adj[l] = None
        if rescored:
            # queued in order of the neighbour's key: a chunk-invariant order
            rescored.sort()
            code, heap, stop_max = self.code, self.heap, self.stop_max
            for _, keep, s in rescored:
                self.seq += 1
                c = (_score_key(s) << 64) | (self.seq << 32) | keep
                code[keep] = c
                if c < stop_max:
                    heapq.heappush(heap, c)

    def merge_until(self, threshold: float) -> int:
        """Merge while the cheapest live edge scores below ``threshold`` (waterz: stop at score >= t)."""
        stop = self.stop_code(threshold)
        stream, heap, alive, code = self.stream, self.heap, self.alive, self.code
        mask = (1 << 32) - 1
        n_stream, merged = len(stream), 0
        while True:
            if self.pos < n_stream and (not heap or stream[self.pos] < heap[0]):
                entry = stream[self.pos]
                if entry >= stop:
                    break
                self.pos += 1
            elif heap:
                entry = heap[0]
                if entry >= stop:
                    break
                heapq.heappop(heap)
            else:
                break
            e = entry & mask
            if not alive[e] or code[e] != entry:
                continue
            self._merge(e)
            merged += 1
        return merged

    def roots(self) -> np.ndarray:
        p = np.asarray(self.parent, np.int64)
        while True:
            q = p[p]
            if np.array_equal(q, p):
                return p
            p = q

    # -- dust ---------------------------------------------------------------------------------------
    def dust(self, roots: np.ndarray, merge_size: int, remove_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Final (key rank, size) per root after dust merging; does not change the merge state.

        Segments smaller than ``merge_size`` are visited smallest first (ties: key) and join the
        neighbour with the lowest edge score (ties: neighbour key); a segment that grew past the size
        stops. Parallel edges after dust merges count with their best score.
        """
        fkey = np.asarray(self.rkey, np.int64)
        fsize = np.asarray(self.size, np.int64)
        if merge_size <= 0:
            return fkey, fsize
        uniq = np.unique(roots)
        small = uniq[fsize[uniq] < merge_size]
        dpar: dict[int, int] = {}
        dsize = {int(r): int(fsize[r]) for r in small}
        dkey = {int(r): int(fkey[r]) for r in small}
        extra: dict[int, list[tuple[int, float]]] = {}

        def dfind(x: int) -> int:
            while x in dpar:
                x = dpar[x]
            return x

        def size_of(x: int) -> int:
            return dsize.get(x, int(fsize[x]))

        def key_of(x: int) -> int:
            return dkey.get(x, int(fkey[x]))

        heap = [(size_of(int(r)), key_of(int(r)), int(r)) for r in small]
        heapq.heapify(heap)
        while heap:
            s, k, r = heapq.heappop(heap)
            if r in dpar or size_of(r) != s or s >= merge_size:
                continue
            links = [(nb, self.score[e]) for nb, e in self.adj[r].items()] + extra.get(r, [])
            best = None
            for nb, sc in links:
                t = dfind(nb)
                if t == r:
                    continue
                cand = (sc, key_of(t), t)
                if best is None or cand < best:
                    best = cand
            if best is None:
                continue  # an isolated segment: nothing to merge into
            t = best[2]
            dpar[r] = t
            dsize[t] = size_of(t) + s
            dkey[t] = min(key_of(t), k)
            extra.setdefault(t, []).extend(links)
            extra.pop(r, None)
            if dsize[t] < merge_size:
                heapq.heappush(heap, (dsize[t], dkey[t], t))
        for r in list(dpar):
            f = dfind(r)
            fkey[r], fsize[r] = key_of(f), size_of(f)
        for r, s in dsize.items():
            if r not in dpar:
                fkey[r], fsize[r] = dkey[r], s
        return fkey, fsize


def agglomerate(
    table: FragmentTable,
    edges: EdgeHistograms,
    thresholds: Sequence[float],
    merge_function: str = "aff85_his256",
    init_with_max: bool = True,
    dust_merge_size: int = 0,
    dust_remove_size: int = 0,
    segment_ids: str = "packed",
    backend: str = "auto",
) -> list[np.ndarray]:
    """One segment id per fragment (aligned with ``table.ids``, uint64, 0 = removed) per threshold.

    Thresholds must be ascending; they are handled in one pass (waterz's ``mergeUntil`` sequence).
    Dust handling is applied to each snapshot separately and does not feed back into later thresholds.
    ``segment_ids``: "packed" (default) = the canonical (chunk-packed) id of the segment's fragment with
    the smallest key; "first_voxel" = 1 + the global C-order index of the segment's first voxel, the
    same number for every chunk grid (also unique without coordination).
    ``backend``: "python" (this module), "waterz" (waterz's C++ merging on the graph embedded in a
    synthetic volume, ``agglomerate_waterz``; ``aff{Q}_his256`` with InitWithMax, Q in 10, 15, .., 95)
    or "auto" (waterz when supported and the graph has more than ``WATERZ_AUTO_MIN_FRAGMENTS``
    fragments; currently never, see there). Both are chunk-invariant; they differ only in the order of
    equal scores after merges.
    """
    if segment_ids not in SEGMENT_ID_MODES:
        raise InputError(f"decode.segment_ids {segment_ids!r}: expected one of {', '.join(SEGMENT_ID_MODES)}")
    fn = parse_merge_function(merge_function)
    if fn.init_with_max is not None:
        init_with_max = fn.init_with_max
    ths = [float(t) for t in thresholds]
    if ths != sorted(ths):
        raise InputError(f"thresholds {ths}: expected ascending values")
    if backend not in BACKENDS:
        raise InputError(
            f"decode.agglomeration {backend!r}: expected one of {', '.join(BACKENDS)}"
        )
    from em_chunks.ops import agglomerate_waterz as wz

    fast = wz.supports(fn.kind, fn.quantile, bool(init_with_max))
    if backend == "waterz" and not fast:
        raise InputError(
            f"decode.agglomeration 'waterz': merge function {merge_function!r} "
            f"(init_with_max={init_with_max}) is not supported; expected aff<Q>_his256 with Q in "
            "10, 15, .., 95 and init_with_max=true (or use python)"
        )
    auto_min = WATERZ_AUTO_MIN_FRAGMENTS
    big = auto_min is not None and len(table) > auto_min
    if backend == "waterz" or (backend == "auto" and fast and big):
        return wz.agglomerate_waterz(
            table, edges, ths, fn.quantile, dust_merge_size, dust_remove_size, segment_ids
        )
    merger = _Merger(table, edges, fn, bool(init_with_max), max(ths) if ths else 0.0)
    out = []
    for t in ths:
        merger.merge_until(t)
        roots = merger.roots()
        fkey, fsize = merger.dust(roots, dust_merge_size, dust_remove_size)
        names = table.ids if segment_ids == "packed" else table.keys.astype(np.uint64) + np.uint64(1)
        seg = names[fkey[roots]] if len(table) else np.zeros(0, np.uint64)
        if dust_remove_size > 0:
            seg = np.where(fsize[roots] < dust_remove_size, np.uint64(0), seg)
        out.append(np.asarray(seg, np.uint64))
    return out
