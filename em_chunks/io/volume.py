"""``open_volume``: any input the pipeline takes (tile JSON, TIFF stack, zarr array or group) as a lazy
dask array; ``voxel_size_of``: its voxel size (z, y, x) where the source records one.

Nothing is read until a block is computed: TIFF stacks are read page by page (a task per run of pages),
zarr through its own chunks, tile JSONs through :class:`~em_chunks.io.tileset.TileSet` (tile-aligned blocks).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any, Optional

import numpy as np

from em_chunks.errors import InputError

TIFF_SUFFIXES = (".tif", ".tiff")
TARGET_BYTES = 64 << 20  # per dask block of a TIFF stack ...
MAX_PAGES = 32  # ... and at most this many pages, so a crop of a few sections reads only a few pages


def _kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".json"):
        return "tiles"
    if name.endswith(TIFF_SUFFIXES):
        return "tiff"
    if path.is_dir() and (
        name.endswith(".zarr") or (path / "zarr.json").is_file() or (path / ".zarray").is_file()
        or (path / ".zgroup").is_file()
    ):
        return "zarr"
    if name.endswith(".zarr"):
        return "zarr"
    return "unknown"


def open_volume(path: str | Path, *, key: Optional[str] = None):
    """A lazy ``dask.array.Array`` for a tile JSON (``key``: image/label/valid_mask layer), a TIFF stack
    ((Z,Y,X) or (C,Z,Y,X) pages), or a zarr array / group (``key``: the array inside; without it an OME-Zarr
    group opens its first scale, a group with one array opens that one)."""
    p = Path(path)
    kind = _kind(p)
    if kind != "zarr" and not p.exists():
        raise InputError(f"{p}: file not found; expected a tile JSON, a TIFF stack or a zarr array")
    if kind == "tiles":
        from em_chunks.io.tileset import TileSet

        ts = TileSet.from_json(p)
        layer = key or "image"
        return ts.to_dask(chunks=ts.default_chunks(layer), halo=0, boundary="none", layer=layer)
    if kind == "tiff":
        return _open_tiff(p)
    if kind == "zarr":
        return _open_zarr(p, key)
    raise InputError(f"{p}: unknown volume format; expected a .json tile grid, a .tif/.tiff stack or a .zarr store")


# ---- TIFF ----------------------------------------------------------------------------------------
def _read_pages(path: str, first: int, count: int, plane: tuple[int, int], dtype: str) -> np.ndarray:
    import tifffile

    try:
        data = tifffile.imread(path, key=range(first, first + count), maxworkers=1)
    except Exception as err:
        raise InputError(f"{path}: cannot read TIFF pages {first}..{first + count - 1} ({err})") from None
    return np.asarray(data, dtype=dtype).reshape((count,) + plane)


def _read_whole(path: str, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    import tifffile

    return np.asarray(tifffile.imread(path), dtype=dtype).reshape(shape)


def _open_tiff(p: Path):
    import dask.array as da
    import tifffile
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    try:
        with tifffile.TiffFile(p) as tif:
            series = tif.series[0]
            shape, dtype = tuple(int(s) for s in series.shape), np.dtype(series.dtype)
            pages = len(series.pages)
            page_shapes = {tuple(pg.shape) for pg in series.pages[: min(pages, 4)] if pg is not None}
            contiguous = series.dataoffset is not None
    except Exception as err:
        raise InputError(f"{p}: not a readable TIFF ({type(err).__name__}: {err})") from None
    if len(shape) not in (2, 3, 4):
        raise InputError(f"{p}: TIFF series of shape {shape}; expected (Z,Y,X) or (C,Z,Y,X)")
    if len(shape) == 2:
        shape = (1,) + shape
    plane = shape[-2:]
    lead = shape[:-2]
    token = tokenize(str(p.resolve()), p.stat().st_mtime, shape, str(dtype))
    name = f"tiff-{token}"
    if pages == int(np.prod(lead)) and page_shapes <= {plane}:
        per = max(1, min(shape[-3], MAX_PAGES, TARGET_BYTES // max(1, plane[0] * plane[1] * dtype.itemsize)))
        zchunks = da.core.normalize_chunks((per,), (shape[-3],))[0]
        chunks = tuple((1,) * n for n in lead[:-1]) + (zchunks, (plane[0],), (plane[1],))
        zstarts = np.concatenate([[0], np.cumsum(zchunks)]).astype(int)
        dsk = {}
        for outer in itertools.product(*(range(n) for n in lead[:-1])):
            flat = int(np.ravel_multi_index(outer, lead[:-1])) * shape[-3] if outer else 0
            for zi, (z0, z1) in enumerate(zip(zstarts[:-1], zstarts[1:])):
                block = (1,) * len(outer) + (int(z1 - z0),) + plane
                dsk[(name,) + outer + (zi, 0, 0)] = (
                    _reshape, (_read_pages, str(p), flat + int(z0), int(z1 - z0), plane, dtype.name), block)
        graph = HighLevelGraph.from_collections(name, dsk, dependencies=[])
        return da.Array(graph, name, chunks, dtype=dtype, meta=np.empty((0,) * len(shape), dtype))
    if contiguous:  # one big page (or odd layout) stored uncompressed: memory-map it
        mm = tifffile.memmap(str(p), mode="r")
        return da.from_array(mm.reshape(shape), chunks=(1,) * (len(shape) - 3) + ("auto", -1, -1))
    if shape and int(np.prod(shape)) * dtype.itemsize <= 4 * TARGET_BYTES:
        import dask

        return da.from_delayed(dask.delayed(_read_whole)(str(p), shape, dtype.name), shape, dtype=dtype)
    raise InputError(f"{p}: compressed TIFF whose pages are not 2D planes; expected one page per section")


def _reshape(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return a.reshape(shape)


# ---- zarr ----------------------------------------------------------------------------------------
def _resolve_zarr(node: Any, where: str, key: Optional[str]):
    """The array ``key`` names in ``node`` (descending through OME-Zarr groups, e.g. labels/segmentation -> 0)."""
    from em_chunks.io.ome_zarr import walk_to_array

    return walk_to_array(node, key, where)[-1][0]


def _open_zarr(p: Path, key: Optional[str]):
    import dask.array as da
    import zarr

    if not p.exists():
        raise InputError(f"{p}: zarr store not found")
    try:
        node = zarr.open(store=str(p), mode="r")
    except Exception as err:
        raise InputError(f"{p}: not a readable zarr store ({type(err).__name__}: {err})") from None
    arr = _resolve_zarr(node, str(p), key)
    if arr.ndim not in (3, 4):
        raise InputError(f"{p}: zarr array of shape {arr.shape}; expected (Z,Y,X) or (C,Z,Y,X)")
    return da.from_zarr(arr)


# ---- voxel size ----------------------------------------------------------------------------------
def _scale_of(datasets: list, path: Optional[str], outer: list) -> Optional[list[float]]:
    chosen = None
    for ds in datasets:
        if path is None or ds.get("path") == path:
            chosen = ds
            break
    if chosen is None:
        return None
    scale = None
    for t in chosen.get("coordinateTransformations", []):
        if t.get("type") == "scale":
            scale = [float(v) for v in t["scale"]]
    for t in outer or []:
        if t.get("type") == "scale" and scale is not None:
            scale = [a * float(b) for a, b in zip(scale, t["scale"])]
    return scale


def _zyx(values: Any) -> Optional[tuple[float, float, float]]:
    try:
        v = [float(x) for x in values]
    except (TypeError, ValueError):
        return None
    return tuple(v[-3:]) if len(v) >= 3 else None  # type: ignore[return-value]


def _zarr_voxel_size(p: Path, key: Optional[str]) -> Optional[tuple[float, float, float]]:
    import zarr

    try:
        root = zarr.open(store=str(p), mode="r")
    except Exception:
        return None
    from em_chunks.io.ome_zarr import multiscales_of, walk_to_array

    try:
        steps = walk_to_array(root, key, str(p))
    except InputError:
        steps = [(root, None)]
    # along the walk from the root to the array, the innermost voxel size or multiscales scale wins
    found = None
    for node, child in steps:
        attrs = dict(node.attrs)
        for name in ("voxel_size", "resolution"):
            if name in attrs and _zyx(attrs[name]):
                found = _zyx(attrs[name])
        ms = multiscales_of(attrs)
        if ms and child is not None:
            scale = _scale_of(ms[0].get("datasets", []), child, ms[0].get("coordinateTransformations", []))
            if scale:
                found = _zyx(scale)
    if found is None and ((p.parent / "zarr.json").is_file() or (p.parent / ".zgroup").is_file()):
        # the path names an array inside an OME-Zarr group: look at the parent's metadata
        return _zarr_voxel_size(p.parent, p.name + ("/" + key if key else ""))
    return found


def _tiff_voxel_size(p: Path) -> Optional[tuple[float, float, float]]:
    import tifffile

    try:
        with tifffile.TiffFile(p) as tif:
            page = tif.pages[0]
            desc = page.description or ""
            if desc.startswith("{"):
                try:
                    meta = json.loads(desc)
                except json.JSONDecodeError:
                    meta = {}
                for name in ("voxel_size", "voxel_size_zyx", "voxel_size_nm_zyx", "resolution"):
                    if name in meta and _zyx(meta[name]):
                        return _zyx(meta[name])
            if tif.is_ome and tif.ome_metadata:
                import re

                sizes = {}
                for ax in "ZYX":
                    m = re.search(rf'PhysicalSize{ax}="([0-9.eE+-]+)"', tif.ome_metadata)
                    if m:
                        sizes[ax] = float(m.group(1))
                if len(sizes) == 3:
                    return (sizes["Z"], sizes["Y"], sizes["X"])
            ij = tif.imagej_metadata
            if ij and "spacing" in ij:
                xres, yres = page.tags.get("XResolution"), page.tags.get("YResolution")
                if xres and yres:
                    x = xres.value[1] / xres.value[0]
                    y = yres.value[1] / yres.value[0]
                    return (float(ij["spacing"]), float(y), float(x))
    except Exception:
        return None
    return None


def voxel_size_of(path: str | Path, *, key: Optional[str] = None) -> Optional[tuple[float, float, float]]:
    """The voxel size (z, y, x) a source records, or ``None``: a tile JSON's ``voxel_size`` key, TIFF
    metadata (a JSON description with ``voxel_size``/``voxel_size_nm_zyx``, OME PhysicalSize, ImageJ
    spacing + resolution), OME-Zarr multiscales scale or a ``voxel_size`` attribute of a zarr node."""
    p = Path(path)
    kind = _kind(p)
    if kind == "tiles":
        from em_chunks.io.tileset import TileSet

        return TileSet.from_json(p).voxel_size
    if kind == "tiff":
        return _tiff_voxel_size(p)
    if kind == "zarr":
        return _zarr_voxel_size(p, key)
    return None
