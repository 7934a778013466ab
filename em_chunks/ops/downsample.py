"""Pyramid kernels: which factors each level takes, and the two downsamplings (mean, label mode).

Every output voxel depends only on its own block of input voxels, so a level computed box by box
(any boxes whose input is their own blocks) equals the level computed from the whole array, bit for
bit: the mean sums a block's voxels in one fixed order, the mode compares a block's values in one
fixed order. Blocks at the far end of an odd-sized axis are partial; both kernels use the voxels
that exist.

References: neuroglancer and CloudVolume/igneous downsample segmentations by the block's most
frequent non-zero label and images by the block mean, and skip z while it is much coarser than x and
y.
"""

from __future__ import annotations

import itertools
from typing import Optional, Sequence

import numpy as np

Factor = tuple[int, int, int]


def plan_factors(
    shape: Sequence[int], voxel_size: Optional[Sequence[float]], tile: int, max_levels: int = 24
) -> list[Factor]:
    """Per-level factors (each axis 1 or 2) until every axis fits ``tile`` voxels.

    An axis is halved only while its voxel is less than twice the finest voxel of the axes that can
    still shrink, so anisotropic EM (e.g. 40 x 4 x 4 nm) is downsampled in x and y alone until they
    catch up with z (the NGFF/neuroglancer convention).
    """
    size = [int(s) for s in shape[-3:]]
    voxel = [float(v) for v in (voxel_size or (1.0, 1.0, 1.0))]
    steps: list[Factor] = []
    while any(s > tile for s in size) and len(steps) < max_levels:
        finest = min(v for v, s in zip(voxel, size) if s > 1)
        f = tuple(2 if s > 1 and v < 2 * finest else 1 for v, s in zip(voxel, size))
        if f == (1, 1, 1):
            break
        steps.append(f)  # type: ignore[arg-type]
        size = [-(-s // k) for s, k in zip(size, f)]
        voxel = [v * k for v, k in zip(voxel, f)]
    return steps


def level_shape(shape: Sequence[int], factor: Sequence[int]) -> tuple[int, ...]:
    """Shape of a level downsampled by ``factor`` over the last three axes (ceil: partial end
    blocks)."""
    lead = tuple(shape[:-3])
    return lead + tuple(-(-int(s) // int(f)) for s, f in zip(shape[-3:], factor))


def _offsets(factor: Sequence[int]) -> list[tuple[int, int, int]]:
    return list(itertools.product(*(range(int(f)) for f in factor)))


def _every(off: Sequence[int], factor: Sequence[int]) -> tuple:
    """Slices taking voxel ``off`` of every block (shorter than the output where end blocks are
    partial)."""
    return (Ellipsis,) + tuple(slice(o, None, f) for o, f in zip(off, factor))


def downsample_mean(a: np.ndarray, factor: Sequence[int]) -> np.ndarray:
    """Block mean over the last three axes (leading axes, e.g. channels, kept), in ``a``'s dtype.

    Integers are rounded half up; partial end blocks average the voxels they have.
    """
    out_shape = level_shape(a.shape, factor)
    acc = np.zeros(out_shape, np.float64)
    count = np.zeros(out_shape[-3:], np.float64)
    for off in _offsets(factor):
        part = a[_every(off, factor)]
        region = (Ellipsis,) + tuple(slice(0, n) for n in part.shape[-3:])
        acc[region] += part
        count[tuple(slice(0, n) for n in part.shape[-3:])] += 1
    acc /= count
    if np.issubdtype(a.dtype, np.integer):
        info = np.iinfo(a.dtype)
        return np.clip(np.floor(acc + 0.5), info.min, info.max).astype(a.dtype)
    return acc.astype(a.dtype)


def downsample_mode(labels: np.ndarray, factor: Sequence[int]) -> np.ndarray:
    """Most frequent non-zero label of each block (ties: the smallest id); 0 where a block is all 0.

    Label-safe: every output id is an id of the input, present in that block.
    """
    out_shape = level_shape(labels.shape, factor)
    offsets = _offsets(factor)
    values = np.zeros((len(offsets),) + out_shape, labels.dtype)  # 0 stands in for missing voxels
    for j, off in enumerate(offsets):
        part = labels[_every(off, factor)]
        values[(j,) + tuple(slice(0, n) for n in part.shape)] = part
    values.sort(axis=0)
    counts = np.zeros(values.shape, np.int16)
    for j in range(len(offsets)):
        for k in range(len(offsets)):
            counts[j] += values[j] == values[k]
    counts[values == 0] = -1
    pick = np.argmax(counts, axis=0)  # first maximum: the smallest of the most frequent ids
    return np.take_along_axis(values, pick[None], axis=0)[0]


KERNELS = {"mean": downsample_mean, "mode": downsample_mode}
