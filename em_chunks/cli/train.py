"""``emchunks train``: a thin wrapper over :func:`em_chunks.api.train.train`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated

from em_chunks.cli.options import SchedulerOpt, SetOpt, WorkersOpt, overrides_of


def train_command(
    ctx: typer.Context,
    tiles_json: Annotated[str, typer.Argument(help="Training image: tile JSON (its 'label'/'valid_mask' keys give targets), TIFF or zarr.")],
    labels: Annotated[Optional[str], typer.Option("--labels", help="Labels, when not in TILES_JSON (tile JSON, TIFF or zarr).")] = None,
    valid_mask: Annotated[Optional[str], typer.Option("--valid-mask", help="Valid mask volume (nonzero = labels to trust).")] = None,
    config: Annotated[Optional[str], typer.Option("--config", help="Workflow YAML (or a shipped one by name, e.g. fib-quick); its 'train:' section is used.")] = None,
    out: Annotated[Path, typer.Option("--out", help="Folder for checkpoints, metrics.json, run.json and TensorBoard logs.")] = Path("train-out"),
    iterations: Annotated[Optional[int], typer.Option("--iterations", min=1, help="Training iterations (overrides the config).")] = None,
    chunks: Annotated[Optional[str], typer.Option("--chunks", help="Pieces per axis Z,Y,X (PyTC DATA_CHUNK_NUM).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last.pt.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace the run in --out (its checkpoints are deleted).")] = False,
    scheduler: SchedulerOpt = None,
    workers: WorkersOpt = 2,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No live progress bar: periodic progress lines instead.")] = False,
    overrides: SetOpt = None,
) -> None:
    """Train an affinity model on TILES_JSON, with batches made by Dask workers from chunk iterators.

    Ctrl-C saves a checkpoint: the same command with --resume continues from it.

    A folder that holds a run is reused only with --resume or --overwrite.

    Examples:
      emchunks train tiles/tiles.json --config fib-quick --out model/
      emchunks train image.tif --labels labels.tif --out model/ --set train.iterations=2000
      emchunks train tiles/tiles.json --config fib-quick --out model/ --resume
    """
    import json

    from em_chunks.api.train import train
    from em_chunks.api.workflow import resolve_workflow_path
    from em_chunks.geometry import parse_chunks
    from em_chunks.learn.config import load_train_config

    extra, names = overrides_of("train", "train", overrides, ctx.args)
    volume = {"image": str(tiles_json)}
    if labels:
        volume["label"] = str(labels)
    if valid_mask:
        volume["valid_mask"] = str(valid_mask)
    flags = {}
    # the command-line volume replaces the config's volumes; validation volumes stay
    flags["train.data.volumes=" + json.dumps([volume])] = "TILES_JSON/--labels/--valid-mask"
    if iterations is not None:
        flags[f"train.iterations={iterations}"] = f"--iterations {iterations}"
    if chunks is not None:
        flags["train.data.chunks=" + json.dumps(list(parse_chunks(chunks)))] = f"--chunks {chunks}"
    # the flags' values first: an explicit KEY=VALUE override (e.g. data.volumes=...) wins over them
    config = resolve_workflow_path(config)  # a path, or a built-in/shipped workflow by name (fib-quick)
    cfg = load_train_config(config, list(flags) + extra, source=str(config) if config else "command line",
                            override_names={**flags, **names})
    metrics = train(cfg, out, scheduler=scheduler, workers=workers, resume=resume, overwrite=overwrite,
                    progress=not no_progress)
    typer.echo(training_summary(metrics, out))


def training_summary(metrics: dict, out: Path) -> str:
    """One line naming each figure: train loss (EMA), validation loss, the best checkpoint's score."""
    n, planned = metrics.get("iterations", 0), metrics.get("iterations_planned", metrics.get("iterations", 0))
    why = {"time_limit": " (time limit reached)", "interrupt": " (interrupted)"}.get(metrics.get("stopped_by", ""), "")
    parts = [f"trained {n} of {planned} iterations{why}"]
    if metrics.get("train_loss_ema") is not None:
        parts.append(f"train loss (EMA) {metrics['train_loss_ema']:.4f}")
    if metrics.get("validation_loss") is not None:
        parts.append(f"validation loss {metrics['validation_loss']:.4f}")
    best = metrics.get("best_checkpoint")
    if best:
        parts.append(f"best.pt = iteration {best['iteration']} ({best['score_is']} {best['score']:.4f})")
    if metrics.get("iterations_per_s"):
        parts.append(f"{metrics['iterations_per_s']:.2f} it/s, loader wait {100 * metrics.get('loader_wait_fraction', 0):.0f}%")
    if metrics.get("elapsed_s") is not None:
        parts.append(f"training took {metrics['elapsed_s'] / 60:.1f} min")
    tuned = metrics.get("tuned_decoder")
    if tuned:
        d, s = tuned["decode"], tuned["scores"]
        parts.append(f"decoder in best.pt (predict uses it): {d['merge_function']} at threshold {d['thresholds'][0]:g}, "
                     f"validation adapted Rand {s['adapted_rand_error']:.4f} (search took "
                     f"{metrics.get('decoder_search_s', 0) / 60:.1f} min)")
    return "; ".join(parts) + f"; checkpoints in {out} (best.pt, last.pt)"
