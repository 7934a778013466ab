"""``emchunks clean``: free what a run's output holds for resuming only."""

from __future__ import annotations

from pathlib import Path

import typer
from typing_extensions import Annotated


def clean_command(
    out: Annotated[Path, typer.Argument(help="An emchunks output (decode, predict or tune --out).")],
) -> None:
    """Delete work/ and the intermediate files of the global steps; results, run.json and metrics.json stay.

    A complete run does this by itself (unless output.keep_intermediates is set). A cleaned run that is
    not complete cannot resume: the same command then starts over.

    Example: emchunks clean result.zarr
    """
    from em_chunks.engine.cleanup import intermediates, remove_intermediates
    from em_chunks.errors import InputError
    from em_chunks.io import layout

    if not out.is_dir() or not layout.is_output(out):
        raise InputError(f"{out}: not an emchunks output (no {layout.run_dir(out).name}/ folder)")
    freed = remove_intermediates(out)
    left = intermediates(out)
    typer.echo(f"freed {freed / 2**20:.1f} MiB in {out}" + (f" (could not remove: {left})" if left else ""))
