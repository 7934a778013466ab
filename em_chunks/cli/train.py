"""``emchunks train``: a thin wrapper over :func:`em_chunks.learn.trainer.train`."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from typing_extensions import Annotated

from em_chunks.cli.options import SchedulerOpt, WorkersOpt


def train_command(
    tiles_json: Annotated[str, typer.Argument(help="Training image: tile JSON (its 'label'/'valid_mask' keys give targets), TIFF or zarr.")],
    overrides: Annotated[Optional[List[str]], typer.Argument(help="KEY=VALUE overrides of the train config, e.g. iterations=100 data.patch=[16,64,64].")] = None,
    labels: Annotated[Optional[str], typer.Option("--labels", help="Labels, when not in TILES_JSON (tile JSON, TIFF or zarr).")] = None,
    valid_mask: Annotated[Optional[str], typer.Option("--valid-mask", help="Valid mask volume (nonzero = labels to trust).")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="Workflow YAML; its 'train:' section is used.")] = None,
    out: Annotated[Path, typer.Option("--out", help="Folder for checkpoints and metrics.json.")] = Path("train-out"),
    iterations: Annotated[Optional[int], typer.Option("--iterations", min=1, help="Training iterations (overrides the config).")] = None,
    chunks: Annotated[Optional[str], typer.Option("--chunks", help="Pieces per axis Z,Y,X (PyTC DATA_CHUNK_NUM).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUT/last.pt.")] = False,
    scheduler: SchedulerOpt = None,
    workers: WorkersOpt = 2,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bar (logs only).")] = False,
) -> None:
    """Train an affinity model on TILES_JSON, with batches made by Dask workers from chunk iterators."""
    import json

    from em_chunks.engine.cluster import connect
    from em_chunks.geometry import parse_chunks
    from em_chunks.learn.config import load_train_config
    from em_chunks.learn.trainer import train

    extra = list(overrides or [])
    volume = {"image": str(tiles_json)}
    if labels:
        volume["label"] = str(labels)
    if valid_mask:
        volume["valid_mask"] = str(valid_mask)
    # the command-line volume replaces the config's volumes; validation volumes stay
    extra.append("train.data.volumes=" + json.dumps([volume]))
    if iterations is not None:
        extra.append(f"train.iterations={iterations}")
    if chunks is not None:
        extra.append("train.data.chunks=" + json.dumps(list(parse_chunks(chunks))))
    cfg = load_train_config(config, extra, source=str(config) if config else "command line")
    from em_chunks.learn.trainer import resolve_volumes

    resolve_volumes(cfg.data.volumes)  # refuse missing labels / mismatched shapes before starting a cluster
    with connect(scheduler, workers, gpu="never", echo=lambda m: typer.echo(m, err=True)) as client:
        metrics = train(cfg, out, client=client, resume=resume, progress=not no_progress,
                        log=lambda m: typer.echo(m, err=True))
    last = metrics["loss"][-1][1] if metrics["loss"] else float("nan")
    typer.echo(
        f"trained {metrics['iterations']} iterations: loss {last:.4f}, {metrics['iterations_per_s']:.2f} it/s, "
        f"loader wait {100 * metrics['loader_wait_fraction']:.0f}%; checkpoints in {out} (best.pt, last.pt)"
    )
