"""The distributed decode pipeline: affinities -> fragments -> fragment join -> region graph ->
agglomeration -> dust -> segmentation, every step a Dask task on the workers, identical for any chunk
grid (docs/decoding.md).

Stages (each resumable: a chunk or block is done once its outputs and marker are written):
  fragments        per chunk: local watershed of the core -> work/fragments, pieces
  links            per chunk: joins that cross the core's faces
  join-up/-down    per block of the octree: pieces -> whole fragments (canonical ids), then down
  region-graph     per chunk: edges between whole fragments (+ contingency vs labels)
  merge-up/-down   per block: agglomeration (octree; or one ``gather`` task for python / waterz)
  dust-up/-down    per block: dust clusters (when dust handling is on)
  segmentation     per chunk: final names -> labels/segmentation
  metrics          (with labels) exact scores, reduced on the workers (engine/metrics_reduce.py)

Everything is submitted at once, each task waiting only for what it reads, so the stages overlap
(and overlap inference in predict). The client holds futures, counts and final scalars.

Every decode option travels in one :class:`~em_chunks.ops.params.DecodeParams` (built and validated by
``DecodeConfig.params()``), passed whole to the kernels; an agglomeration's is in its ``Trial``. Nothing
here is specific to one option (docs/architecture.md, "Where a decode option lives").
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import zarr
from distributed import Client

from em_chunks.engine import octree_stages as S
from em_chunks.engine.record import RunRecord
from em_chunks.engine.runner import StageRun, collect, submit_stage
from em_chunks.engine.source import Source
from em_chunks.engine.state import RunState
from em_chunks.errors import InputError
from em_chunks.geometry import Box, Chunk, ChunkGrid
from em_chunks.geometry.octree import Octree
from em_chunks.io.ome_zarr import check_alignment, create_fragments, create_segmentation, create_work_array, \
    open_root
from em_chunks.ops import metrics as M
from em_chunks.ops.affinity import as_float_affinities
from em_chunks.ops.fragments import fragment_chunk, link_chunk
from em_chunks.ops.ids import IdLookup, relabel_chunk
from em_chunks.ops.params import DecodeParams
from em_chunks.ops.region_graph import region_graph_chunk, stage_c_chunks

SHORT_RANGE = (0, 1, 2)


@dataclass(frozen=True)
class DecodeTargets:
    """Where one decode run reads and writes (all plain paths: this travels to the workers)."""

    affinities: Source
    fragments: str  # zarr array path (work/fragments)
    segmentation: str  # zarr array path (labels/segmentation/0)
    labels: Optional[Source] = None


# ---- worker side: the per-chunk stages ------------------------------------------------------------
def _affs(t: DecodeTargets, box: Box, params: DecodeParams) -> np.ndarray:
    return as_float_affinities(t.affinities.read(box, 0, channels=params.channels))


def _kernel_params(params: DecodeParams) -> DecodeParams:
    """The kernels see only the three channels that were read."""
    return params.replace(channels=SHORT_RANGE)


def _read_labels(path: str, box: Box, shape: Sequence[int]) -> np.ndarray:
    arr = zarr.open_array(path, mode="r")
    out = np.zeros(box.shape, np.uint64)
    inside = box.intersect(Box.from_shape(shape))
    if not inside.empty:
        out[inside.slices(box)] = arr[inside.slices()]
    return out


def stage_fragments(chunk: Chunk, t: DecodeTargets, params: DecodeParams, shape: tuple, paths: S.Paths) -> dict:
    ctx = chunk.core.grow(1)
    labels, s = fragment_chunk(_affs(t, ctx, params), chunk.core, ctx, chunk.id, _kernel_params(params), shape)
    zarr.open_array(t.fragments, mode="r+")[chunk.core.slices()] = labels
    S.save(paths.file("pieces", chunk.id), {"ids": s.ids, "sizes": s.sizes, "keys": s.keys, "faces": s.faces})
    return {"pieces": np.int64(s.ids.size)}


def stage_links(chunk: Chunk, t: DecodeTargets, params: DecodeParams, shape: tuple, paths: S.Paths) -> dict:
    ctx = chunk.core.grow(1)
    pairs = link_chunk(_affs(t, ctx, params), _read_labels(t.fragments, ctx, shape), chunk.core, ctx,
                       _kernel_params(params), shape)
    S.save(paths.file("links", chunk.id), {"pairs": pairs})
    return {"links": np.int64(len(pairs))}


def stage_region_graph(chunk: Chunk, grid: ChunkGrid, t: DecodeTargets, params: DecodeParams, full: bool,
                       paths: S.Paths) -> dict:
    """Stage C: edges between whole fragments counted by this chunk (it reads the stage-A labels of its
    core and of the -z/-y/-x faces before it, and those chunks' piece -> fragment tables)."""
    shape = tuple(grid.shape)
    ctx = chunk.core.grow(1)
    near = stage_c_chunks(grid, chunk)
    lookup, frags = S.region_graph_inputs(paths, near)
    labels = _read_labels(t.fragments, ctx, shape)
    edges = region_graph_chunk(_affs(t, ctx, params), labels, chunk.core, ctx, _kernel_params(params), full,
                               lookup=lookup, volume_shape=shape)
    _, own = S.load_fraginfo(paths, chunk.id)
    table = None
    if t.labels is not None:
        table = M.contingency(lookup(labels[chunk.core.slices(ctx)]), t.labels.read(chunk.core, 0))
    S.save(paths.file("graph", chunk.id), S.graph_record(chunk.id, own, frags, edges, table))
    return {"edges": np.int64(len(edges))}


def stage_segmentation(chunk: Chunk, t: DecodeTargets, paths: S.Paths, trial: S.Trial) -> dict:
    """Stage D: relabel the stored fragments with the first threshold's segment ids."""
    piece_ids, info = S.load_fraginfo(paths, chunk.id)
    frag_ids, names = S.final_ids(paths, chunk.id, trial)
    to_segment = IdLookup(piece_ids, info.canonical).compose(IdLookup(frag_ids, names[0]))
    arr = zarr.open_array(t.fragments, mode="r")
    seg = relabel_chunk(np.asarray(arr[chunk.core.slices()]), to_segment)
    zarr.open_array(t.segmentation, mode="r+")[chunk.core.slices()] = seg
    # a segment is counted by the chunk holding its name-giving fragment's first piece (one chunk each)
    f = S.load(paths.file("final", chunk.id, trial=trial.name))
    rid = f["final_rid"][0][np.isin(f["fragments"], info.canonical)]
    rid = np.unique(rid[rid != 0])
    return {"segments": np.int64(((rid >> np.uint64(40)) == np.uint64(chunk.id)).sum())}


def threshold_tables(chunk: Chunk, paths: S.Paths, trials: Sequence[S.Trial]) -> list[M.Contingency]:
    """The chunk's contingency table of every (trial, threshold) segmentation, from its fragment
    table (no voxel is read again)."""
    g = S.load(paths.file("graph", chunk.id))
    frag = M.Contingency(g["ct_seg"], g["ct_gt"], g["ct_count"])
    out = []
    for trial in trials:
        f = S.load(paths.file("final", chunk.id, trial=trial.name))
        for i in range(f["final_rid"].shape[0]):
            out.append(M.aggregate_contingency(frag, IdLookup(f["fragments"], f["final_rid"][i])))
    return out


# ---- client side ------------------------------------------------------------------------------------
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


def trial_of(params: DecodeParams, name: str = "", merge_function: Optional[str] = None) -> S.Trial:
    """One agglomeration of the decode: ``params``, with ``merge_function`` instead of its own if given."""
    return S.Trial(name, params.replace(merge_function=merge_function) if merge_function else params)


@dataclass
class Upstream:
    """Stages submitted before decoding (e.g. inference) that it overlaps with: their runs, and per chunk
    the future that writes that chunk's affinities (decoding tasks of a chunk wait for those they read)."""

    runs: list[StageRun]
    futures: dict[int, Any]
    prefer: Optional[list[str]] = None  # workers the decoding stages should prefer (CPU beside GPU)


class Submitter:
    """Submits the decode's stages in dependency order without waiting; remembers every run."""

    def __init__(self, client: Client, state: RunState, grid: ChunkGrid, progress: bool,
                 prefer: Optional[list[str]] = None) -> None:
        self.client, self.state, self.grid, self.progress, self.prefer = client, state, grid, progress, prefer
        self.tree = Octree(grid)
        self.runs: list[StageRun] = []

    def stage(self, name: str, items: Sequence[Chunk], func: Callable, args_for: Callable,
              deps_for: Optional[Callable] = None) -> StageRun:
        run = submit_stage(self.client, self.state, name, items, func, args_for, deps_for=deps_for,
                           prefer=self.prefer, progress=self.progress)
        self.runs.append(run)
        return run

    def octree(self, name: str, up: Callable, down: Callable, args: tuple, leaf_deps: Callable[[int], list]
               ) -> dict[int, Any]:
        """Bottom-up then top-down over the octree; returns the level-0 top-down futures by chunk id."""
        tree = self.tree
        ups: dict[tuple[int, int], Any] = {}
        for level in tree.levels:
            blocks = list(tree.blocks(level))
            by_index = {b.index: b for b in blocks}

            def deps(c: Chunk, level=level, by_index=by_index) -> list:
                b = by_index[c.index]
                if level == 0:
                    return leaf_deps(b.id)
                return [ups.get((level - 1, k.id)) for k in tree.children(b)]

            run = self.stage(f"{name}-up-L{level}", [tree.as_chunk(b) for b in blocks], up,
                             lambda c, level=level: (tree, level) + args, deps)
            ups.update({(level, cid): f for cid, f in run.futures.items()})
        downs: dict[tuple[int, int], Any] = {}
        for level in reversed(tree.levels):
            blocks = list(tree.blocks(level))
            by_index = {b.index: b for b in blocks}

            def deps(c: Chunk, level=level, by_index=by_index) -> list:
                b = by_index[c.index]
                parent = tree.parent(b)
                return [ups.get((level, b.id))] + ([downs.get((level + 1, parent.id))] if parent else [])

            run = self.stage(f"{name}-down-L{level}", [tree.as_chunk(b) for b in blocks], down,
                             lambda c, level=level: (tree, level) + args, deps)
            downs.update({(level, cid): f for cid, f in run.futures.items()})
        return {tree.grid.flat_id(b.lo): downs.get((0, b.id)) for b in tree.blocks(0)}


@dataclass
class FragmentStages:
    """The submitted stages up to the region graph, and where their files are."""

    targets: DecodeTargets
    paths: S.Paths
    graph: dict[int, Any]  # region-graph futures by chunk id


def submit_fragments(sub: Submitter, t: DecodeTargets, params: DecodeParams, full_histograms: bool,
                     upstream: Optional[Upstream] = None) -> FragmentStages:
    """Stages A, B, the fragment join and stage C."""
    grid, paths = sub.grid, S.Paths(str(sub.state.dir / "data"))
    chunks = list(grid)
    shape = tuple(grid.shape)
    up = upstream or Upstream([], {})

    def near(c: Chunk) -> list[Chunk]:
        return [c] + grid.neighbours(c)

    frag = sub.stage("fragments", chunks, stage_fragments, lambda c: (t, params, shape, paths),
                     lambda c: [up.futures.get(n.id) for n in near(c)])
    links = sub.stage("links", chunks, stage_links, lambda c: (t, params, shape, paths),
                      lambda c: [frag.futures.get(n.id) for n in near(c)])
    fraginfo = sub.octree("join", S.join_up, S.join_down, (paths,),
                          lambda cid: [frag.futures.get(cid), links.futures.get(cid)])
    graph = sub.stage("region-graph", chunks, stage_region_graph, lambda c: (grid, t, params, full_histograms, paths),
                      lambda c: [fraginfo.get(i) for i in stage_c_chunks(grid, c)]
                      + [frag.futures.get(i) for i in stage_c_chunks(grid, c)]
                      + [up.futures.get(n.id) for n in near(c)])
    return FragmentStages(t, paths, graph.futures)


def submit_agglomeration(sub: Submitter, fs: FragmentStages, trial: S.Trial, prefix: str = "") -> dict[int, Any]:
    """Agglomeration (+ dust) of one trial; returns the per-chunk futures of its ``final`` names."""
    grid, paths = sub.grid, fs.paths
    chunks = list(grid)
    if trial.params.backend in ("python", "waterz"):
        g = sub.stage(f"{prefix}gather", [Chunk((0, 0, 0), 0, grid.volume, grid.volume)], S.gather,
                      lambda c: (grid, paths, trial),
                      lambda c: list(fs.graph.values()))
        return {c.id: g.futures.get(0) for c in chunks}
    names = sub.octree(f"{prefix}merge", S.merge_up, S.merge_down, (paths, trial), lambda cid: [fs.graph.get(cid)])
    before = names
    if trial.params.dust_limit > 0:
        before = sub.octree(f"{prefix}dust", S.dust_up, S.dust_down, (paths, trial),
                            lambda cid: [names.get(cid), fs.graph.get(cid)])
    final = sub.stage(f"{prefix}finalize", chunks, S.finalize, lambda c: (paths, trial),
                      lambda c: [before.get(c.id)])
    return final.futures


def prepare_outputs(out: Path, grid: ChunkGrid, voxel_size: Optional[Sequence[float]]) -> tuple[str, str]:
    """Create (or reopen) work/fragments and the segmentation, aligned to the chunk grid."""
    shape = tuple(grid.shape)
    root = open_root(out)
    store = tuple(grid.align)
    check_alignment(shape, store, [c.core for c in grid])  # no two tasks ever write one storage chunk
    frag_arr = create_fragments(root, shape, store)
    seg_arr = create_segmentation(root, shape, store, voxel_size)
    return f"{out}/{frag_arr.path}", f"{out}/{seg_arr.path}"


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
    upstream: Optional[Upstream] = None,
) -> dict[str, Any]:
    """Decode ``affinities`` into ``out`` (an OME-Zarr group) on ``client``; return the metrics dict.

    ``grid`` must be aligned to the storage chunks (``ChunkGrid(..., align=storage_aligned(...))``).
    The caller has claimed ``out`` for this configuration (:meth:`RunState.claim`). With ``upstream``
    (inference), decoding a chunk starts as soon as it and its neighbours have affinities.
    """
    frag_path, seg_path = prepare_outputs(out, grid, voxel_size)
    t = DecodeTargets(affinities, frag_path, seg_path, labels)
    state = RunState(out)
    up = upstream or Upstream([], {})
    sub = Submitter(client, state, grid, progress, up.prefer)
    trial = trial_of(params)
    fs = submit_fragments(sub, t, params, params.full_histograms, up)
    final = submit_agglomeration(sub, fs, trial)
    consecutive = params.segment_ids == "consecutive"
    written = t
    if consecutive:  # packed ids first, renumbered 1..N below
        root = open_root(out)
        packed = create_work_array(root, "segmentation-ids", tuple(grid.shape), np.uint64, tuple(grid.align))
        written = dataclasses.replace(t, segmentation=f"{out}/{packed.path}")
    seg = sub.stage("segmentation", list(grid), stage_segmentation,
                    lambda c: (written, fs.paths, trial), lambda c: [final.get(c.id)])
    done = collect(up.runs + sub.runs, state, record=record)
    if consecutive:
        from em_chunks.engine.consecutive import run_consecutive

        run_consecutive(client, state, grid, written.segmentation, t.segmentation, "packed", record=record,
                        progress=progress)
    metrics: dict[str, Any] = {
        "fragments": int(sum(int(s["fragments"]) for st, r in done.items() if st.startswith("join-up")
                             for s in r.values())),
        "region_graph_edges": _edges(done, params.backend),
        "segments": int(sum(int(s["segments"]) for s in done[seg.stage].values())),
        "threshold": params.thresholds[0],
        "agglomeration": params.backend,
    }
    if labels is not None:
        from em_chunks.engine.metrics_reduce import contingency_scores

        per = contingency_scores(client, list(grid), threshold_tables, lambda c: (fs.paths, [trial]),
                                 len(params.thresholds), record=record, progress=progress)
        per_threshold = [{"threshold": thr, **s} for thr, s in zip(params.thresholds, per)]
        metrics.update({k: v for k, v in per_threshold[0].items() if k != "threshold"})
        if len(per_threshold) > 1:
            metrics["per_threshold"] = per_threshold
    return metrics


def _edges(done: dict, backend: str) -> int:
    if backend in ("python", "waterz"):
        return int(next(iter(done["gather"].values()))["edges"])
    return int(sum(int(s["edges"]) for st, r in done.items() if st.startswith("merge-up") for s in r.values()))


def run_tune(
    client: Client,
    affinities: Source,
    out: Path,
    grid: ChunkGrid,
    params: DecodeParams,
    merge_functions: Sequence[str],
    labels: Source,
    *,
    record: Optional[RunRecord] = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Score every merge function x threshold of ``params`` against ``labels``: the fragments and the
    region graph are built once, each merge function agglomerates them once for all thresholds (on the
    workers), and all the segmentations' metrics come from one reduction of fragment-level tables."""
    frag_path, seg_path = prepare_outputs(out, grid, None)
    t = DecodeTargets(affinities, frag_path, seg_path, labels)
    state = RunState(out)
    sub = Submitter(client, state, grid, progress)
    trials = [trial_of(params, name=mf, merge_function=mf) for mf in merge_functions]
    fs = submit_fragments(sub, t, params, any(tr.params.full_histograms for tr in trials))
    for tr in trials:
        submit_agglomeration(sub, fs, tr, prefix=f"{tr.name}/")
    collect(sub.runs, state, record=record)
    from em_chunks.engine.metrics_reduce import contingency_scores

    n_t = len(params.thresholds)
    scores = contingency_scores(client, list(grid), threshold_tables, lambda c: (fs.paths, trials),
                                len(trials) * n_t, record=record, progress=progress)
    return [{"merge_function": tr.name, "threshold": thr, **scores[i * n_t + j]}
            for i, tr in enumerate(trials) for j, thr in enumerate(params.thresholds)]
