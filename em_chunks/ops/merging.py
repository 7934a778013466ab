"""Greedy region merging (waterz's ``IterativeRegionMerging``) on a graph whose regions may be *open*.

A region is open when some of its edges may be missing (it touches the face of the block of chunks
being merged, or lies outside it). Merging stays exact because every score is **reducible**: the
score of two edges combined (their statistics added) lies between the two scores, and the total order
used here never puts a combined edge before both of its parts (docs/decoding.md, section 3). Then an
edge that is the smallest edge of both of its regions can be merged at once, whatever happens
elsewhere, and the global greedy result does not change. Popping edges in increasing order:

* two closed, unfrozen regions merge;
* a closed, unfrozen region that touches exactly one open region and no frozen one, and whose
  smallest edge leads to the open region, joins it: its whole neighbourhood is inside the block and
  settled up to this level, so nothing the open region does elsewhere can change that edge first;
* otherwise the closed regions of the edge are *frozen* (their next merge depends on edges this
  block cannot see) and wait for a larger block; an edge between two open regions is left alone.

With no open region this is plain greedy merging, the single-process reference.

Total order of edges: (float32 score, ident). ``ident`` of an edge between two fragments is a
bijective mix (:func:`tie_order`) of its first contact (the smallest voxel-edge index ``3 * flat(v)
+ c`` among the voxel-edges it holds: unique and chunk-invariant); a combined edge carries the larger
ident of its parts. So a combined edge never sorts before both parts, and the order depends on the
regions only, never on the merge history, chunk order or ids.

Scores (waterz ``ScoreValue`` = float32; the values below are exact in float32):

* quantile Q (``aff{Q}_his256``): ``1 - (b + 0.5) / 256`` where b is the first histogram bin whose
  cumulative count reaches ``Q * total // 100 + 1``;
* mean (``aff50_mean``): ``1 - (aff_sum / 2**32) / count``.

Edges scoring at or above the largest threshold are never queued: combining edges yields a score
between the two, so such an edge can only become mergeable by combining with a cheaper one, and it
is rescored (and queued) then.
"""

from __future__ import annotations

import heapq
import os
import struct
from dataclasses import dataclass

import numpy as np

from em_chunks.ops.affinity import BINS, FIXED_ONE

_F32 = struct.Struct("<f")
_U32 = struct.Struct("<I")
FORCED_LEVEL = -1  # level of the unconditional joins of one fragment's pieces: below every score


_M63 = np.uint64((1 << 63) - 1)


def tie_order(first_contact: np.ndarray) -> np.ndarray:
    """The ident of single fragment-pair edges: a bijective mix of their first contact on [0, 2**63).

    Equal scores are common (256-bin histograms), and an order that follows the voxel raster would
    chain every edge's fate to its neighbour's towards one side of the block; a well-mixed order keeps
    the dependencies local, so a block can decide most of its merges itself. Bijective: idents stay
    unique. (xor-shifts and odd multipliers are each invertible modulo 2**63.)
    """
    x = np.asarray(first_contact, np.int64).astype(np.uint64) & _M63
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(31)
        x = (x * np.uint64(0x7FB5D329728EA185)) & _M63
        x ^= x >> np.uint64(27)
        x = (x * np.uint64(0x81DADEF4BC2DD44D)) & _M63
        x ^= x >> np.uint64(33)
    return x.astype(np.int64)


def score_key(score: float) -> int:
    """Order-preserving integer of a non-negative score rounded to float32 (waterz's ScoreValue)."""
    return _U32.unpack(_F32.pack(max(score, 0.0)))[0]


def score_keys(score: np.ndarray) -> np.ndarray:
    """Vectorised :func:`score_key`: float32 bit patterns of non-negative floats sort like the floats."""
    return np.maximum(score, 0.0).astype(np.float32).view(np.uint32).astype(np.int64)


def stop_key(threshold: float) -> int:
    """Scores whose key is at or above this are not merged at ``threshold`` (compared in float32)."""
    t = float(np.float32(threshold))
    return 0 if t <= 0.0 else score_key(t)


def level_score(level: np.ndarray) -> np.ndarray:
    """Merge levels (score keys) back to float32 scores (forced joins read as -inf)."""
    level = np.asarray(level, np.int64)
    out = np.maximum(level, 0).astype(np.uint32).view(np.float32).astype(np.float64)
    return np.where(level < 0, -np.inf, out)


@dataclass(frozen=True)
class Scoring:
    """How an edge is scored: ``kind`` "quantile" (with ``quantile`` Q) or "mean"."""

    kind: str
    quantile: int = 50


@dataclass(frozen=True, eq=False)
class MergeGraph:
    """Input of :func:`merge_regions`: ``n`` nodes, edges ``u < v`` (node indices, each pair once).

    ``hist_*``: sparse histogram rows (edge, bin, count) sorted by edge (unused for the mean).
    ``combined``: the edge already aggregates several fragment pairs (from an earlier merge).
    """

    closed: np.ndarray  # bool[n]: may merge (all its edges are here)
    u: np.ndarray  # int64[E]
    v: np.ndarray  # int64[E]
    count: np.ndarray  # int64[E] voxel-edges
    aff_sum: np.ndarray  # int64[E] affinity sum in units of 2**-32
    ident: np.ndarray  # int64[E]
    hist_edge: np.ndarray  # int64[H]
    hist_bin: np.ndarray  # int64[H]
    hist_count: np.ndarray  # int64[H]
    combined: np.ndarray  # bool[E]

    @property
    def n(self) -> int:
        return int(self.closed.size)


@dataclass(frozen=True, eq=False)
class MergeResult:
    """What :func:`merge_regions` did: merges (node pairs and levels, in merge order), the region root
    of every node, which roots are frozen, and the surviving edges between roots (same layout as
    :class:`MergeGraph`, ``u < v`` not guaranteed to be sorted)."""

    merge_a: np.ndarray
    merge_b: np.ndarray
    merge_level: np.ndarray
    root: np.ndarray
    frozen: np.ndarray
    edges: MergeGraph
    edge_index: np.ndarray  # input index of each surviving edge


def initial_scores(s: Scoring, g: MergeGraph) -> np.ndarray:
    """Vectorised scores (float64, then rounded to float32 by the keys) of the input edges."""
    ne = g.u.size
    if s.kind == "mean":
        with np.errstate(divide="ignore", invalid="ignore"):
            return 1.0 - (g.aff_sum / FIXED_ONE) / np.maximum(g.count, 1)
    if ne == 0:
        return np.zeros(0)
    rows, bins, counts = g.hist_edge, g.hist_bin, g.hist_count
    total = np.bincount(rows, weights=counts, minlength=ne).astype(np.int64)
    starts = np.searchsorted(rows, np.arange(ne))
    cum = np.cumsum(counts)
    within = cum - (cum[starts] - counts[starts])[rows]
    pivot = s.quantile * total // 100 + 1
    hit = np.flatnonzero(within >= pivot[rows])
    first = hit[np.r_[True, rows[hit][1:] != rows[hit][:-1]]]
    qbin = np.full(ne, BINS - 1, np.int64)
    qbin[rows[first]] = bins[first]
    return 1.0 - (qbin + 0.5) / BINS


class _Merger:
    """Mutable merging state; see the module docstring. Queue entries are Python ints
    ``score_key << 96 | ident << 32 | edge``: one integer comparison orders them by (score, ident), and
    an entry is current iff its edge is alive and its code is the edge's latest."""

    def __init__(self, g: MergeGraph, s: Scoring, max_threshold: float, frozen: np.ndarray | None = None) -> None:
        n, ne = g.n, int(g.u.size)
        if ne >= 1 << 32:
            raise ValueError("more than 2**32 edges")
        self.s = s
        score = initial_scores(s, g)
        keys = score_keys(score)
        self.score_key = keys.tolist()
        self.ident = g.ident.astype(np.int64).tolist()
        self.combined = g.combined.astype(bool).tolist()
        self.count = g.count.astype(np.int64).tolist()
        self.aff_sum = g.aff_sum.astype(np.int64).tolist()
        self.g = g
        if s.kind != "mean":  # plain lists: slicing them per merge is far cheaper than numpy
            self.hstart = np.searchsorted(g.hist_edge, np.arange(ne + 1)).tolist()
            self.hbin = g.hist_bin.tolist()
            self.hcount = g.hist_count.tolist()
        self.hist: dict[int, dict[int, int]] = {}
        self.alive = bytearray(b"\x01") * ne
        ident = self.ident
        self.code = [(k << 96) | (i << 32) | e for e, (k, i) in enumerate(zip(self.score_key, ident))]
        self.parent = list(range(n))
        self.closed = g.closed.astype(bool).tolist()
        self.frozen = [False] * n if frozen is None else np.asarray(frozen, bool).tolist()
        adj: list[dict[int, int] | None] = [dict() for _ in range(n)]
        for e, (x, y) in enumerate(zip(g.u.tolist(), g.v.tolist())):
            adj[x][y] = e
            adj[y][x] = e
        self.adj = adj
        self.ea, self.eb = g.u.tolist(), g.v.tolist()
        self.stop = stop_key(max_threshold) << 96
        # initial edges below the largest threshold as a presorted stream; rescored ones go to a heap
        below = np.flatnonzero(keys < (self.stop >> 96))
        below = below[np.lexsort((g.ident[below], keys[below]))]
        code = self.code
        self.stream = [code[e] for e in below.tolist()]
        self.pos = 0
        self.heap: list[int] = []
        self.merges: list[tuple[int, int, int]] = []

    # -- statistics of combined edges -------------------------------------------------------------
    def _histogram0(self, e: int) -> dict[int, int]:
        lo, hi = self.hstart[e], self.hstart[e + 1]
        if hi - lo == 1:
            return {self.hbin[lo]: self.hcount[lo]}
        return dict(zip(self.hbin[lo:hi], self.hcount[lo:hi]))

    def _combine(self, keep: int, gone: int) -> int:
        """Add edge ``gone``'s statistics to edge ``keep``; return ``keep``'s new score key."""
        self.count[keep] += self.count[gone]
        self.aff_sum[keep] += self.aff_sum[gone]
        if self.s.kind == "mean":
            return score_key(1.0 - (self.aff_sum[keep] / FIXED_ONE) / self.count[keep])
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
        pivot = self.s.quantile * sum(hk.values()) // 100 + 1
        acc = 0
        for b in sorted(hk):
            acc += hk[b]
            if acc >= pivot:
                return score_key(1.0 - (b + 0.5) / BINS)
        raise AssertionError("empty histogram")

    # -- union-find -------------------------------------------------------------------------------
    def find(self, x: int) -> int:
        parent = self.parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def _merge(self, ra: int, rb: int, level: int) -> None:
        adj = self.adj
        # the region with more neighbours absorbs the other: O(E log N) dictionary work overall
        w, l = (ra, rb) if len(adj[ra]) >= len(adj[rb]) else (rb, ra)
        self.merges.append((ra, rb, level))
        self.parent[l] = w
        self.closed[w] = self.closed[ra] and self.closed[rb]  # joining an open region keeps it open
        aw, al = adj[w], adj[l]
        del aw[l]
        del al[w]
        alive, score_key_, ident, combined = self.alive, self.score_key, self.ident, self.combined
        code, heap, stop = self.code, self.heap, self.stop
        combine = self._combine
        aw_get = aw.get
        for nb, el in al.items():
            an = adj[nb]
            del an[l]
            ew = aw_get(nb)
            if ew is None:
                aw[nb] = el
                an[w] = el
                continue
            # a shared neighbour: one edge survives with the summed statistics and is rescored
            keep, gone = (ew, el) if ew < el else (el, ew)
            aw[nb] = keep
            an[w] = keep
            k = combine(keep, gone)
            alive[gone] = 0
            score_key_[keep] = k
            if ident[gone] > ident[keep]:
                ident[keep] = ident[gone]
            combined[keep] = True
            c = (k << 96) | (ident[keep] << 32) | keep
            code[keep] = c
            if c < stop:
                heapq.heappush(heap, c)
        adj[l] = None

    def run(self) -> None:
        """Pop edges in increasing order below the largest threshold: merge or freeze."""
        stream, heap, alive, code, stop = self.stream, self.heap, self.alive, self.code, self.stop
        closed, frozen, find, ea, eb = self.closed, self.frozen, self.find, self.ea, self.eb
        mask = (1 << 32) - 1
        n_stream = len(stream)
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
            ra, rb = find(ea[e]), find(eb[e])
            ca, cb = closed[ra], closed[rb]
            if ca and cb:
                if frozen[ra] or frozen[rb]:
                    # the smallest edge of these regions leads where this block cannot decide: wait
                    frozen[ra] = frozen[rb] = True
                    continue
            elif ca or cb:
                c = ra if ca else rb
                if frozen[c] or not self._may_join_open(c):
                    frozen[c] = True
                    continue
                # a closed region whose smallest edge leads to the one open region it touches joins
                # it: nothing outside the block can reach its neighbourhood first (docs/decoding.md)
            else:
                continue  # two open regions: decided in a larger block
            alive[e] = 0
            self._merge(ra, rb, entry >> 96)

    def _may_join_open(self, r: int) -> bool:
        """A closed region may join the open region its smallest edge leads to when that is the only
        open region it touches and no neighbour is frozen (a frozen neighbour's pending merge, at a
        lower level, could join the open region first and change the edge)."""
        closed, frozen = self.closed, self.frozen
        n_open = 0
        for nb in self.adj[r]:
            if not closed[nb]:
                n_open += 1
                if n_open > 1:
                    return False
            elif frozen[nb]:
                return False
        return True

    def result(self) -> MergeResult:
        n = len(self.parent)
        root = np.asarray([self.find(i) for i in range(n)], np.int64)
        frozen = np.asarray(self.frozen, bool)
        m = np.asarray(self.merges, np.int64).reshape(-1, 3)
        live = np.flatnonzero(np.frombuffer(bytes(self.alive), np.uint8)) if self.alive else np.zeros(0, np.int64)
        return MergeResult(m[:, 0], m[:, 1], m[:, 2], root, frozen[root], self._edges(live, root), live.astype(np.int64))

    def _edges(self, live: np.ndarray, root: np.ndarray) -> MergeGraph:
        g = self.g
        u = root[g.u[live]]
        v = root[g.v[live]]
        ident = np.asarray(self.ident, np.int64)[live] if live.size else np.zeros(0, np.int64)
        combined = np.asarray(self.combined, bool)[live] if live.size else np.zeros(0, bool)
        count = np.asarray(self.count, np.int64)[live] if live.size else np.zeros(0, np.int64)
        aff_sum = np.asarray(self.aff_sum, np.int64)[live] if live.size else np.zeros(0, np.int64)
        if self.s.kind == "mean":
            z = np.zeros(0, np.int64)
            return MergeGraph(g.closed, u, v, count, aff_sum, ident, z, z.copy(), z.copy(), combined)
        # histograms: untouched edges keep their input rows, combined ones their dictionaries
        rows_e, rows_b, rows_c = [], [], []
        new_index = np.full(g.u.size, -1, np.int64)
        new_index[live] = np.arange(live.size)
        keep_rows = new_index[g.hist_edge] >= 0
        keep_rows &= ~np.isin(g.hist_edge, np.fromiter(self.hist.keys(), np.int64, len(self.hist)))
        rows_e.append(new_index[g.hist_edge[keep_rows]])
        rows_b.append(g.hist_bin[keep_rows])
        rows_c.append(g.hist_count[keep_rows])
        for e, h in self.hist.items():
            if new_index[e] < 0:
                continue
            bins = sorted(h)
            rows_e.append(np.full(len(bins), new_index[e], np.int64))
            rows_b.append(np.asarray(bins, np.int64))
            rows_c.append(np.asarray([h[b] for b in bins], np.int64))
        he, hb, hc = (np.concatenate(x).astype(np.int64) for x in (rows_e, rows_b, rows_c))
        order = np.lexsort((hb, he))
        return MergeGraph(g.closed, u, v, count, aff_sum, ident, he[order], hb[order], hc[order], combined)


def merge_regions(g: MergeGraph, s: Scoring, max_threshold: float, frozen: np.ndarray | None = None) -> MergeResult:
    """Merge closed regions greedily while their edges score below ``max_threshold``; freeze the rest.

    ``frozen``: regions frozen from the start. Runs the compiled loop (``ops/merging_compiled.py``,
    identical results) when numba is installed, unless ``EMCHUNKS_MERGER=python``."""
    if os.environ.get("EMCHUNKS_MERGER", "auto") != "python":
        try:
            from em_chunks.ops.merging_compiled import merge_regions_compiled
        except ImportError:
            pass
        else:
            return merge_regions_compiled(g, s, max_threshold, frozen)
    merger = _Merger(g, s, max_threshold, frozen)
    merger.run()
    return merger.result()
