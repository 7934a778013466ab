import itertools

import numpy as np
import pytest
import waterz

from em_chunks.geometry import Box, ChunkGrid
from em_chunks.ops.decode_reference import fragments_volume, zero_padded_crop
from em_chunks.ops.fragments import fragment_chunk, link_chunk, resolve_fragments
from em_chunks.ops.ids import chunk_of
from em_chunks.ops.metrics import contingency, scores
from em_chunks.ops.params import DecodeParams
from test_ops_synth import synthetic

GRIDS = [(1, 1, 1), (2, 4, 4), (3, 2, 5), (2, 2, 2)]


def naive_fragments(affs: np.ndarray, low: float, high: float) -> np.ndarray:
    """The fragment rule written voxel by voxel with a union-find: the specification, slowly."""
    shape = affs.shape[1:]
    parent = {}

    def find(x):
        while parent.setdefault(x, x) != x:
            x = parent[x]
        return x

    def union(a, b):
        parent[find(a)] = find(b)

    fg = np.zeros(shape, bool)
    for v in itertools.product(*map(range, shape)):
        edges = []
        for k in range(6):
            c, step = k % 3, (-1 if k < 3 else 1)
            u = list(v)
            u[c] += step
            if not 0 <= u[c] < shape[c]:
                edges.append((-1.0, None))
                continue
            at = v if step < 0 else tuple(u)  # the channel sits at the later voxel
            edges.append((float(affs[c][at]), tuple(u)))
        m = max(a for a, _ in edges)
        if m <= low:
            continue
        fg[v] = True
        first = next(u for a, u in edges if a == m)  # first maximum in waterz's order
        union(v, first)
        for a, u in edges:
            if u is not None and a >= high:
                union(v, u)
    out = np.zeros(shape, np.int64)
    roots = {}
    for v in itertools.product(*map(range, shape)):
        if fg[v]:
            out[v] = roots.setdefault(find(v), len(roots) + 1)
    return out


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """True when a and b are equal up to a one-to-one relabelling (0 must match 0)."""
    if not np.array_equal(a == 0, b == 0):
        return False
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1]))


def canonical_volume(affs, pieces, params):
    grid = ChunkGrid(affs.shape[1:], pieces, 1)
    labels, table = fragments_volume(affs, grid, params)
    return table.canonical_lookup()(labels), table


@pytest.mark.parametrize("pieces", GRIDS)
def test_chunked_fragments_equal_the_voxel_by_voxel_rule_with_plateaus(pieces):
    rng = np.random.default_rng(5)
    # 4 affinity levels: many ties (plateaus) and many edges >= high
    affs = (rng.integers(0, 4, (3, 7, 9, 10)) / 3).astype(np.float32)
    params = DecodeParams(aff_threshold=(0.2, 0.999))
    ref = naive_fragments(affs, 0.2, 0.999)
    canon, _ = canonical_volume(affs, pieces, params)
    assert ref.max() > 5
    assert same_partition(canon, ref)


def test_fragments_are_identical_for_every_grid():
    _, affs = synthetic(shape=(20, 33, 31), noise=0.1, seed=3)
    params = DecodeParams()
    base, base_table = canonical_volume(affs, (1, 1, 1), params)
    for pieces in GRIDS[1:]:
        canon, table = canonical_volume(affs, pieces, params)
        assert same_partition(canon, base)
        # the chunk-invariant description: keys and sizes of the fragments, in key order
        assert np.array_equal(table.keys, base_table.keys)
        assert np.array_equal(table.sizes, base_table.sizes)
        # a canonical id names the chunk that holds the fragment's first voxel
        grid = ChunkGrid(affs.shape[1:], pieces, 1)
        first = np.unravel_index(table.keys, affs.shape[1:])
        expect = [grid.chunk_at(p).id for p in zip(*first)]
        assert np.array_equal(chunk_of(table.ids), expect)


def test_fragments_match_waterz_watershed_on_float_affinities():
    # no exact ties in float data: waterz's plateau handling never triggers and the rules agree
    _, affs = synthetic(shape=(16, 32, 32), noise=0.05, seed=11)
    canon, _ = canonical_volume(affs, (2, 2, 3), DecodeParams(aff_threshold=(0.1, 0.999)))
    wz = next(iter(waterz.agglomerate(affs, [0.0], aff_threshold_low=0.1, aff_threshold_high=0.999)))
    assert same_partition(canon, wz.astype(np.int64))


def test_stage_a_summary_and_link_contract():
    _, affs = synthetic(shape=(12, 16, 16), noise=0.05, seed=2)
    shape = affs.shape[1:]
    params = DecodeParams()
    grid = ChunkGrid(shape, (2, 1, 2), 1)
    ch = grid.chunk((1, 0, 1))
    labels, summary = fragment_chunk(zero_padded_crop(affs, ch.context, 1), ch.core, ch.context, ch.id, params, shape)
    assert labels.shape == ch.core.shape and labels.dtype == np.uint64
    assert np.array_equal(np.unique(labels[labels > 0]), summary.ids)
    assert (chunk_of(summary.ids) == ch.id).all()
    assert summary.sizes.sum() == (labels > 0).sum()
    # keys are the global C-order index of each fragment's first voxel, increasing with the local id
    assert (np.diff(summary.keys) > 0).all()
    z, y, x = np.unravel_index(summary.keys, shape)
    assert ch.core.contains_point((z[0], y[0], x[0]))
    assert labels[z[0] - ch.core.offset[0], y[0] - ch.core.offset[1], x[0] - ch.core.offset[2]] == summary.ids[0]
    # links: each names one of this chunk's ids and one of a neighbour's
    full = np.zeros(shape, np.uint64)
    sums = []
    for c in grid:
        lab, s = fragment_chunk(zero_padded_crop(affs, c.context, 1), c.core, c.context, c.id, params, shape)
        full[c.core.slices()] = lab
        sums.append(s)
    links = link_chunk(zero_padded_crop(affs, ch.context, 1), zero_padded_crop(full, ch.context), ch.core, ch.context, params, shape)
    assert links.shape[1] == 2 and len(links) > 0
    assert (chunk_of(links[:, 0]) == ch.id).all() and (chunk_of(links[:, 1]) != ch.id).all()
    table = resolve_fragments(sums, [links])
    # the canonical lookup of a chunk is a slice of the table holding exactly the chunk's ids
    lk = table.canonical_lookup([ch.id])
    assert np.array_equal(lk.keys, summary.ids)


def test_waterz_fragments_differ_only_on_plateaus():
    """Documented difference: with quantised affinities (ties) waterz splits plateaus by BFS, we do not."""
    rng = np.random.default_rng(0)
    affs = (rng.integers(0, 8, (3, 10, 16, 16)) / 7).astype(np.float32)
    canon, _ = canonical_volume(affs, (1, 1, 1), DecodeParams(aff_threshold=(0.2, 0.999)))
    wz = next(iter(waterz.agglomerate(affs, [0.0], aff_threshold_low=0.2, aff_threshold_high=0.999)))
    are = scores(contingency(canon, wz.astype(np.uint64)))["adapted_rand_error"]
    assert np.array_equal(canon == 0, wz == 0)  # the same background
    assert are < 0.5
