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
    out: Annotated[Path, typer.Option("--out", help="Working folder (fragments, region graph; resumable). Default: "
                                            "emchunks-tune.zarr in the current directory.")] = Path("emchunks-tune.zarr"),
    chunks: ChunksOpt = "1,1,1",
    config: Annotated[Optional[Path], typer.Option("--config", help="Workflow YAML; its decode: section is the base "
                                                   "(watershed bounds, dust, ids) of every trial.")] = None,
    threshold: Annotated[Optional[List[float]], typer.Option("--threshold", help="Threshold to try; repeat for "
                                                             "several (default 0.1, 0.2, .., 0.9).")] = None,
    thresholds: Annotated[Optional[str], typer.Option("--thresholds", help="The same as a comma-separated list.")] = None,
    merge_functions: Annotated[Optional[List[str]], typer.Option("--merge-function", help="Repeat to list several "
                                                                 "(default: aff85/75/50/25/15_his256, aff50_mean).")] = None,
    aff_threshold: Annotated[Optional[List[str]], typer.Option("--aff-threshold", help="LOW,HIGH watershed bounds; repeat to search several.")] = None,
    write: Annotated[Path, typer.Option("--write", help="Where the best setting is written as a workflow YAML.")] = Path("tuned-decoder.yaml"),
    top: Annotated[int, typer.Option("--top", help="Rows of the table to print.")] = 10,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the fragments and region graphs in --out (by default "
                                       "they are deleted when the search is done).")] = False,
    scheduler: SchedulerOpt = None,
    workers: WorkersOpt = 2,
) -> None:
    """Search merge functions x thresholds (x watershed bounds) against labels; write the best as YAML.

    Example: emchunks tune affs.zarr --labels labels.tif --chunks 2,2,2 --write best.yaml
    """
    from em_chunks.api.tune import AFF_THRESHOLDS, MERGE_FUNCTIONS, THRESHOLDS, best_workflow_yaml, tune
    from em_chunks.api.workflow import load_workflow
    from em_chunks.errors import InputError

    base = load_workflow(config, []).decode if config is not None else None
    ths = list(threshold or []) + (_floats(thresholds, "--thresholds") if thresholds else [])

    bounds = []
    for item in aff_threshold or []:
        vals = _floats(item, "--aff-threshold")
        if len(vals) != 2:
            raise InputError(f"--aff-threshold {item!r}: expected LOW,HIGH such as 0.1,0.999")
        bounds.append((vals[0], vals[1]))
    result = tune(
        affinities, labels, out, chunks,
        merge_functions=merge_functions or MERGE_FUNCTIONS,
        thresholds=ths or THRESHOLDS,
        aff_thresholds=bounds or ([tuple(base.aff_threshold)] if base is not None else AFF_THRESHOLDS),
        base=base, keep=keep, scheduler=scheduler, workers=workers,
    )
    table = Table(title="tune (best first)")
    for col, justify in (("merge function", "left"), ("threshold", "right"), ("watershed", "left"),
                         ("adapted Rand", "right"), ("VOI split", "right"), ("VOI merge", "right")):
        table.add_column(col, justify=justify, no_wrap=True)
    for row in result["trials"][:top]:
        low, high = row["aff_threshold"]
        table.add_row(row["merge_function"], f"{row['threshold']:.2f}", f"{low:g}-{high:g}",
                      f"{row['adapted_rand_error']:.4f}", f"{row['voi_split']:.4f}", f"{row['voi_merge']:.4f}")
    Console(width=max(100, Console().width)).print(table)
    write.write_text(best_workflow_yaml(result["best"], base))
    typer.echo(f"best setting written to {write}")
