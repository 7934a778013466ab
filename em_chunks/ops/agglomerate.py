"""Global agglomeration of a whole fragment graph in one process: the reference for the distributed
merging (``ops/octree_merge.py``), and the ``python`` backend.

Greedy merging with waterz's scores and a history-free total order (``ops/merging.py``), every
threshold from one pass (a merge at level ``s`` is part of every segmentation with threshold above
``s``), then naming and dust per threshold (``ops/segments.py``, shared with the waterz backend).
Every option comes in one :class:`~em_chunks.ops.params.DecodeParams`, validated when it was built.
"""

from __future__ import annotations

import numpy as np

from em_chunks.ops import agglomerate_waterz as wz
from em_chunks.ops.fragments import FragmentTable
from em_chunks.ops.merging import MergeGraph, merge_regions, tie_order
from em_chunks.ops.params import DecodeParams
from em_chunks.ops.region_graph import EdgeHistograms
from em_chunks.ops.segments import components_below, edge_rows, name_segments

# "auto" picks waterz for graphs with more fragments than this; None = never. Measured
# (benchmarks/agglomerate.py, fib_medulla_250 cubes, noise 0.2): waterz is 1.6x faster at 30-75k
# fragments, no faster at 260k, and needs ~4x the memory (waterz keeps a dense 256-bin histogram,
# 1 KB, per edge), so "auto" stays on the Python backend until a native sparse backend exists.
WATERZ_AUTO_MIN_FRAGMENTS: int | None = None


def merge_graph(table: FragmentTable, edges: EdgeHistograms, params: DecodeParams) -> MergeGraph:
    """The fragment graph as :class:`MergeGraph` (nodes = key ranks, all closed)."""
    n = len(table)
    ru, rv = edge_rows(table, edges)
    a, b = np.minimum(ru, rv).astype(np.int64), np.maximum(ru, rv).astype(np.int64)
    ne = a.size
    z = np.zeros(0, np.int64)
    if params.scoring.kind == "mean":
        he, hb, hc = z, z.copy(), z.copy()
    elif params.init_with_max:
        he, hb, hc = np.arange(ne, dtype=np.int64), edges.max_bin.astype(np.int64), np.ones(ne, np.int64)
    else:
        if not edges.has_histograms:
            raise ValueError("init_with_max=False needs full histograms (region_graph_chunk(full_histograms=True))")
        he, hb, hc = edges.hist_edge.astype(np.int64), edges.hist_bin.astype(np.int64), edges.hist_count
    return MergeGraph(np.ones(n, bool), a, b, edges.count.astype(np.int64), edges.aff_sum.astype(np.int64),
                      tie_order(edges.first_contact), he, hb, hc.astype(np.int64), np.zeros(ne, bool))


def backend_for(table: FragmentTable, params: DecodeParams) -> str:
    """The single-process backend that runs: "waterz" when asked for, or for "auto" on a big graph
    whose merge function waterz reproduces (:data:`WATERZ_AUTO_MIN_FRAGMENTS`); else "python"."""
    if params.agglomeration == "waterz":
        return "waterz"
    big = WATERZ_AUTO_MIN_FRAGMENTS is not None and len(table) > WATERZ_AUTO_MIN_FRAGMENTS
    return "waterz" if params.agglomeration == "auto" and params.waterz_supported and big else "python"


def agglomerate(table: FragmentTable, edges: EdgeHistograms, params: DecodeParams) -> list[np.ndarray]:
    """One segment id per fragment (aligned with ``table.ids``, uint64, 0 = removed) per threshold.

    ``params.thresholds`` come from one merging pass. Naming (``params.naming``): "packed" = the
    canonical (chunk-packed) id of the segment's fragment with the smallest key; "first_voxel" =
    1 + the global C-order index of the segment's first voxel (the same number for every chunk grid).
    Dust merging keeps the name of the segment merged into (``ops/dust.py``). The backend is
    :func:`backend_for`'s: this module's merging (the distributed engine reproduces it) or waterz's
    C++ merging on the embedded graph (it breaks equal scores its own way, so it agrees with the
    others only up to ties).
    """
    if backend_for(table, params) == "waterz":
        return wz.agglomerate_waterz(table, edges, params)
    g = merge_graph(table, edges, params)
    merged = merge_regions(g, params)
    return [name_segments(table, edges, components_below(len(table), merged.merge_a, merged.merge_b,
                                                         merged.merge_level, t), params)
            for t in params.thresholds]
