"""Exact segmentation metrics from sparse contingency tables that add up across chunks.

A chunk's table counts voxels per (segment, ground-truth) pair; tables of disjoint chunks sum to the
whole volume's table, so scores computed from the sum equal whole-volume scores (never an average of
per-chunk scores). The formulas are scikit-image's:

* adapted Rand (``skimage.metrics.adapted_rand_error(gt, seg)``): ground-truth label 0 is ignored;
  segmentation label 0 is an ordinary segment. With n_ij the table, a_i its ground-truth sums and b_j
  its segmentation sums: P = sum n_ij^2 - N, A = sum a_i^2 - N, B = sum b_j^2 - N;
  precision = P / A, recall = P / B, error = 1 - P / (A/2 + B/2) (scikit-image's naming).
* VOI (``skimage.metrics.variation_of_information(gt, seg, ignore_labels=[0])``): voi_split =
  H(seg | gt), voi_merge = H(gt | seg), in bits (scikit-image uses log2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import math

import numpy as np


@dataclass(frozen=True, eq=False)
class Contingency:
    """Sparse contingency table: rows sorted by (seg, gt), unique, counts > 0 (int64)."""

    seg: np.ndarray  # uint64
    gt: np.ndarray  # uint64
    count: np.ndarray  # int64

    def __len__(self) -> int:
        return int(self.seg.size)

    @property
    def total(self) -> int:
        return int(self.count.sum())


def _grouped(seg: np.ndarray, gt: np.ndarray, count: np.ndarray) -> Contingency:
    if seg.size == 0:
        z = np.zeros(0, np.uint64)
        return Contingency(z, z.copy(), np.zeros(0, np.int64))
    order = np.lexsort((gt, seg))
    s, g, c = seg[order], gt[order], count[order]
    starts = np.flatnonzero(np.r_[True, (s[1:] != s[:-1]) | (g[1:] != g[:-1])])
    return Contingency(s[starts], g[starts], np.add.reduceat(c, starts).astype(np.int64))


def contingency(seg: np.ndarray, gt: np.ndarray, ignore_gt: Sequence[int] = (0,)) -> Contingency:
    """The table of one chunk (any shape); voxels whose ground truth is in ``ignore_gt`` are left out."""
    seg = np.asarray(seg)
    gt = np.asarray(gt)
    if seg.shape != gt.shape:
        raise ValueError(f"segmentation shape {seg.shape} != ground-truth shape {gt.shape}")
    s = seg.reshape(-1).astype(np.uint64, copy=False)
    g = gt.reshape(-1)
    if np.issubdtype(g.dtype, np.signedinteger) and g.size and int(g.min()) < 0:
        raise ValueError("ground-truth labels must be non-negative")
    g = g.astype(np.uint64, copy=False)
    if ignore_gt:
        keep = ~np.isin(g, np.asarray(list(ignore_gt), np.uint64))
        s, g = s[keep], g[keep]
    if s.size == 0:
        return _grouped(s, g, np.zeros(0, np.int64))
    # dense codes for the two label sets, then one bincount over pair codes
    su, si = np.unique(s, return_inverse=True)
    gu, gi = np.unique(g, return_inverse=True)
    code = si.astype(np.int64) * gu.size + gi.astype(np.int64)
    pc, counts = np.unique(code, return_counts=True)
    return Contingency(su[pc // gu.size], gu[pc % gu.size], counts.astype(np.int64))


def merge_contingency(tables: Sequence[Contingency]) -> Contingency:
    """Sum tables (of disjoint chunks): exact integer sums."""
    tables = [t for t in tables if t is not None and len(t)]
    if not tables:
        return _grouped(np.zeros(0, np.uint64), np.zeros(0, np.uint64), np.zeros(0, np.int64))
    return _grouped(
        np.concatenate([t.seg for t in tables]),
        np.concatenate([t.gt for t in tables]),
        np.concatenate([t.count for t in tables]),
    )


def aggregate_contingency(
    table: Contingency, lookup: Callable[[np.ndarray], np.ndarray]
) -> Contingency:
    """The table of a segmentation obtained by mapping each row's label through ``lookup``.

    With a fragment-level table and a fragment -> segment lookup this is the segmentation's table,
    without reading voxels again (``tune``: one data pass, many agglomerations).
    """
    return _grouped(np.asarray(lookup(table.seg), np.uint64), table.gt, table.count)


def _sums_by(labels: np.ndarray, counts: np.ndarray) -> np.ndarray:
    _, inv = np.unique(labels, return_inverse=True)
    return np.bincount(inv, weights=counts).astype(np.float64)


def scores(table: Contingency) -> dict[str, float]:
    """adapted_rand_error / precision / recall and voi_split / voi_merge of a (merged) table."""
    # Sums use math.fsum (correctly rounded, so independent of the row order and hence of the chunk
    # grid that produced the table): the same partition gives bit-identical scores for any chunking.
    n_ij = table.count.astype(np.float64)
    n = math.fsum(n_ij)
    if n == 0:
        raise ValueError("the contingency table is empty: no voxel has a ground-truth label")
    a = _sums_by(table.gt, n_ij)  # ground-truth sizes
    b = _sums_by(table.seg, n_ij)  # segmentation sizes
    sum_p = math.fsum(n_ij * n_ij) - n
    sum_a = math.fsum(a * a) - n
    sum_b = math.fsum(b * b) - n
    precision = sum_p / sum_a
    recall = sum_p / sum_b
    are = 1.0 - sum_p / (0.5 * sum_a + 0.5 * sum_b)
    # conditional entropies in bits over the normalised joint distribution
    p = n_ij / n
    _, gi = np.unique(table.gt, return_inverse=True)
    _, si = np.unique(table.seg, return_inverse=True)
    pg = (a / n)[gi]
    ps = (b / n)[si]
    voi_split = 0.0 - math.fsum(p * np.log2(p / pg))  # H(seg | gt); 0.0 - x: never -0.0
    voi_merge = 0.0 - math.fsum(p * np.log2(p / ps))  # H(gt | seg)
    return {
        "adapted_rand_error": float(are),
        "adapted_rand_precision": float(precision),
        "adapted_rand_recall": float(recall),
        "voi_split": voi_split,
        "voi_merge": voi_merge,
    }


def evaluate(seg: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Whole-array convenience: ``scores(contingency(seg, gt))``."""
    return scores(contingency(seg, gt))
