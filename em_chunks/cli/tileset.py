"""``emchunks tileset make|info``: turn any volume into a PyTC tile grid, and inspect one."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated

from em_chunks.errors import InputError

tileset_app = typer.Typer(
    name="tileset",
    help="Make and inspect PyTC tile grids (PNG tiles + a tile JSON).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@tileset_app.command("make")
def make_command(
    volume: Annotated[str, typer.Argument(help="Volume to tile: TIFF stack, zarr array or tile JSON.")],
    out_dir: Annotated[Path, typer.Argument(help="Folder for the PNG tiles and tiles.json.")],
    labels: Annotated[Optional[str], typer.Option("--labels", help="Label volume (same shape) to tile beside.")] = None,
    valid_mask: Annotated[Optional[str], typer.Option("--valid-mask", help="Valid-mask volume (same shape, nonzero = labels to trust) to tile beside.")] = None,
    tile_size: Annotated[int, typer.Option("--tile-size", min=1, help="Tile height and width in pixels.")] = 512,
    key: Annotated[Optional[str], typer.Option("--key", help="Array inside a zarr group (or tile-JSON layer).")] = None,
    label_key: Annotated[Optional[str], typer.Option("--label-key", help="Array inside the labels' zarr group.")] = None,
    pad_edges: Annotated[bool, typer.Option("--pad-edges", help="Write full-size edge tiles padded with 0.")] = False,
    absolute_paths: Annotated[bool, typer.Option("--absolute-paths", help="Absolute tile paths in the JSON (for PyTC).")] = False,
    crop: Annotated[Optional[str], typer.Option("--crop", help="Tile only this part, z0:z1,y0:y1,x0:x1.")] = None,
) -> None:
    """Write VOLUME (and --labels) as PNG tiles, one folder per section, plus a PyTC tile JSON.

    Example: emchunks tileset make image.tif tiles/ --labels labels.tif --tile-size 512
    """
    from em_chunks.io.tileset import TileSet
    from em_chunks.io.tileset_make import make_tileset

    path = make_tileset(volume, out_dir, labels=labels, valid_mask=valid_mask, tile_size=tile_size, key=key, label_key=label_key,
                        pad_edges=pad_edges, absolute_paths=absolute_paths, crop=crop)
    ts = TileSet.from_json(path)
    rows, cols = ts.tile_grid()
    typer.echo(f"wrote {path}: shape {ts.shape} {ts.spec.dtype}, {rows}x{cols} tiles of {tile_size} per section, "
               f"layers {', '.join(ts.layers)}")


@tileset_app.command("info")
def info_command(
    tiles_json: Annotated[Path, typer.Argument(help="A PyTC tile JSON.")],
    quick: Annotated[bool, typer.Option("--quick", help="Check PNG headers only, do not decode every tile.")] = False,
    threads: Annotated[int, typer.Option("--threads", min=1, help="Threads for checking tiles (no cluster is started).")] = 2,
) -> None:
    """Shape, dtype and tile grid of TILES_JSON; checks every tile (missing, unreadable, wrong size/dtype).

    Example: emchunks tileset info tiles/tiles.json --quick
    """
    from em_chunks.io.tileset import TileSet

    ts = TileSet.from_json(tiles_json)
    spec = ts.spec
    rows, cols = ts.tile_grid()
    th, tw = ts.tile_shape()
    typer.echo(f"tile json:  {tiles_json}")
    typer.echo(f"shape:      {ts.shape} (z, y, x)")
    typer.echo(f"dtype:      {spec.dtype}" + (f" (labels {spec.label_dtype})" if spec.label is not None else ""))
    typer.echo(f"tile grid:  {rows} rows x {cols} columns of {th}x{tw} per section "
               f"(tile_st {list(spec.tile_st)}, tile_ratio {spec.tile_ratio})")
    typer.echo(f"layers:     {', '.join(ts.layers)}")
    if spec.voxel_size:
        typer.echo(f"voxel size: {tuple(spec.voxel_size)} (z, y, x)")
    n_tiles = sum(1 for layer in ts.layers for _ in ts.iter_tiles(layer))
    problems = ts.check(decode=not quick, workers=threads)
    typer.echo(f"tiles:      {n_tiles} checked ({'headers' if quick else 'decoded'}), {len(problems)} missing or unreadable")
    for msg in problems[:20]:
        typer.echo(f"  {msg}")
    if len(problems) > 20:
        typer.echo(f"  ... and {len(problems) - 20} more")
    if problems:
        raise InputError(f"{tiles_json}: {len(problems)} bad tile(s); first: {problems[0]}")
