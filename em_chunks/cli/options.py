"""Options shared by every command that computes (cluster selection, chunk grid)."""

from __future__ import annotations

from typing import Optional

import typer
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
