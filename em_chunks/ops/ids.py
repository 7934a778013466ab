"""Globally unique uint64 ids without coordination, and vectorised id -> id lookups.

Bit layout of a packed id (uint64)::

    bits 63..40  chunk id   (24 bits: chunk ids 0 .. 16,777,215, the grid's C-order flat index)
    bits 39..0   local id k (40 bits: 1 .. 2**40 - 1 fragments per chunk)

i.e. ``id = (chunk_id << 40) | k`` with ``k >= 1``, so 0 stays "background" for every chunk (chunk 0's ids
are simply 1..n). Any chunk numbers its own fragments 1..n and the result is unique across the volume,
with no serial pass and no communication. Ids fit in int64 too (chunk ids below 2**23), which keeps
them safe for tools that index with signed integers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LOCAL_BITS = 40
CHUNK_BITS = 24
MAX_LOCAL = (1 << LOCAL_BITS) - 1
MAX_CHUNK = (1 << CHUNK_BITS) - 1

_LOCAL_MASK = np.uint64(MAX_LOCAL)
_SHIFT = np.uint64(LOCAL_BITS)


def pack_ids(chunk_id: int, local: np.ndarray) -> np.ndarray:
    """Packed uint64 ids of local ids ``local`` (1..n) of chunk ``chunk_id``; local 0 stays 0."""
    if not 0 <= int(chunk_id) <= MAX_CHUNK:
        raise ValueError(f"chunk id {chunk_id} does not fit in {CHUNK_BITS} bits")
    local = np.asarray(local, dtype=np.uint64)
    if local.size and int(local.max()) > MAX_LOCAL:
        raise ValueError(f"chunk {chunk_id} has more than {MAX_LOCAL} fragments")
    high = np.uint64(int(chunk_id) << LOCAL_BITS)
    return np.where(local == 0, np.uint64(0), local | high).astype(np.uint64, copy=False)


def chunk_range(chunk_id: int) -> tuple[int, int]:
    """The half-open range ``[lo, hi)`` of packed ids that chunk ``chunk_id`` can produce."""
    lo = int(chunk_id) << LOCAL_BITS
    return lo, lo + (1 << LOCAL_BITS)


def chunk_of(ids: np.ndarray) -> np.ndarray:
    """Chunk id of each packed id (0 for the background id 0 too)."""
    ids = np.asarray(ids, dtype=np.uint64)
    return (ids >> _SHIFT).astype(np.int64)


def local_of(ids: np.ndarray) -> np.ndarray:
    """Local id k of each packed id."""
    return np.asarray(ids, dtype=np.uint64) & _LOCAL_MASK


@dataclass(frozen=True, eq=False)
class IdLookup:
    """A sorted ``keys -> values`` map applied to whole arrays with ``np.searchsorted``; 0 maps to 0.

    Small (one entry per id a chunk can contain) so it travels to a worker with the task.
    """

    keys: np.ndarray  # uint64, strictly increasing, no 0
    values: np.ndarray  # uint64, aligned with keys

    def __post_init__(self) -> None:
        keys = np.ascontiguousarray(self.keys, dtype=np.uint64)
        values = np.ascontiguousarray(self.values, dtype=np.uint64)
        if keys.shape != values.shape or keys.ndim != 1:
            raise ValueError("IdLookup keys and values must be 1-d arrays of equal length")
        if keys.size > 1 and not bool(np.all(keys[1:] > keys[:-1])):
            raise ValueError("IdLookup keys must be strictly increasing")
        object.__setattr__(self, "keys", keys)
        object.__setattr__(self, "values", values)

    def __len__(self) -> int:
        return int(self.keys.size)

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        """Map every id of ``ids`` (any shape); raises ``KeyError`` for a non-zero id it does not know."""
        ids = np.asarray(ids, dtype=np.uint64)
        flat = ids.ravel()
        if self.keys.size == 0:
            if flat.size and bool(flat.any()):
                raise KeyError("IdLookup is empty but the array holds non-zero ids")
            return np.zeros(ids.shape, np.uint64)
        pos = np.searchsorted(self.keys, flat)
        np.minimum(pos, self.keys.size - 1, out=pos)
        found = self.keys[pos] == flat
        zero = flat == 0
        if not bool(np.all(found | zero)):
            missing = flat[~(found | zero)][:5]
            raise KeyError(f"ids not in lookup, e.g. {missing.tolist()}")
        out = np.where(zero, np.uint64(0), self.values[pos])
        return out.reshape(ids.shape)

    def compose(self, other: "IdLookup") -> "IdLookup":
        """``other(self(x))``: e.g. local id -> canonical fragment -> segment."""
        return IdLookup(self.keys, other(self.values))


def relabel_chunk(labels_core: np.ndarray, lookup: IdLookup) -> np.ndarray:
    """Stage D: the uint64 segmentation of one chunk from its stored fragment labels."""
    return lookup(labels_core)
