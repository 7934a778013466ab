"""``TileSet``: PyTC's TileDataset JSON (sections of PNG tiles) read box by box, or as a lazy dask array.

The JSON (as PyTC's ``create_json`` writes it)::

    {"ndim": 1, "dtype": "uint8", "image": [".../000/{row}_{column}.png", ...],   # one path per section
     "height": 10000, "width": 10000, "depth": 500, "n_rows": 3, "n_columns": 3,
     "tile_size": 4096, "tile_st": [0, 0], "tile_ratio": 1}

Semantics kept from PyTC: tile ``(row, column)`` of the grid covers voxels ``[row*ts, (row+1)*ts)`` and is
the file named with ``row + tile_st[0]``, ``column + tile_st[1]``; ``tile_ratio`` scales each tile after
decoding and ``tile_size`` is in the scaled units; a path without placeholders is one image per section;
relative paths are relative to the JSON file. Extensions: ``label`` and ``valid_mask`` path lists with the
same geometry (``label_dtype``, default uint32), and ``voxel_size`` (z, y, x).

``to_dask`` builds one decode task per (slab of sections, tile row, tile column) and one assembly task per
halo'd block that depends on the decode tasks it touches, so each PNG is decoded once per pass however
many blocks share it; no task ever holds more than its block (or one slab of one tile column).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any, Iterator, Literal, Optional, Sequence, Union

import numpy as np
from pydantic import Field, field_validator

from em_chunks.config.base import FrozenModel, validate
from em_chunks.errors import InputError
from em_chunks.geometry import Box, ChunkGrid
from em_chunks.io import padding
from em_chunks.io.padding import Boundary, Run
from em_chunks.io.tileset_graph import GraphBuilder, _read_tile, block_plans, z_slabs
from em_chunks.io.tiles import TileFormat, read_header

Layer = Literal["image", "label", "valid_mask"]
LAYERS: tuple[str, ...] = ("image", "label", "valid_mask")

PosInt = Annotated[int, Field(strict=True, gt=0)]
Int = Annotated[int, Field(strict=True)]
PosFloat = Annotated[float, Field(strict=True, gt=0)]


def _check_dtype_name(value: str) -> str:
    try:
        dt = np.dtype(value)
    except TypeError:
        raise ValueError(f"{value!r} is not a numpy dtype name such as 'uint8'") from None
    if dt.kind not in "uif" and dt != np.bool_:
        raise ValueError(f"{value!r}: expected an integer or float dtype")
    return dt.name


class TileSetSpec(FrozenModel):
    """The tile JSON, field for field. Strict types: ``"height": "100"`` is an error, not 100."""

    ndim: PosInt = 1  #: PyTC writes 1 (single channel); kept for compatibility
    dtype: str
    image: list[str]
    height: PosInt
    width: PosInt
    depth: PosInt
    tile_size: Union[PosInt, tuple[PosInt, PosInt]]
    tile_st: tuple[Int, Int] = (0, 0)
    tile_ratio: PosFloat = 1.0
    n_rows: PosInt
    n_columns: PosInt
    # ---- extensions (not in PyTC) ----
    label: Optional[list[str]] = None
    label_dtype: str = "uint32"
    valid_mask: Optional[list[str]] = None
    voxel_size: Optional[tuple[PosFloat, PosFloat, PosFloat]] = None

    @field_validator("dtype", "label_dtype")
    @classmethod
    def _dtype_ok(cls, v: str) -> str:
        return _check_dtype_name(v)

    @property
    def tile_shape(self) -> tuple[int, int]:
        """(height, width) of a full tile, in scaled (volume) units."""
        ts = self.tile_size
        return (ts, ts) if isinstance(ts, int) else (int(ts[0]), int(ts[1]))


_PERCENT = re.compile(r"%[-+ 0#]*\d*[dis]")


def _is_tiled(pattern: str) -> bool:
    """Has per-tile placeholders: ``{row}``/``{column}`` (PyTC's create_json) or two printf fields
    (``%d_%d.png``, which some PyTC helpers accept)."""
    return "{row" in pattern or "{column" in pattern or len(_PERCENT.findall(pattern)) == 2


def format_tile(pattern: str, row: int, column: int) -> str:
    """The file name of one tile: ``row``/``column`` as they appear in names (tile_st already added)."""
    if "{row" in pattern or "{column" in pattern:
        return pattern.format(row=row, column=column)
    return pattern % (row, column)


def _consistency(spec: TileSetSpec, source: str) -> None:
    """Checks across fields, each a one-line error naming the field."""
    for layer in LAYERS:
        paths = getattr(spec, layer)
        if paths is not None and len(paths) != spec.depth:
            raise InputError(f"{source}: field '{layer}': {len(paths)} paths but depth is {spec.depth}; expected one path per section")
        for z, p in enumerate(paths or []):
            if _is_tiled(p):
                try:
                    format_tile(p, 0, 0)
                except (KeyError, IndexError, ValueError, TypeError) as err:
                    raise InputError(f"{source}: field '{layer}.{z}': bad placeholder in {p!r} ({err}); expected only {{row}} and {{column}}") from None
    th, tw = spec.tile_shape
    tiled = any(_is_tiled(p) for layer in LAYERS for p in (getattr(spec, layer) or []))
    if tiled and spec.n_rows * th < spec.height:
        raise InputError(f"{source}: field 'n_rows': {spec.n_rows} rows of {th} cover {spec.n_rows * th} < height {spec.height}; expected n_rows >= {math.ceil(spec.height / th)}")
    if tiled and spec.n_columns * tw < spec.width:
        raise InputError(f"{source}: field 'n_columns': {spec.n_columns} columns of {tw} cover {spec.n_columns * tw} < width {spec.width}; expected n_columns >= {math.ceil(spec.width / tw)}")
    if spec.label_dtype and np.dtype(spec.label_dtype).kind == "f":
        raise InputError(f"{source}: field 'label_dtype': {spec.label_dtype}; expected an integer dtype")


def _halo(halo: Sequence[int] | int) -> tuple[int, int, int]:
    from em_chunks.geometry.axes import per_axis

    try:
        return per_axis(halo, "halo", minimum=0)
    except InputError:
        raise InputError(f"halo {halo!r}: expected 3 non-negative integers (z, y, x)") from None


class TileSet:
    """A PyTC tile grid on disk. Build with :meth:`from_json`; read with :meth:`read` or :meth:`to_dask`.

    ``fill_missing``: ``None`` (default) makes a missing tile file an :class:`InputError`; a number fills
    the missing tile's voxels with it instead (PyTC fills 128). ``as_labels``: the JSON is a PyTC *label*
    JSON (PyTC keeps labels in a second JSON whose ``image`` list holds the label tiles), so its ``image``
    layer is decoded as labels: nearest-neighbour scaling, VAST RGB ids.
    """

    def __init__(self, spec: TileSetSpec, base_dir: str | Path = ".", *, fill_missing: Optional[float] = None,
                 source: str = "<tile json>", as_labels: bool = False) -> None:
        _consistency(spec, source)
        self.as_labels = as_labels
        self.spec = spec
        self.base_dir = Path(base_dir)
        self.fill_missing = fill_missing
        self.source = source
        self._pattern_cache: dict[str, list[tuple[str, bool]]] = {}
        self._shape_cache: dict[str, tuple[int, int]] = {}

    # ---- construction ----------------------------------------------------------------------------
    @classmethod
    def from_json(cls, path: str | Path, *, fill_missing: Optional[float] = None, as_labels: bool = False) -> "TileSet":
        """Load and validate a tile JSON; every problem is a one-line :class:`InputError` naming the field."""
        p = Path(path)
        try:
            text = p.read_text()
        except FileNotFoundError:
            raise InputError(f"{p}: file not found; expected a tile JSON") from None
        except (OSError, UnicodeDecodeError) as err:
            raise InputError(f"{p}: cannot read ({err}); expected a UTF-8 tile JSON") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise InputError(f"{p}: malformed JSON at line {err.lineno} column {err.colno}: {err.msg}") from None
        return cls.from_dict(data, p.parent, fill_missing=fill_missing, source=str(p), as_labels=as_labels)

    @classmethod
    def from_dict(cls, data: Any, base_dir: str | Path = ".", *, fill_missing: Optional[float] = None,
                  source: str = "<tile json>", as_labels: bool = False) -> "TileSet":
        if not isinstance(data, dict):
            raise InputError(f"{source}: expected a JSON object with keys image, height, width, ..., got {type(data).__name__}")
        spec = validate(TileSetSpec, data, source)
        return cls(spec, base_dir, fill_missing=fill_missing, source=source, as_labels=as_labels)

    # ---- geometry --------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.spec.depth, self.spec.height, self.spec.width)

    @property
    def layers(self) -> tuple[str, ...]:
        """The layers this JSON has: ``image`` and any of ``label``, ``valid_mask``."""
        return tuple(name for name in LAYERS if getattr(self.spec, name) is not None)

    @property
    def voxel_size(self) -> Optional[tuple[float, float, float]]:
        return self.spec.voxel_size

    def dtype(self, layer: str = "image") -> np.dtype:
        self._paths(layer)
        return np.dtype({"image": self.spec.dtype, "label": self.spec.label_dtype, "valid_mask": "uint8"}[layer])

    def _paths(self, layer: str) -> list[str]:
        if layer not in LAYERS:
            raise InputError(f"layer {layer!r}: expected one of {', '.join(LAYERS)}")
        paths = getattr(self.spec, layer)
        if paths is None:
            raise InputError(f"{self.source}: no '{layer}' key; this tile JSON has {', '.join(self.layers)}")
        return paths

    def _plain_layout(self, layer: str) -> bool:
        """Every section is one plain image: the whole section is a single 'tile'."""
        return not any(_is_tiled(p) for p in self._paths(layer))

    def tile_shape(self, layer: str = "image") -> tuple[int, int]:
        """(height, width) of a tile: the whole section where every section is one plain image."""
        if layer not in self._shape_cache:
            plain = self._plain_layout(layer)
            self._shape_cache[layer] = (self.spec.height, self.spec.width) if plain else self.spec.tile_shape
        return self._shape_cache[layer]

    def tile_grid(self, layer: str = "image") -> tuple[int, int]:
        """(rows, columns) of tiles that cover the volume (PyTC's n_rows/n_columns may list more)."""
        th, tw = self.tile_shape(layer)
        return (math.ceil(self.spec.height / th), math.ceil(self.spec.width / tw))

    def _patterns(self, layer: str) -> list[tuple[str, bool]]:
        """Per section: the path pattern joined to the JSON's folder, and whether it has placeholders
        (computed once per layer: building a graph formats thousands of tile paths)."""
        cached = self._pattern_cache.get(layer)
        if cached is None:
            base = str(self.base_dir)
            cached = [(p if os.path.isabs(p) else os.path.join(base, p), _is_tiled(p)) for p in self._paths(layer)]
            self._pattern_cache[layer] = cached
        return cached

    def tile_path(self, layer: str, z: int, row: int, col: int) -> str:
        """The file of tile (row, col) of section z: PyTC names it with ``row + tile_st[0]``, ``col + tile_st[1]``."""
        pattern, tiled = self._patterns(layer)[z]
        if not tiled:
            return pattern
        return format_tile(pattern, row + self.spec.tile_st[0], col + self.spec.tile_st[1])

    def _geom(self, layer: str, row: int, col: int) -> tuple:
        th, tw = self.tile_shape(layer)
        H, W = self.spec.height, self.spec.width
        extent = (row * th, min((row + 1) * th, H), col * tw, min((col + 1) * tw, W))
        gh, gw = self.spec.tile_shape
        section = ((H, W), (max(H, self.spec.n_rows * gh), max(W, self.spec.n_columns * gw)))
        return extent, (th, tw), section

    def _fmt(self, layer: str) -> TileFormat:
        kind = "label" if (layer == "image" and self.as_labels) else layer
        return TileFormat(kind=kind, dtype=self.dtype(layer).name, tile_ratio=float(self.spec.tile_ratio),
                          fill_missing=self.fill_missing)

    def _ref(self, layer: str, z: int, row: int, col: int) -> tuple[str, bool]:
        return (self.tile_path(layer, z, row, col), self._patterns(layer)[z][1])

    def iter_tiles(self, layer: str = "image") -> Iterator[tuple[int, int, int, str]]:
        """Every (z, row, col, path) the volume needs (plain sections once, as row 0 column 0)."""
        rows, cols = self.tile_grid(layer)
        for z, pattern in enumerate(self._paths(layer)):
            if not _is_tiled(pattern):
                yield z, 0, 0, self.tile_path(layer, z, 0, 0)
                continue
            for r in range(rows):
                for c in range(cols):
                    yield z, r, c, self.tile_path(layer, z, r, c)

    # ---- reading ---------------------------------------------------------------------------------
    def _axis_plan(self, box: Box, mode: Boundary) -> tuple[list[tuple[int, int]], list[list[Run]]]:
        spans = [padding.clip_span(b, e, n, mode) for b, e, n in zip(box.begin, box.end, self.shape)]
        runs = [padding.axis_runs(b, e, n, mode) for (b, e), n in zip(spans, self.shape)]
        return spans, runs

    def _tiles_touching(self, layer: str, src: Box) -> Iterator[tuple[int, int]]:
        th, tw = self.tile_shape(layer)
        for r in range(src.begin[1] // th, -(-src.end[1] // th)):
            for c in range(src.begin[2] // tw, -(-src.end[2] // tw)):
                yield r, c

    def read(self, box: Box | Sequence[slice], boundary: Boundary = "reflect", layer: str = "image") -> np.ndarray:
        """The voxels of ``box`` (ZYX), which may reach outside the volume: padded by ``boundary``
        (see :mod:`em_chunks.io.padding`; ``none`` returns only the part inside). Each tile the box
        needs is decoded once, however often the padding repeats it."""
        if not isinstance(box, Box):
            box = Box.from_slices(box)
        if box.ndim != 3:
            raise InputError(f"read box {box}: expected 3 axes (z, y, x)")
        mode = padding.normalize_boundary(boundary)
        spans, runs = self._axis_plan(box, mode)
        shape = [e - b for b, e in spans]
        fmt = self._fmt(layer)
        fill = mode if padding.is_constant(mode) else 0
        if any(s == 0 for s in shape):
            return np.zeros(shape, dtype=fmt.dtype)
        needed: set[tuple[int, int, int]] = set()
        for src in padding.source_boxes(runs):
            for z in range(src.begin[0], src.end[0]):
                for r, c in self._tiles_touching(layer, src):
                    needed.add((z, r, c))
        pieces = []
        for z, r, c in sorted(needed):
            geom = self._geom(layer, r, c)
            y0, y1, x0, x1 = geom[0]
            data = _read_tile(self._ref(layer, z, r, c), fmt, z, r, c, geom)
            pieces.append((Box((z, y0, x0), (1, y1 - y0, x1 - x0)), data[None]))
        return padding.assemble(shape, fmt.dtype, runs, pieces, fill=fill)

    def default_chunks(self, layer: str = "image", target_bytes: int = 64 << 20) -> tuple[int, int, int]:
        """Tile-aligned storage-like chunks: whole tiles, as many sections as fit ``target_bytes``."""
        th, tw = self.tile_shape(layer)
        per_section = th * tw * self.dtype(layer).itemsize
        return (max(1, min(self.spec.depth, target_bytes // max(1, per_section))), th, tw)

    def to_dask(
        self,
        grid: Sequence[int] | str = (2, 4, 4),
        halo: Sequence[int] | int = 0,
        boundary: Boundary = "reflect",
        layer: str = "image",
        *,
        chunks: Optional[Sequence[Any]] = None,
        sections_per_task: Optional[int] = None,
    ):
        """A lazy dask array whose block ``i`` is chunk ``i`` of ``grid`` grown by ``halo`` and padded by
        ``boundary``, i.e. equal to ``dask.array.overlap.overlap(plain, depth=halo, boundary=boundary)`` for
        the plain volume split by ``ChunkGrid(shape, grid).dask_chunks`` (or by explicit dask ``chunks``).

        One task decodes each (slab of ``sections_per_task`` sections, tile row, tile column); block tasks
        share those, so every PNG is decoded once per pass. Unlike dask's ``overlap`` the halo may exceed a
        chunk (the padding then follows numpy's definitions of each mode).
        """
        import dask.array as da
        from dask.base import tokenize
        from dask.highlevelgraph import HighLevelGraph

        core_chunks = self._core_chunks(grid, chunks, da)
        halo3 = _halo(halo)
        mode = padding.normalize_boundary(boundary)
        fmt = self._fmt(layer)
        # small decode tasks (~4 MiB, <= 16 sections) balance two threads well and end the pass together
        spt = sections_per_task or self.default_chunks(layer, 4 << 20)[0]
        spt = max(1, min(int(spt), 16 if sections_per_task is None else 1 << 30))
        plans = block_plans(core_chunks, halo3, self.shape, mode)
        token = tokenize(self.spec.model_dump_json(), str(self.base_dir.resolve()), layer, core_chunks, halo3,
                         mode, fmt, spt)
        name = f"tileset-{layer}-{token}"
        builder = GraphBuilder(self, layer, fmt, z_slabs(plans[0], self.shape[0], spt),
                               mode if padding.is_constant(mode) else 0, name, f"tiles-{layer}-{token}")
        graph = HighLevelGraph.from_collections(name, builder.add_blocks(plans), dependencies=[])
        out_chunks = tuple(tuple(span[1] - span[0] for span, _ in plan) for plan in plans)
        return da.Array(graph, name, out_chunks, dtype=np.dtype(fmt.dtype), meta=np.empty((0, 0, 0), dtype=fmt.dtype))

    def _core_chunks(self, grid: Sequence[int] | str, chunks: Optional[Sequence[Any]], da: Any) -> tuple:
        """The blocks' cores as dask chunks: a ChunkGrid's pieces, or explicit dask ``chunks``."""
        if chunks is not None:
            return da.core.normalize_chunks(chunks, self.shape)
        from em_chunks.geometry import parse_chunks

        pieces = parse_chunks(grid if isinstance(grid, str) else tuple(grid), self.shape, name="grid")
        return ChunkGrid(self.shape, pieces).dask_chunks

    # ---- checking --------------------------------------------------------------------------------
    def check(self, layers: Optional[Sequence[str]] = None, decode: bool = True, workers: int = 2) -> list[str]:
        """Problems with the tile files (missing, unreadable, wrong size or dtype), one message each.

        ``decode=False`` only reads PNG headers and trailers (fast); a missing tile is reported even when
        ``fill_missing`` is set.
        """
        jobs = []
        for layer in layers or self.layers:
            for z, r, c, path in self.iter_tiles(layer):
                jobs.append((layer, z, r, c, path))

        def one(job) -> Optional[str]:
            layer, z, r, c, path = job
            geom = self._geom(layer, r, c)
            tiled = _is_tiled(self._paths(layer)[z])
            try:
                if not Path(path).is_file():
                    where = f" (section {z}, row {r}, column {c})" if tiled else f" (section {z})"
                    return f"{path}: tile file not found{where}"
                if decode:
                    fmt = dataclasses.replace(self._fmt(layer), fill_missing=None)
                    _read_tile((path, tiled), fmt, z, r, c, geom)
                else:
                    (h, w), _mode = read_header(path)
                    ratio = float(self.spec.tile_ratio)
                    h, w = round(h * ratio), round(w * ratio)
                    y0, y1, x0, x1 = geom[0]
                    lo, hi = ((y1 - y0, x1 - x0), geom[1]) if tiled else geom[2]
                    if not (lo[0] <= h <= hi[0] and lo[1] <= w <= hi[1]):
                        return f"{path}: tile is {h}x{w}; expected {lo[0]}x{lo[1]} up to {hi[0]}x{hi[1]}"
            except InputError as err:
                return str(err)
            return None

        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            return [m for m in pool.map(one, jobs) if m]

    def __repr__(self) -> str:
        return (f"TileSet({self.source}, shape={self.shape}, dtype={self.spec.dtype}, "
                f"tiles={self.tile_grid()} of {self.tile_shape()}, layers={self.layers})")
