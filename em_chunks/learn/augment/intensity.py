"""Image-only augmentations: grayscale jitter, cut-blur and cut-noise. Masks pass through untouched."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from scipy import ndimage

from em_chunks.learn.augment.base import Sample, Shape, Transform, img_only, random_box


class Grayscale(Transform):
    """Contrast, brightness and gamma jitter (images in [0, 1]); ``mode`` "3d" (one draw per patch),
    "2d" (one per section, as section-to-section staining varies) or "mix" (either, at random)."""

    def __init__(self, p: float = 0.75, enabled: bool = True, contrast: float = 0.3, brightness: float = 0.15,
                 gamma: Sequence[float] = (0.7, 1.4), mode: str = "mix") -> None:
        super().__init__(p, enabled)
        if mode not in ("3d", "2d", "mix"):
            raise ValueError(f"Grayscale: mode {mode!r}, expected 3d, 2d or mix")
        self.contrast, self.brightness, self.gamma, self.mode = float(contrast), float(brightness), tuple(gamma), mode

    def apply(self, sample: Sample, kinds: Mapping[str, str], out_shape: Shape, rng: np.random.Generator) -> Sample:
        mode = self.mode if self.mode != "mix" else ("2d" if rng.random() < 0.5 else "3d")
        n = out_shape[0] if mode == "2d" else 1
        c = 1 + rng.uniform(-self.contrast, self.contrast, n)[:, None, None]
        b = rng.uniform(-self.brightness, self.brightness, n)[:, None, None]
        g = np.exp(rng.uniform(np.log(self.gamma[0]), np.log(self.gamma[1]), n))[:, None, None]
        out = dict(sample)
        for k in img_only(sample, kinds):
            v = np.clip(out[k] * c + b, 0, 1)
            out[k] = (v ** g).astype(np.float32)
        return out


class CutBlur(Transform):
    """Down- then up-sample a random box of the image (a locally blurred region; Yoo et al. 2020)."""

    def __init__(self, p: float = 0.5, enabled: bool = True, length_ratio: float = 0.4,
                 down_ratio: Sequence[float] = (2.0, 8.0), downsample_z: bool = False) -> None:
        super().__init__(p, enabled)
        self.length_ratio, self.down_ratio, self.downsample_z = float(length_ratio), tuple(down_ratio), downsample_z

    def apply(self, sample: Sample, kinds: Mapping[str, str], out_shape: Shape, rng: np.random.Generator) -> Sample:
        box = random_box(out_shape, self.length_ratio, rng)
        r = rng.uniform(*self.down_ratio)
        factors = (1 / r if self.downsample_z else 1.0, 1 / r, 1 / r)
        out = dict(sample)
        for k in img_only(sample, kinds):
            v = out[k].astype(np.float32, copy=True)
            region = v[box]
            small = ndimage.zoom(region, factors, order=1)
            back = ndimage.zoom(small, [a / b for a, b in zip(region.shape, small.shape)], order=1)
            region[...] = back[tuple(slice(0, s) for s in region.shape)]
            out[k] = v
        return out


class CutNoise(Transform):
    """Add uniform noise of amplitude ``scale`` to a random box of the image."""

    def __init__(self, p: float = 0.5, enabled: bool = True, length_ratio: float = 0.4, scale: float = 0.2) -> None:
        super().__init__(p, enabled)
        self.length_ratio, self.scale = float(length_ratio), float(scale)

    def apply(self, sample: Sample, kinds: Mapping[str, str], out_shape: Shape, rng: np.random.Generator) -> Sample:
        box = random_box(out_shape, self.length_ratio, rng)
        out = dict(sample)
        for k in img_only(sample, kinds):
            v = out[k].astype(np.float32, copy=True)
            v[box] = np.clip(v[box] + rng.uniform(-self.scale, self.scale, v[box].shape), 0, 1)
            out[k] = v
        return out
