"""Boundary modes: the same meaning as dask.array.overlap (and numpy's definitions), checked against both."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from em_chunks.errors import InputError
from em_chunks.geometry import Box, ChunkGrid
from em_chunks.io import padding

NUMPY = {"reflect": "symmetric", "mirror": "reflect", "nearest": "edge", "periodic": "wrap"}


@pytest.mark.parametrize("mode", sorted(NUMPY))
@pytest.mark.parametrize("length", [1, 2, 5, 9])
def test_source_indices_match_numpy_pad(mode, length):
    """Index maps agree with np.pad of an arange, including pads longer than the axis."""
    if mode == "mirror" and length == 1:
        pytest.skip("numpy cannot reflect a length-1 axis")
    for before, after in [(0, 0), (3, 2), (length, length), (2 * length + 3, length + 4)]:
        want = np.pad(np.arange(length), (before, after), mode=NUMPY[mode])
        got = padding.source_indices(-before, length + after, length, mode)
        assert got.tolist() == want.tolist(), (mode, length, before, after)


def test_reflect_repeats_edge_and_mirror_does_not():
    """The name trap the docs warn about: dask 'reflect' == numpy 'symmetric', 'mirror' == numpy 'reflect'."""
    assert padding.source_indices(-3, 0, 10, "reflect").tolist() == [2, 1, 0]
    assert padding.source_indices(-3, 0, 10, "mirror").tolist() == [3, 2, 1]
    assert padding.normalize_boundary("symmetric") == "reflect"
    assert padding.normalize_boundary("reflect-no-edge") == "mirror"


def test_constant_and_none():
    assert padding.source_indices(-2, 3, 2, 5).tolist() == [-1, -1, 0, 1, -1]
    assert padding.clip_span(-2, 9, 6, "none") == (0, 6)
    assert padding.clip_span(-2, 9, 6, "reflect") == (-2, 9)


@pytest.mark.parametrize("bad", ["reflct", "", None, True, [1]])
def test_normalize_refuses_unknown(bad):
    with pytest.raises(InputError, match="boundary"):
        padding.normalize_boundary(bad)


def test_normalize_accepts_numbers_and_text_numbers():
    assert padding.normalize_boundary(0) == 0
    assert padding.normalize_boundary("128") == 128
    assert padding.normalize_boundary(np.uint8(3)) == 3
    assert padding.normalize_boundary(" Periodic ") == "periodic"


def test_runs_cover_every_position_once():
    for mode in ["reflect", "mirror", "nearest", "periodic", 0]:
        runs = padding.axis_runs(-7, 12, 5, mode)
        covered = np.zeros(19, int)
        for r in runs:
            covered[r.out:r.out + r.n] += 1
        assert (covered == 1).all(), mode
        # runs are few: at most one per reflection / wrap, not one per voxel
        assert len(runs) <= 8, (mode, runs)


@pytest.mark.parametrize("boundary", ["reflect", "mirror", "nearest", "periodic", 17])
def test_read_padded_equals_np_pad(boundary):
    vol = np.arange(5 * 6 * 7, dtype=np.int32).reshape(5, 6, 7)
    box = Box((-3, 2, -9), (9, 9, 12))
    got = padding.read_padded(vol, box, boundary)
    widths = [(3, 1), (0, 5), (9, 0)]
    if isinstance(boundary, int):
        ref = np.pad(vol, widths, mode="constant", constant_values=boundary)
    else:
        ref = np.pad(vol, widths, mode=NUMPY[boundary])
    assert got.shape == box.shape
    assert (got == ref[:, 2:11, 0:12]).all()
    assert (padding.pad(vol, widths, boundary) == ref).all()


def test_read_padded_none_clips():
    vol = np.arange(60).reshape(3, 4, 5)
    got = padding.read_padded(vol, Box((-1, 1, 3), (5, 2, 9)), "none")
    assert (got == vol[:, 1:3, 3:]).all()
    assert padding.pad(vol, [(1, 1)] * 3, "none") is vol


@pytest.mark.parametrize("boundary", ["reflect", "nearest", "periodic", "none", 9])
@pytest.mark.parametrize("pieces", [(1, 1, 1), (2, 3, 2), (3, 2, 5)])
def test_assembled_blocks_equal_dask_overlap(boundary, pieces):
    """read_padded of each chunk's context is dask.array.overlap's block, voxel for voxel."""
    vol = np.random.default_rng(1).integers(0, 255, (9, 11, 16), dtype=np.uint8)
    halo = (2, 3, 2)
    grid = ChunkGrid(vol.shape, pieces, halo)
    ref = da.overlap.overlap(da.from_array(vol, chunks=grid.dask_chunks), depth=halo, boundary=boundary)
    for chunk in grid:
        block = ref.blocks[chunk.index].compute()
        assert (padding.read_padded(vol, chunk.context, boundary) == block).all(), chunk
