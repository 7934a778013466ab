"""``segment_ids: consecutive``: rewrite a uint64 segmentation with ids 1..N, chunk by chunk.

Stages (each resumable; :mod:`em_chunks.ops.consecutive` has the method and why it is exact):

  consecutive-ids    per chunk: the sorted ids its core owns -> saved beside the marker (= count)
  consecutive-rows   per z-row of chunks (``first_voxel`` only, rows of more than one chunk): the
                     rank of every owned id inside its row, saved per chunk
  (client)           prefix sums of the per-group counts -> offsets           (O(chunks) numbers)
  consecutive        per chunk: each id of its core -> offset + rank + 1 (reading only the lists of
                     the owners of the ids present) -> dst[core]

The client holds counts and offsets only; id lists travel between workers through the state folder.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import zarr
from distributed import Client

from em_chunks.engine.record import RunRecord
from em_chunks.engine.runner import run_stage
from em_chunks.engine.state import RunState
from em_chunks.geometry import Box, Chunk, ChunkGrid
from em_chunks.ops import consecutive as C

LISTS = "consecutive-lists"  # data of stage consecutive-ids: the owned ids of each chunk
RANKS = "consecutive-ranks"  # data of stage consecutive-rows: their ranks inside the row


def stage_ids(chunk: Chunk, root: str, src: str, owner: str, shape: tuple, bounds: tuple) -> dict:
    core = np.asarray(zarr.open_array(src, mode="r")[chunk.core.slices()])
    ids = C.owned_ids(core, chunk.id, owner, shape, bounds)
    RunState(root).save(LISTS, chunk.id, {"ids": ids})  # the data; the runner then saves the marker
    return {"count": np.int64(ids.size)}


def stage_row(row: Chunk, root: str, members: tuple[int, ...]) -> dict:
    state = RunState(root)
    lists = [state.load(LISTS, cid)["ids"] for cid in members]
    for cid, rank in zip(members, C.ranks_in_group(lists)):
        state.save(RANKS, cid, {"rank": rank})
    return {"count": np.int64(sum(len(a) for a in lists))}


def stage_relabel(
    chunk: Chunk,
    root: str,
    src: str,
    dst: str,
    owner: str,
    shape: tuple,
    bounds: tuple,
    base: np.ndarray,
    ranked: np.ndarray,
) -> dict:
    state = RunState(root)
    core = np.asarray(zarr.open_array(src, mode="r")[chunk.core.slices()])
    ids = np.unique(core)
    ids = ids[ids != 0]
    values = np.zeros(ids.size, np.uint64)
    owners = C.owners_of(ids, owner, shape, bounds)
    for o in np.unique(owners):
        sel = owners == o
        owned = state.load(LISTS, int(o))["ids"]
        ranks = (
            state.load(RANKS, int(o))["rank"]
            if ranked[o]
            else np.arange(owned.size, dtype=np.int64)
        )
        values[sel] = C.new_ids(ids[sel], owned, ranks, int(base[o]))
    zarr.open_array(dst, mode="r+")[chunk.core.slices()] = C.relabel(core, ids, values)
    return {"segments": np.int64(ids.size)}


def run_consecutive(
    client: Client,
    state: RunState,
    grid: ChunkGrid,
    src: str,
    dst: str,
    owner: str,
    *,
    record: Optional[RunRecord] = None,
    progress: bool = True,
) -> int:
    """Write ``dst`` = ``src`` with ids 1..N (0 stays 0), ranked by id; returns N (the number of
    segments).

    ``src``/``dst`` are zarr array paths of a (Z, Y, X) uint64 segmentation on ``grid``'s shape
    (``dst`` created by the caller with the same shape and chunks, never ``src`` itself: a rerun
    reads ``src``). ``owner``: ``"packed"`` (ids made on this ``grid``) or ``"first_voxel"`` (any
    grid). The result equals ``skimage.segmentation.relabel_sequential(src)`` and so does not depend
    on ``grid``.
    """
    if owner not in C.OWNERS:
        raise ValueError(f"owner {owner!r}: expected one of {C.OWNERS}")
    root = str(state.root)
    shape, bounds = tuple(grid.shape), tuple(tuple(b) for b in grid.bounds)
    chunks = list(grid)
    kw = dict(record=record, progress=progress)
    counts = run_stage(
        client,
        state,
        "consecutive-ids",
        chunks,
        stage_ids,
        lambda c: (root, src, owner, shape, bounds),
        **kw,
    )
    groups: dict[int, list[Chunk]] = {}
    for c in chunks:
        groups.setdefault(C.group_of(c.index, c.id, owner), []).append(c)
    order = sorted(groups)
    totals = [sum(int(counts[c.id]["count"]) for c in groups[g]) for g in order]
    group_base = dict(zip(order, C.offsets(totals)))
    base = np.zeros(len(chunks), np.int64)
    ranked = np.zeros(len(chunks), bool)
    rows = []
    for g in order:
        members = groups[g]
        for c in members:
            base[c.id] = group_base[g]
            ranked[c.id] = len(members) > 1
        if len(members) > 1:
            box = Box.from_bounds(members[0].core.begin, members[-1].core.end)
            rows.append(
                (Chunk(index=(g,), id=g, core=box, context=box), tuple(c.id for c in members))
            )
    if rows:
        members_of = {r.id: m for r, m in rows}
        run_stage(
            client,
            state,
            "consecutive-rows",
            [r for r, _ in rows],
            stage_row,
            lambda r: (root, members_of[r.id]),
            load_summaries=False,
            **kw,
        )
    run_stage(
        client,
        state,
        "consecutive",
        chunks,
        stage_relabel,
        lambda c: (root, src, dst, owner, shape, bounds, base, ranked),
        load_summaries=False,
        **kw,
    )
    return int(sum(totals))
