"""Decoding one PNG tile into the 2D array a tile grid expects, with the checks that catch bad input early.

A tile is read whole (one ``open`` + one decode), checked for a complete PNG stream (so a truncated file is
an error even where other code set Pillow's ``LOAD_TRUNCATED_IMAGES``), converted to the layer's values
(grayscale images, 16-bit or VAST RGB label ids, masks), scaled by ``tile_ratio`` as PyTC does (after
decoding; linear for images, nearest for labels and masks), and checked against the size it must have.
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import numpy as np

from em_chunks.errors import InputError

Kind = Literal["image", "label", "valid_mask"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END = b"IEND\xaeB`\x82"
JPEG_START, JPEG_END = b"\xff\xd8", b"\xff\xd9"
TIFF_STARTS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")

#: counts every decode in this process; tests and benchmarks read it to prove a pass decodes each tile once.
_decodes = [0]
_decodes_lock = threading.Lock()


def decode_count() -> int:
    """Number of tile decodes so far in this process."""
    return _decodes[0]


def _count_decode() -> None:
    with _decodes_lock:
        _decodes[0] += 1


@dataclass(frozen=True, slots=True)
class TileFormat:
    """What a layer's tiles must be: the kind, the output dtype, the PyTC ``tile_ratio``, the fill value
    for missing tiles (``None``: a missing tile is an error)."""

    kind: Kind
    dtype: str
    tile_ratio: float = 1.0
    fill_missing: Optional[float] = None


def vast_rgb_to_ids(rgb: np.ndarray) -> np.ndarray:
    """VAST's RGB-encoded segment ids: ``id = R*65536 + G*256 + B`` (24 bits)."""
    rgb = rgb.astype(np.uint32, copy=False)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def ids_to_vast_rgb(ids: np.ndarray) -> np.ndarray:
    """Inverse of :func:`vast_rgb_to_ids` for ids below 2**24."""
    ids = ids.astype(np.uint32, copy=False)
    return np.stack([(ids >> 16) & 255, (ids >> 8) & 255, ids & 255], axis=-1).astype(np.uint8)


def _pixels(path: str, data: bytes, fmt: TileFormat) -> np.ndarray:
    """Decode PNG bytes to a 2D array of the layer's values (before scaling)."""
    from PIL import Image

    # truncation is checked by the format's end marker, so it is caught even where other code set
    # Pillow's LOAD_TRUNCATED_IMAGES (PyTC does); other formats Pillow reads rely on its own checks
    if data.startswith(PNG_SIGNATURE):
        if not data.rstrip(b"\x00").endswith(PNG_END):
            raise InputError(f"{path}: truncated PNG (no IEND chunk at the end); expected a complete PNG tile")
    elif data.startswith(JPEG_START):
        if not data.rstrip(b"\x00").endswith(JPEG_END):
            raise InputError(f"{path}: truncated JPEG (no end-of-image marker); expected a complete tile")
    elif not data.startswith(TIFF_STARTS):
        raise InputError(f"{path}: not a PNG file (bad signature); expected a PNG tile (JPEG and TIFF are read too)")
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            mode = im.mode
            if mode == "P":  # palette: labels keep their colours (VAST ids), others use the index
                im = im.convert("RGB") if fmt.kind == "label" else im
                mode = im.mode
            arr = np.asarray(im)
    except InputError:
        raise
    except Exception as err:  # Pillow raises OSError, SyntaxError, ValueError, zlib.error... for corrupt data
        kind = "PNG" if data.startswith(PNG_SIGNATURE) else "image"
        raise InputError(f"{path}: corrupt {kind} ({type(err).__name__}: {err}); expected a readable PNG tile") from None
    if mode == "1":
        arr = arr.astype(np.uint8)
    if arr.ndim == 3:
        if fmt.kind == "label" and arr.shape[2] in (3, 4):
            arr = vast_rgb_to_ids(arr[..., :3])
        elif arr.shape[2] in (3, 4) and fmt.kind == "image":
            arr = arr[..., 0]  # as PyTC: channel 0 of an RGB(A) image tile
        elif arr.shape[2] == 2:  # grey + alpha
            arr = arr[..., 0]
        else:
            raise InputError(f"{path}: {mode} PNG with {arr.shape[2]} channels; expected a grayscale {fmt.kind} tile")
    if mode == "I" and fmt.kind != "label":  # 16-bit grey opened as 32-bit by some Pillow versions
        arr = arr.astype(np.uint16) if arr.size == 0 or (arr.min() >= 0 and arr.max() < 65536) else arr
    return arr


def _check_dtype(path: str, arr: np.ndarray, fmt: TileFormat) -> None:
    target = np.dtype(fmt.dtype)
    if arr.dtype == target or np.can_cast(arr.dtype, target, "safe"):
        return
    if arr.dtype.kind in "iu" and target.kind in "iu" and arr.size and arr.min() >= np.iinfo(target).min \
            and arr.max() <= np.iinfo(target).max and fmt.kind == "label":
        return  # e.g. RGB ids that fit a uint16 label layer
    raise InputError(
        f"{path}: tile pixels are {arr.dtype} (PNG bit depth); expected values that fit the declared dtype {target}"
    )


def scale_tile(arr: np.ndarray, ratio: float, kind: Kind) -> np.ndarray:
    """PyTC's ``tile_ratio``: zoom the decoded tile, linearly for images, nearest for labels and masks."""
    if ratio == 1:
        return arr
    from scipy.ndimage import zoom

    return zoom(arr, ratio, order=1 if kind == "image" else 0)


def decode_tile(
    path: str,
    fmt: TileFormat,
    min_shape: tuple[int, int],
    max_shape: tuple[int, int],
    where: str = "",
) -> np.ndarray:
    """Read one tile: a 2D array of ``fmt.dtype`` whose shape lies between ``min_shape`` and ``max_shape``.

    ``min_shape`` is the part of the volume the tile covers (a cropped edge tile is that big), ``max_shape``
    the full tile size (an edge tile padded to full size is that big). Missing files are an InputError
    unless ``fmt.fill_missing`` is set. ``where`` (e.g. "section 3, row 1, column 2") goes into messages.
    """
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        if fmt.fill_missing is None:
            at = f" ({where})" if where else ""
            raise InputError(f"{path}: tile file not found{at}; expected a PNG tile (or pass fill_missing=VALUE)") from None
        return np.full(min_shape, fmt.fill_missing, dtype=fmt.dtype)
    except OSError as err:
        raise InputError(f"{path}: cannot read tile ({err.strerror or err}); expected a readable PNG file") from None
    _count_decode()
    arr = _pixels(path, data, fmt)
    _check_dtype(path, arr, fmt)
    arr = scale_tile(arr, fmt.tile_ratio, fmt.kind)
    h, w = arr.shape
    if not (min_shape[0] <= h <= max_shape[0] and min_shape[1] <= w <= max_shape[1]):
        scaled = f" after tile_ratio {fmt.tile_ratio}" if fmt.tile_ratio != 1 else ""
        if min_shape == max_shape:
            want = f"{min_shape[0]}x{min_shape[1]}"
        else:
            want = f"{min_shape[0]}x{min_shape[1]} (cropped) up to {max_shape[0]}x{max_shape[1]} (full tile)"
        raise InputError(f"{path}: tile is {h}x{w}{scaled}; expected {want} (height x width)")
    return arr.astype(fmt.dtype, copy=False)


def read_header(path: str) -> tuple[tuple[int, int], str]:
    """(height, width) and Pillow mode of a tile without decoding it (for ``tileset info --quick``)."""
    from PIL import Image

    try:
        with open(path, "rb") as fh:
            head = fh.read(len(PNG_SIGNATURE))
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - 64))
            tail = fh.read()
    except FileNotFoundError:
        raise InputError(f"{path}: tile file not found; expected a PNG tile") from None
    if head == PNG_SIGNATURE:
        if not tail.rstrip(b"\x00").endswith(PNG_END):
            raise InputError(f"{path}: truncated PNG (no IEND chunk at the end); expected a complete PNG tile")
    elif head.startswith(JPEG_START):
        if not tail.rstrip(b"\x00").endswith(JPEG_END):
            raise InputError(f"{path}: truncated JPEG (no end-of-image marker); expected a complete tile")
    elif not head.startswith(TIFF_STARTS):
        raise InputError(f"{path}: not a PNG file (bad signature); expected a PNG tile (JPEG and TIFF are read too)")
    try:
        with Image.open(path) as im:
            return (im.height, im.width), im.mode
    except Exception as err:
        raise InputError(f"{path}: corrupt PNG header ({type(err).__name__}: {err}); expected a readable PNG") from None
