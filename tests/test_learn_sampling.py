"""Rejection sampling statistics, valid-mask handling and seeded, reproducible batches."""

from __future__ import annotations

import numpy as np
import pytest

from em_chunks.geometry import Box
from em_chunks.learn.data.batches import make_batch
from em_chunks.learn.data.sampling import BatchSpec, Rejection, draw_patch

SHAPE = (4, 40, 40)
CORE = Box.from_shape(SHAPE)


def half_foreground():
    """Foreground (label 1) only where x >= 20: patches left of it have no foreground at all."""
    label = np.zeros(SHAPE, np.uint32)
    label[:, :, 20:] = 1
    return {"image": np.zeros(SHAPE, np.float32), "label": label}


def empty_fraction(rejection, n=3000, seed=0):
    rng = np.random.default_rng(seed)
    arrays = half_foreground()
    empty = 0
    for _ in range(n):
        patch, _ = draw_patch(arrays, CORE, CORE, (1, 4, 4), (1, 4, 4), rejection, rng)
        empty += int(not patch["label"].any())
    return empty / n


def test_rejection_sampling_statistics():
    off = empty_fraction(Rejection(size_thres=-1))
    q = off  # share of candidate patches without foreground
    assert 0.4 < q < 0.6
    for p in (0.5, 0.9):
        got = empty_fraction(Rejection(size_thres=1, p=p), seed=1)
        # an empty candidate survives with probability 1 - p: Bayes gives the share among accepted patches
        expected = q * (1 - p) / (q * (1 - p) + (1 - q))
        assert abs(got - expected) < 0.03, (p, got, expected)
    assert empty_fraction(Rejection(size_thres=1, p=1.0), n=500, seed=2) == 0.0


def test_low_valid_ratio_patches_are_rejected():
    arrays = half_foreground()
    valid = np.zeros(SHAPE, np.uint8)
    valid[:, :, :10] = 1  # a quarter of the volume is valid
    arrays["valid"] = valid
    rng = np.random.default_rng(0)
    for _ in range(300):
        patch, tries = draw_patch(arrays, CORE, CORE, (1, 4, 4), (1, 4, 4), Rejection(), rng)
        assert patch["valid"].mean() >= 0.5 and tries < 50


def test_loss_mask_ignores_invalid_voxels_and_batches_are_seeded():
    rng = np.random.default_rng(0)
    label = np.kron(rng.integers(1, 9, (2, 10, 10)), np.ones((4, 4, 4), np.int64)).astype(np.uint32)
    valid = np.ones(label.shape, np.uint8)
    valid[:, :, 30:] = 0
    chunk = {"core": Box.from_shape(label.shape), "context": Box.from_shape(label.shape),
             "arrays": {"image": rng.random(label.shape, dtype=np.float32), "label": label, "valid": valid}}
    spec = BatchSpec((4, 16, 16), 3, ((1, 0, 0), (0, 1, 0), (0, 0, 1)), {"flip": {"p": 1.0}}, Rejection())
    a = make_batch(chunk, spec, seed=5)
    b = make_batch(chunk, spec, seed=5)
    c = make_batch(chunk, spec, seed=6)
    for k in ("image", "target", "mask"):
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["image"], c["image"])
    assert a["image"].shape == (3, 1, 4, 16, 16) and a["target"].shape == (3, 3, 4, 16, 16)
    assert a["mask"].min() == 0 and a["mask"].max() == 1
    # no patch is mostly invalid, and masked edges include every edge touching invalid data
    assert (a["mask"].mean(axis=(1, 2, 3, 4)) > 0.3).all()


def test_invalid_edges_are_masked_in_targets():
    label = np.ones((2, 8, 8), np.uint32)
    valid = np.ones_like(label, dtype=np.uint8)
    valid[:, :, 4:] = 0
    chunk = {"core": Box.from_shape(label.shape), "context": Box.from_shape(label.shape),
             "arrays": {"image": np.zeros(label.shape, np.float32), "label": label, "valid": valid}}
    spec = BatchSpec((2, 8, 8), 1, ((0, 0, 1),), {}, Rejection(min_valid_ratio=0.0))
    batch = make_batch(chunk, spec, seed=0)
    mask = batch["mask"][0, 0]
    assert mask[:, :, 1:4].all() and not mask[:, :, 4:].any() and not mask[:, :, 0].any()


@pytest.mark.parametrize("size", [(2, 8, 8)])
def test_patch_larger_than_volume_is_padded_and_marked_invalid(size):
    label = np.ones(size, np.uint32)
    chunk = {"core": Box.from_shape(size), "context": Box.from_shape(size),
             "arrays": {"image": np.zeros(size, np.float32), "label": label}}
    spec = BatchSpec((4, 8, 8), 1, ((1, 0, 0),), {}, Rejection(min_valid_ratio=0.0))
    batch = make_batch(chunk, spec, seed=0)
    assert batch["target"].shape == (1, 1, 4, 8, 8)
    assert batch["mask"][0, 0, 2:].sum() == 0  # edges into padding are not judged


def test_label_erosion_widens_the_cut_in_the_targets():
    label = np.ones((2, 8, 8), np.uint32)
    label[:, :, 4:] = 2
    chunk = {"core": Box.from_shape(label.shape), "context": Box.from_shape(label.shape),
             "arrays": {"image": np.zeros(label.shape, np.float32), "label": label}}
    plain = make_batch(chunk, BatchSpec((2, 8, 8), 1, ((0, 0, 1),), {}, Rejection()), seed=0)["target"][0, 0]
    wide = make_batch(chunk, BatchSpec((2, 8, 8), 1, ((0, 0, 1),), {}, Rejection(), label_erosion=(0, 0, 1)),
                      seed=0)["target"][0, 0]
    # x edge at v links v and v - 1: plain cuts only v = 4; widened (voxels 3 and 4 become 0) cuts v = 3, 4, 5
    assert np.flatnonzero(plain[0, 0, 1:] == 0).tolist() == [3]
    assert np.flatnonzero(wide[0, 0, 1:] == 0).tolist() == [2, 3, 4]
