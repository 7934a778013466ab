import numpy as np
import pytest

from em_chunks.ops.ids import IdLookup, chunk_of, chunk_range, local_of, pack_ids, relabel_chunk


def test_packed_ids_round_trip_and_keep_zero():
    local = np.array([0, 1, 2, (1 << 40) - 1], np.uint64)
    ids = pack_ids(77, local)
    assert ids[0] == 0
    assert (chunk_of(ids[1:]) == 77).all()
    assert np.array_equal(local_of(ids[1:]), local[1:])
    lo, hi = chunk_range(77)
    assert ((ids[1:] >= lo) & (ids[1:] < hi)).all()


def test_pack_refuses_overflow():
    with pytest.raises(ValueError):
        pack_ids(1 << 24, np.array([1], np.uint64))
    with pytest.raises(ValueError):
        pack_ids(0, np.array([1 << 40], np.uint64))


def test_lookup_maps_arrays_and_refuses_unknown_ids():
    lk = IdLookup(np.array([3, 10, 1 << 45], np.uint64), np.array([7, 8, 9], np.uint64))
    arr = np.array([[0, 3], [1 << 45, 10]], np.uint64)
    assert relabel_chunk(arr, lk).tolist() == [[0, 7], [9, 8]]
    with pytest.raises(KeyError):
        lk(np.array([4], np.uint64))
    with pytest.raises(ValueError):
        IdLookup(np.array([2, 1], np.uint64), np.array([0, 0], np.uint64))
    composed = lk.compose(IdLookup(np.array([7, 8, 9], np.uint64), np.array([1, 1, 2], np.uint64)))
    assert composed(arr).tolist() == [[0, 1], [2, 1]]
