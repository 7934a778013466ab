"""The distributed decode pipeline: affinities -> fragments -> region graph -> global agglomeration ->
segmentation, one Dask task per chunk per stage, identical for any chunk grid (docs/decoding.md).

Stages (each resumable; a chunk is done once its data and summary are written):
  fragments     A: local watershed of the core, stored under ``work/fragments``      -> fragment summary
  links         B: joins that cross the core's faces                                  -> id pairs
  (client)      union-find over the links                                             -> fragment table
  region-graph  C: edge statistics between canonical fragments (+ contingency vs labels)
  (client)      global agglomeration over the merged region graph                     -> segment per fragment
  segmentation  D: relabel the stored fragments                                       -> labels/segmentation
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import zarr
from distributed import Client

from em_chunks.engine.record import RunRecord
from em_chunks.engine.runner import StageRun, collect, run_stage, submit_stage
from em_chunks.engine.source import Source
from em_chunks.engine.state import RunState
from em_chunks.errors import InputError
from em_chunks.geometry import Box, Chunk, ChunkGrid
from em_chunks.io.ome_zarr import check_alignment, create_fragments, create_segmentation, open_root
from em_chunks.ops import metrics as M
from em_chunks.ops.affinity import as_float_affinities
from em_chunks.ops.agglomerate import agglomerate
from em_chunks.ops.region_graph import stage_c_chunks
from em_chunks.ops.fragments import FragmentSummary, FragmentTable, fragment_chunk, link_chunk, resolve_fragments
from em_chunks.ops.ids import IdLookup, relabel_chunk
from em_chunks.ops.params import DecodeParams
from em_chunks.ops.region_graph import EdgeHistograms, merge_histograms, region_graph_chunk

SHORT_RANGE = (0, 1, 2)


@dataclass(frozen=True)
class DecodeTargets:
    """Where one decode run reads and writes (all plain paths: this travels to the workers)."""

    affinities: Source
    fragments: str  # zarr array path (work/fragments)
    segmentation: str  # zarr array path (labels/segmentation/0)
    labels: Optional[Source] = None


# ---- worker side: one function per stage ---------------------------------------------------------
def _affs(t: DecodeTargets, box: Box, params: DecodeParams) -> np.ndarray:
    return as_float_affinities(t.affinities.read(box, 0, channels=params.channels))


def _kernel_params(params: DecodeParams) -> DecodeParams:
    """The kernels see only the three channels that were read."""
    return dataclasses.replace(params, channels=SHORT_RANGE)


def _read_labels(path: str, box: Box, shape: Sequence[int]) -> np.ndarray:
    arr = zarr.open_array(path, mode="r")
    out = np.zeros(box.shape, np.uint64)
    inside = box.intersect(Box.from_shape(shape))
    if not inside.empty:
        out[inside.slices(box)] = arr[inside.slices()]
    return out


def stage_fragments(chunk: Chunk, t: DecodeTargets, params: DecodeParams, shape: tuple[int, ...]) -> dict:
    ctx = chunk.core.grow(1)
    labels, s = fragment_chunk(_affs(t, ctx, params), chunk.core, ctx, chunk.id, _kernel_params(params), shape)
    zarr.open_array(t.fragments, mode="r+")[chunk.core.slices()] = labels
    return {"chunk_id": np.int64(s.chunk_id), "ids": s.ids, "sizes": s.sizes, "keys": s.keys}


def stage_links(chunk: Chunk, t: DecodeTargets, params: DecodeParams, shape: tuple[int, ...]) -> dict:
    ctx = chunk.core.grow(1)
    pairs = link_chunk(_affs(t, ctx, params), _read_labels(t.fragments, ctx, shape), chunk.core, ctx, _kernel_params(params), shape)
    return {"pairs": pairs}


def stage_region_graph(chunk: Chunk, t: DecodeTargets, params: DecodeParams, shape: tuple[int, ...], lookup: IdLookup) -> dict:
    ctx = chunk.core.grow(1)  # the kernel reads only the predecessor side
    labels = _read_labels(t.fragments, ctx, shape)
    edges = region_graph_chunk(_affs(t, ctx, params), labels, chunk.core, ctx, _kernel_params(params), lookup=lookup,
                               volume_shape=shape)
    out = {f.name: getattr(edges, f.name) for f in dataclasses.fields(edges) if getattr(edges, f.name) is not None}
    if t.labels is not None:
        gt = t.labels.read(chunk.core, 0)
        table = M.contingency(lookup(labels[chunk.core.slices(ctx)]), gt)
        out.update({"ct_seg": table.seg, "ct_gt": table.gt, "ct_count": table.count})
    return out


def stage_segmentation(chunk: Chunk, t: DecodeTargets, lookup: IdLookup) -> dict:
    arr = zarr.open_array(t.fragments, mode="r")
    seg = relabel_chunk(np.asarray(arr[chunk.core.slices()]), lookup)
    zarr.open_array(t.segmentation, mode="r+")[chunk.core.slices()] = seg
    return {"segments": np.int64(np.unique(seg[seg != 0]).size)}


# ---- client side ---------------------------------------------------------------------------------
def check_affinities(src: Source, params: DecodeParams) -> None:
    if len(src.shape) != 4:
        raise InputError(
            f"{src.path}: affinities must have a channel axis (C, Z, Y, X) with at least 3 channels, got shape {src.shape}"
        )
    if max(params.channels) >= src.shape[0]:
        raise InputError(f"{src.path}: decode.channels {list(params.channels)} need {max(params.channels) + 1} channels, the affinities have {src.shape[0]}")
    if np.dtype(src.dtype) not in (np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.uint8), np.dtype(np.float16)):
        raise InputError(f"{src.path}: affinities must be float32 in [0, 1] or uint8 0-255, got {src.dtype}")


def check_labels(labels: Source, shape: Sequence[int], what: str = "segmentation") -> None:
    if tuple(labels.shape) != tuple(shape):
        raise InputError(f"{labels.path}: labels have shape {tuple(labels.shape)} but the {what} has {tuple(shape)}; expected equal shapes")


def _table_from(summaries: dict[int, Any], links: dict[int, Any]) -> FragmentTable:
    frag = [FragmentSummary(int(s["chunk_id"]), s["ids"], s["sizes"], s["keys"]) for _, s in sorted(summaries.items())]
    return resolve_fragments(frag, [links[k]["pairs"] for k in sorted(links)])


def _edges_from(summaries: dict[int, Any]) -> EdgeHistograms:
    names = [f.name for f in dataclasses.fields(EdgeHistograms)]
    parts = [EdgeHistograms(**{n: s[n] for n in names if n in s}) for _, s in sorted(summaries.items())]
    return merge_histograms(parts)


def merged_contingency(summaries: Any) -> M.Contingency:
    """Sum the per-chunk fragment-vs-labels tables carried in region-graph summaries."""
    return M.merge_contingency([M.Contingency(s["ct_seg"], s["ct_gt"], s["ct_count"]) for s in summaries])


def fragment_to_segment(table: FragmentTable, segment_of: np.ndarray) -> IdLookup:
    """canonical fragment id -> segment id, as a lookup (ids sorted for searchsorted)."""
    order = np.argsort(table.ids, kind="stable")
    return IdLookup(table.ids[order], np.asarray(segment_of, np.uint64)[order])


@dataclass
class Upstream:
    """Stages submitted before decoding (e.g. inference) that it overlaps with: their runs, and per chunk
    the future that writes that chunk's affinities (decoding tasks of a chunk wait for those they read)."""

    runs: list[StageRun]
    futures: dict[int, Any]
    prefer: Optional[list[str]] = None  # workers the decoding stages should prefer (CPU beside GPU)


@dataclass
class RegionGraph:
    """What the client holds after stages A-C: the fragments, their graph, and (with labels) the
    fragment-vs-labels contingency table from which any agglomeration's metrics follow exactly."""

    targets: DecodeTargets
    table: FragmentTable
    edges: EdgeHistograms
    contingency: Optional[M.Contingency]
    join_seconds: float


def build_region_graph(
    client: Client,
    affinities: Source,
    out: Path,
    grid: ChunkGrid,
    params: DecodeParams,
    *,
    labels: Optional[Source] = None,
    record: Optional[RunRecord] = None,
    voxel_size: Optional[Sequence[float]] = None,
    progress: bool = True,
    upstream: Optional[Upstream] = None,
) -> RegionGraph:
    """Stages A, B, C and the client joins (see the module docstring).

    With ``upstream``, stages A and B are submitted at once, each chunk waiting only for the upstream
    tasks of itself and its neighbours: decoding starts while later chunks are still being inferred.
    """
    shape = tuple(grid.shape)
    state = RunState(out)
    root = open_root(out)
    store = tuple(grid.align)
    check_alignment(shape, store, [c.core for c in grid])  # no two tasks ever write one storage chunk
    frag_arr = create_fragments(root, shape, store)
    seg_arr = create_segmentation(root, shape, store, voxel_size)
    t = DecodeTargets(affinities, f"{out}/{frag_arr.path}", f"{out}/{seg_arr.path}", labels)
    chunks = list(grid)
    kw = dict(record=record, progress=progress)
    up = upstream or Upstream([], {})

    def near(c: Chunk) -> list[Chunk]:
        return [c] + grid.neighbours(c)

    frag_run = submit_stage(client, state, "fragments", chunks, stage_fragments, lambda c: (t, params, shape),
                            deps_for=lambda c: [up.futures.get(n.id) for n in near(c)], prefer=up.prefer,
                            progress=progress)
    link_run = submit_stage(client, state, "links", chunks, stage_links, lambda c: (t, params, shape),
                            deps_for=lambda c: [frag_run.futures.get(n.id) for n in near(c)], prefer=up.prefer,
                            progress=progress)
    done = collect(up.runs + [frag_run, link_run], state, record=record)
    t0 = time.perf_counter()
    table = _table_from(done["fragments"], done["links"])
    del done
    t_join = time.perf_counter() - t0

    def lookup_rg(c: Chunk) -> tuple:
        # stage C reads the core and its -z/-y/-x faces: only those chunks' ids travel with the task
        return (t, params, shape, table.canonical_lookup(stage_c_chunks(grid, c)))

    rg = run_stage(client, state, "region-graph", chunks, stage_region_graph, lookup_rg, **kw)
    t0 = time.perf_counter()
    edges = _edges_from(rg)
    ct = merged_contingency(rg.values()) if labels is not None else None
    return RegionGraph(t, table, edges, ct, t_join + time.perf_counter() - t0)


def agglomerate_graph(graph: RegionGraph, params: DecodeParams, thresholds: Optional[Sequence[float]] = None) -> list[np.ndarray]:
    """One segment id per fragment for each threshold (one pass, ascending thresholds)."""
    return agglomerate(
        graph.table, graph.edges, tuple(thresholds or params.thresholds), params.merge_function,
        params.init_with_max, params.dust_merge_size, params.dust_remove_size, segment_ids=params.segment_ids, backend=params.agglomeration,
    )


def scores_of(graph: RegionGraph, segment_of: np.ndarray) -> dict[str, float]:
    """Exact metrics of the segmentation ``segment_of`` defines, from the fragment contingency table."""
    assert graph.contingency is not None
    return M.scores(M.aggregate_contingency(graph.contingency, fragment_to_segment(graph.table, segment_of)))


def finish_decode(client: Client, out: Path, grid: ChunkGrid, graph: RegionGraph, params: DecodeParams, *,
                  record: Optional[RunRecord] = None, progress: bool = True) -> dict[str, Any]:
    """Agglomerate the graph on the client, write the segmentation chunk by chunk, and compute the metrics
    (exact, from the fragment contingency table, for every threshold) when labels were given."""
    t0 = time.perf_counter()
    segment_of = agglomerate_graph(graph, params)
    t_agg = time.perf_counter() - t0
    first = segment_of[0]
    table = graph.table
    run_stage(
        client, RunState(out), "segmentation", list(grid), stage_segmentation,
        lambda c: (graph.targets, table.segment_lookup(first, [c.id])), record=record, progress=progress,
    )
    metrics: dict[str, Any] = {
        "fragments": int(len(table)),
        "region_graph_edges": int(len(graph.edges)),
        "segments": int(np.unique(first[first != 0]).size),
        "client_seconds": {"join": round(graph.join_seconds, 4), "agglomerate": round(t_agg, 4)},
        "threshold": params.thresholds[0],
    }
    if graph.contingency is not None:
        per_threshold = [{"threshold": thr, **scores_of(graph, seg_of)} for thr, seg_of in zip(params.thresholds, segment_of)]
        metrics.update({k: v for k, v in per_threshold[0].items() if k != "threshold"})
        if len(per_threshold) > 1:
            metrics["per_threshold"] = per_threshold
    return metrics


def run_decode(
    client: Client,
    affinities: Source,
    out: Path,
    grid: ChunkGrid,
    params: DecodeParams,
    *,
    labels: Optional[Source] = None,
    record: Optional[RunRecord] = None,
    voxel_size: Optional[Sequence[float]] = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Decode ``affinities`` into ``out`` (an OME-Zarr group) on ``client``; return the metrics dict.

    ``grid`` must be aligned to the storage chunks (``ChunkGrid(..., align=storage_aligned(...))``).
    The caller has claimed ``out`` for this configuration (:meth:`RunState.claim`).
    """
    graph = build_region_graph(client, affinities, out, grid, params, labels=labels, record=record, voxel_size=voxel_size, progress=progress)
    return finish_decode(client, out, grid, graph, params, record=record, progress=progress)
