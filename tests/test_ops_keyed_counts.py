"""Keyed tables: a chunk's tables as one keyed table, hash splits, merges, sums of complete keys."""

import numpy as np
import pytest

from em_chunks.ops import keyed_counts as K
from em_chunks.ops.metric_sums import MetricSums
from em_chunks.ops.metrics import Contingency, aggregate_contingency, contingency


def _labels(seed, shape=(10, 16, 16)):
    rng = np.random.default_rng(seed)
    gt = rng.integers(0, 9, shape).astype(np.uint32)
    seg = gt.astype(np.uint64) * np.uint64(1 << 33) + rng.integers(0, 4, shape).astype(np.uint64)
    return gt, seg


def test_splitmix64_matches_the_reference_generator():
    # splitmix64 seeded with 0 (Steele, Lea, Flood 2014; Vigna's reference C): first outputs
    state = np.arange(1, 4, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15) - np.uint64(
        0x9E3779B97F4A7C15
    )
    assert [int(v) for v in K.splitmix64(state)] == [
        0xE220A8397B1DCDAF,
        0x6E789E6AA1B965F4,
        0x06C45D188009454F,
    ]


def test_hash_digits_are_balanced_on_sequential_keys():
    n = 80_000
    t = K.KeyedCounts(
        np.zeros(n, np.uint32),
        np.arange(n, dtype=np.uint64),
        np.zeros(n, np.uint64),
        np.ones(n, np.int64),
    )
    for digit in (0, 5, 20):
        sizes = [len(p) for p in K.split_counts(t, digit, 8)]
        assert sum(sizes) == n and max(abs(s - n / 8) for s in sizes) < 0.05 * n / 8, sizes


def test_keyed_counts_holds_pairs_segments_and_ground_truth():
    gt, seg = _labels(0)
    tables = [
        contingency(seg, gt),
        aggregate_contingency(contingency(seg, gt), lambda s: s >> np.uint64(33)),
    ]
    t = K.keyed_counts(tables)
    assert np.all(np.diff(t.kind.astype(np.int64)) >= 0)
    gt_rows = t.kind == K.GT_KIND
    ids, sizes = np.unique(gt[gt > 0], return_counts=True)
    assert np.array_equal(t.k1[gt_rows], ids) and np.array_equal(t.count[gt_rows], sizes)
    for i, table in enumerate(tables):
        pairs = t.kind == K.pair_kind(i)
        assert np.array_equal(t.k1[pairs], table.seg) and np.array_equal(
            t.count[pairs], table.count
        )
        segs = t.kind == K.seg_kind(i)
        assert t.count[segs].sum() == table.total and np.unique(table.seg).size == segs.sum()
    sums = K.metric_sums_of(t, 2)
    assert [s.scores() for s in sums] == [MetricSums.from_table(x).scores() for x in tables]


def test_tables_with_other_ground_truth_are_refused():
    gt, seg = _labels(1)
    other = gt.copy()
    other[0, 0, 0] = 0 if other[0, 0, 0] else 1
    with pytest.raises(ValueError, match="ground-truth"):
        K.keyed_counts([contingency(seg, gt), contingency(seg, other)])


def test_unsorted_input_rows_are_grouped():
    seg = np.array([5, 1, 5, 1], np.uint64)
    gt = np.array([2, 3, 2, 3], np.uint64)
    t = K.keyed_counts([Contingency(seg, gt, np.array([1, 2, 3, 4], np.int64))])
    pairs = t.kind == K.pair_kind(0)
    assert t.k1[pairs].tolist() == [1, 5] and t.count[pairs].tolist() == [6, 4]


def test_split_then_merge_is_the_identity_and_keys_never_straddle_parts():
    gt, seg = _labels(2)
    halves = [
        K.keyed_counts([contingency(seg[:5], gt[:5])]),
        K.keyed_counts([contingency(seg[5:], gt[5:])]),
    ]
    merged = K.merge_counts(halves)
    whole = K.keyed_counts([contingency(seg, gt)])
    for name in ("kind", "k1", "k2", "count"):
        assert np.array_equal(getattr(merged, name), getattr(whole, name))
    parts = [K.split_counts(h, 1, 4) for h in halves]
    for p in range(4):
        a, b = parts[0][p], parts[1][p]
        keys = lambda t: set(zip(t.kind.tolist(), t.k1.tolist(), t.k2.tolist()))  # noqa: E731
        for q in range(4):
            if q != p:
                assert not keys(a) & keys(parts[1][q])  # equal keys always go to the same part
        assert np.all(np.diff(a.kind.astype(np.int64)) >= 0) and len(K.merge_counts([a, b])) <= len(
            a
        ) + len(b)
    rebuilt = K.merge_counts([x for ps in parts for x in ps])
    assert np.array_equal(rebuilt.count, whole.count) and np.array_equal(rebuilt.k1, whole.k1)


def test_split_refuses_bad_factors():
    with pytest.raises(ValueError):
        K.split_counts(K.KeyedCounts.empty(), 0, 6)
    with pytest.raises(ValueError):
        K.split_counts(K.KeyedCounts.empty(), 22, 8)
