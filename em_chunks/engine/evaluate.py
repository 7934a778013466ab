"""Exact evaluation on the cluster: per-chunk sparse contingency tables, reduced on the workers.

Never an average of per-chunk scores: the tables' rows are summed per key on the workers
(``engine/metrics_reduce.py``) into the whole volume's sufficient statistics, so the adapted Rand
error and VOI equal the whole-volume computation (scikit-image's definitions) for any chunking, bit
for bit. The client holds only boxes, statuses and the final scalars.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from distributed import Client

from em_chunks.engine.metrics_reduce import contingency_scores
from em_chunks.engine.record import RunRecord
from em_chunks.engine.source import Source
from em_chunks.engine.state import RunState
from em_chunks.errors import InputError
from em_chunks.geometry import Chunk, ChunkGrid
from em_chunks.ops import metrics as M


def chunk_contingency(chunk: Chunk, seg: Source, gt: Source) -> list[M.Contingency]:
    """Worker side: the table of one chunk's core (segmentation vs labels, label 0 left out)."""
    return [M.contingency(seg.read(chunk.core, 0), gt.read(chunk.core, 0))]


def auto_pieces(
    shape: tuple[int, ...], target_voxels: int = 32 * 256 * 256
) -> tuple[int, int, int]:
    """A grid whose chunks hold at most about ``target_voxels`` (split the longest axis first)."""
    pieces = [1, 1, 1]
    while np.prod([s / p for s, p in zip(shape, pieces)]) > target_voxels:
        axis = int(np.argmax([s / p for s, p in zip(shape, pieces)]))
        if pieces[axis] >= shape[axis]:
            break
        pieces[axis] += 1
    return tuple(pieces)  # type: ignore[return-value]


def run_evaluate(
    client: Client,
    segmentation: Source,
    labels: Source,
    grid: ChunkGrid,
    *,
    state: Optional[RunState] = None,
    record: Optional[RunRecord] = None,
    progress: bool = True,
) -> dict[str, float]:
    """Adapted Rand (error, precision, recall), VOI (split, merge): ``segmentation`` vs ``labels``.

    With ``state``, chunks whose table was saved by an earlier run are not read again."""
    try:
        (scores,) = contingency_scores(
            client,
            list(grid),
            chunk_contingency,
            lambda c: (segmentation, labels),
            1,
            key_prefix="contingency",
            state=state,
            stage="contingency",
            record=record,
            progress=progress,
        )
    except InputError as err:
        if "no labelled voxel" in str(err):
            raise InputError(f"{labels.path}: {err}") from None
        raise
    return scores
