"""Consecutive segment ids (1..N) from globally unique ones, without a serial pass over the volume.

Every segment id has an *owner* chunk that holds at least one of its voxels, found from the id
alone:

* ``packed``: the chunk id in the id's high bits (``id >> 40``, :mod:`em_chunks.ops.ids`);
* ``first_voxel``: the chunk holding voxel ``id - 1`` (a C-order flat index of a voxel of the
  segment).

Each chunk lists the ids it owns (sorted); the new id of ``x`` is its rank among all ids plus one,
so the result equals ``skimage.segmentation.relabel_sequential`` of the input for any chunk grid.
Ranks come from per-group counts (prefix sums) and ranks inside a group, where a *group* is a set of
chunks whose owned ids are not interleaved with other groups' in id order:

* ``packed``: each chunk alone (chunk ``c`` owns ids in ``[c << 40, (c+1) << 40)``);
* ``first_voxel``: one z-row of chunks (same z range; their flat indices interleave row by row, but
  a row's ids all lie between those of the rows above and below it).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from em_chunks.ops.ids import LOCAL_BITS

OWNERS = ("packed", "first_voxel")


def owners_of(
    ids: np.ndarray, owner: str, shape: Sequence[int], bounds: Sequence[Sequence[int]]
) -> np.ndarray:
    """The owner chunk (flat C-order id in the grid with these per-axis ``bounds``) of every
    non-zero id."""
    ids = np.asarray(ids, np.uint64)
    pieces = [len(b) - 1 for b in bounds]
    if owner == "packed":
        out = (ids >> np.uint64(LOCAL_BITS)).astype(np.int64)
        if out.size and int(out.max()) >= int(np.prod(pieces)):
            raise ValueError(
                f"id {int(ids[np.argmax(out)])} names chunk {int(out.max())}, outside a grid of "
                f"{int(np.prod(pieces))} chunks: not packed ids of this grid"
            )
        return out
    if owner == "first_voxel":
        flat = ids.astype(np.int64) - 1
        if flat.size and (int(flat.min()) < 0 or int(flat.max()) >= int(np.prod(shape))):
            raise ValueError(
                f"ids beyond the volume's {int(np.prod(shape))} voxels: not first_voxel ids"
            )
        coords = np.unravel_index(flat, tuple(shape))
        idx = [
            np.searchsorted(np.asarray(b[1:-1]), c, side="right") for b, c in zip(bounds, coords)
        ]
        return (
            np.ravel_multi_index(idx, pieces).astype(np.int64)
            if flat.size
            else np.zeros(0, np.int64)
        )
    raise ValueError(f"owner {owner!r}: expected one of {OWNERS}")


def owned_ids(
    core: np.ndarray,
    chunk_id: int,
    owner: str,
    shape: Sequence[int],
    bounds: Sequence[Sequence[int]],
) -> np.ndarray:
    """Stage 1: the sorted ids present in a chunk's core that this chunk owns."""
    ids = np.unique(np.asarray(core, np.uint64))
    ids = ids[ids != 0]
    return ids[owners_of(ids, owner, shape, bounds) == int(chunk_id)]


def ranks_in_group(lists: Sequence[np.ndarray]) -> list[np.ndarray]:
    """For the sorted, disjoint id lists of one group's chunks: each id's rank among all of them."""
    if not lists:
        return []
    merged = np.concatenate([np.asarray(a, np.uint64) for a in lists])
    rank = np.empty(merged.size, np.int64)
    rank[np.argsort(merged, kind="stable")] = np.arange(merged.size)
    return np.split(rank, np.cumsum([len(a) for a in lists])[:-1])


def group_of(index: Sequence[int], chunk_id: int, owner: str) -> int:
    """The group a chunk (grid ``index``, flat ``chunk_id``) belongs to: itself, or its z-row."""
    return int(chunk_id) if owner == "packed" else int(index[0])


def offsets(counts: Sequence[int]) -> np.ndarray:
    """Exclusive prefix sums: the number of ids of every earlier group."""
    return np.concatenate([[0], np.cumsum(np.asarray(counts, np.int64))[:-1]]).astype(np.int64)


def new_ids(ids: np.ndarray, owned: np.ndarray, ranks: np.ndarray, base: int) -> np.ndarray:
    """Stage 2 for the ids of one owner: ``base + rank + 1`` (raises when an id is not owned
    there)."""
    ids = np.asarray(ids, np.uint64)
    pos = np.minimum(np.searchsorted(owned, ids), max(len(owned) - 1, 0))
    bad = ids if len(owned) == 0 else ids[owned[pos] != ids]
    if bad.size:
        raise ValueError(
            f"segment ids {bad[:3].tolist()} are not held by their owner chunk: not the ids "
            f"the owner rule expects"
        )
    return (np.int64(base) + ranks[pos] + 1).astype(np.uint64)


def relabel(core: np.ndarray, mapping_keys: np.ndarray, mapping_values: np.ndarray) -> np.ndarray:
    """Apply a sorted ``keys -> values`` map to a core (0 stays 0)."""
    core = np.asarray(core, np.uint64)
    out = np.zeros(core.shape, np.uint64)
    nz = core != 0
    if nz.any():
        out[nz] = mapping_values[np.searchsorted(mapping_keys, core[nz])]
    return out
