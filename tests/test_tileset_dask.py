"""TileSet.to_dask: block i == dask.array.overlap's block i, voxel for voxel; each PNG decoded once a pass."""

from __future__ import annotations

import dask
import dask.array as da
import pytest

from _tile_helpers import real_crop, synthetic, write_pytc_tiles
from em_chunks import TileSet, make_tileset
from em_chunks.geometry import ChunkGrid
from em_chunks.io import padding
from em_chunks.io.tiles import decode_count

BOUNDARIES = ["reflect", "nearest", "periodic", "none", 0, 77]


def overlap_reference(vol, grid, halo, boundary):
    plain = da.from_array(vol, chunks=ChunkGrid(vol.shape, grid).dask_chunks)
    return da.overlap.overlap(plain, depth=halo, boundary=boundary)


def assert_blocks_equal(got, ref):
    assert got.chunks == ref.chunks
    blocks_got = dask.compute(*got.to_delayed().ravel(), scheduler="threads", num_workers=2)
    blocks_ref = dask.compute(*ref.to_delayed().ravel(), scheduler="sync")
    for a, b in zip(blocks_got, blocks_ref):
        assert a.dtype == b.dtype and a.shape == b.shape and (a == b).all()


@pytest.fixture(scope="module")
def synthetic_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    vol = synthetic((9, 45, 61))
    return vol, TileSet.from_json(make_tileset(vol, root, tile_size=16))


@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("grid", [(1, 1, 1), (2, 4, 4), (3, 2, 5)])
def test_synthetic_equals_dask_overlap(synthetic_set, grid, boundary):
    vol, ts = synthetic_set
    halo = (2, 5, 7)  # <= the smallest chunk on every axis (dask's overlap requires that)
    assert_blocks_equal(ts.to_dask(grid, halo, boundary), overlap_reference(vol, grid, halo, boundary))


@pytest.mark.parametrize("boundary", ["reflect", "periodic", "none", 3])
@pytest.mark.parametrize("grid", [(1, 1, 1), (2, 4, 4), (3, 2, 5)])
def test_real_fib_equals_dask_overlap(tmp_path_factory, grid, boundary):
    img = real_crop("fib_medulla_250", "image", 16, 128, 128)
    root = tmp_path_factory.mktemp("fib")
    ts = TileSet.from_json(make_tileset(img, root, tile_size=48))
    halo = (4, 16, 16)
    assert_blocks_equal(ts.to_dask(grid, halo, boundary), overlap_reference(img, grid, halo, boundary))


def test_real_fib_labels_equal_dask_overlap(tmp_path):
    lab = real_crop("fib_medulla_250", "labels", 16, 128, 128)
    img = real_crop("fib_medulla_250", "image", 16, 128, 128)
    ts = TileSet.from_json(make_tileset(img, tmp_path, labels=lab, tile_size=48))
    got = ts.to_dask((2, 4, 4), (3, 8, 8), "reflect", layer="label")
    assert_blocks_equal(got, overlap_reference(lab, (2, 4, 4), (3, 8, 8), "reflect"))


@pytest.mark.parametrize("grid", [(1, 1, 1), (2, 4, 4), (3, 2, 5)])
def test_real_isbi_pytc_json_equals_dask_overlap(tmp_path_factory, grid):
    img = real_crop("isbi2012", "image", 4, 256, 256)
    path = write_pytc_tiles(img, tmp_path_factory.mktemp("isbi"), tile_size=100, tile_st=(1, 1))
    ts = TileSet.from_json(path)
    halo = (1, 24, 24)
    assert_blocks_equal(ts.to_dask(grid, halo, "reflect"), overlap_reference(img, grid, halo, "reflect"))


def test_halo_larger_than_a_chunk_follows_numpy(synthetic_set):
    """Outside dask's domain (depth > chunk) each block still equals the padded read of its context."""
    vol, ts = synthetic_set
    grid, halo = (3, 4, 4), (5, 20, 20)
    for boundary in ["reflect", "mirror", "periodic"]:
        arr = ts.to_dask(grid, halo, boundary)
        blocks = arr.to_delayed()
        computed = dask.compute(*blocks.ravel(), scheduler="threads", num_workers=2)
        for chunk, block in zip(ChunkGrid(ts.shape, grid, halo), computed):
            assert (block == padding.read_padded(vol, chunk.context, boundary)).all(), (boundary, chunk)


def test_each_png_decoded_once_per_pass(synthetic_set):
    vol, ts = synthetic_set
    n_files = sum(1 for _ in ts.iter_tiles())
    for boundary in ["reflect", "periodic", 0]:
        arr = ts.to_dask((2, 4, 4), (2, 6, 6), boundary)
        before = decode_count()
        dask.compute(*arr.to_delayed().ravel(), scheduler="threads", num_workers=2)
        assert decode_count() - before == n_files, boundary
    # PyTC v1 style (every chunk decodes every tile it touches) would decode far more:
    touched = 0
    for chunk in ChunkGrid(ts.shape, (2, 4, 4), (2, 6, 6)):
        before = decode_count()
        ts.read(chunk.context)
        touched += decode_count() - before
    assert touched > 2 * n_files


def test_graph_has_one_decode_task_per_slab_tile(synthetic_set):
    vol, ts = synthetic_set
    arr = ts.to_dask((2, 4, 4), (2, 6, 6), "reflect", sections_per_task=3)
    graph = dict(arr.__dask_graph__())
    decode_keys = [k for k in graph if isinstance(k, tuple) and str(k[0]).startswith("tiles-")]
    rows, cols = ts.tile_grid()
    # z cuts at 0, 2, 2±... each slab of <= 3 sections per tile column; never more than depth per column
    assert len(decode_keys) % (rows * cols) == 0
    assert rows * cols * 3 <= len(decode_keys) <= rows * cols * ts.shape[0]
    assert len(graph) == len(decode_keys) + 2 * 4 * 4
    # public dask API only: plain (function, argument, ...) tuples, no objects of the private dask._task_spec
    assert all(type(task) is tuple and callable(task[0]) for task in graph.values())
    assert all(type(task[0]).__module__ != "dask._task_spec" for task in graph.values())


def test_open_volume_style_tile_aligned_chunks(synthetic_set):
    vol, ts = synthetic_set
    arr = ts.to_dask(chunks=ts.default_chunks(), boundary="none")
    assert arr.chunks[1] == (16, 16, 13) and arr.chunks[2] == (16, 16, 16, 13)
    assert (arr.compute(scheduler="threads") == vol).all()


def test_to_dask_on_a_process_cluster(synthetic_set):
    """The graph pickles and runs on real worker processes (tasks carry paths, not the TileSet)."""
    from distributed import Client, LocalCluster

    vol, ts = synthetic_set
    arr = ts.to_dask((2, 2, 2), (1, 4, 4), "reflect")
    ref = overlap_reference(vol, (2, 2, 2), (1, 4, 4), "reflect")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            blocks = client.compute(list(arr.to_delayed().ravel()), sync=True)
    for a, b in zip(blocks, dask.compute(*ref.to_delayed().ravel(), scheduler="sync")):
        assert (a == b).all()


def test_bad_grid_and_halo_are_input_errors(synthetic_set):
    from em_chunks.errors import InputError

    _, ts = synthetic_set
    with pytest.raises(InputError, match="grid"):
        ts.to_dask((0, 1, 1))
    with pytest.raises(InputError, match="grid"):
        ts.to_dask((10, 1, 1))  # more pieces than sections
    with pytest.raises(InputError, match="halo"):
        ts.to_dask((1, 1, 1), (1, -1, 1))
    with pytest.raises(InputError, match="boundary"):
        ts.to_dask((1, 1, 1), 1, "reflekt")
