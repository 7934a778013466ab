"""Serial-section defects: misalignment, missing sections, missing parts, motion blur.

Misalignment and missing sections move data between sections, so they apply to masks too (the labels
follow the image, PyTC-style); missing parts and motion blur damage only the image, and the network learns
to see the true labels through them.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
from scipy import ndimage

from em_chunks.learn.augment.base import Sample, Shape, Transform, img_only, warp_sections


class Misalignment(Transform):
    """Shift (or rotate) sections in-plane from a random section on ("translation"), or one section
    alone ("slip"), as a badly registered stack does.

    ``displacement``: largest shift in voxels; ``rotate_ratio``: share of events that rotate instead, by up
    to ``max_angle`` degrees. The input grows enough for both, so crops never leave real data.
    """

    geometric = True

    def __init__(self, p: float = 0.5, enabled: bool = True, displacement: int = 8,
                 rotate_ratio: float = 0.0, max_angle: float = 3.0) -> None:
        super().__init__(p, enabled)
        self.displacement, self.rotate_ratio, self.max_angle = int(displacement), float(rotate_ratio), float(max_angle)

    def _margin(self, out_shape: Shape) -> int:
        m = self.displacement
        if self.rotate_ratio > 0:
            a = np.deg2rad(self.max_angle)
            half = max(out_shape[1:]) / 2
            m = max(m, int(np.ceil(half * (np.sin(a) + np.cos(a) - 1))) + 1)
        return m

    def input_shape(self, out_shape: Shape) -> Shape:
        m = 2 * self._margin(out_shape)
        return (out_shape[0], out_shape[1] + m, out_shape[2] + m)

    def apply(self, sample: Sample, kinds: Mapping[str, str], out_shape: Shape, rng: np.random.Generator) -> Sample:
        Z, Y, X = out_shape
        if Z < 2:
            return sample
        m = self._margin(out_shape)
        start = int(rng.integers(1, Z))
        affected = np.zeros(Z, bool)
        if rng.random() < 0.5:
            affected[start:] = True  # translation of the rest of the stack
        else:
            affected[start] = True  # one section slipped
        gy, gx = np.meshgrid(np.arange(Y, dtype=np.float64), np.arange(X, dtype=np.float64), indexing="ij")
        cy = np.broadcast_to(gy + m, (Z, Y, X)).copy()
        cx = np.broadcast_to(gx + m, (Z, Y, X)).copy()
        if rng.random() < self.rotate_ratio:
            a = np.deg2rad(rng.uniform(-self.max_angle, self.max_angle))
            y0, x0 = (Y - 1) / 2, (X - 1) / 2
            ry = np.cos(a) * (gy - y0) - np.sin(a) * (gx - x0) + y0 + m
            rx = np.sin(a) * (gy - y0) + np.cos(a) * (gx - x0) + x0 + m
            cy[affected], cx[affected] = ry, rx
        else:
            dy, dx = rng.integers(-self.displacement, self.displacement + 1, size=2)
            cy[affected] += dy
            cx[affected] += dx
        return {k: warp_sections(v, cy, cx, kinds[k]) for k, v in sample.items()}


class MissingSection(Transform):
    """Drop ``num_sections`` whole sections from image *and* masks (a lost section in the stack).

    The input is read ``num_sections`` deeper so the output keeps its depth; z affinities are then
    computed across the gap, teaching the model to bridge it.
    """

    geometric = True

    def __init__(self, p: float = 0.5, enabled: bool = True, num_sections: int = 2) -> None:
        super().__init__(p, enabled)
        self.num_sections = int(num_sections)

    def input_shape(self, out_shape: Shape) -> Shape:
        return (out_shape[0] + self.num_sections, out_shape[1], out_shape[2])

    def apply(self, sample: Sample, kinds: Mapping[str, str], out_shape: Shape, rng: np.random.Generator) -> Sample:
        depth = next(iter(sample.values())).shape[0]
        if depth < 3:
            return sample
        # never the first or last section: a gap at the border would be invisible
        drop = rng.choice(np.arange(1, depth - 1), size=min(self.num_sections, depth - 2), replace=False)
        keep = np.setdiff1d(np.arange(depth), drop)[: out_shape[0]]
        return {k: v[keep] for k, v in sample.items()}


class MissingParts(Transform):
    """Blank a random blob of one section (a fold or a dust particle), image only."""

    def __init__(self, p: float = 0.5, enabled: bool = True, size_ratio: float = 0.3) -> None:
        super().__init__(p, enabled)
        self.size_ratio = float(size_ratio)

    def apply(self, sample: Sample, kinds: Mapping[str, str], out_shape: Shape, rng: np.random.Generator) -> Sample:
        Z, Y, X = out_shape
        z = int(rng.integers(0, Z))
        ry, rx = (max(1.0, self.size_ratio * n / 2 * rng.uniform(0.5, 1.0)) for n in (Y, X))
        y0, x0 = rng.uniform(0, Y), rng.uniform(0, X)
        gy, gx = np.ogrid[:Y, :X]
        a = rng.uniform(0, np.pi)
        u = (gy - y0) * np.cos(a) + (gx - x0) * np.sin(a)
        w = -(gy - y0) * np.sin(a) + (gx - x0) * np.cos(a)
        blob = (u / ry) ** 2 + (w / rx) ** 2 <= 1.0
        out = dict(sample)
        for k in img_only(sample, kinds):
            v = out[k].copy()
            v[z][blob] = 0.0
            out[k] = v
        return out


class MotionBlur(Transform):
    """Blur a few sections along y or x with a line kernel (stage drift while imaging), image only."""

    def __init__(self, p: float = 0.5, enabled: bool = True, sections: int = 2, kernel_size: int = 11) -> None:
        super().__init__(p, enabled)
        self.sections, self.kernel_size = int(sections), int(kernel_size)

    def apply(self, sample: Sample, kinds: Mapping[str, str], out_shape: Shape, rng: np.random.Generator) -> Sample:
        Z = out_shape[0]
        zs = rng.choice(Z, size=min(self.sections, Z), replace=False)
        axis = int(rng.integers(1, 3))
        out = dict(sample)
        for k in img_only(sample, kinds):
            v = out[k].astype(np.float32, copy=True)
            for z in zs:
                v[z] = ndimage.uniform_filter1d(v[z], self.kernel_size, axis=axis - 1, mode="nearest")
            out[k] = v
        return out
