"""The augmentation contract (PyTC ``additional_targets`` semantics, gunpowder's "ask upstream" idea).

A *sample* is a dict of same-shaped (z, y, x) arrays; ``kinds`` names each one ``"img"`` (interpolated
linearly, intensity changes apply) or ``"mask"`` (labels / valid masks: nearest neighbour only, never new
values). Every transform has ``p`` (probability to fire) and ``enabled`` (a disabled one is dropped from the
pipeline entirely, so it costs no margin).

Transforms that look around (elastic, rescale, misalignment, missing sections) declare through
:meth:`Transform.input_shape` how much more input they need, and :class:`Compose` asks them in reverse
order before a patch is cut: the sampler reads a larger patch from real data, so no transform ever
interpolates padding that it (or another) invented. A transform that does not fire still crops to its
output shape, so shapes are the same whether it fired or not.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from scipy import ndimage

Shape = tuple[int, int, int]
Sample = dict[str, np.ndarray]
KINDS = ("img", "mask")


def center_crop(arr: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """The centre ``shape`` of ``arr`` (last len(shape) axes)."""
    begin = [(a - s) // 2 for a, s in zip(arr.shape[-len(shape):], shape)]
    if any(b < 0 for b in begin):
        raise ValueError(f"cannot crop {tuple(shape)} from {arr.shape}")
    idx = (Ellipsis,) + tuple(slice(b, b + s) for b, s in zip(begin, shape))
    return arr[idx]


def warp_sections(arr: np.ndarray, cy: np.ndarray, cx: np.ndarray, kind: str) -> np.ndarray:
    """Resample every section of ``arr`` (z, y, x) at coordinates ``(cy, cx)``, each ``(Y, X)`` or ``(Z, Y, X)``.

    Images: bilinear. Masks: nearest neighbour by integer indexing (exact for uint64 ids, which a float
    interpolator would round).
    """
    per_section = cy.ndim == 3
    out_shape = (arr.shape[0],) + cy.shape[-2:]
    if kind == "mask":
        iy = np.clip(np.rint(cy), 0, arr.shape[1] - 1).astype(np.intp)
        ix = np.clip(np.rint(cx), 0, arr.shape[2] - 1).astype(np.intp)
        if per_section:
            iz = np.arange(arr.shape[0])[:, None, None]
            return arr[iz, iy, ix]
        return arr[:, iy, ix]
    out = np.empty(out_shape, dtype=np.float32)
    for z in range(arr.shape[0]):
        coords = (cy[z], cx[z]) if per_section else (cy, cx)
        out[z] = ndimage.map_coordinates(arr[z], coords, order=1, mode="nearest", prefilter=False)
    return out


class Transform:
    """One augmentation. Subclasses implement :meth:`apply` (and :meth:`input_shape` if they need context)."""

    #: whether the transform changes masks too (geometric) or only images (intensity, defects)
    geometric: bool = False

    def __init__(self, p: float = 0.5, enabled: bool = True) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{type(self).__name__}: p={p} must be in [0, 1]")
        self.p, self.enabled = float(p), bool(enabled)

    def input_shape(self, out_shape: Shape) -> Shape:
        """The input this transform needs to produce ``out_shape`` without inventing data."""
        return tuple(out_shape)  # type: ignore[return-value]

    def __call__(self, sample: Sample, kinds: Mapping[str, str], out_shape: Shape, rng: np.random.Generator) -> Sample:
        if rng.random() < self.p:
            out = self.apply(sample, kinds, tuple(out_shape), rng)
        else:
            out = sample
        return {k: center_crop(v, out_shape) if v.shape != tuple(out_shape) else v for k, v in out.items()}

    def apply(self, sample: Sample, kinds: Mapping[str, str], out_shape: Shape, rng: np.random.Generator) -> Sample:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p})"


class Compose:
    """Apply transforms in order; :meth:`input_shape` walks them backwards to size the patch to read."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = [t for t in transforms if t.enabled]

    def shapes(self, out_shape: Sequence[int]) -> list[Shape]:
        """``shapes[i]`` is the input of transform ``i``; the last entry is ``out_shape``."""
        chain = [tuple(int(s) for s in out_shape)]
        for t in reversed(self.transforms):
            chain.append(tuple(int(s) for s in t.input_shape(chain[-1])))
        return list(reversed(chain))  # type: ignore[arg-type]

    def input_shape(self, out_shape: Sequence[int]) -> Shape:
        return self.shapes(out_shape)[0]

    def __call__(self, sample: Sample, kinds: Mapping[str, str], out_shape: Sequence[int], rng: np.random.Generator) -> Sample:
        unknown = {k: v for k, v in kinds.items() if v not in KINDS}
        if unknown:
            raise ValueError(f"target kinds {unknown}: expected 'img' or 'mask'")
        chain = self.shapes(out_shape)
        for shape in {v.shape for v in sample.values()}:
            if shape != chain[0]:
                raise ValueError(f"sample arrays of shape {shape}; the pipeline needs {chain[0]} to make {tuple(out_shape)}")
        for t, shape in zip(self.transforms, chain[1:]):
            sample = t(sample, kinds, shape, rng)
        return sample

    def __repr__(self) -> str:
        return f"Compose({self.transforms})"


def img_only(sample: Sample, kinds: Mapping[str, str]) -> list[str]:
    """Names of the image targets (intensity and defect transforms touch only these)."""
    return [k for k in sample if kinds.get(k) == "img"]


def random_box(shape: Sequence[int], ratio: float, rng: np.random.Generator) -> tuple[slice, ...]:
    """A random box whose side is ``ratio`` of each axis (at least 1 voxel), fully inside ``shape``."""
    out = []
    for n in shape:
        size = max(1, int(round(n * ratio)))
        start = int(rng.integers(0, n - size + 1))
        out.append(slice(start, start + size))
    return tuple(out)
