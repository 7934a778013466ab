"""The global window grid: a function of the volume only, covering it, and shared out exactly by chunks."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from em_chunks.errors import InputError
from em_chunks.geometry import Box, ChunkGrid
from em_chunks.learn.blend import axis_profile, window_weights
from em_chunks.learn.inference import SlidingWindow, axis_origins


@pytest.mark.parametrize("length,window,stride,pad", [(64, 32, 16, 0), (20, 8, 4, 2), (21, 8, 5, 3), (5, 8, 4, 1), (8, 8, 4, 0)])
def test_axis_origins_cover_the_padded_axis_and_snap_the_last_window(length, window, stride, pad):
    o = axis_origins(length, window, stride, pad)
    assert o[0] == -pad
    assert all(b - a <= stride and b > a for a, b in zip(o, o[1:]))  # increasing, no gaps
    if length + 2 * pad >= window:
        assert o[-1] + window == length + pad  # the last window ends exactly at the padded end
    else:
        assert len(o) == 1 and o[0] + window >= length + pad  # one overhanging window


def test_windows_do_not_depend_on_the_chunk_and_cover_every_voxel():
    sw = SlidingWindow((20, 64, 64), (8, 32, 32), pad=(2, 8, 8), crop=(1, 4, 4))
    whole = {w.index: w for w in sw.windows_for(Box.from_shape(sw.volume))}
    for chunk in ChunkGrid(sw.volume, (3, 2, 5)):
        wins = sw.windows_for(chunk.core)
        assert [w.index for w in wins] == sorted(w.index for w in wins)  # global order
        for w in wins:
            assert whole[w.index] == w  # same boxes as in the whole-volume pass
            assert not w.output.intersect(chunk.core).empty
        ctx = sw.context_for(chunk.core)
        assert all(ctx.contains(w.input) for w in wins)
        assert ctx.contains(chunk.core)
        assert (sw.normaliser(chunk.core) > 0).all()  # every voxel covered


def test_owned_windows_partition_the_grid_for_any_chunking():
    sw = SlidingWindow((20, 64, 64), (8, 32, 32), pad=(2, 8, 8))
    useful = {w.index for w in sw.windows_for(Box.from_shape(sw.volume))}
    for pieces in [(1, 1, 1), (2, 4, 4), (3, 2, 5)]:
        owned = [w.index for c in ChunkGrid(sw.volume, pieces) for w in sw.owned_windows(c.core)]
        assert len(owned) == len(set(owned))  # nobody computes a window twice
        assert set(owned) == useful  # and every window that matters is computed


def test_weights_are_positive_integers_peaking_at_the_centre():
    for mode in ("gaussian", "bump", "constant"):
        w = window_weights((8, 32, 32), mode)
        assert w.dtype == np.int64 and w.min() >= 1 and w.max() == 2**20
        np.testing.assert_array_equal(w, w[::-1, ::-1, ::-1])  # symmetric
    g = axis_profile(64, "gaussian")
    # sigma = W/8: one sigma from the centre the profile is exp(-1/2)
    assert abs(np.interp(31.5 + 8, np.arange(64), g) - np.exp(-0.5)) < 1e-3


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(window=(0, 32, 32)),
        dict(window=(8, 32, 32), crop=2),  # crop without pad leaves the borders uncovered
        dict(window=(8, 32, 32), overlap=(8, 0, 0)),  # overlap as large as the window: stride 0
        dict(window=(8, 32, 32), overlap=(4, 16, 16), stride=(4, 8, 8)),  # inconsistent
        dict(window=(8, 32, 32), stride=(9, 32, 32)),  # gaps between windows
        dict(window=(8, 32, 32), blending="cosine"),
        dict(window=(8, 32, 32), sw_batch_size=0),
        dict(window=(8, 32)),
        dict(window=(8, 32, 32), boundary="none"),
    ],
)
def test_bad_configs_are_refused_with_one_line(kwargs):
    with pytest.raises(InputError) as err:
        SlidingWindow((20, 64, 64), **kwargs)
    msg = str(err.value)
    assert "\n" not in msg and "sliding_window" in msg


def test_default_overlap_is_half_the_output_window():
    sw = SlidingWindow((20, 64, 64), (8, 32, 32), pad=2, crop=1)
    assert sw.output_size == (6, 30, 30)
    assert sw.stride == (3, 15, 15) and sw.overlap == (3, 15, 15)
    assert all(n == len(o) for n, o in zip(sw.grid_shape, sw.origins))
    assert list(itertools.chain(*sw.origins))  # non-empty


@pytest.mark.parametrize("batch", [1, 4, 6, 8])
def test_batches_are_fixed_grid_blocks_and_the_partial_scheme_wastes_no_slot(batch):
    sw = SlidingWindow((32, 192, 192), (16, 64, 64), pad=(4, 16, 16), sw_batch_size=batch)
    whole = sw.batches(sw.windows_for(Box.from_shape(sw.volume)))
    slot_of = {w.index: (i, s) for i, b in enumerate(whole) for s, w in enumerate(b) if w is not None}
    assert all(len(b) == batch for b in whole)
    for pieces in [(2, 4, 4), (3, 2, 5)]:
        grid = ChunkGrid(sw.volume, pieces)
        owned = [sw.batches(sw.owned_windows(c.core)) for c in grid]
        assert sum(len(b) for b in owned) == len(whole)  # every model batch is computed exactly once
        for chunk in grid:  # and a window keeps its slot whichever chunk computes it
            for b in sw.batches(sw.windows_for(chunk.core)):
                slots = {slot_of[w.index][1] for w in b if w is not None}
                blocks = {slot_of[w.index][0] for w in b if w is not None}
                assert len(blocks) == 1 and all(slot_of[w.index][1] == s for s, w in enumerate(b) if w is not None)
                assert slots


def test_config_round_trips_and_replace_keeps_the_grid():
    import dataclasses

    sw = SlidingWindow((20, 64, 64), (8, 32, 32), overlap=(2, 8, 8), pad=(2, 8, 8), blending="bump")
    again = SlidingWindow(**sw.config())
    assert again == sw and again.origins == sw.origins
    moved = dataclasses.replace(sw, volume=(20, 64, 100))  # both stride and overlap are set by now
    assert moved.stride == sw.stride and moved.grid_shape[2] > sw.grid_shape[2]
    with pytest.raises(InputError, match="disagree"):
        SlidingWindow((20, 64, 64), (8, 32, 32), overlap=4, stride=8)
