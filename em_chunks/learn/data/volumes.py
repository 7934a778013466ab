"""Where training arrays come from: a reference (path + layer) that any worker can open and read a box of.

Only references cross the scheduler; each worker opens the volume itself (cached per process) and reads
the box it needs, so memory is bounded by the chunk, not the volume. Tile JSON, TIFF and zarr open through
``em_chunks.open_volume`` (lazy dask arrays), a tile JSON layer through ``TileSet.read`` (only the
tiles a box touches are decoded).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from em_chunks.errors import InputError
from em_chunks.geometry import Box

LAYERS = ("image", "label", "valid_mask")


@dataclass(frozen=True)
class VolumeRef:
    """A volume on disk: ``path`` and, for a tile JSON holding several layers, which ``layer``."""

    path: str
    layer: str = "image"

    def __str__(self) -> str:
        return self.path if self.layer == "image" else f"{self.path} ({self.layer})"


def _is_tile_json(path: str) -> bool:
    return path.lower().endswith(".json")


@functools.lru_cache(maxsize=16)
def _tileset(path: str):
    from em_chunks.io.tileset import TileSet

    return TileSet.from_json(path)


def json_layers(path: str) -> set[str]:
    """The layers (``image``, ``label``, ``valid_mask``) a tile JSON names."""
    return set(_tileset(path).layers)


class _TileLayer:
    """One layer of a tile JSON, sliced by reading only the tiles a box touches (no dask graph)."""

    def __init__(self, path: str, layer: str) -> None:
        self.tiles, self.layer = _tileset(path), layer
        if layer not in self.tiles.layers:
            raise InputError(f"{path}: tile JSON has no '{layer}' key (it has {', '.join(self.tiles.layers)})")
        self.shape, self.dtype = self.tiles.shape, self.tiles.dtype(layer)

    def __getitem__(self, slices) -> np.ndarray:
        return self.tiles.read(Box.from_slices(slices), boundary="none", layer=self.layer)


@functools.lru_cache(maxsize=16)
def open_ref(ref: VolumeRef) -> Any:
    """Open ``ref`` as an array-like with ``.shape``, ``.dtype`` and box slicing (cached per process)."""
    if _is_tile_json(ref.path):
        return _TileLayer(ref.path, ref.layer)
    from em_chunks.io.volume import open_volume

    return open_volume(ref.path)


def volume_shape(ref: VolumeRef) -> tuple[int, ...]:
    shape = tuple(int(s) for s in open_ref(ref).shape)
    if len(shape) != 3:
        raise InputError(f"{ref}: expected a 3D (z, y, x) volume, got shape {shape}")
    return shape


def read_box(ref: VolumeRef, box: Box) -> np.ndarray:
    """The voxels of ``box`` (which must lie inside the volume) as a numpy array."""
    arr = open_ref(ref)[box.slices()]
    if hasattr(arr, "compute"):
        import dask

        with dask.config.set(scheduler="synchronous"):  # we are inside a worker task: no nested graph
            arr = arr.compute()
    return np.asarray(arr)


@dataclass(frozen=True)
class TrainingVolume:
    """An image with its labels (and optional valid mask), checked to share one shape."""

    image: VolumeRef
    label: VolumeRef
    valid: Optional[VolumeRef] = None
    weight: float = 1.0
    #: train on this part only (e.g. keep the rest for validation); None = the whole volume
    roi: Optional[Box] = None

    @property
    def box(self) -> Box:
        """The region samples are drawn from, in volume coordinates."""
        return self.roi if self.roi is not None else Box.from_shape(volume_shape(self.image))

    @property
    def shape(self) -> tuple[int, ...]:
        return self.box.shape

    def refs(self) -> dict[str, VolumeRef]:
        out = {"image": self.image, "label": self.label}
        if self.valid is not None:
            out["valid"] = self.valid
        return out

    def check(self) -> "TrainingVolume":
        """Refuse mismatched shapes up front (one line naming both files)."""
        shape = volume_shape(self.image)
        for name, ref in self.refs().items():
            other = volume_shape(ref)
            if other != shape:
                raise InputError(f"{ref}: {name} shape {other} differs from image {self.image} shape {shape}")
        if self.roi is not None and (self.roi.empty or not Box.from_shape(shape).contains(self.roi)):
            raise InputError(f"{self.image}: roi {self.roi} is empty or outside the volume of shape {shape}")
        return self


def _tile_ref(path: str, layer: str, flag: str) -> VolumeRef:
    """The ``layer`` of a tile JSON given as ``flag``; refused when the JSON has no such layer (its image
    layer holds grey values, which would silently be trained on as if they were ids or a mask)."""
    layers = json_layers(path)
    if layer not in layers:
        raise InputError(f"{path}: no {layer} layer in that tile JSON (it has: {', '.join(sorted(layers))}); "
                         f"{flag} takes a tile JSON with a '{layer}' key, a TIFF or a zarr array")
    return VolumeRef(path, layer)


def _check_tiles(ref: VolumeRef) -> None:
    """Missing or truncated tiles are refused before training (headers only: fast), not met mid-run."""
    if not _is_tile_json(ref.path):
        return
    problems = _tileset(ref.path).check([ref.layer], decode=False)
    if problems:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise InputError(f"{problems[0]}{more}")


def _check_dtype(ref: VolumeRef, what: str, kinds: str) -> None:
    dtype = np.dtype(open_ref(ref).dtype)
    if dtype.kind not in kinds:
        expected = "integer segment ids (0 = unlabelled)" if what == "labels" else "numbers (nonzero = valid)"
        raise InputError(f"{ref}: {what} of dtype {dtype}; expected {expected}")


def training_volume(image: str, labels: Optional[str] = None, valid: Optional[str] = None, weight: float = 1.0,
                    roi: Optional[Box] = None) -> TrainingVolume:
    """Resolve where labels come from: ``labels`` if given, else the ``label`` layer of a tile JSON."""
    image = str(image)
    if not Path(image).exists():
        raise InputError(f"{image}: image volume not found")
    layers = json_layers(image) if _is_tile_json(image) else set()
    if labels is None:
        if "label" not in layers:
            raise InputError(
                f"{image}: no labels: the tile JSON has no 'label' key and --labels was not given"
                if _is_tile_json(image) else f"{image}: no labels given; pass --labels LABELS (tile JSON, TIFF or zarr)"
            )
        label_ref = VolumeRef(image, "label")
    else:
        if not Path(labels).exists():
            raise InputError(f"{labels}: label volume not found")
        label_ref = _tile_ref(str(labels), "label", "--labels") if _is_tile_json(labels) else VolumeRef(str(labels))
    valid_ref = None
    if valid is not None:
        if not Path(valid).exists():
            raise InputError(f"{valid}: valid mask volume not found")
        valid_ref = _tile_ref(str(valid), "valid_mask", "--valid-mask") if _is_tile_json(valid) else VolumeRef(str(valid))
    elif "valid_mask" in layers:
        valid_ref = VolumeRef(image, "valid_mask")
    vol = TrainingVolume(VolumeRef(image, "image"), label_ref, valid_ref, float(weight), roi)
    for ref in vol.refs().values():
        _check_tiles(ref)
    _check_dtype(label_ref, "labels", "iub")
    if valid_ref is not None:
        _check_dtype(valid_ref, "valid mask", "iubf")
    return vol.check()
