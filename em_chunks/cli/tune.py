"""``emchunks tune``: decoder parameter search reusing one pass over the data."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table
from typing_extensions import Annotated

from em_chunks.cli.options import ChunksOpt, SchedulerOpt, WorkersOpt


def _floats(text: str, name: str) -> list[float]:
    from em_chunks.errors import InputError

    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"{name} {text!r}: expected comma-separated numbers") from None


def tune_command(
    affinities: Annotated[Path, typer.Argument(help="(C,Z,Y,X) affinities (zarr, TIFF or tile JSON).")],
    labels: Annotated[Path, typer.Option("--labels", help="Ground-truth labels (0 = ignored).")],
    out: Annotated[Path, typer.Option("--out", help="Working directory for the fragments (resumable).")] = Path("emchunks-tune.zarr"),
    chunks: ChunksOpt = "1,1,1",
    thresholds: Annotated[str, typer.Option("--thresholds", help="Comma-separated thresholds.")] = "0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9",
    merge_functions: Annotated[Optional[List[str]], typer.Option("--merge-function", help="Repeat to list several (default: aff85/75/50/25/15_his256).")] = None,
    aff_threshold: Annotated[Optional[List[str]], typer.Option("--aff-threshold", help="LOW,HIGH watershed bounds; repeat to search several.")] = None,
    write: Annotated[Path, typer.Option("--write", help="Where the best setting is written as a workflow YAML.")] = Path("tuned-decoder.yaml"),
    top: Annotated[int, typer.Option("--top", help="Rows of the table to print.")] = 10,
    scheduler: SchedulerOpt = None,
    workers: WorkersOpt = 2,
) -> None:
    """Search merge functions x thresholds (x watershed bounds) against labels; write the best as YAML.

    Example: emchunks tune affs.zarr --labels labels.tif --chunks 2,2,2 --write best.yaml
    """
    from em_chunks.api.tune import AFF_THRESHOLDS, MERGE_FUNCTIONS, best_workflow_yaml, tune
    from em_chunks.errors import InputError

    bounds = []
    for item in aff_threshold or []:
        vals = _floats(item, "--aff-threshold")
        if len(vals) != 2:
            raise InputError(f"--aff-threshold {item!r}: expected LOW,HIGH such as 0.1,0.999")
        bounds.append((vals[0], vals[1]))
    result = tune(
        affinities, labels, out, chunks,
        merge_functions=merge_functions or MERGE_FUNCTIONS,
        thresholds=_floats(thresholds, "--thresholds"),
        aff_thresholds=bounds or AFF_THRESHOLDS,
        scheduler=scheduler, workers=workers,
    )
    table = Table(title="tune (best first)")
    for col in ("merge_function", "threshold", "aff_threshold", "adapted_rand_error", "voi_split", "voi_merge"):
        table.add_column(col)
    for row in result["trials"][:top]:
        table.add_row(row["merge_function"], f"{row['threshold']:.2f}", str(row["aff_threshold"]),
                      f"{row['adapted_rand_error']:.4f}", f"{row['voi_split']:.4f}", f"{row['voi_merge']:.4f}")
    Console().print(table)
    write.write_text(best_workflow_yaml(result["best"]))
    typer.echo(f"best setting written to {write}")
