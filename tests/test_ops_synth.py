"""Synthetic and real affinity volumes for the ops tests (helpers, imported by test_ops_*.py), made by the
package's own generator (em_chunks.synthetic): no second copy here."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from _data import require
from em_chunks.synthetic import synthetic_affinities, voronoi_labels, with_membranes


def noisy_affinities(gt: np.ndarray, noise: float, blur: float, seed: int) -> np.ndarray:
    """The package's generator: exact waterz-convention affinities of ``gt``, blurred, noisy."""
    return synthetic_affinities(gt, noise=noise, seed=seed, blur=blur)


def synthetic(shape=(24, 40, 40), n=16, noise=0.05, blur=0.7, seed=0):
    """(labels with membranes, affinities): Voronoi cells with 1-voxel membranes, blurred and noisy."""
    gt = with_membranes(voronoi_labels(shape, n, seed))
    return gt, noisy_affinities(gt, noise, blur, seed + 1)


@lru_cache(maxsize=2)
def fib_crop(shape=(48, 96, 96), noise=0.08, blur=0.7):
    """A crop of the real fib_medulla_250 labels (with 1-voxel membranes drawn between bodies) and
    noisy, blurred affinities derived from them."""
    import tifffile

    labels = tifffile.imread(require("fib_medulla_250", "labels.tif"))
    z, y, x = shape
    gt = with_membranes(labels[100 : 100 + z, 60 : 60 + y, 80 : 80 + x].astype(np.uint64))
    return gt, noisy_affinities(gt, noise, blur, 7)


def test_synthetic_affinities_follow_the_waterz_convention():
    gt, affs = synthetic(noise=0.0, blur=0)
    # channel 1 at (z, y, x) links to (z, y-1, x): 1 exactly where both labels agree and are not 0
    same = (gt[:, 1:, :] == gt[:, :-1, :]) & (gt[:, 1:, :] != 0)
    assert np.array_equal(affs[1][:, 1:, :] == 1, same)
    assert not affs[1][:, 0, :].any()
