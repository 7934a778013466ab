"""The synthetic EM-like volume: deterministic, membranes darker than cytoplasm, labels 0 exactly on
membranes, and waterz-convention affinities checked against a direct loop."""

import itertools

import numpy as np

from em_chunks.synthetic import make_synthetic_em, synthetic_affinities


def test_deterministic_for_a_seed_and_different_across_seeds():
    a = make_synthetic_em((8, 48, 48), seed=3)
    b = make_synthetic_em((8, 48, 48), seed=3)
    c = make_synthetic_em((8, 48, 48), seed=4)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_image_and_labels_agree():
    image, labels = make_synthetic_em((16, 64, 64), seed=1)
    assert image.dtype == np.uint8 and labels.shape == image.shape
    membrane = labels == 0
    assert 0.02 < membrane.mean() < 0.5  # membranes exist but do not dominate
    assert image[membrane].mean() < image[~membrane].mean() - 20  # dark membranes
    assert np.unique(labels[labels != 0]).size > 10  # many cells


def test_affinities_follow_the_waterz_convention():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=(3, 4, 5))
    affs = synthetic_affinities(labels)
    assert affs.shape == (3,) + labels.shape
    for c, (z, y, x) in itertools.product(range(3), itertools.product(*(range(s) for s in labels.shape))):
        v = (z, y, x)
        u = list(v)
        u[c] -= 1
        want = 0.0 if u[c] < 0 else float(labels[v] == labels[tuple(u)] != 0)
        assert affs[(c,) + v] == want, (c, v)
    noisy = synthetic_affinities(labels, noise=0.3, seed=1)
    assert noisy.min() >= 0 and noisy.max() <= 1 and not np.array_equal(noisy, affs)
