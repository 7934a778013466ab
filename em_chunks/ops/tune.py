"""Parameter search on summaries only: many agglomerations scored from one fragment-level table.

``tune`` reads the volume once: stage-A labels against ground truth give a fragment-level
contingency table (per chunk, summed). Every (merge function, threshold) trial then maps that table
through its fragment -> segment lookup (``aggregate_contingency``): no voxel is read again, and all
thresholds of one merge function come from a single agglomeration pass.
"""

from __future__ import annotations

from typing import Sequence

from em_chunks.ops.agglomerate import agglomerate
from em_chunks.ops.fragments import FragmentTable
from em_chunks.ops.metrics import Contingency, aggregate_contingency, scores
from em_chunks.ops.params import DecodeParams
from em_chunks.ops.region_graph import EdgeHistograms


def score_agglomerations(
    table: FragmentTable,
    edges: EdgeHistograms,
    fragment_contingency: Contingency,
    merge_functions: Sequence[str],
    params: DecodeParams,
) -> list[dict]:
    """One row per (merge function, ``params.thresholds``): the parameters and the five metrics.

    ``fragment_contingency`` counts stage-A labels (or canonical fragment ids) against ground truth;
    each merge function replaces ``params.merge_function`` (everything else is the base's).
    """
    rows = []
    for fn in merge_functions:
        per_threshold = agglomerate(table, edges, params.replace(merge_function=fn))
        for t, seg_of_fragment in zip(params.thresholds, per_threshold):
            lookup = table.segment_lookup(seg_of_fragment)
            row = {"merge_function": fn, "threshold": t}
            row.update(scores(aggregate_contingency(fragment_contingency, lookup)))
            rows.append(row)
    return rows
