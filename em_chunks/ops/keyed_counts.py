"""The per-task pieces of a keyed, hash-partitioned reduction of sparse count tables.

Why: the exact metrics need, for every key, its *complete* count (all chunks added up), but no
single process should hold all keys. A chunk's contingency tables become one :class:`KeyedCounts`
table of rows ``(kind, k1, k2, count)``, ``kind`` saying what the key counts:

* ``GT`` (0): ``k1`` = ground-truth label, ``k2`` = 0 — the ground-truth sizes a_i (one set for all
  tables: the ground truth is the same in every table of a chunk);
* ``pair_kind(t)`` = 1 + 2t: ``k1`` = segment, ``k2`` = ground-truth label — table t's counts n_ij;
* ``seg_kind(t)`` = 2 + 2t: ``k1`` = segment, ``k2`` = 0 — table t's segment sizes b_j (labelled
  voxels).

Rows are sorted by ``(kind, k1, k2)`` and unique. Tables of disjoint chunks merge by adding the
counts of equal keys (:func:`merge_counts`, exact integers); :func:`split_counts` sends each row to
one of ``split`` parts by a digit of a well-mixed hash of its key (splitmix64), so equal keys always
meet in the same part; a table that holds every row of its keys gives its exact :class:`MetricSums`
(:func:`metric_sums_of`). All of this is numpy; the task graph that wires it is
``engine/metrics_reduce.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from em_chunks.ops.metric_sums import MetricSums, run_sums
from em_chunks.ops.metrics import Contingency

GT_KIND = 0


def pair_kind(table: int) -> int:
    return 1 + 2 * table


def seg_kind(table: int) -> int:
    return 2 + 2 * table


@dataclass(frozen=True, eq=False)
class KeyedCounts:
    """Rows ``(kind, k1, k2, count)`` sorted by key and unique; counts int64 > 0."""

    kind: np.ndarray  # uint32
    k1: np.ndarray  # uint64
    k2: np.ndarray  # uint64
    count: np.ndarray  # int64

    def __len__(self) -> int:
        return int(self.count.size)

    @property
    def nbytes(self) -> int:
        return int(self.kind.nbytes + self.k1.nbytes + self.k2.nbytes + self.count.nbytes)

    @classmethod
    def empty(cls) -> "KeyedCounts":
        return cls(
            np.zeros(0, np.uint32),
            np.zeros(0, np.uint64),
            np.zeros(0, np.uint64),
            np.zeros(0, np.int64),
        )

    def take(self, index: np.ndarray | slice) -> "KeyedCounts":
        return KeyedCounts(self.kind[index], self.k1[index], self.k2[index], self.count[index])


_M1, _M2, _GOLDEN = (
    np.uint64(0xBF58476D1CE4E5B9),
    np.uint64(0x94D049BB133111EB),
    np.uint64(0x9E3779B97F4A7C15),
)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser (Steele et al. 2014) of uint64 keys: deterministic, well mixed, every
    output bit depends on every input bit; arithmetic wraps modulo 2**64."""
    z = np.asarray(x, dtype=np.uint64) + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def key_hash(table: KeyedCounts) -> np.ndarray:
    """A 64-bit hash of each row's whole key ``(kind, k1, k2)``."""
    h = splitmix64(table.kind.astype(np.uint64))
    h = splitmix64(h ^ table.k1)
    return splitmix64(h ^ table.k2)


def _canonical(
    seg: np.ndarray, gt: np.ndarray, count: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A contingency table's rows sorted by (seg, gt) and unique (they normally already are)."""
    seg, gt, count = (
        np.asarray(seg, np.uint64),
        np.asarray(gt, np.uint64),
        np.asarray(count, np.int64),
    )
    if seg.size < 2:
        return seg, gt, count
    ordered = (seg[1:] > seg[:-1]) | ((seg[1:] == seg[:-1]) & (gt[1:] > gt[:-1]))
    if ordered.all():
        return seg, gt, count
    order = np.lexsort((gt, seg))
    seg, gt, count = seg[order], gt[order], count[order]
    starts = np.flatnonzero(np.r_[True, (seg[1:] != seg[:-1]) | (gt[1:] != gt[:-1])])
    return seg[starts], gt[starts], np.add.reduceat(count, starts)


def _gt_sizes(gt: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(gt, kind="stable")
    g = gt[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]]) if g.size else np.zeros(0, np.int64)
    return g[starts], run_sums(g, count[order])


def keyed_counts(tables: Sequence[Contingency]) -> KeyedCounts:
    """One chunk's tables (one per threshold/trial, same ground truth) as one keyed table.

    Raises ValueError when the tables disagree on the ground truth (their gt sizes differ)."""
    kinds, k1s, k2s, counts = [], [], [], []
    gt_keys = gt_sizes = None
    for t, table in enumerate(tables):
        seg, gt, count = _canonical(table.seg, table.gt, table.count)
        keys, sizes = _gt_sizes(gt, count)
        if gt_keys is None:
            gt_keys, gt_sizes = keys, sizes
            kinds.append(np.full(keys.size, GT_KIND, np.uint32))
            k1s.append(keys)
            k2s.append(np.zeros(keys.size, np.uint64))
            counts.append(sizes)
        elif not (np.array_equal(keys, gt_keys) and np.array_equal(sizes, gt_sizes)):
            raise ValueError(
                f"contingency table {t} of a chunk has other ground-truth sizes than table 0"
            )
        kinds.append(np.full(seg.size, pair_kind(t), np.uint32))
        k1s.append(seg)
        k2s.append(gt)
        counts.append(count)
        starts = (
            np.flatnonzero(np.r_[True, seg[1:] != seg[:-1]]) if seg.size else np.zeros(0, np.int64)
        )
        kinds.append(np.full(starts.size, seg_kind(t), np.uint32))
        k1s.append(seg[starts])
        k2s.append(np.zeros(starts.size, np.uint64))
        counts.append(run_sums(seg, count))
    if not kinds:
        return KeyedCounts.empty()
    # blocks appended in increasing kind, each sorted by (k1, k2): the whole is sorted already
    return KeyedCounts(
        np.concatenate(kinds),
        np.concatenate(k1s),
        np.concatenate(k2s),
        np.concatenate(counts).astype(np.int64, copy=False),
    )


def merge_counts(parts: Sequence[KeyedCounts]) -> KeyedCounts:
    """Sum tables: one row per key, its counts added (exact integer sums)."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return KeyedCounts.empty()
    if len(parts) == 1:
        return parts[0]
    kind = np.concatenate([p.kind for p in parts])
    k1 = np.concatenate([p.k1 for p in parts])
    k2 = np.concatenate([p.k2 for p in parts])
    count = np.concatenate([p.count for p in parts])
    order = np.lexsort((k2, k1, kind))
    kind, k1, k2, count = kind[order], k1[order], k2[order], count[order]
    starts = np.flatnonzero(
        np.r_[True, (kind[1:] != kind[:-1]) | (k1[1:] != k1[:-1]) | (k2[1:] != k2[:-1])]
    )
    return KeyedCounts(kind[starts], k1[starts], k2[starts], np.add.reduceat(count, starts))


def split_counts(table: KeyedCounts, digit: int, split: int) -> list[KeyedCounts]:
    """``split`` parts (a power of two) by hash digit ``digit`` (bits from ``digit*log2(split)``);
    each part keeps the row order, so stays sorted."""
    bits = int(split).bit_length() - 1
    if split < 2 or 1 << bits != split:
        raise ValueError(f"split must be a power of two >= 2, got {split}")
    if (digit + 1) * bits > 64:
        raise ValueError(f"hash digit {digit} of {bits} bits is beyond the 64-bit hash")
    if len(table) == 0:
        return [table] * split
    d = (key_hash(table) >> np.uint64(digit * bits)) & np.uint64(split - 1)
    order = np.argsort(d, kind="stable")
    bounds = np.r_[0, np.cumsum(np.bincount(d.astype(np.int64), minlength=split))]
    return [table.take(order[bounds[i] : bounds[i + 1]]) for i in range(split)]


def metric_sums_of(table: KeyedCounts, n_tables: int) -> list[MetricSums]:
    """Each table's :class:`MetricSums` part from a table holding *all* rows of each of its keys."""
    if len(table) and int(table.kind[-1]) > seg_kind(n_tables - 1):
        raise ValueError(
            f"keyed table has kind {int(table.kind[-1])}, more than {n_tables} table(s)"
        )
    bounds = np.searchsorted(table.kind, np.arange(seg_kind(n_tables - 1) + 2, dtype=np.uint32))
    rows = lambda kind: table.count[bounds[kind] : bounds[kind + 1]]  # noqa: E731
    gt = MetricSums.of_gt(rows(GT_KIND))
    return [
        gt + MetricSums.of_pairs(rows(pair_kind(t))) + MetricSums.of_seg(rows(seg_kind(t)))
        for t in range(n_tables)
    ]
