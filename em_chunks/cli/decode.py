"""``emchunks decode`` and ``emchunks evaluate``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from typing_extensions import Annotated

from em_chunks.cli.options import ChunksOpt, SchedulerOpt, SetOpt, WorkersOpt, overrides_of
from em_chunks.cli.summary import print_metrics, print_outputs


def decode_command(
    ctx: typer.Context,
    affinities: Annotated[Path, typer.Argument(help="(C,Z,Y,X) affinities: zarr, TIFF or tile JSON; float32 0-1 or uint8 0-255.")],
    out: Annotated[Path, typer.Option("--out", help="Output OME-Zarr group (created; a rerun resumes).")],
    chunks: ChunksOpt = "1,1,1",
    labels: Annotated[Optional[Path], typer.Option("--labels", help="Ground-truth labels for evaluation (0 = ignored).")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="Workflow YAML; its decode: section is used.")] = None,
    threshold: Annotated[Optional[List[float]], typer.Option("--threshold", help="Agglomeration threshold(s); the first is written.")] = None,
    scheduler: SchedulerOpt = None,
    workers: WorkersOpt = 2,
    overrides: SetOpt = None,
) -> None:
    """Watershed + agglomeration of stored affinities, chunk by chunk, identical for any --chunks.

    Example: emchunks decode affs.zarr --chunks 2,4,4 --out seg.zarr --labels labels.tif
    """
    from em_chunks.api.decode import decode
    from em_chunks.api.workflow import load_workflow

    extra, names = overrides_of("decode", "decode", overrides, ctx.args)
    if threshold:
        extra.append(f"decode.thresholds=[{', '.join(str(t) for t in threshold)}]")
        names[extra[-1]] = " ".join(f"--threshold {t:g}" for t in threshold)
    wf = load_workflow(config, extra, names)
    metrics = decode(affinities, out, chunks, wf.decode, labels, output=wf.output,
                     scheduler=scheduler, workers=workers)
    print_metrics(metrics, title=f"decode -> {out}")
    print_outputs(out)


def evaluate_command(
    segmentation: Annotated[Path, typer.Argument(help="Segmentation (zarr/TIFF/tile JSON, or an emchunks output group).")],
    labels: Annotated[Path, typer.Option("--labels", help="Ground-truth labels (0 = ignored).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object with the five metrics.")] = False,
    chunks: Annotated[Optional[str], typer.Option("--chunks", help="Pieces per axis Z,Y,X (default: automatic).")] = None,
    metrics_out: Annotated[Optional[Path], typer.Option("--metrics-out", help="Also write the metrics to this JSON file.")] = None,
    scheduler: SchedulerOpt = None,
    workers: WorkersOpt = 2,
) -> None:
    """Exact adapted Rand error (precision, recall) and VOI split/merge, summed over chunks.

    Example: emchunks evaluate seg.zarr --labels labels.tif --json
    """
    from em_chunks.api.evaluate import evaluate

    scores = evaluate(segmentation, labels, chunks, scheduler=scheduler, workers=workers, metrics_out=metrics_out)
    if as_json:
        typer.echo(json.dumps(scores))
    else:
        print_metrics(scores, title="evaluate")
