"""Global agglomeration of a whole fragment graph in one process: the reference for the distributed
merging (``engine/agglomerate.py``), and the ``python`` backend.

Greedy merging with waterz's scores and a history-free total order (``ops/merging.py``), every
threshold from one pass (a merge at level ``s`` is part of every segmentation with threshold above
``s``), then dust handling per threshold (``ops/dust.py``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import sparse
from scipy.sparse import csgraph

from em_chunks.errors import InputError
from em_chunks.ops.dust import dust, group_links
from em_chunks.ops.fragments import FragmentTable
from em_chunks.ops.merging import MergeGraph, Scoring, merge_regions, stop_key, tie_order
from em_chunks.ops.region_graph import EdgeHistograms

SEGMENT_ID_MODES = ("packed", "first_voxel")
BACKENDS = ("auto", "distributed", "python", "waterz")
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


def scoring_of(merge_function: str, init_with_max: bool = True) -> tuple[Scoring, bool]:
    """The scoring of a merge function name and whether histograms start with one count at the max."""
    fn = parse_merge_function(merge_function)
    if fn.init_with_max is not None:
        init_with_max = fn.init_with_max
    return Scoring(fn.kind, fn.quantile), bool(init_with_max)


def merge_graph(table: FragmentTable, edges: EdgeHistograms, scoring: Scoring, init_with_max: bool) -> MergeGraph:
    """The fragment graph as :class:`MergeGraph` (nodes = key ranks, all closed)."""
    n = len(table)
    ru = table.index_of(edges.u) if len(edges) else np.zeros(0, np.int64)
    rv = table.index_of(edges.v) if len(edges) else np.zeros(0, np.int64)
    a, b = np.minimum(ru, rv).astype(np.int64), np.maximum(ru, rv).astype(np.int64)
    ne = a.size
    z = np.zeros(0, np.int64)
    if scoring.kind == "mean":
        he, hb, hc = z, z.copy(), z.copy()
    elif init_with_max:
        he, hb, hc = np.arange(ne, dtype=np.int64), edges.max_bin.astype(np.int64), np.ones(ne, np.int64)
    else:
        if not edges.has_histograms:
            raise ValueError("init_with_max=False needs full histograms (region_graph_chunk(full_histograms=True))")
        he, hb, hc = edges.hist_edge.astype(np.int64), edges.hist_bin.astype(np.int64), edges.hist_count
    return MergeGraph(np.ones(n, bool), a, b, edges.count.astype(np.int64), edges.aff_sum.astype(np.int64),
                      tie_order(edges.first_contact), he, hb, hc.astype(np.int64), np.zeros(ne, bool))


def components_below(n: int, a: np.ndarray, b: np.ndarray, level: np.ndarray, threshold: float) -> np.ndarray:
    """Component label of every node under the merges whose level is below ``threshold``."""
    sel = np.asarray(level) < stop_key(threshold)
    if not sel.any():
        return np.arange(n, dtype=np.int64)
    graph = sparse.coo_matrix((np.ones(int(sel.sum()), np.int8), (a[sel], b[sel])), shape=(n, n))
    return csgraph.connected_components(graph, directed=True, connection="weak")[1].astype(np.int64)


def first_of_components(comp: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Per node, the node of its component with the smallest key (a segment's name giver)."""
    if comp.size == 0:
        return np.zeros(0, np.int64)
    order = np.lexsort((keys, comp))
    starts = np.flatnonzero(np.r_[True, comp[order][1:] != comp[order][:-1]])
    leader = np.empty(int(comp.max()) + 1, np.int64)
    leader[comp[order][starts]] = order[starts]
    return leader[comp]


def check_dust(dust_merge_size: int, dust_remove_size: int) -> None:
    if dust_merge_size < 0 or dust_remove_size < 0:
        raise InputError("decode.dust_merge_size / dust_remove_size: expected non-negative voxel counts")


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

    Thresholds must be ascending; they come from one merging pass. ``segment_ids``: "packed" = the
    canonical (chunk-packed) id of the segment's fragment with the smallest key; "first_voxel" =
    1 + the global C-order index of the segment's first voxel (the same number for every chunk grid).
    Dust merging keeps the name of the segment merged into (``ops/dust.py``).
    ``backend``: "python" / "distributed" / "auto" (this module: the distributed engine reproduces it)
    or "waterz" (waterz's C++ merging on the embedded graph, ``agglomerate_waterz``; it breaks equal
    scores its own way, so it agrees with the others only up to ties).
    """
    if segment_ids not in SEGMENT_ID_MODES:
        raise InputError(f"decode.segment_ids {segment_ids!r}: expected one of {', '.join(SEGMENT_ID_MODES)}")
    scoring, init_with_max = scoring_of(merge_function, init_with_max)
    ths = [float(t) for t in thresholds]
    if ths != sorted(ths):
        raise InputError(f"thresholds {ths}: expected ascending values")
    if backend not in BACKENDS:
        raise InputError(f"decode.agglomeration {backend!r}: expected one of {', '.join(BACKENDS)}")
    check_dust(dust_merge_size, dust_remove_size)
    from em_chunks.ops import agglomerate_waterz as wz

    fast = wz.supports(scoring.kind, scoring.quantile, init_with_max)
    if backend == "waterz" and not fast:
        raise InputError(
            f"decode.agglomeration 'waterz': merge function {merge_function!r} "
            f"(init_with_max={init_with_max}) is not supported; expected aff<Q>_his256 with Q in "
            "10, 15, .., 95 and init_with_max=true (or use python)"
        )
    auto_min = WATERZ_AUTO_MIN_FRAGMENTS
    big = auto_min is not None and len(table) > auto_min
    if backend == "waterz" or (backend == "auto" and fast and big):
        return wz.agglomerate_waterz(table, edges, ths, scoring.quantile, dust_merge_size, dust_remove_size, segment_ids)
    g = merge_graph(table, edges, scoring, init_with_max)
    merged = merge_regions(g, scoring, max(ths) if ths else 0.0)
    return [name_segments(table, edges, g.u, g.v, components_below(len(table), merged.merge_a, merged.merge_b,
                                                                   merged.merge_level, t),
                          dust_merge_size, dust_remove_size, segment_ids) for t in ths]


def name_segments(table: FragmentTable, edges: EdgeHistograms, rows_u: np.ndarray, rows_v: np.ndarray,
                  comp: np.ndarray, dust_merge_size: int, dust_remove_size: int, segment_ids: str) -> np.ndarray:
    """Segment ids per fragment for one threshold's components, after dust handling."""
    keys = table.keys.astype(np.int64)
    first = first_of_components(comp, keys)
    if dust_merge_size > 0 or dust_remove_size > 0:
        leaders, seg_of = np.unique(first, return_inverse=True)  # one node per segment
        sizes = np.bincount(seg_of, weights=table.sizes, minlength=leaders.size).astype(np.int64)
        root, removed = dust(sizes, keys[leaders], group_links(seg_of[rows_u], seg_of[rows_v], edges.max_bin,
                                                               edges.first_contact),
                             dust_merge_size, dust_remove_size)
        final = leaders[root[seg_of]]
        gone = removed[seg_of]
    else:
        final, gone = first, np.zeros(first.size, bool)
    names = table.ids if segment_ids == "packed" else table.keys.astype(np.uint64) + np.uint64(1)
    seg = names[final] if len(table) else np.zeros(0, np.uint64)
    return np.where(gone, np.uint64(0), seg).astype(np.uint64)
