"""Distributed inference: each window is computed once, by the chunk owning its centre, and blended
exactly, so affinities are bit-identical for any chunk grid (docs/inference.md).

  infer  (per chunk, GPU resource on dask-cuda): raw[owned context] -> model -> integer partial sums,
         saved under work/partials/<chunk>.npy (they overlap between chunks, so not in one zarr array)
  blend  (per chunk): own + neighbours' partial sums over the core -> normalise -> affinities[core]

The model is loaded once per worker process (cached by checkpoint path and mtime), not once per task.
Every task gets the same :class:`InferenceSpec`: the checkpoint, the window grid (``spec.sw``, planned on
the client without torch) and the options object (``spec.options``), which goes to the model runner
intact (docs/architecture.md, "Where each inference option lives").
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import zarr
from distributed import Client

from em_chunks.config.inference import InferenceOptions
from em_chunks.engine.runner import submit_stage
from em_chunks.engine.source import Source
from em_chunks.engine.state import RunState
from em_chunks.geometry import Box, Chunk, ChunkGrid
from em_chunks.geometry.window import SlidingWindow
from em_chunks.io import layout


@dataclass(frozen=True)
class InferenceSpec:
    """Everything a worker needs to run the model on a chunk (plain frozen values: it travels with the
    task): the checkpoint, the window grid and the options object, exactly as the client resolved them."""

    checkpoint: str
    sw: SlidingWindow
    options: InferenceOptions


@lru_cache(maxsize=2)
def _model(checkpoint: str, mtime: float, device: str) -> Any:
    """Once per worker process: load, move to the device, eval mode."""
    from em_chunks.learn.checkpoint import load_checkpoint
    from em_chunks.learn.inference import prepare_model

    model, _ = load_checkpoint(checkpoint, map_location="cpu")
    return prepare_model(model, device)


def worker_model(spec: InferenceSpec) -> Any:
    """The spec's model on this worker's device (``auto`` resolved here, where the GPUs are)."""
    import torch

    from em_chunks.learn.device import pick_device

    torch.set_num_threads(spec.options.torch_threads)
    return _model(spec.checkpoint, os.path.getmtime(spec.checkpoint), str(pick_device(spec.options.device)))


def partial_path(work: str, chunk_id: int) -> str:
    return f"{work}/{chunk_id}.npy"


def stage_infer(chunk: Chunk, raw: Source, spec: InferenceSpec, work: str) -> dict:
    from em_chunks.learn.inference import predict_partial

    sw = spec.sw
    ctx = sw.owned_context(chunk.core)
    data = raw.read(ctx, sw.boundary) if not ctx.empty else np.zeros((0, 0, 0), raw.dtype)
    model = worker_model(spec)
    box, sums = predict_partial(model, data, ctx, chunk.core, sw, spec.options)
    Path(work).mkdir(parents=True, exist_ok=True)
    tmp = f"{work}/.{chunk.id}.{uuid.uuid4().hex}.npy"
    np.save(tmp, sums)
    os.replace(tmp, partial_path(work, chunk.id))
    return {"box_offset": np.asarray(box.offset), "box_shape": np.asarray(box.shape), "windows": np.int64(len(sw.owned_windows(chunk.core)))}


def stage_blend(chunk: Chunk, spec: InferenceSpec, work: str, sources: Sequence[tuple[int, tuple, tuple]], out_path: str) -> dict:
    from em_chunks.learn.inference import blend_partials

    sw = spec.sw
    partials = []
    for cid, offset, shape in sources:
        box = Box(offset, shape)
        sums = np.load(partial_path(work, cid), mmap_mode="r")
        part = box.intersect(chunk.core)
        partials.append((part, np.asarray(sums[(slice(None),) + part.slices(box)])))
    affs = blend_partials(chunk.core, partials, sw, spec.options.output_dtype)
    zarr.open_array(out_path, mode="r+")[(slice(None),) + chunk.core.slices()] = affs
    return {"channels": np.int64(affs.shape[0])}


def chunks_reading(grid: ChunkGrid, boxes: dict[int, Box]) -> dict[int, set[int]]:
    """For every chunk, the chunks whose partial-sum box meets its core: O(chunks x overlap), found by
    bisecting the grid's boundaries (start-up stays fast with thousands of chunks)."""
    import bisect
    import itertools

    bounds = grid.bounds
    out: dict[int, set[int]] = {}
    for cid, box in boxes.items():
        if box.empty:
            continue
        ranges = [range(bisect.bisect_right(b, lo) - 1, bisect.bisect_left(b, hi))
                  for b, lo, hi in zip(bounds, box.begin, box.end)]
        for idx in itertools.product(*ranges):
            out.setdefault(grid.flat_id(idx), set()).add(cid)
    return out


def submit_inference(
    client: Client,
    raw: Source,
    out: Path,
    grid: ChunkGrid,
    spec: InferenceSpec,
    affinities_path: str,
    *,
    progress: bool = True,
    resources: Optional[dict] = None,
) -> Any:
    """Submit stages ``infer`` and ``blend`` (not waiting); returns an ``Upstream`` for the decoder.

    A chunk's blend waits only for the infer tasks whose partial sums reach its core, and the boxes are
    known up front (a function of the global window grid), so nothing waits for a whole stage.
    """
    from em_chunks.engine.cluster import cpu_workers_beside_gpus
    from em_chunks.engine.decode import Upstream

    state = RunState(out)
    work = str(layout.partials_dir(out))
    chunks = list(grid)
    sw = spec.sw
    boxes = {c.id: sw.partial_box(c.core) for c in chunks}
    readers = chunks_reading(grid, boxes)
    infer = submit_stage(client, state, "infer", chunks, stage_infer, lambda c: (raw, spec, work),
                         resources=resources, progress=progress)

    def sources_for(c: Chunk) -> tuple:
        src = [(cid, boxes[cid].offset, boxes[cid].shape) for cid in sorted(readers.get(c.id, ()))]
        return (spec, work, src, affinities_path)

    prefer = cpu_workers_beside_gpus(client) or None
    blend = submit_stage(client, state, "blend", chunks, stage_blend, sources_for,
                         deps_for=lambda c: [infer.futures.get(cid) for cid in sorted(readers.get(c.id, ()))],
                         prefer=prefer, progress=progress)
    return Upstream([infer, blend], blend.futures, prefer)
