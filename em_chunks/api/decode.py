"""``decode``: stored affinities -> segmentation (and metrics when labels are given)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
from distributed import Client

from em_chunks.api.run import completed, computing_run
from em_chunks.config.decode import DecodeConfig
from em_chunks.config.output import OutputConfig
from em_chunks.engine.decode import check_affinities, check_labels, run_decode
from em_chunks.engine.overview import create_overview, write_overview
from em_chunks.engine.cleanup import remove_intermediates
from em_chunks.engine.pyramid import write_pyramids
from em_chunks.engine.source import Source
from em_chunks.geometry import ChunkGrid, parse_chunks, storage_aligned
from em_chunks.ops.params import DecodeParams


def decode_params(config: DecodeConfig) -> DecodeParams:
    """The ops-layer parameters of a validated decode config (:meth:`DecodeConfig.params`)."""
    return config.params()


def decode(
    affinities: str | Path,
    out: str | Path,
    chunks: str | tuple[int, int, int] = (1, 1, 1),
    config: Optional[DecodeConfig] = None,
    labels: Optional[str | Path] = None,
    *,
    output: Optional[OutputConfig] = None,
    scheduler: Optional[str] = None,
    workers: int = 2,
    client: Optional[Client] = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Decode (C,Z,Y,X) affinities chunk by chunk into ``out`` (OME-Zarr); returns the metrics.

    Every input is checked before anything is written. A rerun with the same arguments resumes.
    """
    config = config or DecodeConfig()
    output = output or OutputConfig()
    params = decode_params(config)
    src = Source.open(affinities)
    check_affinities(src, params)
    shape = src.spatial_shape
    lab = Source.open_labels(labels) if labels is not None else None
    if lab is not None:
        check_labels(lab, shape, what=f"affinities {src.path} (spatial shape)")
    pieces = parse_chunks(chunks, shape)
    grid = ChunkGrid(shape, pieces, align=storage_aligned(shape, pieces))
    resolved = {
        "affinities": str(Path(affinities).resolve()),
        "shape": list(src.shape),
        "chunks": list(pieces),
        "labels": str(Path(labels).resolve()) if labels is not None else None,
        "decode": config.model_dump(mode="json"),
        "output": output.model_dump(mode="json"),
    }
    out = Path(out)
    done = completed("decode", out, resolved)
    if done is not None:
        return done
    voxel = src.voxel_size()
    with computing_run("decode", out, resolved, scheduler=scheduler, workers=workers,
                       client=client, voxels=int(np.prod(shape))) as run:
        kw = dict(record=run.record, progress=progress)
        create_overview(out, shape, grid.align, voxel)  # the image the segmentation belongs to
        run.metrics = run_decode(
            run.client, src, out, grid, params, labels=lab, record=run.record,
            voxel_size=voxel, progress=progress,
        )
        write_overview(run.client, out, grid, src, params.channels, **kw)
        write_pyramids(run.client, out, ["image", "segmentation"], output,
                       budget_voxels=max(c.core.size for c in grid), **kw)
    if not output.keep_intermediates:
        remove_intermediates(out)
    return run.metrics
