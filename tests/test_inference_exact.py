"""Chunk by chunk == one whole-volume pass, bit for bit; and the blended values are the right ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from em_chunks.errors import InputError
from em_chunks.geometry import Box, ChunkGrid
from em_chunks.io.padding import read_padded
from em_chunks.learn.inference import (
    SlidingWindow,
    blend_partials,
    predict_box,
    predict_partial,
    predict_volume,
)

SHAPE = (20, 64, 64)
GRIDS = [(1, 1, 1), (2, 4, 4), (3, 2, 5)]


def tiny_model(seed: int = 0, out_channels: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv3d(1, 3, 3, padding=1), nn.ReLU(), nn.Conv3d(3, out_channels, 1)).eval()


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One intra-op thread: far faster on a shared 2-core machine (no OpenMP spinning), same exactness."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def volume() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, SHAPE, dtype=np.uint8)


def chunked(model, vol, sw, pieces, **options) -> np.ndarray:
    """Affinities assembled from independent per-chunk predict_box calls (the engine's way)."""
    out = None
    for chunk in ChunkGrid(vol.shape, pieces):
        ctx = sw.context_for(chunk.core)
        core = predict_box(model, read_padded(vol, ctx, sw.boundary), ctx, chunk.core, sw, **options)
        if out is None:
            out = np.zeros((core.shape[0],) + vol.shape, core.dtype)
        out[(slice(None),) + chunk.core.slices()] = core
    return out


def chunked_partial(model, vol, sw, pieces, **options) -> np.ndarray:
    grid = ChunkGrid(vol.shape, pieces)
    partials = []
    for chunk in grid:
        ctx = sw.owned_context(chunk.core)
        partials.append(predict_partial(model, read_padded(vol, ctx, sw.boundary), ctx, chunk.core, sw, **options))
    out = None
    for chunk in reversed(list(grid)):  # any order: the sums are exact
        sources = sw.partial_sources(grid, chunk.core)  # what an engine would gather for this core
        meeting = {i for i, p in enumerate(partials) if p[1].shape[0] and not p[0].intersect(chunk.core).empty}
        assert {c.id for c in sources} == meeting
        core = blend_partials(chunk.core, [partials[c.id] for c in sources][::-1], sw)
        if out is None:
            out = np.zeros((core.shape[0],) + vol.shape, core.dtype)
        out[(slice(None),) + chunk.core.slices()] = core
    return out


@pytest.mark.parametrize("pieces", GRIDS)
def test_chunked_affinities_are_bit_identical_to_the_whole_volume(volume, pieces):
    model = tiny_model()
    sw = SlidingWindow(SHAPE, (8, 32, 32), pad=(2, 8, 8), sw_batch_size=4)
    whole = predict_volume(model, volume, sw)
    assert whole.shape == (3,) + SHAPE and whole.dtype == np.float32
    np.testing.assert_array_equal(chunked(model, volume, sw, pieces), whole)
    np.testing.assert_array_equal(chunked_partial(model, volume, sw, pieces), whole)


@pytest.mark.parametrize("blending,threads", [("bump", 2), ("constant", 1)])
def test_exact_with_crop_odd_strides_and_other_blendings(volume, blending, threads):
    # with two threads and odd window shapes oneDNN gives a window different last bits in different batch
    # slots: SlidingWindow.batches must neutralise that
    torch.set_num_threads(threads)
    model = tiny_model(1)
    sw = SlidingWindow(SHAPE, (7, 30, 26), pad=(3, 5, 6), crop=(1, 3, 2), overlap=(2, 9, 5),
                       blending=blending, sw_batch_size=3, boundary="reflect")
    whole = predict_volume(model, volume, sw)
    np.testing.assert_array_equal(chunked_partial(model, volume, sw, (3, 2, 5)), whole)
    if threads == 1:  # the box scheme too (two threads are slow on a loaded machine)
        np.testing.assert_array_equal(chunked(model, volume, sw, (2, 1, 3)), whole)


def test_batch_size_changes_at_most_float_rounding_and_stays_exact_under_chunking(volume):
    model = tiny_model(2)
    outs = {}
    for bs in (1, 4):
        sw = SlidingWindow(SHAPE, (8, 32, 32), pad=(2, 8, 8), sw_batch_size=bs)
        outs[bs] = predict_volume(model, volume, sw)
        np.testing.assert_array_equal(chunked_partial(model, volume, sw, (2, 4, 4)), outs[bs])
    # oneDNN picks different kernels for batch 1 and 4: last-bit differences only
    np.testing.assert_allclose(outs[1], outs[4], rtol=0, atol=1e-6)


def naive_blend(model, vol, sw) -> np.ndarray:
    """Textbook float64 sliding window over the padded volume: sum(w * p) / sum(w), real-valued weights."""
    from em_chunks.learn.blend import axis_profile

    w = np.ones(())
    for n in sw.window:
        w = np.multiply.outer(w, axis_profile(n, sw.blending))
    w = w / w.max()
    num = np.zeros((3,) + vol.shape)
    den = np.zeros(vol.shape)
    full = Box.from_shape(vol.shape)
    with torch.no_grad():
        for win in sw.windows_for(full):
            x = torch.from_numpy(read_padded(vol, win.input, sw.boundary)[None, None].astype(np.float32) / 255)
            p = torch.sigmoid(model(x))[0].double().numpy()
            part = win.output.intersect(full)
            src = part.slices(win.input)
            num[(slice(None),) + part.slices()] += w[src] * p[(slice(None),) + src]
            den[part.slices()] += w[src]
    return num / den


def test_blended_values_match_a_textbook_float_implementation(volume):
    model = tiny_model(3)
    sw = SlidingWindow(SHAPE, (8, 32, 32), pad=(2, 8, 8), crop=(1, 2, 2))
    ours = predict_volume(model, volume, sw)
    np.testing.assert_allclose(ours, naive_blend(model, volume, sw), rtol=0, atol=2e-6)


class Constant(nn.Module):
    def __init__(self, value: float, channels: int = 2) -> None:
        super().__init__()
        self.value, self.channels = value, channels
        self.eval()  # inference refuses models in training mode

    def forward(self, x):
        return torch.full((x.shape[0], self.channels) + tuple(x.shape[2:]), self.value)


@pytest.mark.parametrize("blending", ["gaussian", "bump", "constant"])
def test_weights_normalise_to_one_for_a_constant_model(volume, blending):
    sw = SlidingWindow(SHAPE, (8, 32, 32), pad=(1, 4, 4), blending=blending)
    out = predict_volume(Constant(0.7), volume, sw, activation="none")
    assert (out == np.float32(0.7)).all()  # exactly, borders and corners included


def test_uint8_output_is_within_half_a_step_of_float(volume):
    model = tiny_model(4)
    sw = SlidingWindow(SHAPE, (8, 32, 32), pad=(2, 8, 8))
    f = predict_volume(model, volume, sw)
    q = predict_volume(model, volume, sw, output_dtype="uint8")
    assert q.dtype == np.uint8
    assert np.abs(q / 255.0 - f).max() <= 0.5 / 255 + 1e-7
    np.testing.assert_array_equal(chunked(model, volume, sw, (1, 2, 3), output_dtype="uint8"), q)


def test_select_channel_picks_channels_in_the_given_order(volume):
    model = tiny_model(5, out_channels=6)
    sw = SlidingWindow(SHAPE, (8, 32, 32), pad=(2, 8, 8))
    full = predict_volume(model, volume, sw)
    picked = predict_volume(model, volume, sw, select_channel=[4, 0, 2])
    np.testing.assert_array_equal(picked, full[[4, 0, 2]])
    with pytest.raises(InputError, match="select_channel"):
        predict_volume(model, volume, sw, select_channel=[6])


class TwoD(nn.Module):
    """A 2-D model (dims = 2, as the registry's models declare) and its exact 3-D twin with (1,3,3) kernels."""

    dims = 2
    in_channels = 1

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(6)
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.eval()  # inference refuses models in training mode

    def forward(self, x):
        assert x.ndim == 4
        return self.conv(x)


def test_2d_model_runs_section_by_section_and_chunks_exactly(volume):
    model = TwoD().eval()
    sw = SlidingWindow(SHAPE, (1, 32, 32), pad=(0, 8, 8), overlap=(0, 16, 16))
    whole = predict_volume(model, volume, sw)
    assert whole.shape == (2,) + SHAPE
    np.testing.assert_array_equal(chunked(model, volume, sw, (3, 2, 5)), whole)
    # each section on its own gives the same result: nothing leaks between sections
    one = SlidingWindow((1, 64, 64), (1, 32, 32), pad=(0, 8, 8), overlap=(0, 16, 16))
    section = predict_volume(model, volume[7:8], one)
    np.testing.assert_allclose(section[:, 0], whole[:, 7], rtol=0, atol=1e-6)
    with pytest.raises(InputError, match="2-D model"):
        predict_volume(model, volume, SlidingWindow(SHAPE, (4, 32, 32)))


def test_bad_inputs_are_refused(volume):
    model = tiny_model()
    model.in_channels = 2
    sw = SlidingWindow(SHAPE, (8, 32, 32), pad=(2, 8, 8))
    with pytest.raises(InputError, match="channel"):
        predict_volume(model, volume, sw)
    model = tiny_model()
    core = Box((0, 0, 0), (10, 16, 16))
    small = core.grow(2)
    with pytest.raises(ValueError, match="context_for"):
        predict_box(model, read_padded(volume, small, sw.boundary), small, core, sw)
    with pytest.raises(ValueError, match="training mode"):
        predict_volume(tiny_model().train(), volume, sw)
    with pytest.raises(ValueError, match="NaN"):
        predict_volume(Constant(float("nan")), volume, sw)


def test_a_volume_smaller_than_the_window_gets_one_overhanging_window():
    vol = np.random.default_rng(3).integers(0, 256, (5, 20, 20), dtype=np.uint8)
    sw = SlidingWindow(vol.shape, (8, 32, 32), pad=(1, 2, 2))
    assert sw.grid_shape == (1, 1, 1)
    model = tiny_model(7)
    whole = predict_volume(model, vol, sw)
    np.testing.assert_array_equal(chunked(model, vol, sw, (2, 2, 3)), whole)
    np.testing.assert_array_equal(chunked_partial(model, vol, sw, (5, 1, 2)), whole)
