"""Affinity targets against a direct per-voxel computation (waterz convention)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from em_chunks.learn.targets import AFF3, AFF12, affinities, affinity_offsets, short_range_channels, widen_boundaries


def direct(label, offsets, valid=None):
    """The definition, voxel by voxel: edge (v, v - o) is 1 iff both ends share a nonzero label."""
    aff = np.zeros((len(offsets),) + label.shape, np.float32)
    mask = np.zeros_like(aff)
    for c, o in enumerate(offsets):
        for v in itertools.product(*(range(n) for n in label.shape)):
            u = tuple(a - b for a, b in zip(v, o))
            if all(0 <= x < n for x, n in zip(u, label.shape)):
                aff[(c,) + v] = float(label[v] == label[u] and label[v] != 0)
                ok = True if valid is None else bool(valid[v] and valid[u])
                mask[(c,) + v] = float(ok)
    return aff, mask


@pytest.mark.parametrize("offsets", [list(AFF3), list(AFF12), [(-1, 0, 0), (0, -2, 1), (1, 1, 1)]])
def test_affinities_match_definition(offsets):
    rng = np.random.default_rng(0)
    label = rng.integers(0, 3, size=(5, 6, 30)).astype(np.uint64)
    valid = rng.random(label.shape) > 0.2
    for v in (None, valid):
        got, got_mask = affinities(label, offsets, v)
        want, want_mask = direct(label, offsets, v)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(got_mask, want_mask)


def test_waterz_channel_convention():
    # two bodies split between sections 1 and 2: only the z edge at z=2 is cut
    label = np.ones((4, 3, 3), np.uint32)
    label[2:] = 2
    aff, mask = affinities(label, AFF3)
    assert aff[0, 2].sum() == 0 and aff[0, 1].all() and aff[0, 3].all()
    assert not mask[0, 0].any()  # the first section's z edges leave the patch
    assert aff[1].sum() == 4 * 2 * 3 and aff[2].sum() == 4 * 3 * 2


def test_offsets_by_name_and_checks():
    assert affinity_offsets("aff12")[:3] == list(AFF3)
    assert len(affinity_offsets("aff12")) == 12
    assert short_range_channels(AFF12) == [0, 1, 2]
    assert short_range_channels([(0, 0, 1), (0, 1, 0), (1, 0, 0)]) == [2, 1, 0]
    with pytest.raises(ValueError):
        affinity_offsets("aff7")
    with pytest.raises(ValueError):
        affinity_offsets([(0, 0, 0)])


def widened_direct(label, radius):
    """The definition, voxel by voxel: 0 where the box of ``radius`` around it (clipped) holds another label."""
    out = label.copy()
    for v in itertools.product(*(range(n) for n in label.shape)):
        box = tuple(slice(max(0, c - r), c + r + 1) for c, r in zip(v, radius))
        if (label[box] != label[v]).any():
            out[v] = 0
    return out


@pytest.mark.parametrize("radius", [(1, 1, 1), (0, 1, 1), (0, 2, 1), (1, 0, 0)])
def test_widen_boundaries_matches_definition(radius):
    rng = np.random.default_rng(3)
    label = np.repeat(rng.integers(1, 4, size=(4, 5, 6)), 2, axis=2).astype(np.uint64) * np.uint64(2**40)
    label[0, 0, :3] = 0  # background grows like any other label
    got = widen_boundaries(label, radius)
    assert got.dtype == label.dtype
    np.testing.assert_array_equal(got, widened_direct(label, radius))


def test_widen_boundaries_makes_the_cut_thick_and_keeps_uniform_labels():
    label = np.zeros((2, 3, 10), np.uint32)
    label[..., :5], label[..., 5:] = 4, 9
    got = widen_boundaries(label, (0, 0, 2))
    assert (got[..., 3:7] == 0).all() and (got[..., :3] == 4).all() and (got[..., 7:] == 9).all()
    aff, _ = affinities(got, AFF3)
    assert int((aff[2] == 0).sum(axis=-1).min()) > int((affinities(label, AFF3)[0][2] == 0).sum(axis=-1).min())
    one = np.full((3, 4, 4), 7, np.uint16)
    np.testing.assert_array_equal(widen_boundaries(one, (1, 1, 1)), one)  # borders invent no boundary
    np.testing.assert_array_equal(widen_boundaries(label, (0, 0, 0)), label)
