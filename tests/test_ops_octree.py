"""The octree steps of the distributed decoder give exactly the single-process result."""

import numpy as np
import pytest

from em_chunks.geometry import ChunkGrid
from em_chunks.geometry.octree import Octree
from em_chunks.ops.decode_reference import decode_volume, decode_volume_octree, fragments_volume
from em_chunks.ops.octree_fragments import leaf_join_message, run_joins
from em_chunks.ops.params import DecodeParams
from em_chunks.synthetic import voronoi_labels, with_membranes
from test_ops_synth import fib_crop, noisy_affinities, synthetic

GRIDS = [(2, 4, 4), (3, 2, 5), (1, 1, 3)]
THS = (0.3, 0.5, 0.7)


def test_octree_blocks_cover_the_grid_once_per_level():
    tree = Octree(ChunkGrid((30, 50, 70), (3, 2, 5)))
    assert tree.top == 3 and tree.shape(1) == (2, 1, 3) and tree.shape(3) == (1, 1, 1)
    for level in tree.levels:
        seen = [c.id for b in tree.blocks(level) for c in tree.chunks(b)]
        assert sorted(seen) == list(range(30))
    for level in list(tree.levels)[1:]:
        for b in tree.blocks(level):
            kids = tree.children(b)
            assert sorted(c.id for k in kids for c in tree.chunks(k)) == sorted(c.id for c in tree.chunks(b))
            assert all(tree.parent(k) == b for k in kids)
    # a chunk's +x face is outer for a block ending there, unless the volume ends there too
    b = tree.block(1, (0, 0, 0))  # chunks z 0-1, y 0-1, x 0-1
    ci = np.array([[0, 0, 1], [0, 0, 0], [1, 1, 1]])
    bits = np.full(3, 0b111111, np.uint8)
    out = tree.outer_faces(b, ci, bits)
    assert out[0] == 1 << 5  # +x of x index 1: the block's outer face
    assert out[1] == 0  # -z, -y, -x lie on the volume's border; +z, +y, +x are inside the block
    assert out[2] == (1 << 3) | (1 << 5)  # +z (z index 1 of 3) and +x; +y is the volume's border


@pytest.mark.parametrize("pieces", GRIDS + [(1, 1, 1)])
def test_the_join_finds_the_canonical_fragments_of_the_client_join(pieces):
    _, affs = synthetic(shape=(16, 40, 36), noise=0.15, seed=3)
    params = DecodeParams()
    grid = ChunkGrid(affs.shape[1:], pieces, 1)
    labels, table = fragments_volume(affs, grid, params)
    from em_chunks.ops.decode_reference import zero_padded_crop
    from em_chunks.ops.fragments import fragment_chunk, link_chunk

    leaves = {}
    for ch in grid:
        _, s = fragment_chunk(zero_padded_crop(affs, ch.context, 1), ch.core, ch.context, ch.id, params, affs.shape[1:])
        links = link_chunk(zero_padded_crop(affs, ch.context, 1), zero_padded_crop(labels, ch.context), ch.core, ch.context,
                           params, affs.shape[1:])
        leaves[ch.id] = leaf_join_message(s.ids, s.sizes, s.keys, s.faces, links)
    infos = run_joins(Octree(grid), leaves)
    for ch in grid:
        ids = leaves[ch.id].rid
        canon = table.canonical_lookup([ch.id])(ids)
        assert np.array_equal(infos[ch.id].canonical, canon)
        rows = table.index_of(canon)
        assert np.array_equal(infos[ch.id].key, table.keys[rows])
        assert np.array_equal(infos[ch.id].size, table.sizes[rows])
    if len(grid) > 1:
        assert len(table) < sum(len(leaves[c.id].rid) for c in grid)  # fragments do cross chunk faces


def _assert_octree_equals_reference(affs, params, grids=GRIDS):
    for pieces in grids:
        ref = decode_volume(affs, pieces, params)
        got = decode_volume_octree(affs, pieces, params)
        for a, b in zip(ref, got):
            assert np.array_equal(a, b), pieces
    return ref


@pytest.mark.parametrize("fn,init", [("aff85_his256", True), ("aff75_his256", False), ("aff50_mean", True)])
def test_octree_agglomeration_is_the_single_process_result(fn, init):
    _, affs = synthetic(shape=(16, 40, 36), noise=0.15, seed=3)
    ref = _assert_octree_equals_reference(affs, DecodeParams(thresholds=THS, merge_function=fn, init_with_max=init))
    assert len(np.unique(ref[0])) > len(np.unique(ref[2])) > 5


@pytest.mark.parametrize("dust", [(30, 0), (20, 60), (0, 30), (40, 20)])
@pytest.mark.parametrize("ids", ["packed", "first_voxel"])
def test_octree_dust_and_ids_are_the_single_process_result(dust, ids):
    _, affs = synthetic(shape=(16, 40, 36), noise=0.15, seed=3)
    params = DecodeParams(thresholds=THS, segment_ids=ids, dust_merge_size=dust[0], dust_remove_size=dust[1])
    ref = _assert_octree_equals_reference(affs, params, grids=[(2, 4, 4), (3, 2, 5)])
    if dust[1] > dust[0]:  # segments that dust merging leaves small enough are removed
        plain = decode_volume(affs, (1, 1, 1), DecodeParams(thresholds=THS))
        assert (ref[0] == 0).sum() > (plain[0] == 0).sum()


def test_octree_on_real_labels_with_ties():
    _, affs = fib_crop()
    q = (np.round(affs * 255) / 255).astype(np.float32)  # uint8 levels: many equal scores
    for fn in ("aff85_his256", "aff50_mean"):
        params = DecodeParams(thresholds=THS, merge_function=fn, dust_merge_size=25)
        _assert_octree_equals_reference(q, params, grids=[(2, 4, 4), (3, 2, 5)])


def test_first_voxel_output_does_not_depend_on_the_grid():
    _, affs = synthetic(shape=(16, 40, 36), noise=0.15, seed=3)
    params = DecodeParams(thresholds=THS, segment_ids="first_voxel", dust_merge_size=20)
    base = decode_volume_octree(affs, (1, 1, 1), params)
    for pieces in GRIDS:
        for a, b in zip(base, decode_volume_octree(affs, pieces, params)):
            assert np.array_equal(a, b)


def test_an_object_spanning_every_chunk():
    # a tube through the whole volume (all z, across y and x) amid small cells: its fragments cross
    # every chunk face, and its neighbours' merges all depend on it
    shape = (24, 40, 40)
    cells = voronoi_labels(shape, 60, seed=11) + 1
    zz, yy, xx = np.indices(shape)
    tube = ((yy - 20) ** 2 + (xx - 20) ** 2 < 64) | ((yy - 20) ** 2 + (zz - 12) ** 2 < 49)
    labels = with_membranes(np.where(tube, 1, cells).astype(np.uint64))
    affs = noisy_affinities(labels, 0.1, 0.7, 5)
    grid = (3, 4, 4)
    ref = _assert_octree_equals_reference(affs, DecodeParams(thresholds=THS, dust_merge_size=20), grids=[grid])
    seg = ref[1]
    big = np.bincount(np.unique(seg[tube], return_inverse=True)[1]).max()
    assert big > 0.8 * tube.sum()  # the tube is (mostly) one segment crossing all 48 chunks
    name = np.unique(seg[tube])[np.bincount(np.unique(seg[tube], return_inverse=True)[1]).argmax()]
    g = ChunkGrid(shape, grid)
    in_tube = {ch.id for ch in g if tube[ch.core.slices()].any()}
    spanned = {ch.id for ch in g if (seg[ch.core.slices()] == name).any()}
    assert spanned >= in_tube and len(in_tube) >= len(g) // 2
