"""The validation split: which part of the training data is held out, decided once from the config.

``train.data.validation_split`` cuts the last ``fraction`` of every training volume (or of its roi)
along one axis; the training part becomes the volume's roi (chunks, their context and every patch
stay inside it, so no held-out voxel reaches a batch) and the rest a validation volume. Explicit
``train.data.validation`` volumes are kept besides.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from em_chunks.errors import InputError
from em_chunks.geometry import Box
from em_chunks.learn.data import TrainingVolume, training_volume

AXES = {"z": 0, "y": 1, "x": 2}


def resolve_volumes(sections: list[Any]) -> list[TrainingVolume]:
    """TrainingVolume objects (shapes checked) from config sections."""
    out = []
    for v in sections:
        roi = Box.from_bounds(v.roi[0], v.roi[1]) if getattr(v, "roi", None) is not None else None
        out.append(training_volume(v.image, v.label, v.valid_mask, v.weight, roi))
    return out


def cut(box: Box, axis: int, fraction: float) -> tuple[Box, Box]:
    """``box`` split along ``axis``: (the first ``1 - fraction``, the last ``fraction``)."""
    n = box.shape[axis]
    held = max(1, int(round(n * fraction)))
    lo, hi = list(box.begin), list(box.end)
    mid = hi[axis] - held
    first_hi, last_lo = list(hi), list(lo)
    first_hi[axis], last_lo[axis] = mid, mid
    return Box.from_bounds(lo, first_hi), Box.from_bounds(last_lo, hi)


def split_volumes(config: Any) -> tuple[list[TrainingVolume], list[TrainingVolume]]:
    """(training volumes, validation volumes) as the config says, refused in one line when a part is
    smaller than a training patch along the split axis."""
    train = resolve_volumes(config.data.volumes)
    val = resolve_volumes(config.data.validation)
    split = config.data.validation_split
    if split.fraction <= 0:
        return train, val
    axis = AXES[split.axis]
    patch = config.data.patch[axis]
    kept, held = [], []
    for vol in train:
        first, last = cut(vol.box, axis, split.fraction)
        for part, what in ((first, "training"), (last, "held-out")):
            if part.shape[axis] < patch:
                raise InputError(
                    f"train.data.validation_split {split.fraction:g} along {split.axis}: the {what} part of "
                    f"{vol.image} is {part.shape[axis]} voxels long, less than the patch ({patch}); change the fraction"
                )
        kept.append(dataclasses.replace(vol, roi=first))
        held.append(dataclasses.replace(vol, roi=last, weight=1.0))
    return kept, held + val
