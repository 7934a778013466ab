"""Multiscale pyramids, level by level, one Dask task per box of the level being written.

Level ``k+1`` is made from level ``k`` (stage ``pyramid-<array>-<k+1>``, resumable like every
stage): a task reads its box's blocks of level ``k``, downsamples them with an
:mod:`em_chunks.ops.downsample` kernel and writes whole storage chunks of level ``k+1``. Boxes are
groups of storage chunks sized so a task reads at most ``budget_voxels`` voxels (per channel):
memory is bounded by that, never by the volume. The NGFF metadata lists the new levels only once all
of them are written.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import zarr
from distributed import Client

from em_chunks.config.output import OutputConfig
from em_chunks.engine.record import RunRecord
from em_chunks.engine.runner import run_stage
from em_chunks.engine.state import RunState
from em_chunks.geometry import Box, Chunk
from em_chunks.io import layout
from em_chunks.io.ome_zarr import create_level, set_levels, voxel_size_from_group
from em_chunks.ops.downsample import KERNELS, Factor, level_shape, plan_factors

KIND_OF = {"image": "mean", layout.SEGMENTATION: "mode"}


@dataclass(frozen=True)
class LevelJob:
    """One level to write (plain values: it travels to the workers)."""

    src: str  # zarr array path of level k
    dst: str  # zarr array path of level k+1
    factor: Factor
    kind: str  # "mean" or "mode"


def stage_level(chunk: Chunk, job: LevelJob) -> dict:
    """Worker side: ``dst[core] = downsample(src[blocks of core])``."""
    src = zarr.open_array(job.src, mode="r")
    spatial = tuple(src.shape[-3:])
    inside = Box(
        tuple(b * f for b, f in zip(chunk.core.begin, job.factor)),
        tuple(s * f for s, f in zip(chunk.core.shape, job.factor)),
    ).intersect(Box.from_shape(spatial))
    lead = (slice(None),) * (src.ndim - 3)
    data = np.asarray(src[lead + inside.slices()])
    out = KERNELS[job.kind](data, job.factor)
    zarr.open_array(job.dst, mode="r+")[lead + chunk.core.slices()] = out
    return {"voxels": np.int64(out.size)}


def level_boxes(
    shape: Sequence[int], storage: Sequence[int], factor: Sequence[int], budget_voxels: int
) -> list[Chunk]:
    """The tasks of one level: boxes of whole storage chunks of ``shape`` (z, y, x) whose input (the
    box times ``factor``) holds at most ``budget_voxels`` voxels, or one storage chunk when that is
    more."""
    group = [1, 1, 1]
    while True:
        grown = False
        for axis in sorted(range(3), key=lambda a: group[a] * storage[a] * factor[a]):
            if group[axis] * storage[axis] >= shape[axis]:
                continue
            trial = list(group)
            trial[axis] *= 2
            if (
                int(np.prod([g * c * f for g, c, f in zip(trial, storage, factor)]))
                <= budget_voxels
            ):
                group, grown = trial, True
                break
        if not grown:
            break
    step = [g * c for g, c in zip(group, storage)]
    bounds = [list(range(0, s, st)) + [s] for s, st in zip(shape, step)]
    pieces = [len(b) - 1 for b in bounds]
    chunks = []
    for idx in itertools.product(*(range(n) for n in pieces)):
        box = Box.from_bounds(
            tuple(b[i] for b, i in zip(bounds, idx)), tuple(b[i + 1] for b, i in zip(bounds, idx))
        )
        cid = int(np.ravel_multi_index(idx, pieces))
        chunks.append(Chunk(index=idx, id=cid, core=box, context=box))
    return chunks


def pyramid_plan(
    shape: Sequence[int], voxel_size: Optional[Sequence[float]], config: OutputConfig
) -> list[Factor]:
    """The per-level factors this output gets ([] when no pyramid): the same for its image and
    labels."""
    if not config.wants_pyramid(tuple(shape[-3:])):
        return []
    return plan_factors(shape[-3:], voxel_size, config.pyramid_tile)


def write_pyramid(
    client: Client,
    out: str | Path,
    array_name: str,
    kind: Optional[str] = None,
    *,
    config: Optional[OutputConfig] = None,
    budget_voxels: int = 1 << 24,
    record: Optional[RunRecord] = None,
    progress: bool = True,
) -> list[Factor]:
    """Add pyramid levels to the multiscale group ``array_name`` (``"image"``: the root image, or a
    label such as ``"segmentation"``) of ``out``; ``kind`` is ``"mean"`` or ``"mode"`` (default by
    array).

    Returns the cumulative factor of every level (level 0 included). Run it after the stages that
    write level 0 have finished; a rerun skips the boxes already written.
    """
    config = config or OutputConfig()
    kind = kind or KIND_OF.get(array_name, "mode")
    gpath = layout.group_of(out, array_name)
    group = zarr.open_group(str(gpath), mode="r+")
    base = group[layout.level_name(0)]
    voxel = voxel_size_from_group(group)
    steps = pyramid_plan(base.shape, voxel, config)
    factors: list[Factor] = [(1, 1, 1)]
    storage = tuple(base.chunks)
    state = RunState(out)
    shape = tuple(base.shape)
    for level, step in enumerate(steps, start=1):
        shape = level_shape(shape, step)
        create_level(group, level, shape, base.dtype, storage)
        job = LevelJob(
            f"{gpath}/{layout.level_name(level - 1)}",
            f"{gpath}/{layout.level_name(level)}",
            step,
            kind,
        )
        spatial_chunks = tuple(min(c, s) for c, s in zip(storage[-3:], shape[-3:]))
        boxes = level_boxes(shape[-3:], spatial_chunks, step, budget_voxels)
        run_stage(
            client,
            state,
            f"pyramid-{array_name}-{level}",
            boxes,
            stage_level,
            lambda c: (job,),
            record=record,
            progress=progress,
            load_summaries=False,
        )
        factors.append(tuple(a * b for a, b in zip(factors[-1], step)))  # type: ignore[arg-type]
    if steps:
        set_levels(group, factors)
    return factors


def write_pyramids(
    client: Client,
    out: str | Path,
    names: Sequence[str],
    config: Optional[OutputConfig] = None,
    *,
    budget_voxels: int = 1 << 24,
    record: Optional[RunRecord] = None,
    progress: bool = True,
) -> list[Factor]:
    """The pyramids of several groups of one output (their levels match, as NGFF labels require)."""
    factors: list[Factor] = [(1, 1, 1)]
    for name in names:
        factors = write_pyramid(
            client,
            out,
            name,
            config=config,
            budget_voxels=budget_voxels,
            record=record,
            progress=progress,
        )
    return factors
