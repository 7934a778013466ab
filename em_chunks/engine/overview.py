"""The image a decode output shows its segmentation on: the mean of the affinities it decoded,
uint8.

A decode output has no affinities of its own (they stay where the user keeps them), but an NGFF
label needs an image to belong to; this one is 1 byte per voxel, written chunk by chunk (stage
``image``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import zarr
from distributed import Client

from em_chunks.engine.record import RunRecord
from em_chunks.engine.runner import run_stage
from em_chunks.engine.source import Source
from em_chunks.engine.state import RunState
from em_chunks.geometry import Chunk, ChunkGrid
from em_chunks.io import layout
from em_chunks.io.ome_zarr import create_root_image, open_root
from em_chunks.ops.affinity import mean_affinity_u8

NAME = "mean_affinity"


def create_overview(
    out: Path,
    shape: Sequence[int],
    storage_chunks: Sequence[int],
    voxel_size: Optional[Sequence[float]],
) -> zarr.Array:
    """Create the root image up front, so the segmentation created after it names it as its
    image."""
    return create_root_image(
        open_root(out), NAME, tuple(shape), np.uint8, tuple(storage_chunks), voxel_size
    )


def stage_image(chunk: Chunk, affinities: Source, channels: tuple[int, ...], dst: str) -> dict:
    affs = affinities.read(chunk.core, 0, channels=channels)
    zarr.open_array(dst, mode="r+")[chunk.core.slices()] = mean_affinity_u8(affs)
    return {"voxels": np.int64(chunk.core.size)}


def write_overview(
    client: Client,
    out: Path,
    grid: ChunkGrid,
    affinities: Source,
    channels: Sequence[int],
    *,
    record: Optional[RunRecord] = None,
    progress: bool = True,
) -> None:
    """Fill the root image from ``affinities`` (its ``channels``), one task per chunk of
    ``grid``."""
    dst = layout.image_array(out)
    run_stage(
        client,
        RunState(out),
        "image",
        list(grid),
        stage_image,
        lambda c: (affinities, tuple(channels), dst),
        record=record,
        progress=progress,
        load_summaries=False,
    )
