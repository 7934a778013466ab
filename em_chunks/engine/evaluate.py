"""Exact evaluation on the cluster: per-chunk sparse contingency tables, summed on the client.

Never an average of per-chunk scores: the merged table is the whole volume's table, so the adapted Rand
error and VOI equal the whole-volume computation (scikit-image's definitions) to floating point.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from distributed import Client

from em_chunks.engine.record import RunRecord
from em_chunks.engine.runner import run_stage
from em_chunks.engine.source import Source
from em_chunks.engine.state import RunState
from em_chunks.geometry import Chunk, ChunkGrid
from em_chunks.ops import metrics as M


def stage_contingency(chunk: Chunk, seg: Source, gt: Source) -> dict:
    table = M.contingency(seg.read(chunk.core, 0), gt.read(chunk.core, 0))
    return {"seg": table.seg, "gt": table.gt, "count": table.count}


def auto_pieces(shape: tuple[int, ...], target_voxels: int = 32 * 256 * 256) -> tuple[int, int, int]:
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
    """Adapted Rand (error, precision, recall) and VOI (split, merge) of ``segmentation`` vs ``labels``."""
    tables = {}
    if state is None:
        # no output directory: run the tasks without resume markers
        futures = [client.submit(stage_contingency, c, segmentation, labels, key=f"contingency-{c.name}-{id(grid):x}", pure=False, retries=2) for c in grid]
        tables = {i: f.result() for i, f in enumerate(futures)}
    else:
        tables = run_stage(client, state, "contingency", list(grid), stage_contingency, lambda c: (segmentation, labels), record=record, progress=progress)
    merged = M.merge_contingency([M.Contingency(t["seg"], t["gt"], t["count"]) for t in tables.values()])
    return M.scores(merged)
