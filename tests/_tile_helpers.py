"""Shared helpers for the tile-grid tests: small real crops, synthetic volumes, and an independent
PyTC-style tile writer (written the way PyTC's docs build a tile JSON, not through make_tileset)."""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from _data import DATA, require  # noqa: F401  (DATA: re-exported to the tile tests)

#: tests on the real volumes of ../shared/data; they FAIL on a machine without them (tests/_data.py)
requires_data = pytest.mark.usefixtures("shared_data")


@lru_cache(maxsize=8)
def real_crop(name: str, layer: str, z: int, y: int, x: int) -> np.ndarray:
    """``DATA/name/layer.tif[:z, :y, :x]``, reading only the first ``z`` pages (read-only copy)."""
    arr = tifffile.imread(require(name, f"{layer}.tif"), key=range(z))[:, :y, :x]
    arr = np.ascontiguousarray(arr)
    arr.setflags(write=False)
    return arr


def synthetic(shape=(7, 45, 61), dtype=np.uint8, seed=0) -> np.ndarray:
    """Every voxel distinct enough that a misplaced tile or a wrong flip shows."""
    rng = np.random.default_rng(seed)
    hi = np.iinfo(dtype).max if np.dtype(dtype).kind in "iu" else 1
    return rng.integers(0, int(hi) + 1, size=shape, dtype=dtype)


def save_png(path: Path, tile: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(tile)).save(path)


def write_pytc_tiles(
    volume: np.ndarray,
    root: Path,
    tile_size: int,
    tile_st=(0, 0),
    pad_edges: bool = True,
    absolute: bool = True,
    tile_ratio: float = 1,
    encode=None,
) -> Path:
    """Write tiles + JSON exactly as PyTC's create_json lays them out: ``data_path + zfill(z) +
    '/{row}_{column}.png'`` with ``row + tile_st[0]`` in the file name. Returns the JSON path."""
    depth, height, width = volume.shape
    rows, cols = math.ceil(height / tile_size), math.ceil(width / tile_size)
    digits = int(math.log10(depth)) + 1
    data_path = str(root / "sections") + "/" if absolute else "sections/"
    for z in range(depth):
        for r in range(rows):
            for c in range(cols):
                tile = volume[z, r * tile_size:(r + 1) * tile_size, c * tile_size:(c + 1) * tile_size]
                if pad_edges and tile.shape != (tile_size, tile_size):
                    full = np.zeros((tile_size, tile_size), tile.dtype)
                    full[: tile.shape[0], : tile.shape[1]] = tile
                    tile = full
                if encode is not None:
                    tile = encode(tile)
                name = root / "sections" / str(z).zfill(digits) / f"{r + tile_st[0]}_{c + tile_st[1]}.png"
                save_png(name, tile)
    meta = {
        "ndim": 1,
        "dtype": str(volume.dtype) if encode is None else "uint8",
        "image": [data_path + str(z).zfill(digits) + r"/{row}_{column}.png" for z in range(depth)],
        "height": height,
        "width": width,
        "depth": depth,
        "n_columns": cols,
        "n_rows": rows,
        "tile_size": tile_size,
        "tile_ratio": tile_ratio,
        "tile_st": list(tile_st),
    }
    path = root / "pytc.json"
    path.write_text(json.dumps(meta))
    return path


def edit_json(path: Path, **changes) -> Path:
    """Rewrite a tile JSON with some keys changed (a value of ``...`` deletes the key)."""
    meta = json.loads(path.read_text())
    for k, v in changes.items():
        if v is ...:
            meta.pop(k, None)
        else:
            meta[k] = v
    path.write_text(json.dumps(meta))
    return path
