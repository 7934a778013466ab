"""Small vectorised helpers shared by the octree steps (id lookups, components, grouping)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from scipy import sparse
from scipy.sparse import csgraph

_I64, _U64 = np.int64, np.uint64


def lookup(keys: np.ndarray, values: np.ndarray):
    """``ids -> value`` for uint64 ids (-1 for unknown ids); ``keys`` need not be sorted or unique
    (a repeated key must map to one value)."""
    keys = np.asarray(keys, _U64)
    order = np.argsort(keys, kind="stable")
    k, v = keys[order], np.asarray(values, _I64)[order]

    def find(ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, _U64)
        if k.size == 0:
            return np.full(ids.shape, -1, _I64)
        pos = np.minimum(np.searchsorted(k, ids), k.size - 1)
        return np.where(k[pos] == ids, v[pos], -1).astype(_I64)

    return find


def components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Connected-component label of each of ``n`` nodes under the pairs (a, b)."""
    if np.asarray(a).size == 0:
        return np.arange(n, dtype=_I64)
    g = sparse.coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(n, n))
    return csgraph.connected_components(g, directed=True, connection="weak")[1].astype(_I64)


def min_key_member(group: np.ndarray, key: np.ndarray, n_groups: int) -> np.ndarray:
    """Per group (0..n_groups-1), the member index with the smallest key (-1 for empty groups)."""
    out = np.full(n_groups, -1, _I64)
    if group.size == 0:
        return out
    order = np.lexsort((key, group))
    starts = np.flatnonzero(np.r_[True, group[order][1:] != group[order][:-1]])
    out[group[order][starts]] = order[starts]
    return out


def runs(*cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(order, starts): the rows sorted lexicographically by ``cols`` (first = primary) and where each
    run of equal rows starts in that order."""
    if np.asarray(cols[0]).size == 0:
        return np.zeros(0, _I64), np.zeros(0, _I64)
    order = np.lexsort(tuple(reversed(cols)))
    new = np.zeros(order.size, bool)
    new[0] = True
    for c in cols:
        cs = np.asarray(c)[order]
        new[1:] |= cs[1:] != cs[:-1]
    return order, np.flatnonzero(new)


def concat(items: Sequence[Any], name: str, dtype) -> np.ndarray:
    """``getattr(item, name)`` of every item, concatenated (empty when there are none)."""
    parts = [np.asarray(getattr(c, name), dtype) for c in items]
    return np.concatenate(parts) if parts else np.zeros(0, dtype)
