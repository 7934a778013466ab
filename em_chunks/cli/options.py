"""Options shared by every command that computes (cluster selection, chunk grid)."""

from __future__ import annotations

from typing import List, Optional

import typer

from em_chunks.errors import InputError
from typing_extensions import Annotated

SchedulerOpt = Annotated[
    Optional[str],
    typer.Option("--scheduler", help="Address of a running Dask scheduler, e.g. tcp://host:8786."),
]
WorkersOpt = Annotated[
    int,
    typer.Option("--workers", min=1, help="Worker processes of the local cluster started when no --scheduler."),
]
ChunksOpt = Annotated[
    str,
    typer.Option("--chunks", help="Pieces per axis Z,Y,X (PyTC DATA_CHUNK_NUM), e.g. 2,4,4."),
]
SetOpt = Annotated[
    Optional[List[str]],
    typer.Option("--set", metavar="SECTION.KEY=VALUE",
                 help="Override a workflow field, e.g. --set decode.merge_function=aff50_his256 (repeatable)."),
]
#: the old positional spellings (decode: ``decode.x=...``, train: ``x=...``) arrive as extra arguments
#: (``ctx.args``, not in the usage line): accepted for one release, with a deprecation line
LEGACY_ARGS = {"allow_extra_args": True}


def overrides_of(command: str, section: str, items: Optional[List[str]], legacy: Optional[List[str]]) -> tuple[list[str], dict[str, str]]:
    """The overrides of one command, one syntax for all: ``--set SECTION.KEY=VALUE``. Old positional
    ``KEY=VALUE`` items still apply (before the ``--set`` ones, which win), with a deprecation line naming
    the new spelling. Returns (overrides, how to name each in an error)."""
    names = {item: f"--set {item}" for item in items or []}
    old = list(legacy or [])
    stray = [o for o in old if "=" not in o]
    if stray:
        raise InputError(f"emchunks {command}: unexpected argument {stray[0]!r}; overrides are --set SECTION.KEY=VALUE")
    if old:
        new = [o if o.split("=", 1)[0].split(".")[0] in _SECTIONS else f"{section}.{o}" for o in old]
        typer.echo(f"emchunks {command}: positional overrides are deprecated and stop working in the next release; "
                   f"write {' '.join('--set ' + n for n in new)}", err=True)
    return old + list(items or []), names


_SECTIONS = ("train", "predict", "decode", "output", "name", "description", "voxel_size", "format_version")
