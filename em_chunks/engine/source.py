"""A picklable handle to an input volume that a worker opens and reads box by box.

Tile JSONs are read with :meth:`TileSet.read` (direct tile reads, padding by the boundary mode); TIFF
and zarr through :func:`open_volume`'s lazy array, computed synchronously on the worker for one box.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from em_chunks.errors import InputError
from em_chunks.geometry import Box


def _is_tiles(path: str) -> bool:
    return path.lower().endswith(".json")


@lru_cache(maxsize=8)
def _tileset(path: str, mtime: float, fill_missing: Optional[float]) -> Any:
    from em_chunks.io.tileset import TileSet

    return TileSet.from_json(path, fill_missing=fill_missing)


def _open(path: str, key: Optional[str], fill_missing: Optional[float] = None) -> Any:
    if _is_tiles(path):
        return _tileset(path, os.path.getmtime(path), fill_missing)
    from em_chunks.io.volume import open_volume

    return open_volume(path, key=key)


@dataclass(frozen=True)
class Source:
    """Where a volume lives (``path``, optional ``key``/layer) and its shape and dtype."""

    path: str
    shape: tuple[int, ...]
    dtype: str
    key: Optional[str] = None
    fill_missing: Optional[float] = None

    @classmethod
    def open(cls, path: str | Path, key: Optional[str] = None, *, fill_missing: Optional[float] = None) -> "Source":
        p = str(path)
        if not Path(p).exists():
            raise InputError(f"{p}: file not found")
        handle = _open(p, key, fill_missing)
        if _is_tiles(p):
            layer = key or "image"
            if layer not in handle.layers:
                raise InputError(f"{p}: has no '{layer}' layer (it has: {', '.join(handle.layers)})")
            # refuse missing or truncated tiles up front (headers and trailers only: fast)
            problems = [] if fill_missing is not None else handle.check([layer], decode=False)
            if problems:
                more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
                raise InputError(f"{problems[0]}{more}")
            return cls(p, tuple(handle.shape), str(np.dtype(handle.dtype(layer))), layer, fill_missing)
        return cls(p, tuple(int(s) for s in handle.shape), str(handle.dtype), key, fill_missing)

    @classmethod
    def open_labels(cls, path: str | Path, what: str = "labels") -> "Source":
        """Labels (segment ids, 0 = unlabelled): a tile JSON's ``label`` layer, or a volume of integer ids.

        A tile JSON without a ``label`` layer is refused (its image is grey values, not ids: scoring
        against it would give a number that means nothing), and so is a non-integer volume."""
        p = str(path)
        if _is_tiles(p) and Path(p).is_file():
            handle = _open(p, None)
            if "label" not in handle.layers:
                raise InputError(f"{p}: no label layer in that tile JSON (it has: {', '.join(handle.layers)}); "
                                 f"{what} must be segment ids: a tile JSON with a 'label' key, a TIFF or a zarr array")
            src = cls.open(p, "label")
        else:
            src = cls.open(p)
        src.check_ids(what)
        return src

    def check_ids(self, what: str = "labels") -> None:
        """Refuse a volume whose dtype cannot hold segment ids (floats, complex, strings...)."""
        kind = np.dtype(self.dtype).kind
        if kind not in "iub":
            raise InputError(f"{self.path}: {what} of dtype {self.dtype}; expected integer segment ids "
                             f"(uint8/16/32/64 or int; 0 = unlabelled), e.g. convert with numpy's astype(np.uint32)")

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        return tuple(self.shape[-3:])  # type: ignore[return-value]

    @property
    def channels(self) -> int:
        return int(self.shape[0]) if len(self.shape) == 4 else 0

    def voxel_size(self) -> Optional[tuple[float, float, float]]:
        try:
            from em_chunks.io.volume import voxel_size_of

            return voxel_size_of(self.path, key=self.key) if not _is_tiles(self.path) else _open(self.path, None, self.fill_missing).voxel_size
        except Exception:
            return None

    def read(self, box: Box, boundary: str | float = 0, channels: Optional[Sequence[int]] = None) -> np.ndarray:
        """Voxels of ``box`` (ZYX; a leading channel axis is kept, optionally only ``channels``),
        padded outside the volume by ``boundary`` (a constant, or a mode of :mod:`em_chunks.io.padding`)."""
        handle = _open(self.path, self.key, self.fill_missing)
        if _is_tiles(self.path):
            mode = boundary if isinstance(boundary, str) else float(boundary)
            return handle.read(box, boundary=mode, layer=self.key or "image")
        from em_chunks.io.padding import read_padded

        if channels is not None and len(self.shape) == 4:
            handle = handle[list(channels)]
        return read_padded(handle, box, boundary)
