"""Consecutive ids (1..N) computed chunk by chunk: the same partition as the input, no gaps, the
same answer for every chunk grid (it equals scikit-image's relabel_sequential), and usable by
scikit-image."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from skimage.metrics import adapted_rand_error
from skimage.segmentation import relabel_sequential

from conftest import same_partition
from em_chunks.api.decode import decode
from em_chunks.config.decode import DecodeConfig
from em_chunks.engine.consecutive import run_consecutive
from em_chunks.engine.state import RunState
from em_chunks.errors import ChunkFailure
from em_chunks.geometry import ChunkGrid, storage_aligned
from em_chunks.io import layout
from em_chunks.ops import consecutive as C
from em_chunks.ops.ids import pack_ids
from em_chunks.synthetic import make_synthetic_em, synthetic_affinities

GRIDS = [(1, 1, 1), (2, 3, 2), (3, 2, 5), (1, 4, 1)]


@pytest.fixture(scope="module")
def cells():
    _, labels = make_synthetic_em((14, 50, 44), seed=5, cell_size=12)
    labels = labels.astype(np.int64)
    labels[:, 20:23, :] = 0  # a background band, split across chunks
    return labels


def first_voxel_ids(labels):
    """Each segment's id: 1 + the flat index of its first voxel (C order)."""
    flat = labels.ravel()
    ids, first = np.unique(flat, return_index=True)
    lut = dict(zip(ids.tolist(), (first + 1).tolist()))
    lut[0] = 0
    return np.vectorize(lut.get, otypes=[np.uint64])(labels)


def packed_ids(labels, grid, seed=0):
    """Each segment's id packed with the chunk of one of its voxels (a random one), as decode makes
    them."""
    rng = np.random.default_rng(seed)
    out = np.zeros(labels.shape, np.uint64)
    for k, lab in enumerate(np.unique(labels[labels != 0])):
        where = np.argwhere(labels == lab)
        chunk = grid.chunk_at(where[rng.integers(len(where))])
        out[labels == lab] = pack_ids(chunk.id, np.array([k + 7]))[0]
    return out


def _run(client, tmp_path, name, src_array, pieces, owner):
    shape = src_array.shape
    grid = ChunkGrid(shape, pieces, align=storage_aligned(shape, pieces))
    root = zarr.open_group(str(tmp_path / name), mode="w", zarr_format=3)
    src = root.create_array("src", shape=shape, dtype=np.uint64, chunks=grid.align)
    src[:] = src_array
    root.create_array("dst", shape=shape, dtype=np.uint64, chunks=grid.align)
    n = run_consecutive(
        client,
        RunState(tmp_path / name),
        grid,
        f"{tmp_path / name}/src",
        f"{tmp_path / name}/dst",
        owner,
        progress=False,
    )
    return n, np.asarray(zarr.open_array(f"{tmp_path / name}/dst", mode="r")[:])


def _check(dst, src, n):
    assert dst.dtype == np.uint64
    assert same_partition(dst, src)
    present = np.unique(dst[dst != 0])
    assert present.tolist() == list(range(1, n + 1))  # 1..N, no gaps
    assert np.array_equal(dst, relabel_sequential(src.astype(np.int64))[0])


def test_first_voxel_ids_give_one_answer_for_every_grid(cells, cluster_client, tmp_path):
    src = first_voxel_ids(cells)
    n_cells = np.unique(cells[cells != 0]).size
    results = []
    for pieces in GRIDS:
        n, dst = _run(
            cluster_client, tmp_path, "fv-" + "-".join(map(str, pieces)), src, pieces, "first_voxel"
        )
        assert n == n_cells
        _check(dst, src, n)
        results.append(dst)
    for dst in results[1:]:
        assert np.array_equal(dst, results[0])


@pytest.mark.parametrize("pieces", GRIDS[1:])
def test_packed_ids_of_the_grid(cells, cluster_client, tmp_path, pieces):
    shape = cells.shape
    grid = ChunkGrid(shape, pieces, align=storage_aligned(shape, pieces))
    src = packed_ids(cells, grid)
    assert int(src.max()) > 1 << 40 or pieces == (1, 1, 1)
    n, dst = _run(cluster_client, tmp_path, "p.zarr", src, pieces, "packed")
    _check(dst, src, n)


def test_decoded_segmentation_becomes_usable_by_scikit_image(cluster_client, tmp_path):
    _, labels = make_synthetic_em((16, 48, 48), seed=3)
    affs = synthetic_affinities(labels, noise=0.1, seed=4).astype(np.float32)
    zarr.save_array(str(tmp_path / "a.zarr"), affs, zarr_format=3)
    zarr.save_array(str(tmp_path / "gt.zarr"), labels.astype(np.uint32), zarr_format=3)
    segs = {}
    for ids, pieces in [
        ("packed", (2, 2, 2)),
        ("first_voxel", (1, 1, 1)),
        ("first_voxel", (2, 3, 2)),
    ]:
        out = tmp_path / f"{ids}-{''.join(map(str, pieces))}.zarr"
        m = decode(
            tmp_path / "a.zarr",
            out,
            ",".join(map(str, pieces)),
            DecodeConfig(segment_ids=ids),
            tmp_path / "gt.zarr",
            client=cluster_client,
            progress=False,
        )
        seg = zarr.open_array(layout.segmentation_array(out), mode="r")
        grid = ChunkGrid(labels.shape, pieces, align=tuple(seg.chunks))
        dst = (
            zarr.open_group(str(out))
            .require_group("work")
            .create_array("consecutive", shape=seg.shape, dtype=np.uint64, chunks=seg.chunks)
        )
        n = run_consecutive(
            cluster_client,
            RunState(out),
            grid,
            layout.segmentation_array(out),
            f"{out}/{dst.path}",
            ids,
            progress=False,
        )
        result = np.asarray(dst[:])
        _check(result, np.asarray(seg[:]), n)
        assert n == m["segments"]
        err, _, _ = adapted_rand_error(
            labels.astype(np.int64), result.astype(np.int64)
        )  # no giant allocation
        assert abs(err - m["adapted_rand_error"]) < 1e-9
        segs[(ids, pieces)] = result
    assert np.array_equal(segs[("first_voxel", (1, 1, 1))], segs[("first_voxel", (2, 3, 2))])


def test_ids_that_break_the_owner_rule_fail_clearly(cells, cluster_client, tmp_path):
    src = first_voxel_ids(cells)
    last = (
        src == src.max()
    )  # the segment seen last; give it the index of a voxel in the first chunk
    first_chunk = (
        ChunkGrid(cells.shape, (2, 2, 2), align=storage_aligned(cells.shape, (2, 2, 2)))
        .chunk(0)
        .core
    )
    assert not last[first_chunk.slices()].any()
    used = set(np.unique(src).tolist())
    flat = next(
        int(f)
        for f in np.ravel_multi_index(np.nonzero(np.ones(first_chunk.shape, bool)), cells.shape)
        if f + 1 not in used
    )  # chunk 0 starts at the origin: these are indices of its voxels
    src[last] = np.uint64(flat + 1)
    with pytest.raises(ChunkFailure, match="not held by their owner chunk|not first_voxel"):
        _run(cluster_client, tmp_path, "bad.zarr", src, (2, 2, 2), "first_voxel")


def test_owner_rules():
    bounds = ([0, 4, 8], [0, 5, 10], [0, 3, 6])
    shape = (8, 10, 6)
    flat = np.ravel_multi_index(([5], [2], [4]), shape)
    assert C.owners_of(np.array(flat + 1, np.uint64), "first_voxel", shape, bounds).tolist() == [
        1 * 4 + 0 * 2 + 1
    ]
    assert C.owners_of(pack_ids(6, np.array([1, 9])), "packed", shape, bounds).tolist() == [6, 6]
    with pytest.raises(ValueError, match="outside a grid"):
        C.owners_of(pack_ids(8, np.array([1])), "packed", shape, bounds)
    ranks = C.ranks_in_group([np.array([2, 9], np.uint64), np.array([1, 5, 12], np.uint64)])
    assert [r.tolist() for r in ranks] == [[1, 3], [0, 2, 4]]
