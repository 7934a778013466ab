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

The graph, the total order of edges and the scores are ``ops/merge_graph.py``'s.
"""

from __future__ import annotations

import heapq
import os

import numpy as np

from em_chunks.ops.affinity import BINS, FIXED_ONE
from em_chunks.ops.merge_graph import (  # noqa: F401  (re-exported: the merging vocabulary)
    FORCED_LEVEL, MergeGraph, MergeResult, initial_scores, level_score, score_key, score_keys, stop_key, tie_order,
)
from em_chunks.ops.params import DecodeParams, Scoring


def _adjacency(n: int, u: list[int], v: list[int]) -> list[dict[int, int] | None]:
    """Per node, its neighbours and the edge to each (``None`` once the node is merged away)."""
    adj: list[dict[int, int] | None] = [dict() for _ in range(n)]
    for e, (x, y) in enumerate(zip(u, v)):
        adj[x][y] = e
        adj[y][x] = e
    return adj


class _EdgeStats:
    """The statistics of every edge (voxel-edge count, affinity sum, histogram) and the score of two
    edges combined. Histograms stay the input's rows until an edge combines (then a dict bin -> count)."""

    def __init__(self, g: MergeGraph, s: Scoring) -> None:
        self.s = s
        self.count = g.count.astype(np.int64).tolist()
        self.aff_sum = g.aff_sum.astype(np.int64).tolist()
        if s.kind != "mean":  # plain lists: slicing them per merge is far cheaper than numpy
            self.hstart = np.searchsorted(g.hist_edge, np.arange(int(g.u.size) + 1)).tolist()
            self.hbin = g.hist_bin.tolist()
            self.hcount = g.hist_count.tolist()
        self.hist: dict[int, dict[int, int]] = {}

    def _histogram0(self, e: int) -> dict[int, int]:
        lo, hi = self.hstart[e], self.hstart[e + 1]
        if hi - lo == 1:
            return {self.hbin[lo]: self.hcount[lo]}
        return dict(zip(self.hbin[lo:hi], self.hcount[lo:hi]))

    def combine(self, keep: int, gone: int) -> int:
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


def _initial_stream(keys: np.ndarray, ident: np.ndarray, code: list[int], stop_k: int) -> list[int]:
    """Queue codes of the input edges scoring below the largest threshold, in (score, ident) order."""
    below = np.flatnonzero(keys < stop_k)
    below = below[np.lexsort((ident[below], keys[below]))]
    return [code[e] for e in below.tolist()]


class _Merger:
    """Mutable merging state; see the module docstring. Queue entries are Python ints
    ``score_key << 96 | ident << 32 | edge``: one integer comparison orders them by (score, ident), and
    an entry is current iff its edge is alive and its code is the edge's latest. The initial edges
    come as a presorted stream, rescored ones through a heap."""

    def __init__(self, g: MergeGraph, s: Scoring, max_threshold: float, frozen: np.ndarray | None = None) -> None:
        n, ne = g.n, int(g.u.size)
        if ne >= 1 << 32:
            raise ValueError("more than 2**32 edges")
        self.g = g
        keys = score_keys(initial_scores(s, g))
        self.stats = _EdgeStats(g, s)
        self.score_key = keys.tolist()
        self.ident = g.ident.astype(np.int64).tolist()
        self.combined = g.combined.astype(bool).tolist()
        self.alive = bytearray(b"\x01") * ne
        self.code = [(k << 96) | (i << 32) | e for e, (k, i) in enumerate(zip(self.score_key, self.ident))]
        self.parent = list(range(n))
        self.closed = g.closed.astype(bool).tolist()
        self.frozen = [False] * n if frozen is None else np.asarray(frozen, bool).tolist()
        self.ea, self.eb = g.u.tolist(), g.v.tolist()
        self.adj = _adjacency(n, self.ea, self.eb)
        self.stop = stop_key(max_threshold) << 96
        self.stream = _initial_stream(keys, g.ident, self.code, self.stop >> 96)
        self.pos = 0
        self.heap: list[int] = []
        self.merges: list[tuple[int, int, int]] = []

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
            self._rescore(keep, gone)
        adj[l] = None

    def _rescore(self, keep: int, gone: int) -> None:
        """Edge ``gone`` joins edge ``keep``, which is queued again with its new score."""
        ident = self.ident
        k = self.stats.combine(keep, gone)
        self.alive[gone] = 0
        self.score_key[keep] = k
        if ident[gone] > ident[keep]:
            ident[keep] = ident[gone]
        self.combined[keep] = True
        c = (k << 96) | (ident[keep] << 32) | keep
        self.code[keep] = c
        if c < self.stop:
            heapq.heappush(self.heap, c)

    def _pop(self) -> int | None:
        """The next queue entry below the stop (stream and heap merged), or None."""
        stream, heap = self.stream, self.heap
        if self.pos < len(stream) and (not heap or stream[self.pos] < heap[0]):
            entry = stream[self.pos]
            if entry >= self.stop:
                return None
            self.pos += 1
            return entry
        if heap and heap[0] < self.stop:
            return heapq.heappop(heap)
        return None

    def run(self) -> None:
        """Pop edges in increasing order below the largest threshold: merge or freeze."""
        alive, code, find, ea, eb = self.alive, self.code, self.find, self.ea, self.eb
        mask = (1 << 32) - 1
        while (entry := self._pop()) is not None:
            e = entry & mask
            if not alive[e] or code[e] != entry:
                continue
            ra, rb = find(ea[e]), find(eb[e])
            if self._may_merge(ra, rb):
                alive[e] = 0
                self._merge(ra, rb, entry >> 96)

    def _may_merge(self, ra: int, rb: int) -> bool:
        """The rule of the module docstring for the smallest edge between regions ``ra`` and ``rb``;
        freezes the closed ones that must wait for a larger block."""
        closed, frozen = self.closed, self.frozen
        ca, cb = closed[ra], closed[rb]
        if ca and cb:
            if frozen[ra] or frozen[rb]:
                # the smallest edge of these regions leads where this block cannot decide: wait
                frozen[ra] = frozen[rb] = True
                return False
            return True
        if ca or cb:
            c = ra if ca else rb
            if frozen[c] or not self._may_join_open(c):
                frozen[c] = True
                return False
            # a closed region whose smallest edge leads to the one open region it touches joins
            # it: nothing outside the block can reach its neighbourhood first (docs/decoding.md)
            return True
        return False  # two open regions: decided in a larger block

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
        edges = _surviving_edges(self.g, self.stats, self.ident, self.combined, live, root)
        return MergeResult(m[:, 0], m[:, 1], m[:, 2], root, frozen[root], edges, live.astype(np.int64))


def _surviving_edges(g: MergeGraph, stats: _EdgeStats, ident: list[int], combined: list[bool], live: np.ndarray,
                     root: np.ndarray) -> MergeGraph:
    """The live edges between region roots, with their statistics (the layout of the input)."""
    u = root[g.u[live]]
    v = root[g.v[live]]
    pick = (lambda values, dtype: np.asarray(values, dtype)[live] if live.size else np.zeros(0, dtype))  # noqa: E731
    ident_, combined_ = pick(ident, np.int64), pick(combined, bool)
    count, aff_sum = pick(stats.count, np.int64), pick(stats.aff_sum, np.int64)
    if stats.s.kind == "mean":
        z = np.zeros(0, np.int64)
        return MergeGraph(g.closed, u, v, count, aff_sum, ident_, z, z.copy(), z.copy(), combined_)
    # histograms: untouched edges keep their input rows, combined ones their dictionaries
    new_index = np.full(g.u.size, -1, np.int64)
    new_index[live] = np.arange(live.size)
    keep_rows = new_index[g.hist_edge] >= 0
    keep_rows &= ~np.isin(g.hist_edge, np.fromiter(stats.hist.keys(), np.int64, len(stats.hist)))
    rows_e, rows_b, rows_c = [new_index[g.hist_edge[keep_rows]]], [g.hist_bin[keep_rows]], [g.hist_count[keep_rows]]
    for e, h in stats.hist.items():
        if new_index[e] < 0:
            continue
        bins = sorted(h)
        rows_e.append(np.full(len(bins), new_index[e], np.int64))
        rows_b.append(np.asarray(bins, np.int64))
        rows_c.append(np.asarray([h[b] for b in bins], np.int64))
    he, hb, hc = (np.concatenate(x).astype(np.int64) for x in (rows_e, rows_b, rows_c))
    order = np.lexsort((hb, he))
    return MergeGraph(g.closed, u, v, count, aff_sum, ident_, he[order], hb[order], hc[order], combined_)


def merge_regions_python(g: MergeGraph, s: Scoring, max_threshold: float, frozen: np.ndarray | None = None
                         ) -> MergeResult:
    """The pure-Python merging loop: the specification the compiled one (``ops/merging_compiled.py``)
    reproduces decision for decision."""
    merger = _Merger(g, s, max_threshold, frozen)
    merger.run()
    return merger.result()


def merge_regions(g: MergeGraph, params: DecodeParams, frozen: np.ndarray | None = None) -> MergeResult:
    """Merge closed regions greedily while their edges score below ``params.max_threshold`` (with
    ``params.scoring``); freeze the rest.

    ``frozen``: regions frozen from the start. Runs the compiled loop (``ops/merging_compiled.py``,
    identical results) when numba is installed, unless ``EMCHUNKS_MERGER=python``."""
    if os.environ.get("EMCHUNKS_MERGER", "auto") != "python":
        try:
            from em_chunks.ops.merging_compiled import merge_regions_compiled
        except ImportError:
            pass
        else:
            return merge_regions_compiled(g, params.scoring, params.max_threshold, frozen)
    return merge_regions_python(g, params.scoring, params.max_threshold, frozen)
