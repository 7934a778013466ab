"""Output stores: OME-Zarr (NGFF 0.5, zarr v3) groups whose storage chunks align with the write
boxes.

Where each array lives is :mod:`em_chunks.io.layout`'s business; this module writes the arrays and
their NGFF metadata (axes, per-level ``coordinateTransformations``, the image-label link to its
image), and holds the one walker that reads them back (:func:`walk_to_array`: from a group to the array
its multiscales name, used to open an array and to find its voxel size).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from em_chunks.errors import InputError
from em_chunks.io import layout

NGFF_VERSION = "0.5"
COMPRESSOR = BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle")
Factor = tuple[int, int, int]


def _axes(ndim: int) -> list[dict]:
    space = [{"name": n, "type": "space", "unit": "nanometer"} for n in "zyx"]
    return ([{"name": "c", "type": "channel"}] if ndim == 4 else []) + space


def level_transforms(
    voxel_size: Sequence[float] | None, factor: Sequence[int], ndim: int
) -> list[dict]:
    """NGFF ``coordinateTransformations`` of a level downsampled by ``factor`` (z, y, x) from level
    0: its voxel size, and (below level 0) the shift of a block's centre, half a block minus half a
    voxel."""
    voxel = [float(v) for v in (voxel_size or (1.0, 1.0, 1.0))]
    scale = [v * f for v, f in zip(voxel, factor)]
    shift = [v * (f - 1) / 2 for v, f in zip(voxel, factor)]
    lead = [1.0] if ndim == 4 else []
    out: list[dict] = [{"type": "scale", "scale": lead + scale}]
    if any(shift):
        out.append({"type": "translation", "translation": [0.0] * len(lead) + shift})
    return out


def multiscales(
    name: str, ndim: int, voxel_size: Sequence[float] | None, factors: Sequence[Factor]
) -> dict:
    """One NGFF multiscale: level ``k`` is dataset ``k``, downsampled by ``factors[k]`` from level
    0."""
    return {
        "name": name,
        "axes": _axes(ndim),
        "datasets": [
            {
                "path": layout.level_name(k),
                "coordinateTransformations": level_transforms(voxel_size, f, ndim),
            }
            for k, f in enumerate(factors)
        ],
    }


def open_root(path: str | Path, mode: str = "a") -> zarr.Group:
    return zarr.open_group(str(path), mode=mode, zarr_format=3)


def array_url(arr: zarr.Array, root: str | Path) -> str:
    """The path a worker opens ``arr`` by (``root`` is the store's folder)."""
    return f"{root}/{arr.path}"


def check_alignment(
    shape: Sequence[int], storage_chunks: Sequence[int], write_boxes: Sequence
) -> None:
    """Refuse (as a programming error) write boxes that would share a storage chunk between two
    tasks."""
    for box in write_boxes:
        for b, e, c, length in zip(box.begin[-3:], box.end[-3:], storage_chunks[-3:], shape[-3:]):
            if b % c != 0 or (e % c != 0 and e != length):
                raise ValueError(
                    f"write box {box} is not aligned to storage chunks {tuple(storage_chunks)}"
                )


def create_level(
    group: zarr.Group,
    level: int,
    shape: Sequence[int],
    dtype: np.dtype | str,
    storage_chunks: Sequence[int],
) -> zarr.Array:
    """Create (or reopen, when it exists with the same shape/dtype/chunks) level ``level`` of a
    group."""
    name = layout.level_name(level)
    chunks = tuple(min(int(c), int(s)) for c, s in zip(storage_chunks, shape))
    if name in group:
        arr = group[name]
        if (
            isinstance(arr, zarr.Array)
            and tuple(arr.shape) == tuple(shape)
            and np.dtype(arr.dtype) == np.dtype(dtype)
            and tuple(arr.chunks) == chunks
        ):
            return arr
    return group.create_array(
        name,
        shape=tuple(shape),
        dtype=dtype,
        chunks=chunks,
        compressors=COMPRESSOR,
        fill_value=0,
        dimension_names=[a["name"] for a in _axes(len(shape))],
        overwrite=True,
    )


def _check_existing(
    group: zarr.Group, shape: Sequence[int], dtype, storage_chunks: Sequence[int]
) -> None:
    name = layout.level_name(0)
    if name in group:
        arr = group[name]
        if (
            tuple(arr.shape) != tuple(shape)
            or np.dtype(arr.dtype) != np.dtype(dtype)
            or tuple(arr.chunks) != tuple(storage_chunks)
        ):
            raise ValueError(
                f"{group.store_path}/{name} exists with another shape, dtype or chunking"
            )


def _set_ome(
    group: zarr.Group, name: str, ndim: int, voxel_size, extra: dict | None = None
) -> None:
    """Write the group's NGFF metadata with level 0 only, unless it already lists this image's
    levels."""
    old = dict(group.attrs).get("ome", {})
    if old.get("multiscales"):
        return  # reopened: keep the levels a finished pyramid recorded
    group.attrs["ome"] = {
        "version": NGFF_VERSION,
        **(extra or {}),
        "multiscales": [multiscales(name, ndim, voxel_size, [(1, 1, 1)])],
    }


def create_root_image(
    root: zarr.Group,
    name: str,
    shape: Sequence[int],
    dtype: np.dtype | str,
    storage_chunks: Sequence[int],
    voxel_size: Sequence[float] | None = None,
) -> zarr.Array:
    """The run's NGFF image at the root of the output (level 0): predict's affinities, decode's mean
    affinity."""
    _check_existing(root, shape, dtype, storage_chunks)
    _set_ome(root, name, len(shape), voxel_size)
    return create_level(root, 0, shape, dtype, storage_chunks)


def create_label(
    root: zarr.Group,
    name: str,
    shape: Sequence[int],
    dtype: np.dtype | str,
    storage_chunks: Sequence[int],
    voxel_size: Sequence[float] | None = None,
) -> zarr.Array:
    """An NGFF image-label ``labels/<name>`` (level 0). It names the root as its image when the root
    is one (never a dangling ``source.image``), and is listed in ``labels``' metadata."""
    labels = root.require_group(layout.LABELS)
    group = labels.require_group(name)
    _check_existing(group, shape, dtype, storage_chunks)
    image_label: dict = {"version": NGFF_VERSION}
    if dict(root.attrs).get("ome", {}).get("multiscales"):
        image_label["source"] = {"image": "../../"}
    _set_ome(group, name, len(shape), voxel_size, {"image-label": image_label})
    names = list(dict(labels.attrs).get("ome", {}).get("labels", []))
    if name not in names:
        labels.attrs["ome"] = {"version": NGFF_VERSION, "labels": names + [name]}
    return create_level(group, 0, shape, dtype, storage_chunks)


def create_segmentation(
    root: zarr.Group,
    shape: Sequence[int],
    storage_chunks: Sequence[int],
    voxel_size: Sequence[float] | None = None,
) -> zarr.Array:
    """The uint64 segmentation, level 0 (``labels/segmentation/0``)."""
    return create_label(root, layout.SEGMENTATION, shape, np.uint64, storage_chunks, voxel_size)


def create_work_array(
    root: zarr.Group, name: str, shape: Sequence[int], dtype, storage_chunks: Sequence[int]
) -> zarr.Array:
    """An intermediate array under ``work/`` (reopened as is when it already matches)."""
    work = root.require_group(layout.WORK)
    if name in work:
        arr = work[name]
        if (
            tuple(arr.shape) == tuple(shape)
            and np.dtype(arr.dtype) == np.dtype(dtype)
            and tuple(arr.chunks) == tuple(storage_chunks)
        ):
            return arr
    return work.create_array(
        name,
        shape=tuple(shape),
        dtype=dtype,
        chunks=tuple(storage_chunks),
        compressors=COMPRESSOR,
        fill_value=0,
        overwrite=True,
    )


def create_fragments(
    root: zarr.Group, shape: Sequence[int], storage_chunks: Sequence[int]
) -> zarr.Array:
    """The decoder's uint64 fragments (``work/fragments``)."""
    return create_work_array(root, "fragments", shape, np.uint64, storage_chunks)


def set_levels(group: zarr.Group, factors: Sequence[Factor]) -> None:
    """Record the pyramid levels of a multiscale group (after they are all written)."""
    ome = dict(dict(group.attrs)["ome"])
    ms = dict(ome["multiscales"][0])
    ndim = len(ms["axes"])
    voxel = voxel_size_from_group(group)
    ome["multiscales"] = [multiscales(ms.get("name", ""), ndim, voxel, factors)]
    group.attrs["ome"] = ome


def level_count(group: zarr.Group) -> int:
    ms = dict(group.attrs).get("ome", {}).get("multiscales") or [{}]
    return len(ms[0].get("datasets", []))


def multiscales_of(attrs: dict) -> list:
    """The NGFF ``multiscales`` of a node's attributes (0.5 under ``ome``, 0.4 at the top), or []."""
    ms = attrs.get("ome", {}).get("multiscales") if isinstance(attrs.get("ome"), dict) else None
    return ms or attrs.get("multiscales") or []


def walk_to_array(node: Any, key: Optional[str], where: str, depth: int = 4) -> list[tuple[Any, Optional[str]]]:
    """The walk from ``node`` down to an array, as ``[(node, name of the child taken), ..., (array, None)]``:
    the parts of ``key`` first, then in each group its multiscales' first dataset (or its only array), at
    most ``depth`` levels below the key. A wrong key or an ambiguous group is a one-line InputError."""
    steps: list[tuple[Any, Optional[str]]] = []
    trail = [part for part in (key or "").split("/") if part]
    if trail and isinstance(node, zarr.Array):
        raise InputError(f"{where}: is an array, not a group; expected no key (got {key!r})")
    for level in range(len(trail) + depth):
        if isinstance(node, zarr.Array):
            return steps + [(node, None)]
        name = trail[level] if level < len(trail) else _default_child(node, where)
        steps.append((node, name))
        try:
            node = node[name]
        except KeyError:
            members = sorted(k for k, _ in node.members())
            raise InputError(f"{where}: no array {key!r}; expected one of {', '.join(members) or '(empty group)'}") from None
        where = f"{where}/{name}" if level < len(trail) else where
    if isinstance(node, zarr.Array):
        return steps + [(node, None)]
    raise InputError(f"{where}: zarr groups nested too deep; expected key= naming an array")


def _default_child(group: Any, where: str) -> str:
    ms = multiscales_of(dict(group.attrs))
    if ms and ms[0].get("datasets"):
        return str(ms[0]["datasets"][0]["path"])
    arrays = [name for name, _ in group.arrays()]
    if len(arrays) == 1:
        return arrays[0]
    members = sorted(k for k, _ in group.members())
    raise InputError(f"{where}: a zarr group; expected key= naming one of {', '.join(members) or '(nothing)'}")


def voxel_size_from_group(group: zarr.Group) -> tuple[float, float, float] | None:
    """The (z, y, x) scale of dataset 0 of an NGFF multiscale group, or None."""
    ms = multiscales_of(dict(group.attrs))
    if not ms:
        return None
    try:
        scale = ms[0]["datasets"][0]["coordinateTransformations"][0]["scale"]
    except (KeyError, IndexError, TypeError):
        return None
    return tuple(float(v) for v in scale[-3:])  # type: ignore[return-value]
