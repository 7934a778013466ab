"""The additive sufficient statistics of adapted Rand and VOI, and the scores they give.

With n_ij the contingency table (ground-truth label 0 left out), a_i its ground-truth sums and b_j
its segmentation sums, scikit-image's adapted Rand (``ops/metrics.py``) needs N, sum n_ij^2, sum
a_i^2 and sum b_j^2, and its VOI (log2) needs

    voi_split = H(seg | gt) = (sum a_i log2 a_i - sum n_ij log2 n_ij) / N
    voi_merge = H(gt | seg) = (sum b_j log2 b_j - sum n_ij log2 n_ij) / N

Each of the six sums is a sum over the rows of one *complete* table (all counts of a key added up):
the pair table, the ground-truth sizes, the segment sizes. So hash parts of the keys can be reduced
independently and their :class:`MetricSums` added. The integer sums are Python ints (exact,
unbounded: sum n_ij^2 exceeds int64 for a segment of 3 G voxels); the n log2 n sums are
:class:`ExactSum` (exact, one rounding at the end). Every term depends only on its own count, so the
scores are bit-identical for any chunk grid and any grouping of the rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from em_chunks.errors import InputError
from em_chunks.ops.exact_sum import ExactSum
from em_chunks.ops.metrics import Contingency

_SMALL = 1 << 24  # counts below this have squares < 2**48: 2**14 of them sum below 2**62 in int64
_SQUARES_BLOCK = 1 << 14


def run_sums(keys: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Integer sums of ``counts`` over runs of equal consecutive ``keys`` (sorted keys: per key)."""
    if keys.size == 0:
        return np.zeros(0, np.int64)
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    return np.add.reduceat(np.asarray(counts, np.int64), starts)


def sum_squares(counts: np.ndarray) -> int:
    """Exact sum of squares of non-negative int64 counts, as a Python int (never wraps)."""
    c = np.asarray(counts, dtype=np.int64).reshape(-1)
    small = c[c < _SMALL]
    total = 0
    if small.size:
        sq = small * small
        starts = np.arange(0, sq.size, _SQUARES_BLOCK)
        total += sum(int(v) for v in np.add.reduceat(sq, starts))
    total += sum(int(v) * int(v) for v in c[c >= _SMALL])  # few: each is >= 16 M voxels
    return total


def sum_xlog2x(counts: np.ndarray) -> ExactSum:
    """Exact sum of the float64 terms ``c * log2(c)`` of positive integer counts.

    Each term is computed elementwise from its count alone (contiguous float64, one numpy code
    path), so the same count always gives the same term, wherever and beside whatever it is.
    """
    c = np.ascontiguousarray(counts, dtype=np.float64).reshape(-1)
    return ExactSum.of(c * np.log2(c))


def _ratio(num: int, den: int) -> float:
    """Correctly rounded num / den; nan for 0 / 0 (scikit-image's numpy division gives nan)."""
    return num / den if den else float("nan")


@dataclass(frozen=True)
class MetricSums:
    """Additive statistics of a contingency table; ``a + b`` for disjoint parts of complete keys."""

    n: int = 0  # labelled voxels (ground truth != 0)
    sum_nij2: int = 0
    sum_a2: int = 0  # ground-truth sizes squared
    sum_b2: int = 0  # segment sizes squared
    sum_nij_log: ExactSum = field(default_factory=ExactSum)
    sum_a_log: ExactSum = field(default_factory=ExactSum)
    sum_b_log: ExactSum = field(default_factory=ExactSum)

    def __add__(self, other: "MetricSums") -> "MetricSums":
        return MetricSums(
            self.n + other.n,
            self.sum_nij2 + other.sum_nij2,
            self.sum_a2 + other.sum_a2,
            self.sum_b2 + other.sum_b2,
            self.sum_nij_log + other.sum_nij_log,
            self.sum_a_log + other.sum_a_log,
            self.sum_b_log + other.sum_b_log,
        )

    @classmethod
    def of_pairs(cls, counts: np.ndarray) -> "MetricSums":
        """The pair-table part, from the complete counts of some (seg, gt) keys."""
        return cls(sum_nij2=sum_squares(counts), sum_nij_log=sum_xlog2x(counts))

    @classmethod
    def of_gt(cls, sizes: np.ndarray) -> "MetricSums":
        """The ground-truth part (and N), from the complete sizes of some ground-truth labels."""
        return cls(
            n=int(np.asarray(sizes, np.int64).sum()),
            sum_a2=sum_squares(sizes),
            sum_a_log=sum_xlog2x(sizes),
        )

    @classmethod
    def of_seg(cls, sizes: np.ndarray) -> "MetricSums":
        """The segment part, from the complete sizes (over labelled voxels) of some segments."""
        return cls(sum_b2=sum_squares(sizes), sum_b_log=sum_xlog2x(sizes))

    @classmethod
    def from_table(cls, table: Contingency) -> "MetricSums":
        """All of it from one whole (merged) table."""
        order = np.argsort(table.gt, kind="stable")
        a = run_sums(table.gt[order], table.count[order])
        b = run_sums(table.seg, table.count)  # rows are sorted by seg
        return cls.of_pairs(table.count) + cls.of_gt(a) + cls.of_seg(b)

    def scores(self) -> dict[str, float]:
        """adapted_rand_error / precision / recall, voi_split / voi_merge (``ops/metrics.scores``'s
        keys and scikit-image's definitions), each rounded once from exact values."""
        n = self.n
        if n == 0:
            raise InputError(
                "labels have no labelled voxel (every ground-truth voxel is 0): nothing to evaluate"
            )
        sum_p, sum_a, sum_b = self.sum_nij2 - n, self.sum_a2 - n, self.sum_b2 - n
        # error = 1 - P / (A/2 + B/2) = 1 - 2P / (A + B), computed exactly then rounded once
        are = float(1 - Fraction(2 * sum_p, sum_a + sum_b)) if sum_a + sum_b else float("nan")
        return {
            "adapted_rand_error": are,
            "adapted_rand_precision": _ratio(sum_p, sum_a),
            "adapted_rand_recall": _ratio(sum_p, sum_b),
            "voi_split": (self.sum_a_log - self.sum_nij_log).ratio(n),
            "voi_merge": (self.sum_b_log - self.sum_nij_log).ratio(n),
        }
