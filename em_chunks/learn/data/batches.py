"""Worker-side tasks: load a chunk (plus the margin its augmentations need) and make batches from it.

These run inside Dask worker processes. A chunk is loaded once (one task, its result stays on the worker)
and many batch tasks depend on it, so the scheduler runs them where the chunk already is; only finished
batches (uint8 targets, float16 images: a few MB) travel to the trainer.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from em_chunks.geometry import Box
from em_chunks.learn.augment import build_augmentor
from em_chunks.learn.data.sampling import BatchSpec, draw_patch
from em_chunks.learn.data.volumes import VolumeRef, read_box
from em_chunks.learn.targets import affinities, widen_boundaries

KINDS = {"image": "img", "label": "mask", "valid": "mask"}


def load_chunk(refs: Mapping[str, VolumeRef], core: Box, context: Box) -> dict:
    """Read ``context`` (already clipped to the volume) of every layer; images become float32 in [0, 1]."""
    arrays = {}
    for name, ref in refs.items():
        arr = read_box(ref, context)
        if name == "image":
            arr = _to_unit(arr)
        elif name == "valid":
            arr = (arr != 0).astype(np.uint8)
        arrays[name] = arr
    return {"core": core, "context": context, "arrays": arrays}


def _to_unit(arr: np.ndarray) -> np.ndarray:
    """Image intensities to float32 [0, 1] (uint8 / uint16 by their range, floats as they are)."""
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / 65535.0
    return arr.astype(np.float32)


def make_batch(chunk: dict, spec: BatchSpec, seed: int) -> dict[str, np.ndarray]:
    """One batch of ``spec.batch_size`` augmented samples with affinity targets and loss masks.

    Deterministic in ``seed``: the same chunk, spec and seed give the same batch on any worker.
    """
    rng = np.random.default_rng(seed)
    aug = build_augmentor(spec.augment)
    out_shape = tuple(spec.out_shape)
    in_shape = aug.input_shape(out_shape)
    images, targets, masks, tries = [], [], [], 0
    for _ in range(spec.batch_size):
        patch, n = draw_patch(chunk["arrays"], chunk["core"], chunk["context"], in_shape, out_shape, spec.rejection, rng)
        tries += n
        patch = _fit(patch, in_shape)
        kinds = {k: KINDS[k] for k in patch}
        sample = aug(patch, kinds, out_shape, rng)
        label, valid = widen_boundaries(sample["label"], spec.label_erosion), sample.get("valid")
        if spec.dims == 2:
            label, valid = label[0], None if valid is None else valid[0]
        aff, mask = affinities(label, spec.offsets, valid)
        img = sample["image"][0] if spec.dims == 2 else sample["image"]
        images.append(img[None].astype(np.float16))
        targets.append(aff.astype(np.uint8))
        masks.append(mask.astype(np.uint8))
    return {
        "image": np.stack(images),
        "target": np.stack(targets),
        "mask": np.stack(masks),
        "tries": np.array(tries),
    }


def _fit(patch: dict[str, np.ndarray], in_shape) -> dict[str, np.ndarray]:
    """Pad a patch cut from a volume smaller than the input (edge-replicate image, zero labels/valid).

    Only for volumes smaller than the patch: the padding is marked invalid so the loss ignores it.
    """
    shape = next(iter(patch.values())).shape
    if tuple(shape) == tuple(in_shape):
        return patch
    pad = [(0, max(0, n - s)) for s, n in zip(shape, in_shape)]
    out = {}
    for k, v in patch.items():
        if k == "image":
            out[k] = np.pad(v, pad, mode="edge")
        else:
            out[k] = np.pad(v, pad)
    if "valid" not in out:
        out["valid"] = np.pad(np.ones(shape, np.uint8), pad)
    return out
