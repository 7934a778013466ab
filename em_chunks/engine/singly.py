"""2D images listed in a text file (PyTC ``DO_SINGLY``): each image is one task that reads it, predicts it,
decodes it and saves its results on its own, so the images are never all in memory at once.

Each image is a 'chunk' of a pseudo-grid (index = line number), so the runner's resume markers, retries
and failure summaries apply unchanged: a rerun skips the images already done.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import numpy as np
from distributed import Client

from em_chunks.engine.predict import InferenceSpec, worker_model
from em_chunks.engine.record import RunRecord
from em_chunks.engine.runner import run_stage
from em_chunks.engine.state import RunState
from em_chunks.errors import InputError
from em_chunks.geometry import Box, Chunk
from em_chunks.geometry.window import SlidingWindow
from em_chunks.ops.params import DecodeParams


def read_list(path: Path) -> list[Path]:
    """One absolute path per line (blank lines and ``#`` comments skipped); every file must exist."""
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        p = Path(line)
        if not p.is_absolute():
            raise InputError(f"{path}:{n}: expected an absolute image path, got {line!r}")
        if not p.is_file():
            raise InputError(f"{path}:{n}: image {line} not found")
        out.append(p)
    if not out:
        raise InputError(f"{path}: lists no images (expected one absolute path per line)")
    return out


def _gray(image: np.ndarray, path: Path) -> np.ndarray:
    if image.ndim == 3 and image.shape[-1] in (3, 4):
        image = image[..., :3].mean(axis=-1).round().astype(image.dtype)
    if image.ndim != 2:
        raise InputError(f"{path}: expected a 2D grayscale image, got shape {image.shape}")
    return image


def _flat(value: tuple[int, int, int], z: int) -> tuple[int, int, int]:
    """A per-axis setting for a single section: its z component becomes ``z`` (no overlap/pad across z)."""
    return (z,) + tuple(value)[1:]  # type: ignore[return-value]


def section_window(sw: SlidingWindow, shape: tuple[int, int, int]) -> SlidingWindow:
    """The spec's window grid for one section of ``shape`` (1, Y, X): one window along z, no z padding."""
    return dataclasses.replace(sw, volume=shape, window=_flat(sw.window, 1), overlap=_flat(sw.overlap, 0),
                               stride=_flat(sw.stride, 1), pad=_flat(sw.pad, 0), crop=_flat(sw.crop, 0))


def stage_image(chunk: Chunk, path: str, spec: InferenceSpec, out_dir: str, params: DecodeParams) -> dict:
    """Predict, decode and save one image: ``<stem>_affinities.tif`` and ``<stem>_segmentation.tif``."""
    import imageio.v3 as iio
    import tifffile

    from em_chunks.learn.inference import predict_volume
    from em_chunks.ops.decode_reference import decode_volume

    image = _gray(np.asarray(iio.imread(path)), Path(path))
    shape = (1,) + image.shape
    model = worker_model(spec)
    affs = predict_volume(model, image[None], section_window(spec.sw, shape), spec.options)
    # a 2D model predicts (y, x) affinities: the decoder's z channel is 0 (no links across sections)
    a = affs.astype(np.float32) / (255.0 if affs.dtype == np.uint8 else 1.0)
    if a.shape[0] == 2:
        a = np.concatenate([np.zeros_like(a[:1]), a])
    seg = decode_volume(a, (1, 1, 1), dataclasses.replace(params, channels=(0, 1, 2)))[0]
    stem = Path(path).stem
    tifffile.imwrite(Path(out_dir) / f"{stem}_affinities.tif", affs[:, 0], compression="zlib")
    tifffile.imwrite(Path(out_dir) / f"{stem}_segmentation.tif", seg[0].astype(np.uint32), compression="zlib")
    return {"segments": np.int64(np.unique(seg[seg != 0]).size), "pixels": np.int64(image.size)}


def run_singly(client: Client, images: list[Path], out: Path, spec: InferenceSpec, params: DecodeParams, *,
               record: Optional[RunRecord] = None, progress: bool = True) -> dict:
    """One task per image; returns per-image segment counts (by line order)."""
    chunks = [Chunk(index=(i,), id=i, core=Box((i, 0, 0), (1, 1, 1)), context=Box((i, 0, 0), (1, 1, 1))) for i in range(len(images))]
    summaries = run_stage(client, RunState(out), "image", chunks, stage_image,
                          lambda c: (str(images[c.id]), spec, str(out), params), record=record, progress=progress)
    return {"images": len(images), "segments_per_image": [int(summaries[i]["segments"]) for i in range(len(images))]}
