"""``evaluate``: exact adapted Rand and VOI of a segmentation against labels, chunk by chunk."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Optional

from distributed import Client

from em_chunks.engine.cluster import connect
from em_chunks.engine.decode import check_labels
from em_chunks.engine.evaluate import auto_pieces, run_evaluate
from em_chunks.engine.record import write_json
from em_chunks.engine.source import Source
from em_chunks.errors import InputError
from em_chunks.geometry import ChunkGrid, parse_chunks
from em_chunks.io import layout


def _segmentation_source(path: str | Path) -> Source:
    """A segmentation volume; for an emchunks output group (any layout), its segmentation."""
    p = Path(path)
    if p.is_dir() and layout.label_group(p).is_dir():
        return Source.open(layout.segmentation_array(p))
    return Source.open(p)


def evaluate(
    segmentation: str | Path,
    labels: str | Path,
    chunks: Optional[str | tuple[int, int, int]] = None,
    *,
    scheduler: Optional[str] = None,
    workers: int = 2,
    client: Optional[Client] = None,
    metrics_out: Optional[str | Path] = None,
) -> dict[str, float]:
    """Metrics of ``segmentation`` vs ``labels`` (label 0 ignored), exact for any chunking."""
    seg = _segmentation_source(segmentation)
    if len(seg.shape) != 3:
        raise InputError(f"{seg.path}: a segmentation must be 3D (Z, Y, X), got shape {seg.shape}")
    seg.check_ids("segmentation")
    gt = Source.open_labels(labels)
    check_labels(gt, seg.shape)
    if metrics_out is not None:
        target = Path(metrics_out)
        if target.is_dir() or (target.parent.exists() and not target.parent.is_dir()):
            raise InputError(f"--metrics-out {target}: expected a file path (it is a folder, or inside a file)")
    pieces = parse_chunks(chunks, seg.shape) if chunks is not None else auto_pieces(seg.shape)
    grid = ChunkGrid(seg.shape, pieces)
    ctx = contextlib.nullcontext(client) if client is not None else connect(scheduler, workers)
    with ctx as c:
        scores = run_evaluate(c, seg, gt, grid)
    if metrics_out is not None:
        write_json(Path(metrics_out), {"segmentation": str(segmentation), "labels": str(labels), **scores})
    return scores
