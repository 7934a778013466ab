"""MetricSums: additive statistics whose scores equal scikit-image's, whatever the grouping."""

import numpy as np
import pytest
from skimage.metrics import adapted_rand_error, variation_of_information

from em_chunks.errors import InputError
from em_chunks.geometry import ChunkGrid
from em_chunks.ops import keyed_counts as K
from em_chunks.ops.metric_sums import MetricSums, sum_squares
from em_chunks.ops.metrics import contingency, merge_contingency, scores


def _skimage(gt, seg):
    are, prec, rec = adapted_rand_error(gt, seg)
    split, merge = variation_of_information(gt, seg, ignore_labels=[0])
    return dict(
        adapted_rand_error=are,
        adapted_rand_precision=prec,
        adapted_rand_recall=rec,
        voi_split=split,
        voi_merge=merge,
    )


def _pair(seed, shape=(12, 20, 20)):
    rng = np.random.default_rng(seed)
    gt = rng.integers(0, 6, shape).astype(np.uint32)
    seg = (gt.astype(np.uint64) // 2) * np.uint64(1 << 40) + rng.integers(0, 3, shape).astype(
        np.uint64
    )
    seg[rng.random(shape) < 0.1] = 0
    return gt, seg


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scores_equal_skimage(seed):
    gt, seg = _pair(seed)
    ours = MetricSums.from_table(contingency(seg, gt)).scores()
    _, small = np.unique(seg, return_inverse=True)
    ref = _skimage(gt, small.reshape(seg.shape))
    assert set(ours) == set(scores(contingency(seg, gt)))
    for k, v in ref.items():
        assert abs(ours[k] - float(v)) < 1e-9, (k, ours[k], v)


def test_identical_partitions_score_exactly_zero():
    gt, _ = _pair(4)
    s = MetricSums.from_table(contingency(gt.astype(np.uint64) * 7 + 1, gt)).scores()
    assert s["adapted_rand_error"] == 0.0 and s["voi_split"] == 0.0 and s["voi_merge"] == 0.0
    assert s["adapted_rand_precision"] == 1.0 == s["adapted_rand_recall"]


def test_hash_parts_of_chunk_tables_add_up_bit_identically():
    gt, seg = _pair(3, (13, 21, 17))
    whole = MetricSums.from_table(contingency(seg, gt))
    for pieces in [(1, 1, 1), (2, 4, 4), (3, 2, 5)]:
        grid = ChunkGrid(gt.shape, pieces)
        chunks = [
            K.keyed_counts([contingency(seg[c.core.slices()], gt[c.core.slices()])]) for c in grid
        ]
        merged = K.merge_counts(chunks)
        for digit, split in [(0, 2), (1, 8), (3, 4)]:
            total = MetricSums()
            for part in K.split_counts(merged, digit, split):
                total = total + K.metric_sums_of(part, 1)[0]
            assert total == whole  # every field exact: ints and ExactSum units
            assert total.scores() == whole.scores()


def test_sum_squares_never_wraps():
    c = np.array(
        [3_000_000_000, 5_000_000_000, 7, 1 << 23, (1 << 24) + 1] + [40_000] * 70_000, np.int64
    )
    assert sum_squares(c) == sum(int(v) ** 2 for v in c)
    assert sum_squares(np.zeros(0, np.int64)) == 0


def test_merged_table_gives_the_same_sums_as_from_table():
    gt, seg = _pair(5)
    grid = ChunkGrid(gt.shape, (2, 2, 3))
    parts = [contingency(seg[c.core.slices()], gt[c.core.slices()]) for c in grid]
    assert MetricSums.from_table(merge_contingency(parts)) == MetricSums.from_table(
        contingency(seg, gt)
    )


def test_no_labelled_voxel_is_one_line_input_error():
    with pytest.raises(InputError, match="no labelled voxel") as err:
        MetricSums.from_table(
            contingency(np.ones((4, 4, 4), np.uint64), np.zeros((4, 4, 4), np.uint32))
        ).scores()
    assert "\n" not in str(err.value)
