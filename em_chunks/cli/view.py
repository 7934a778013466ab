"""``emchunks view``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated


def view_command(
    out: Annotated[
        Path, typer.Argument(help="An emchunks output (the OUT.zarr a decode or predict wrote).")
    ],
    raw: Annotated[
        Optional[str],
        typer.Option("--raw", help="The raw image too: tile JSON, TIFF or zarr (read lazily)."),
    ] = None,
    bind: Annotated[
        str,
        typer.Option("--bind", help="Address to serve on; 0.0.0.0 serves every network interface."),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, help="Viewer port (0: any free port).")] = 0,
    data_port: Annotated[
        int,
        typer.Option(
            "--data-port", min=0, help="Port of the output's file server (0: any free port)."
        ),
    ] = 0,
) -> None:
    """Show an output (and the raw image) in neuroglancer: prints the URL, serves until Ctrl-C.

    Needs the neuroglancer package (the 'view' extra of emchunks, or: pip install neuroglancer).

    Over SSH: fix both ports and tunnel them, ssh -L 9000:localhost:9000 -L 9001:localhost:9001
    HOST.

    Example: emchunks view result.zarr --raw tiles/tiles.json --port 9000 --data-port 9001
    """
    from em_chunks.api.view import view

    view(out, raw, bind=bind, port=port, data_port=data_port)
