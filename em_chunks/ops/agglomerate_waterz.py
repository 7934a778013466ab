"""Global agglomeration by waterz's own C++ ``IterativeRegionMerging``, on the merged region graph.

waterz only takes volumes, so the graph is embedded in a synthetic one-row volume: fragment of key
rank ``r`` is label ``r + 1``, and every edge ``(a, b)`` (ranks, a < b) becomes three voxels
``a+1, b+1, 0`` along x, with the x affinity of the second voxel ``(max_bin + 0.5) / 256``, which
waterz discretises back to ``max_bin``. Why this is the same graph:

* waterz's ``get_region_graph`` only creates edges between two different non-zero labels
  (it walks ``id1 = 1 .. max``; background 0 is always the smaller id), so the ``0`` separators
  create nothing and each voxel pair creates exactly its fragment pair, once.
* z / y have extent 1, so no voxel has a z or y predecessor (those channels are never read) and
  there are no row ends to wrap around.
* ``InitWithMax``: one voxel-edge per pair gives a histogram with one count at ``max_bin``, which is
  exactly what waterz builds from a pair's many voxel-edges (it keeps only the largest bin).

waterz numbers edges by ``(id1, id2)``, i.e. by the key ranks of the two fragments, and breaks equal
scores in its 256-bin queue FIFO by that number, then by the order of its lazy rescoring; every
step is a function of the ranked graph, which does not depend on the chunk grid. The merge sequence
can differ from the Python backend's only in the order of equal scores after rescoring (the Python
backend rescores eagerly), the same difference as between our decoding and whole-volume waterz.

Only ``aff{Q}_his256`` with ``InitWithMax`` and Q in waterz's prebuilt set (10, 15, .., 95,
``ops/params.WATERZ_QUANTILES``) is supported: a mean or a full histogram would need one voxel pair
per voxel-edge; ``DecodeParams`` refuses the others. Naming and dust handling are the Python
backend's: both call ``ops/segments.name_segments``.

Cost (benchmarks/agglomerate.py): about as fast as the Python backend (1.6-1.9x faster up to ~75k
fragments, none at ~260k), with ~4x its memory: waterz's ``HistogramQuantileProvider`` keeps a dense
256-bin int histogram (1,032 bytes) per edge, and its merge moves the absorbed region's edges one by
one. It is an exact oracle (it equals whole-volume waterz with the same fragments), not a fast path.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator

import numpy as np

from em_chunks.ops.affinity import BINS
from em_chunks.ops.fragments import FragmentTable
from em_chunks.ops.params import DecodeParams
from em_chunks.ops.region_graph import EdgeHistograms
from em_chunks.ops.segments import name_segments


def waterz_scoring_function(quantile: int) -> str:
    """waterz's C++ spelling of ``aff{quantile}_his256`` with InitWithMax."""
    q = int(quantile)
    return f"OneMinus<HistogramQuantileAffinity<RegionGraphType,{q},ScoreValue,256,true>>"


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """waterz's C++ core logs every step to stdout: send descriptor 1 to /dev/null meanwhile."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        yield
        return
    sys.stdout.flush()
    saved = os.dup(fd)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), fd)
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, fd)
        os.close(saved)


def canonical_edges(
    table: FragmentTable, edges: EdgeHistograms
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a, b, max_bin) per edge, a < b key ranks, sorted by (a, b): the chunk-invariant graph."""
    if not len(edges):
        z = np.zeros(0, np.int64)
        return z, z, np.zeros(0, np.uint8)
    ru, rv = table.index_of(edges.u), table.index_of(edges.v)
    a, b = np.minimum(ru, rv), np.maximum(ru, rv)
    order = np.lexsort((b, a))
    return a[order], b[order], np.asarray(edges.max_bin)[order]


def embed_graph(a: np.ndarray, b: np.ndarray, max_bin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (3, 1, 1, 3E) float32 affinities and (1, 1, 3E) uint64 labels holding the graph."""
    ne = a.size
    labels = np.zeros((1, 1, 3 * ne), np.uint64)
    row = labels[0, 0]
    row[0::3] = a + 1
    row[1::3] = b + 1
    # np.zeros maps untouched pages lazily: the z and y channels (never read) cost no memory
    affs = np.zeros((3, 1, 1, 3 * ne), np.float32)
    affs[2, 0, 0, 1::3] = (max_bin.astype(np.float32) + np.float32(0.5)) / np.float32(BINS)
    return affs, labels


def agglomerate_waterz(table: FragmentTable, edges: EdgeHistograms, params: DecodeParams) -> list[np.ndarray]:
    """``agglomerate`` for ``aff{Q}_his256`` with InitWithMax, run by waterz's C++ core.

    Same contract as ``em_chunks.ops.agglomerate.agglomerate`` (one uint64 segment id per fragment
    aligned with ``table.ids`` per threshold, 0 = removed dust).
    """
    import waterz

    if not params.waterz_supported:
        raise ValueError(f"waterz backend: merge function {params.merge_function!r} is not one waterz reproduces")
    n = len(table)
    ths = list(params.thresholds)
    a, b, max_bin = canonical_edges(table, edges)
    fragment = np.arange(n, dtype=np.int64)
    roots_per_threshold: list[np.ndarray] = []
    if a.size == 0:
        roots_per_threshold = [fragment.copy() for _ in ths]
    else:
        affs, labels = embed_graph(a, b, max_bin)
        pos = np.full(n, -1, np.int64)
        pos[b] = 3 * np.arange(a.size) + 1
        pos[a] = 3 * np.arange(a.size)
        has = pos >= 0
        row = labels[0, 0]
        with _quiet_stdout():
            for _ in waterz.agglomerate(
                affs, ths, fragments=labels, discretize_queue=256,
                scoring_function=waterz_scoring_function(params.scoring.quantile),
            ):
                root = fragment.copy()
                root[has] = row[pos[has]].astype(np.int64) - 1
                roots_per_threshold.append(root)
    return [name_segments(table, edges, root, params) for root in roots_per_threshold]
