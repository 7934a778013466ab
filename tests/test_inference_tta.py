"""Test-time augmentation: undone transforms with re-anchored affinity channels give back the direct answer.

The oracle model computes exact affinities of the label volume encoded in its input, for any offsets, so
each transformed view, undone, must reproduce the direct prediction bit for bit -- and would not if a
channel were left un-shifted or un-swapped.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from em_chunks.geometry import Box, ChunkGrid
from em_chunks.io.padding import read_padded
from em_chunks.learn import tta
from em_chunks.learn.inference import SlidingWindow, predict_box, predict_volume
from em_chunks.learn.targets import AFF3, AFF12

SHAPE = (12, 48, 48)


@pytest.fixture(autouse=True)
def one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class Oracle(nn.Module):
    """Affinity of each edge ``{v, v - o}`` = ``1 - |x(v) - x(v - o)|`` (symmetric in its two ends, so a
    view from the other end gives the same float); 0.25 where ``v - o`` lies outside the window."""

    def __init__(self, offsets) -> None:
        super().__init__()
        self.offsets = [tuple(o) for o in offsets]
        self.eval()  # inference refuses models in training mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, 0]
        outs = []
        for o in self.offsets:
            a = torch.full_like(x, 0.25)
            dst, src = [slice(None)], [slice(None)]
            for n, d in zip(x.shape[1:], o):
                dst.append(slice(d, n) if d >= 0 else slice(0, n + d))
                src.append(slice(0, n - d) if d >= 0 else slice(-d, n))
            a[tuple(dst)] = 1 - (x[tuple(dst)] - x[tuple(src)]).abs()
            outs.append(a)
        return torch.stack(outs, 1)


@pytest.fixture(scope="module")
def encoded() -> np.ndarray:
    """Labels in blocks, encoded as float intensities (floats pass through un-normalised)."""
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 7, (4, 8, 8)).repeat(3, 0).repeat(6, 1).repeat(6, 2)
    return (labels * 0.125 + rng.random(SHAPE) * 0.01).astype(np.float32)


def exact_affinities(vol: np.ndarray, offsets) -> np.ndarray:
    out = np.full((len(offsets),) + vol.shape, np.nan, np.float32)
    for c, o in enumerate(offsets):
        dst = tuple(slice(d, n) for n, d in zip(vol.shape, o))
        src = tuple(slice(0, n - d) for n, d in zip(vol.shape, o))
        out[(c,) + dst] = 1 - np.abs(vol[dst] - vol[src])
    return out


def test_transform_round_trip_and_offset_pull():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(1, 2, 3, 4, 5)
    for t in tta.transforms_for("all"):
        assert torch.equal(t.inverse(t.forward(x)), x)
    t = tta.Transform((False, False, True), transpose=True)
    assert t.pull_offset((0, 1, 0)) == (0, 0, -1)  # y edge becomes a (reversed) x edge
    assert t.pull_offset((0, 0, 3)) == (0, 3, 0)
    assert len(tta.transforms_for("all")) == 16 and len(tta.transforms_for("xy")) == 8
    assert len(tta.transforms_for("flip")) == 8 and len(tta.transforms_for("all", dims=2)) == 8
    assert tta.transforms_for("all")[0].is_identity


@pytest.mark.parametrize("offsets", [AFF3, AFF12], ids=["aff3", "aff12"])
def test_every_view_undone_equals_the_direct_prediction(encoded, offsets):
    model = Oracle(offsets)
    sw = SlidingWindow(SHAPE, (6, 32, 32), pad=(1, 4, 4), sw_batch_size=2)
    direct = predict_volume(model, encoded, sw, activation="none")
    # the oracle is right for every edge inside its window: one window over the whole volume gives the truth
    one = SlidingWindow(SHAPE, SHAPE)
    truth = exact_affinities(encoded, offsets)
    known = ~np.isnan(truth)
    np.testing.assert_allclose(predict_volume(model, encoded, one, activation="none")[known], truth[known], atol=2e-7)
    np.testing.assert_array_equal(predict_volume(model, encoded, one, activation="none", tta="all", offsets=offsets)[known],
                                  predict_volume(model, encoded, one, activation="none")[known])
    for t in tta.transforms_for("all")[1:]:
        view = predict_volume(model, encoded, sw, activation="none", tta=[t], offsets=offsets)
        np.testing.assert_array_equal(view, direct, err_msg=str(t))
    both = predict_volume(model, encoded, sw, activation="none", tta="all", offsets=offsets)
    np.testing.assert_array_equal(both, direct)


def test_without_re_anchoring_a_flip_would_be_wrong(encoded):
    """The check above can fail: un-flipping without shifting the z channel moves its edges by one voxel."""
    p = tta.plan(tta.Transform((True, False, False)), list(AFF3))
    assert p.shifts[0] == (1, 0, 0) and p.shifts[1] is None and p.shifts[2] is None
    x = torch.from_numpy(encoded[None, None, :6, :32, :32])
    model = Oracle(AFF3)
    direct = model(x)
    back = p.transform.inverse(model(p.transform.forward(x)))
    assert not torch.equal(back[:, 0], direct[:, 0])  # plain un-flipping is off by one voxel in z
    fixed, valid = tta.undo(p, model(p.transform.forward(x)))
    assert torch.equal(fixed[:, 0][:, valid[0]], direct[:, 0][:, valid[0]])
    assert not valid[0, 0].any() and valid[0, 1:].all()  # the first section has no re-anchored value
    # every single view of the 16, alone, undone: equal to the direct prediction wherever it is valid
    for offsets in (AFF3, AFF12):
        model = Oracle(offsets)
        direct = model(x)
        for t in tta.transforms_for("all"):
            view, valid = tta.undo(tta.plan(t, list(offsets)), model(t.forward(x)))
            valid = torch.ones_like(direct[0], dtype=torch.bool) if valid is None else valid
            assert torch.equal(view[0][valid], direct[0][valid]), str(t)
            assert valid.float().mean() > 0.5


def test_transpose_swaps_the_y_and_x_channels():
    p = tta.plan(tta.Transform(transpose=True), list(AFF12))
    order = {AFF12[c]: AFF12[s] for c, s in enumerate(p.sources)}
    assert order[(0, 1, 0)] == (0, 0, 1) and order[(0, 0, 27)] == (0, 27, 0) and order[(2, 0, 0)] == (2, 0, 0)
    assert all(s is None for s in p.shifts)


def test_offsets_not_closed_under_a_transform_are_refused():
    with pytest.raises(ValueError, match="tta transform"):
        tta.plan(tta.Transform(transpose=True), [(1, 0, 0), (0, 3, 0), (0, 0, 1)])
    with pytest.raises(ValueError, match="offsets"):
        tta.normalize_offsets(None, 12)


def test_tta_keeps_chunked_equal_to_whole_and_select_channel_applies_after(encoded):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(1, 3, 3, padding=1), nn.ReLU(), nn.Conv3d(3, 12, 1)).eval()
    sw = SlidingWindow(SHAPE, (6, 32, 32), pad=(1, 4, 4))
    opts = dict(tta="all", offsets=AFF12)
    whole = predict_volume(model, encoded, sw, **opts)
    out = np.zeros_like(whole)
    for chunk in ChunkGrid(SHAPE, (1, 2, 2)):
        ctx = sw.context_for(chunk.core)
        out[(slice(None),) + chunk.core.slices()] = predict_box(
            model, read_padded(encoded, ctx, sw.boundary), ctx, chunk.core, sw, **opts)
    np.testing.assert_array_equal(out, whole)
    picked = predict_volume(model, encoded, sw, select_channel=[6, 9, 4], **opts)
    np.testing.assert_array_equal(picked, whole[[6, 9, 4]])
    # averaging over views really changes a non-equivariant model's output
    assert not np.array_equal(predict_volume(model, encoded, sw), whole)
    assert Box.from_shape(SHAPE).size == whole[0].size
