"""Augmentations by name, built from the ``train.augment`` config section.

Order matters and is fixed here (as in PyTC): geometric moves first (they need real context), then
section defects, then intensity changes, so intensity jitter never sees interpolated padding.
"""

from __future__ import annotations

from typing import Any, Mapping

from em_chunks.learn.augment.base import Compose, Transform, center_crop, warp_sections
from em_chunks.learn.augment.geometric import Elastic, FlipRotate, Rescale
from em_chunks.learn.augment.intensity import CutBlur, CutNoise, Grayscale
from em_chunks.learn.augment.sections import Misalignment, MissingParts, MissingSection, MotionBlur

#: name in the config -> class, in the order they are applied
TRANSFORMS: dict[str, type[Transform]] = {
    "flip": FlipRotate,
    "rescale": Rescale,
    "elastic": Elastic,
    "misalignment": Misalignment,
    "missing_section": MissingSection,
    "missing_parts": MissingParts,
    "motion_blur": MotionBlur,
    "grayscale": Grayscale,
    "cut_blur": CutBlur,
    "cut_noise": CutNoise,
}


def build_augmentor(config: Mapping[str, Mapping[str, Any] | None] | None) -> Compose:
    """A :class:`Compose` from ``{name: {p, enabled, ...params}}``; missing names are off."""
    config = dict(config or {})
    unknown = set(config) - set(TRANSFORMS)
    if unknown:
        raise ValueError(f"augment: unknown transforms {sorted(unknown)}; expected some of {list(TRANSFORMS)}")
    transforms = []
    for name, cls in TRANSFORMS.items():
        params = config.get(name)
        if params is None:
            continue
        params = dict(params)
        if params.get("enabled", True):
            transforms.append(cls(**params))
    return Compose(transforms)


__all__ = ["Compose", "Transform", "TRANSFORMS", "build_augmentor", "center_crop", "warp_sections"] + [
    c.__name__ for c in TRANSFORMS.values()
]
