"""``make_tileset``: write any volume (TIFF, zarr, tile JSON, array) as PNG tiles plus a PyTC tile JSON.

Layout (PyTC's ``create_json`` naming, one folder per section)::

    OUT_DIR/tiles.json
    OUT_DIR/image/000/0_0.png, 0_1.png, ...      # {row}_{column}.png, row/column counted from tile_st
    OUT_DIR/label/000/0_0.png ...                # 16-bit grey if ids < 65536, else VAST RGB (R*65536+G*256+B)
    OUT_DIR/valid_mask/000/0_0.png ...           # optional, 8-bit

Edge tiles are cropped to the volume by default (``pad_edges=True`` writes full-size tiles padded with 0);
both read back the same. Paths in the JSON are relative to it unless ``absolute_paths=True`` (PyTC's own
reader resolves relative paths against its working directory, so give it absolute ones).
"""

from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, Optional, Sequence

import numpy as np

from em_chunks.errors import InputError
from em_chunks.io.tiles import ids_to_vast_rgb

LabelFormat = Literal["auto", "gray16", "rgb"]


def _as_array(volume: Any, key: Optional[str], what: str):
    """A 3D array-like (numpy or dask) from a path or an array."""
    if isinstance(volume, (str, Path)):
        from em_chunks.io.volume import open_volume

        arr = open_volume(volume, key=key)
    else:
        arr = volume
    if getattr(arr, "ndim", 0) != 3:
        raise InputError(f"{what}: expected a 3D (z, y, x) volume, got shape {getattr(arr, 'shape', None)}")
    return arr


def _section_batches(arr, budget: int = 256 << 20):
    """(z0, sections) in batches that follow the source's z chunks, so each stored block is read once
    (slicing one section at a time would decode a 32-page TIFF block 32 times), capped by ``budget``."""
    depth = int(arr.shape[0])
    section_bytes = max(1, int(np.prod(arr.shape[1:])) * np.dtype(arr.dtype).itemsize)
    step = max(1, budget // section_bytes)
    chunks = getattr(arr, "chunks", None)
    if chunks and isinstance(chunks[0], tuple):  # dask: follow its blocks
        edges = [int(e) for e in np.cumsum((0,) + tuple(chunks[0]))]
    else:
        edges = list(range(0, depth, step)) + [depth]
    for z0, z1 in zip(edges[:-1], edges[1:]):
        for s in range(int(z0), int(z1), step):
            part = arr[s:min(int(z1), s + step)]
            yield s, np.asarray(part.compute(scheduler="threads") if hasattr(part, "compute") else part)


def _save_png(path: Path, tile: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    if tile.ndim == 3:
        img = Image.fromarray(np.ascontiguousarray(tile), mode=None)
    elif tile.dtype == np.uint16:
        img = Image.fromarray(np.ascontiguousarray(tile))  # mode I;16
    else:
        img = Image.fromarray(np.ascontiguousarray(tile.astype(np.uint8, copy=False)))
    img.save(path, format="PNG", compress_level=6)


def _encode_labels(tile: np.ndarray, fmt: str) -> np.ndarray:
    return ids_to_vast_rgb(tile) if fmt == "rgb" else tile.astype(np.uint16)


def _write_section(pool, section, folder: Path, layer: str, rows: int, cols: int, th: int, tw: int,
                   pad_edges: bool, label_fmt: str, tile_st: Sequence[int]) -> None:
    """Cut one section into tiles and write them (PNG encoding runs on the pool's threads)."""
    jobs = []
    for r in range(rows):
        for c in range(cols):
            tile = section[r * th:(r + 1) * th, c * tw:(c + 1) * tw]
            if pad_edges and tile.shape != (th, tw):
                full = np.zeros((th, tw), dtype=tile.dtype)
                full[: tile.shape[0], : tile.shape[1]] = tile
                tile = full
            if layer == "label":
                tile = _encode_labels(tile, label_fmt)
            elif tile.dtype == np.bool_:
                tile = tile.astype(np.uint8)
            path = folder / f"{r + int(tile_st[0])}_{c + int(tile_st[1])}.png"
            jobs.append(pool.submit(_save_png, path, tile))
    for j in jobs:
        j.result()


def make_tileset(
    volume: Any,
    out_dir: str | Path,
    labels: Any = None,
    tile_size: int | Sequence[int] = 512,
    *,
    valid_mask: Any = None,
    key: Optional[str] = None,
    label_key: Optional[str] = None,
    pad_edges: bool = False,
    tile_st: Sequence[int] = (0, 0),
    label_format: LabelFormat = "auto",
    absolute_paths: bool = False,
    voxel_size: Optional[Sequence[float]] = None,
    crop: Optional[Sequence[slice] | str] = None,
    json_name: str = "tiles.json",
    workers: int = 2,
) -> Path:
    """Write ``volume`` (and optional ``labels``/``valid_mask``) as PNG tiles and a PyTC tile JSON.

    Returns the JSON's path. Image voxels must be uint8 or uint16 (what PNG holds); label ids must be
    non-negative and below 2**24 (VAST RGB). ``crop`` (slices, or text such as ``"0:8,0:96,0:96"``) tiles
    only that part of every layer.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"OUT_DIR {out}: exists and is not a folder; choose a folder path for the tiles")
    slices = parse_crop(crop) if isinstance(crop, str) else (tuple(crop) if crop is not None else None)
    image = _as_array(volume, key, "volume")
    if slices is not None:
        check_crop(slices, tuple(int(s) for s in image.shape), crop)
        image = image[slices]
    depth, height, width = (int(s) for s in image.shape)
    th, tw = (int(tile_size),) * 2 if isinstance(tile_size, (int, np.integer)) else tuple(int(t) for t in tile_size)
    if th <= 0 or tw <= 0:
        raise InputError(f"--tile-size {tile_size}: expected a positive number of pixels")
    if np.dtype(image.dtype) not in (np.uint8, np.uint16, np.bool_):
        raise InputError(f"volume: dtype {image.dtype}; expected uint8 or uint16 voxels (what PNG tiles hold)")
    layers: dict[str, Any] = {"image": image}
    if labels is not None:
        layers["label"] = _as_array(labels, label_key, "labels")
    if valid_mask is not None:
        mask = _as_array(valid_mask, None, "valid_mask")
        layers["valid_mask"] = mask != 0  # any dtype: nonzero = valid, stored as 0/1 8-bit tiles
    if slices is not None:
        for name in ("label", "valid_mask"):
            if name in layers:
                layers[name] = layers[name][slices]
    for name, arr in layers.items():
        if tuple(arr.shape) != (depth, height, width):
            raise InputError(f"{name}: shape {tuple(arr.shape)}; expected the volume's shape {(depth, height, width)}")

    label_fmt = "gray16"
    label_dtype = "uint32"
    if "label" in layers:
        lab = layers["label"]
        if np.dtype(lab.dtype).kind not in "iub":
            raise InputError(f"labels: dtype {lab.dtype}; expected integer segment ids")
        lo, hi = (int(v) for v in _minmax(lab))
        if lo < 0 or hi >= 1 << 24:
            raise InputError(f"labels: ids span {lo}..{hi}; expected ids in 0..{(1 << 24) - 1} (24-bit VAST RGB)")
        label_fmt = label_format if label_format != "auto" else ("gray16" if hi < 1 << 16 else "rgb")
        if label_fmt == "gray16" and hi >= 1 << 16:
            raise InputError(f"labels: max id {hi} does not fit 16-bit PNG; use label_format='rgb'")
        label_dtype = np.dtype(lab.dtype).name if np.dtype(lab.dtype).kind in "iu" else "uint8"

    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"OUT_DIR {out}: cannot create the folder ({err.strerror or err})") from None
    digits = int(math.log10(depth)) + 1  # as PyTC's create_json
    rows, cols = math.ceil(height / th), math.ceil(width / tw)

    def tile_name(layer: str, z: int) -> str:
        rel = f"{layer}/{str(z).zfill(digits)}/{{row}}_{{column}}.png"
        return str((out / rel).resolve()) if absolute_paths else rel

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for layer, arr in layers.items():
            for z0, batch in _section_batches(arr):
                for z, section in enumerate(batch, start=z0):
                    _write_section(pool, section, out / layer / str(z).zfill(digits), layer, rows, cols, th, tw,
                                   pad_edges, label_fmt, tile_st)

    if voxel_size is None and isinstance(volume, (str, Path)):
        from em_chunks.io.volume import voxel_size_of

        voxel_size = voxel_size_of(volume)
    meta: dict[str, Any] = {
        "ndim": 1,
        "dtype": "uint8" if np.dtype(image.dtype) == np.bool_ else np.dtype(image.dtype).name,
        "image": [tile_name("image", z) for z in range(depth)],
        "height": height,
        "width": width,
        "depth": depth,
        "n_columns": cols,
        "n_rows": rows,
        "tile_size": th if th == tw else [th, tw],
        "tile_ratio": 1,
        "tile_st": [int(tile_st[0]), int(tile_st[1])],
    }
    if "label" in layers:
        meta["label"] = [tile_name("label", z) for z in range(depth)]
        meta["label_dtype"] = label_dtype
    if "valid_mask" in layers:
        meta["valid_mask"] = [tile_name("valid_mask", z) for z in range(depth)]
    if voxel_size is not None:
        meta["voxel_size"] = [float(v) for v in voxel_size]
    path = out / json_name
    path.write_text(json.dumps(meta, indent=1) + "\n")
    return path


def parse_crop(text: str) -> tuple[slice, slice, slice]:
    """``"z0:z1,y0:y1,x0:x1"`` (any bound may be empty) as three slices."""
    parts = [p.strip() for p in text.split(",")]
    try:
        if len(parts) != 3 or any(p.count(":") != 1 for p in parts):
            raise ValueError
        out = []
        for p in parts:
            a, b = p.split(":")
            out.append(slice(int(a) if a else None, int(b) if b else None))
    except ValueError:
        raise InputError(f"--crop {text!r}: expected z0:z1,y0:y1,x0:x1 such as 0:8,0:96,0:96") from None
    return tuple(out)  # type: ignore[return-value]


def check_crop(slices: Sequence[slice], shape: tuple[int, ...], text: Any = None) -> None:
    """Refuse a crop that reaches beyond the volume or selects nothing, naming the axis and the shape
    (numpy would silently clip it, and the tiles would not be what was asked for)."""
    what = f"--crop {text}" if isinstance(text, str) else f"crop {tuple(slices)}"
    if len(slices) != len(shape):
        raise InputError(f"{what}: expected {len(shape)} ranges (z, y, x) for a volume of shape {shape}")
    for axis, sl, size in zip("zyx", slices, shape):
        if sl.step not in (None, 1):
            raise InputError(f"{what}: axis {axis} has step {sl.step}; expected contiguous ranges")
        start = 0 if sl.start is None else int(sl.start)
        stop = size if sl.stop is None else int(sl.stop)
        if 0 <= start and stop <= size and start >= stop:
            raise InputError(f"{what}: axis {axis} range {start}:{stop} selects nothing (volume shape {shape})")
        if not 0 <= start < stop <= size:
            raise InputError(f"{what}: axis {axis} range {start}:{stop} is outside the volume of shape {shape} "
                             f"(expected 0 <= start < stop <= {size})")


def _minmax(arr) -> tuple[int, int]:
    if hasattr(arr, "compute"):
        import dask

        lo, hi = dask.compute(arr.min(), arr.max(), scheduler="threads")
        return int(lo), int(hi)
    a = np.asarray(arr)
    return (int(a.min()), int(a.max())) if a.size else (0, 0)
