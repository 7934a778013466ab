"""The input and output of region merging (:class:`MergeGraph`, :class:`MergeResult`), the total order
of edges and their scores: what the Python loop (``ops/merging.py``) and the compiled one
(``ops/merging_compiled.py``) share, so that neither imports the other.

Total order of edges: (float32 score, ident). ``ident`` of an edge between two fragments is a
bijective mix (:func:`tie_order`) of its first contact (the smallest voxel-edge index ``3 * flat(v)
+ c`` among the voxel-edges it holds: unique and chunk-invariant); a combined edge carries the larger
ident of its parts. So a combined edge never sorts before both parts, and the order depends on the
regions only, never on the merge history, chunk order or ids.

Scores (waterz ``ScoreValue`` = float32; the values below are exact in float32):

* quantile Q (``aff{Q}_his256``): ``1 - (b + 0.5) / 256`` where b is the first histogram bin whose
  cumulative count reaches ``Q * total // 100 + 1``;
* mean (``aff50_mean``): ``1 - (aff_sum / 2**32) / count``.

Edges scoring at or above the largest threshold are never queued: combining edges yields a score
between the two, so such an edge can only become mergeable by combining with a cheaper one, and it
is rescored (and queued) then.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from em_chunks.ops.affinity import BINS, FIXED_ONE
from em_chunks.ops.params import Scoring

_F32 = struct.Struct("<f")
_U32 = struct.Struct("<I")
FORCED_LEVEL = -1  # level of the unconditional joins of one fragment's pieces: below every score


_M63 = np.uint64((1 << 63) - 1)


def tie_order(first_contact: np.ndarray) -> np.ndarray:
    """The ident of single fragment-pair edges: a bijective mix of their first contact on [0, 2**63).

    Equal scores are common (256-bin histograms), and an order that follows the voxel raster would
    chain every edge's fate to its neighbour's towards one side of the block; a well-mixed order keeps
    the dependencies local, so a block can decide most of its merges itself. Bijective: idents stay
    unique. (xor-shifts and odd multipliers are each invertible modulo 2**63.)
    """
    x = np.asarray(first_contact, np.int64).astype(np.uint64) & _M63
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(31)
        x = (x * np.uint64(0x7FB5D329728EA185)) & _M63
        x ^= x >> np.uint64(27)
        x = (x * np.uint64(0x81DADEF4BC2DD44D)) & _M63
        x ^= x >> np.uint64(33)
    return x.astype(np.int64)


def score_key(score: float) -> int:
    """Order-preserving integer of a non-negative score rounded to float32 (waterz's ScoreValue)."""
    return _U32.unpack(_F32.pack(max(score, 0.0)))[0]


def score_keys(score: np.ndarray) -> np.ndarray:
    """Vectorised :func:`score_key`: float32 bit patterns of non-negative floats sort like the floats."""
    return np.maximum(score, 0.0).astype(np.float32).view(np.uint32).astype(np.int64)


def stop_key(threshold: float) -> int:
    """Scores whose key is at or above this are not merged at ``threshold`` (compared in float32)."""
    t = float(np.float32(threshold))
    return 0 if t <= 0.0 else score_key(t)


def level_score(level: np.ndarray) -> np.ndarray:
    """Merge levels (score keys) back to float32 scores (forced joins read as -inf)."""
    level = np.asarray(level, np.int64)
    out = np.maximum(level, 0).astype(np.uint32).view(np.float32).astype(np.float64)
    return np.where(level < 0, -np.inf, out)


@dataclass(frozen=True, eq=False)
class MergeGraph:
    """Input of :func:`merge_regions`: ``n`` nodes, edges ``u < v`` (node indices, each pair once).

    ``hist_*``: sparse histogram rows (edge, bin, count) sorted by edge (unused for the mean).
    ``combined``: the edge already aggregates several fragment pairs (from an earlier merge).
    """

    closed: np.ndarray  # bool[n]: may merge (all its edges are here)
    u: np.ndarray  # int64[E]
    v: np.ndarray  # int64[E]
    count: np.ndarray  # int64[E] voxel-edges
    aff_sum: np.ndarray  # int64[E] affinity sum in units of 2**-32
    ident: np.ndarray  # int64[E]
    hist_edge: np.ndarray  # int64[H]
    hist_bin: np.ndarray  # int64[H]
    hist_count: np.ndarray  # int64[H]
    combined: np.ndarray  # bool[E]

    @property
    def n(self) -> int:
        return int(self.closed.size)


@dataclass(frozen=True, eq=False)
class MergeResult:
    """What :func:`merge_regions` did: merges (node pairs and levels, in merge order), the region root
    of every node, which roots are frozen, and the surviving edges between roots (same layout as
    :class:`MergeGraph`, ``u < v`` not guaranteed to be sorted)."""

    merge_a: np.ndarray
    merge_b: np.ndarray
    merge_level: np.ndarray
    root: np.ndarray
    frozen: np.ndarray
    edges: MergeGraph
    edge_index: np.ndarray  # input index of each surviving edge


def initial_scores(s: Scoring, g: MergeGraph) -> np.ndarray:
    """Vectorised scores (float64, then rounded to float32 by the keys) of the input edges."""
    ne = g.u.size
    if s.kind == "mean":
        with np.errstate(divide="ignore", invalid="ignore"):
            return 1.0 - (g.aff_sum / FIXED_ONE) / np.maximum(g.count, 1)
    if ne == 0:
        return np.zeros(0)
    rows, bins, counts = g.hist_edge, g.hist_bin, g.hist_count
    total = np.bincount(rows, weights=counts, minlength=ne).astype(np.int64)
    starts = np.searchsorted(rows, np.arange(ne))
    cum = np.cumsum(counts)
    within = cum - (cum[starts] - counts[starts])[rows]
    pivot = s.quantile * total // 100 + 1
    hit = np.flatnonzero(within >= pivot[rows])
    first = hit[np.r_[True, rows[hit][1:] != rows[hit][:-1]]]
    qbin = np.full(ne, BINS - 1, np.int64)
    qbin[rows[first]] = bins[first]
    return 1.0 - (qbin + 0.5) / BINS
