"""Geometric augmentations applied alike to images and masks: flips/rotations, rescale, elastic warp."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from scipy import ndimage

from em_chunks.learn.augment.base import Sample, Shape, Transform, warp_sections


class FlipRotate(Transform):
    """Random flips of each axis, 90-degree rotations and the y/x transpose (dihedral group in-plane).

    With ``isotropic`` (FIB-SEM) z may also swap with y or x when the patch is a cube along those axes.
    Shape-changing moves are skipped when the patch is not square, so the output shape never changes.
    """

    geometric = True

    def __init__(self, p: float = 1.0, enabled: bool = True, isotropic: bool = False) -> None:
        super().__init__(p, enabled)
        self.isotropic = isotropic

    def apply(self, sample: Sample, kinds: Mapping[str, str], out_shape: Shape, rng: np.random.Generator) -> Sample:
        flips = tuple(ax for ax in range(3) if rng.random() < 0.5)
        perm = [0, 1, 2]
        if out_shape[1] == out_shape[2] and rng.random() < 0.5:
            perm = [0, 2, 1]
        if self.isotropic and rng.random() < 0.5:
            other = int(rng.integers(1, 3))
            if out_shape[0] == out_shape[other]:
                perm[0], perm[other] = perm[other], perm[0]
        out = {}
        for k, v in sample.items():
            v = np.flip(v, flips) if flips else v
            out[k] = np.ascontiguousarray(np.transpose(v, perm))
        return out


class Rescale(Transform):
    """Zoom in-plane by a random factor in ``scale`` (about the patch centre).

    Reading a patch ``max(scale)`` times larger means zooming out never reaches past real data.
    """

    geometric = True

    def __init__(self, p: float = 0.5, enabled: bool = True, scale: Sequence[float] = (0.8, 1.2)) -> None:
        super().__init__(p, enabled)
        self.lo, self.hi = float(scale[0]), float(scale[1])
        if not 0 < self.lo <= self.hi:
            raise ValueError(f"Rescale: scale {scale} must be 0 < low <= high")

    def input_shape(self, out_shape: Shape) -> Shape:
        grow = [int(np.ceil(s * max(self.hi, 1.0))) for s in out_shape[1:]]
        # keep the parity of the output so the centre stays on the voxel grid
        grow = [g + ((g - s) % 2) for g, s in zip(grow, out_shape[1:])]
        return (out_shape[0], grow[0], grow[1])

    def apply(self, sample: Sample, kinds: Mapping[str, str], out_shape: Shape, rng: np.random.Generator) -> Sample:
        s = rng.uniform(self.lo, self.hi)  # > 1: output shows more area (zoom out)
        some = next(iter(sample.values()))
        cy0, cx0 = (some.shape[1] - 1) / 2, (some.shape[2] - 1) / 2
        y = (np.arange(out_shape[1]) - (out_shape[1] - 1) / 2) * s + cy0
        x = (np.arange(out_shape[2]) - (out_shape[2] - 1) / 2) * s + cx0
        cy, cx = np.meshgrid(y, x, indexing="ij")
        return {k: warp_sections(v, cy, cx, kinds[k]) for k, v in sample.items()}


class Elastic(Transform):
    """A smooth random in-plane displacement (same field for every section, as serial sections warp).

    ``alpha``: largest displacement in voxels; ``sigma``: smoothness (Gaussian sigma of the field).
    The input grows by ``alpha`` on each side so displaced coordinates always land on real data.
    """

    geometric = True

    def __init__(self, p: float = 0.5, enabled: bool = True, alpha: float = 8.0, sigma: float = 10.0) -> None:
        super().__init__(p, enabled)
        self.alpha, self.sigma = float(alpha), float(sigma)

    @property
    def margin(self) -> int:
        return int(np.ceil(self.alpha))

    def input_shape(self, out_shape: Shape) -> Shape:
        m = 2 * self.margin
        return (out_shape[0], out_shape[1] + m, out_shape[2] + m)

    def apply(self, sample: Sample, kinds: Mapping[str, str], out_shape: Shape, rng: np.random.Generator) -> Sample:
        Y, X = out_shape[1:]
        # draw the field on a coarse grid and upsample: same smoothness for a fraction of the cost
        step = max(1, int(self.sigma // 2))
        coarse = (2, Y // step + 2, X // step + 2)
        field = ndimage.gaussian_filter(rng.uniform(-1, 1, coarse), (0, self.sigma / step, self.sigma / step))
        field /= max(np.abs(field).max(), 1e-6)
        field *= rng.uniform(0.5, 1.0) * self.alpha
        zoom = (1, (Y + 2 * step) / coarse[1], (X + 2 * step) / coarse[2])
        field = ndimage.zoom(field, zoom, order=1)[:, :Y, :X]
        gy, gx = np.meshgrid(np.arange(Y, dtype=np.float64), np.arange(X, dtype=np.float64), indexing="ij")
        cy = np.clip(gy + self.margin + field[0], 0, Y + 2 * self.margin - 1)
        cx = np.clip(gx + self.margin + field[1], 0, X + 2 * self.margin - 1)
        return {k: warp_sections(v, cy, cx, kinds[k]) for k, v in sample.items()}

