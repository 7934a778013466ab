"""Synthetic and real affinity volumes for the ops tests (helpers, imported by test_ops_*.py)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import ndimage

from _data import require


def affinities_from_labels(labels: np.ndarray, boundary_zero: bool = True) -> np.ndarray:
    """Ideal waterz-convention affinities: 1 between equal non-zero labels, else 0 (channel c: v <-> v - e_c)."""
    affs = np.zeros((3,) + labels.shape, np.float32)
    for c in range(3):
        hi = [slice(None)] * 3
        lo = [slice(None)] * 3
        hi[c] = slice(1, None)
        lo[c] = slice(None, -1)
        same = labels[tuple(hi)] == labels[tuple(lo)]
        if boundary_zero:
            same &= labels[tuple(hi)] != 0
        affs[c][tuple(hi)] = same
    return affs


def with_boundaries(labels: np.ndarray) -> np.ndarray:
    """Labels with a one-voxel membrane (0) where a voxel's predecessor has another label."""
    bnd = np.zeros(labels.shape, bool)
    for c in range(3):
        hi = [slice(None)] * 3
        lo = [slice(None)] * 3
        hi[c] = slice(1, None)
        lo[c] = slice(None, -1)
        bnd[tuple(hi)] |= labels[tuple(hi)] != labels[tuple(lo)]
    return np.where(bnd, 0, labels)


def voronoi_labels(shape, n, seed) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pts = rng.integers(0, shape, size=(n, 3))
    mark = np.zeros(shape, np.int64)
    mark[tuple(pts.T)] = np.arange(1, n + 1)
    _, idx = ndimage.distance_transform_edt(mark == 0, return_indices=True)
    return mark[tuple(idx)]


def noisy(affs: np.ndarray, noise: float, blur: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = ndimage.gaussian_filter(affs, (0, blur, blur, blur)) if blur else affs.copy()
    return np.clip(out + rng.normal(0, noise, out.shape), 0, 1).astype(np.float32)


def synthetic(shape=(24, 40, 40), n=16, noise=0.05, blur=0.7, seed=0):
    """(labels with membranes, affinities): Voronoi cells with 1-voxel membranes, blurred and noisy."""
    gt = with_boundaries(voronoi_labels(shape, n, seed))
    return gt, noisy(affinities_from_labels(gt), noise, blur, seed + 1)


@lru_cache(maxsize=2)
def fib_crop(shape=(48, 96, 96), noise=0.08, blur=0.7):
    """A crop of the real fib_medulla_250 labels (with 1-voxel membranes drawn between bodies) and
    noisy, blurred affinities derived from them."""
    import tifffile

    labels = tifffile.imread(require("fib_medulla_250", "labels.tif"))
    z, y, x = shape
    gt = with_boundaries(labels[100 : 100 + z, 60 : 60 + y, 80 : 80 + x].astype(np.uint64))
    return gt, noisy(affinities_from_labels(gt), noise, blur, 7)


def test_synthetic_affinities_follow_the_waterz_convention():
    gt, affs = synthetic(noise=0.0, blur=0)
    # channel 1 at (z, y, x) links to (z, y-1, x): 1 exactly where both labels agree and are not 0
    same = (gt[:, 1:, :] == gt[:, :-1, :]) & (gt[:, 1:, :] != 0)
    assert np.array_equal(affs[1][:, 1:, :] == 1, same)
    assert not affs[1][:, 0, :].any()
