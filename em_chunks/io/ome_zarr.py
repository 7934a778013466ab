"""Output stores: OME-Zarr (NGFF 0.5, zarr v3) groups whose storage chunks align with the write boxes.

Layout of one run's output ``OUT.zarr``::

    OUT.zarr/affinities/0             (C, Z, Y, X) float32 or uint8, an NGFF image
    OUT.zarr/labels/segmentation/0    (Z, Y, X) uint64, an NGFF image-label
    OUT.zarr/work/...                 intermediate arrays (fragments), safe to delete after a run
    OUT.zarr/.emchunks/...            resume state (done markers + per-chunk summaries)
    OUT.zarr/run.json, metrics.json   the run record and the metrics
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import zarr
from zarr.codecs import BloscCodec

NGFF_VERSION = "0.5"
COMPRESSOR = BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle")


def _axes(ndim: int) -> list[dict]:
    space = [{"name": n, "type": "space", "unit": "nanometer"} for n in "zyx"]
    return ([{"name": "c", "type": "channel"}] if ndim == 4 else []) + space


def _multiscales(name: str, ndim: int, voxel_size: Sequence[float] | None) -> dict:
    scale = [float(v) for v in (voxel_size or (1.0, 1.0, 1.0))]
    if ndim == 4:
        scale = [1.0] + scale
    return {
        "name": name,
        "axes": _axes(ndim),
        "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}],
    }


def open_root(path: str | Path, mode: str = "a") -> zarr.Group:
    return zarr.open_group(str(path), mode=mode, zarr_format=3)


def check_alignment(shape: Sequence[int], storage_chunks: Sequence[int], write_boxes: Sequence) -> None:
    """Refuse (as a programming error) write boxes that would share a storage chunk between two tasks."""
    for box in write_boxes:
        for b, e, c, length in zip(box.begin[-3:], box.end[-3:], storage_chunks[-3:], shape[-3:]):
            if b % c != 0 or (e % c != 0 and e != length):
                raise ValueError(f"write box {box} is not aligned to storage chunks {tuple(storage_chunks)}")


def create_image(
    root: zarr.Group,
    name: str,
    shape: Sequence[int],
    dtype: np.dtype | str,
    storage_chunks: Sequence[int],
    voxel_size: Sequence[float] | None = None,
    *,
    label: bool = False,
    overwrite: bool = False,
) -> zarr.Array:
    """Create (or reopen, when it exists with the same shape/dtype/chunks) an NGFF image at ``name/0``."""
    ndim = len(shape)
    group_path = f"labels/{name}" if label else name
    if group_path in root and "0" in root[group_path] and not overwrite:
        arr = root[group_path]["0"]
        if tuple(arr.shape) != tuple(shape) or np.dtype(arr.dtype) != np.dtype(dtype) or tuple(arr.chunks) != tuple(storage_chunks):
            raise ValueError(f"{root.store_path}/{group_path}/0 exists with another shape, dtype or chunking")
        return arr
    group = root.require_group(group_path)
    ome: dict = {"version": NGFF_VERSION, "multiscales": [_multiscales(name, ndim, voxel_size)]}
    if label:
        ome["image-label"] = {"version": NGFF_VERSION, "source": {"image": "../../affinities"}}
        labels = root.require_group("labels")
        names = list(labels.attrs.get("ome", {}).get("labels", []))
        if name not in names:
            labels.attrs["ome"] = {"version": NGFF_VERSION, "labels": names + [name]}
    group.attrs["ome"] = ome
    return group.create_array(
        "0",
        shape=tuple(shape),
        dtype=dtype,
        chunks=tuple(storage_chunks),
        compressors=COMPRESSOR,
        fill_value=0,
        dimension_names=[a["name"] for a in _axes(ndim)],
        overwrite=True,
    )


def create_work_array(root: zarr.Group, name: str, shape: Sequence[int], dtype, storage_chunks: Sequence[int]) -> zarr.Array:
    """An intermediate array under ``work/`` (reopened as is when it already matches)."""
    work = root.require_group("work")
    if name in work:
        arr = work[name]
        if tuple(arr.shape) == tuple(shape) and np.dtype(arr.dtype) == np.dtype(dtype) and tuple(arr.chunks) == tuple(storage_chunks):
            return arr
    return work.create_array(name, shape=tuple(shape), dtype=dtype, chunks=tuple(storage_chunks), compressors=COMPRESSOR, fill_value=0, overwrite=True)


def voxel_size_from_group(group: zarr.Group) -> tuple[float, float, float] | None:
    """The (z, y, x) scale of dataset 0 of an NGFF multiscale group, or None."""
    attrs = dict(group.attrs)
    ome = attrs.get("ome", attrs)
    ms = ome.get("multiscales")
    if not ms:
        return None
    try:
        scale = ms[0]["datasets"][0]["coordinateTransformations"][0]["scale"]
    except (KeyError, IndexError, TypeError):
        return None
    return tuple(float(v) for v in scale[-3:])  # type: ignore[return-value]
