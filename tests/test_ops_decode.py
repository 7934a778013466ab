import numpy as np
import pytest

from em_chunks.ops.decode_reference import decode_volume
from em_chunks.ops.metrics import contingency, scores
from em_chunks.ops.params import DecodeParams
from test_ops_fragments import same_partition
from test_ops_synth import fib_crop, synthetic

GRIDS = [(2, 4, 4), (3, 2, 5), (2, 2, 2)]


def _assert_invariant(affs, params):
    base = decode_volume(affs, (1, 1, 1), params)
    for pieces in GRIDS:
        other = decode_volume(affs, pieces, params)
        for a, b in zip(base, other):
            assert scores(contingency(b, a))["adapted_rand_error"] == 0.0
            assert same_partition(a, b), pieces
    return base


def test_decoding_is_identical_for_every_grid_synthetic():
    _, affs = synthetic(shape=(20, 36, 34), noise=0.1, seed=8)
    base = _assert_invariant(affs, DecodeParams(thresholds=(0.3, 0.6), dust_merge_size=20, dust_remove_size=5))
    assert len(np.unique(base[0])) > len(np.unique(base[1])) > 1


def test_decoding_is_identical_for_every_grid_on_real_labels():
    gt, affs = fib_crop()
    params = DecodeParams(thresholds=(0.5,))
    base = _assert_invariant(affs, params)
    assert len(np.unique(base[0])) > 20
    assert scores(contingency(base[0], gt))["adapted_rand_error"] < 0.1


def test_first_voxel_ids_make_the_arrays_identical_for_every_grid():
    _, affs = synthetic(shape=(14, 30, 26), noise=0.1, seed=10)
    params = DecodeParams(thresholds=(0.3, 0.5), segment_ids="first_voxel", dust_merge_size=10)
    base = decode_volume(affs, (1, 1, 1), params)
    for pieces in GRIDS:
        for a, b in zip(base, decode_volume(affs, pieces, params)):
            assert np.array_equal(a, b)
    # the id is 1 + the flat index of a voxel of the segment: the first voxel of the segment that
    # agglomeration formed (dust merged into it keeps that name) ...
    seg = base[1]
    ids = np.unique(seg[seg > 0])
    assert np.array_equal(seg.ravel()[(ids - 1).astype(np.int64)], ids)
    # ... which without dust merging is the segment's first voxel
    plain = decode_volume(affs, (2, 2, 2), DecodeParams(thresholds=(0.5,), segment_ids="first_voxel"))[0]
    ids, first = np.unique(plain.ravel(), return_index=True)
    assert np.array_equal(ids[ids > 0], first[ids > 0].astype(np.uint64) + 1)


def test_decoding_uint8_affinities_is_invariant_too():
    _, affs = synthetic(shape=(16, 30, 30), noise=0.1, seed=9)
    q = np.round(affs * 255).astype(np.uint8)  # quantised: many ties
    _assert_invariant(q, DecodeParams(thresholds=(0.5,), merge_function="aff50_his256"))


def test_decoding_quality_on_mildly_noisy_affinities():
    gt, affs = synthetic(shape=(24, 48, 48), n=20, noise=0.05, seed=4)
    seg = decode_volume(affs, (2, 2, 2), DecodeParams(thresholds=(0.3,), dust_merge_size=50))[0]
    are = scores(contingency(seg, gt))["adapted_rand_error"]
    assert are < 0.1, are


def test_chunked_decoding_matches_whole_volume_waterz():
    import waterz

    gt, affs = synthetic(shape=(20, 40, 40), n=16, noise=0.05, seed=6)
    ths = [0.3, 0.5]
    ours = decode_volume(affs, (2, 2, 3), DecodeParams(thresholds=tuple(ths)))
    theirs = waterz.agglomerate(
        affs, ths, aff_threshold_low=0.1, aff_threshold_high=0.999, discretize_queue=256,
        scoring_function="OneMinus<HistogramQuantileAffinity<RegionGraphType,85,ScoreValue,256>>",
    )
    for mine, wz in zip(ours, theirs):
        assert same_partition(mine, wz)  # measured: identical (float affinities: same fragments, same merges)
