"""Box and ChunkGrid: immutability, the floor(i*L/n) split, halos, and refusal of bad chunk specs."""

import dataclasses
import itertools

import numpy as np
import pytest

from em_chunks.errors import InputError
from em_chunks.geometry import Box, ChunkGrid, parse_chunks


def test_box_is_frozen_and_normalised():
    b = Box([1, 2, 3], [4, 5, 6])
    assert b.offset == (1, 2, 3) and b.shape == (4, 5, 6)
    assert b.end == (5, 7, 9) and b.size == 120
    with pytest.raises(dataclasses.FrozenInstanceError):
        b.offset = (0, 0, 0)  # type: ignore[misc]
    assert hash(b) == hash(Box((1, 2, 3), (4, 5, 6)))


def test_box_grow_intersect_slices():
    b = Box((0, 0, 0), (4, 4, 4))
    g = b.grow((1, 2, 3))
    assert g.offset == (-1, -2, -3) and g.shape == (6, 8, 10)
    assert g.grow(0, (0, 1, 0)).shape == (6, 9, 10)
    assert b.intersect(Box((2, 2, 2), (10, 10, 10))) == Box((2, 2, 2), (2, 2, 2))
    assert b.intersect(Box((5, 5, 5), (1, 1, 1))).empty
    a = np.arange(4 * 4 * 4).reshape(4, 4, 4)
    inner = Box((1, 1, 1), (2, 2, 2))
    assert np.array_equal(a[inner.slices()], a[1:3, 1:3, 1:3])
    assert inner.relative_to(Box((1, 0, 0), (1, 1, 1))).offset == (0, 1, 1)
    assert Box.from_slices(inner.slices()) == inner
    assert b.contains(inner) and not inner.contains(b)
    with pytest.raises(ValueError):
        Box((0, 0), (1, -1))


@pytest.mark.parametrize("shape,pieces", [((10, 17, 9), (2, 4, 4)), ((7, 7, 7), (3, 2, 5)), ((5, 6, 7), (1, 1, 1))])
def test_grid_split_formula_and_tiling(shape, pieces):
    grid = ChunkGrid(shape, pieces, halo=(1, 2, 3))
    assert len(grid) == int(np.prod(pieces))
    cover = np.zeros(shape, dtype=int)
    for chunk in grid:
        for axis, (i, n, length) in enumerate(zip(chunk.index, pieces, shape)):
            assert chunk.core.begin[axis] == (i * length) // n
            assert chunk.core.end[axis] == ((i + 1) * length) // n
        assert chunk.context == chunk.core.grow((1, 2, 3))
        assert grid.chunk(chunk.id) == chunk
        cover[chunk.core.slices()] += 1
    assert (cover == 1).all()  # cores tile the volume exactly once
    assert tuple(sum(c) for c in grid.dask_chunks) == shape


def test_grid_neighbours_and_lookup():
    grid = ChunkGrid((8, 8, 8), (2, 2, 2))
    corner = grid.chunk((0, 0, 0))
    assert len(grid.neighbours(corner)) == 7
    assert grid.chunk_at((7, 0, 5)).index == (1, 0, 1)
    for p in itertools.product(range(0, 8, 3), repeat=3):
        assert grid.chunk_at(p).core.contains_point(p)


@pytest.mark.parametrize("spec", ["0,1,1", "a,b,c", "2,4", "1,-1,1", "1,2,3,4", ""])
def test_bad_chunk_specs_are_refused(spec):
    with pytest.raises(InputError) as info:
        parse_chunks(spec)
    assert "--chunks" in str(info.value) and "\n" not in str(info.value)


def test_more_pieces_than_voxels_is_refused():
    with pytest.raises(InputError, match="only 3 voxels"):
        ChunkGrid((3, 10, 10), (4, 1, 1))
    assert parse_chunks("2, 4, 4", shape=(10, 10, 10)) == (2, 4, 4)


@pytest.mark.parametrize("shape,pieces", [((250, 250, 250), (2, 4, 4)), ((20, 64, 64), (3, 2, 5)), ((7, 9, 300), (7, 3, 3))])
def test_storage_aligned_grid_cores_are_whole_storage_chunks(shape, pieces):
    from em_chunks.geometry import storage_aligned

    store = storage_aligned(shape, pieces)
    grid = ChunkGrid(shape, pieces, align=store)
    cover = np.zeros(shape, dtype=int)
    for chunk in grid:
        assert not chunk.core.empty
        for b, e, c, length in zip(chunk.core.begin, chunk.core.end, store, shape):
            assert b % c == 0 and (e % c == 0 or e == length)
        cover[chunk.core.slices()] += 1
    assert (cover == 1).all()
