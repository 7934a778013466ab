"""``emchunks predict`` and ``emchunks demo``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated

from em_chunks.cli.options import SchedulerOpt, SetOpt, WorkersOpt, overrides_of
from em_chunks.cli.summary import print_metrics, print_outputs


def predict_command(
    input: Annotated[Optional[str], typer.Argument(help="Image volume: tile JSON, TIFF or zarr. Omitted: the workflow's predict.input (default workflow: the built-in demo).")] = None,
    checkpoint: Annotated[Optional[Path], typer.Option("--checkpoint", help="A checkpoint written by emchunks train.")] = None,
    chunks: Annotated[Optional[str], typer.Option("--chunks", help="Pieces per axis Z,Y,X (PyTC DATA_CHUNK_NUM), e.g. 2,4,4.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Output OME-Zarr group (affinities, labels/segmentation); a rerun resumes.")] = None,
    labels: Annotated[Optional[str], typer.Option("--labels", help="Ground truth for evaluation (0 = ignored).")] = None,
    config: Annotated[Optional[str], typer.Option("--config", help="Workflow YAML (predict: and decode: sections), or a built-in name.")] = None,
    scheduler: SchedulerOpt = None,
    workers: WorkersOpt = 2,
    overrides: SetOpt = None,
) -> None:
    """Model -> affinities -> waterz decoding -> evaluation, chunk by chunk on the cluster.

    Examples:
      emchunks predict --chunks 2,4,4                      (the built-in demo)
      emchunks predict tiles.json --checkpoint model/best.pt --chunks 2,4,4 --out result.zarr --labels labels.tif
    """
    from em_chunks.api.demo import demo_paths
    from em_chunks.api.predict import predict
    from em_chunks.api.workflow import load_workflow

    extra, names = overrides_of("predict", "predict", overrides, None)
    wf = load_workflow(config if config is not None else ("demo" if input is None else None), extra, names)
    cfg = wf.predict_config()
    paths = demo_paths(input or cfg.input, checkpoint or cfg.checkpoint, labels or cfg.labels, out,
                       chunks if chunks is not None else cfg.chunks)
    metrics = predict(paths.input, paths.checkpoint, paths.out, chunks, wf, paths.labels, scheduler=scheduler,
                      workers=workers)
    print_metrics(metrics, title="predict")
    if "out" in metrics:
        print_outputs(Path(metrics["out"]))
    if "preview" in metrics:
        typer.echo(f"preview: {metrics['preview']}")


def demo_command(
    out: Annotated[Path, typer.Option("--out", help="Folder for the demo's data, model and results.")] = Path("emchunks-demo"),
    chunks: Annotated[str, typer.Option("--chunks", help="Pieces per axis for prediction.")] = "1,2,2",
    iterations: Annotated[Optional[int], typer.Option("--iterations", min=1, help="Training iterations (default: the demo workflow's).")] = None,
    scheduler: SchedulerOpt = None,
    workers: WorkersOpt = 2,
) -> None:
    """The whole pipeline on a built-in synthetic EM volume: tiles -> train -> predict -> decode -> evaluate.

    Example: emchunks demo --chunks 2,2,2
    """
    from em_chunks.api.demo import run_demo

    metrics = run_demo(out, chunks, iterations=iterations, scheduler=scheduler, workers=workers)
    print_metrics(metrics, title="emchunks demo")
    print_outputs(Path(metrics["out"]))
    typer.echo(f"preview: {metrics.get('preview')}")
