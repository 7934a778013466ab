"""Dust handling after agglomeration: small segments join a neighbour, then tiny leftovers are removed.

The rule (per threshold's segmentation, not fed back into later thresholds):

* segments smaller than ``merge_size`` voxels are visited smallest first (ties: smaller key, i.e.
  first voxel); each joins the neighbour it touches with the **highest affinity** (the largest
  ``max_bin`` of any voxel-edge between the two; ties: the earliest first contact), as zwatershed's
  size-dependent single linkage does. A group that is still below ``merge_size`` goes on merging;
  its contacts are those of all its members;
* a group keeps the name of the segment it merged into (dust never renames what it joins);
* then groups smaller than ``remove_size`` voxels become background 0.

Why this rule distributes exactly: a link's score (max affinity, first contact) is a max/min over
voxel-edges, so it adds up across chunks without knowing fragments, and the segment a small group
joins is *passive* (only its name is read). Dust operations therefore touch only *clusters*: the
connected components of the tracked segments (smaller than ``max(merge_size, remove_size)``) under
their mutual contacts. Clusters are independent; one cluster's operations happen in the same
relative order as in the whole volume, so processing each cluster on its own gives the same result.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class Links:
    """Contacts between segments (node indices ``a != b``, each unordered pair once)."""

    a: np.ndarray  # int64
    b: np.ndarray  # int64
    max_bin: np.ndarray  # int64: largest affinity bin of the contact
    contact: np.ndarray  # int64: first contact (smallest voxel-edge index)


def group_links(a: np.ndarray, b: np.ndarray, max_bin: np.ndarray, contact: np.ndarray) -> Links:
    """Combine contact rows per unordered node pair (max of max_bin, min of contact); drop self pairs."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    keep = a != b
    lo, hi = np.minimum(a, b)[keep], np.maximum(a, b)[keep]
    mb, ct = np.asarray(max_bin, np.int64)[keep], np.asarray(contact, np.int64)[keep]
    if lo.size == 0:
        z = np.zeros(0, np.int64)
        return Links(z, z.copy(), z.copy(), z.copy())
    order = np.lexsort((hi, lo))
    lo, hi, mb, ct = lo[order], hi[order], mb[order], ct[order]
    starts = np.flatnonzero(np.r_[True, (lo[1:] != lo[:-1]) | (hi[1:] != hi[:-1])])
    return Links(lo[starts], hi[starts], np.maximum.reduceat(mb, starts), np.minimum.reduceat(ct, starts))


def dust(sizes: np.ndarray, keys: np.ndarray, links: Links, merge_size: int, remove_size: int
         ) -> tuple[np.ndarray, np.ndarray]:
    """The dust rule on a segment graph: (root node of every node, True where the node is removed).

    ``sizes`` / ``keys`` per node (segment). Nodes of size ``>= max(merge_size, remove_size)`` may be
    passive stand-ins whose size is only known to be that large (only their index is used).
    """
    n = int(np.asarray(sizes).size)
    root = np.arange(n, dtype=np.int64)
    size0 = np.asarray(sizes, np.int64)
    if merge_size <= 0:
        return root, size0 < remove_size if remove_size > 0 else np.zeros(n, bool)
    adj: dict[int, list[tuple[int, int, int]]] = {}
    for x, y, mb, ct in zip(links.a.tolist(), links.b.tolist(), links.max_bin.tolist(), links.contact.tolist()):
        adj.setdefault(x, []).append((y, mb, ct))
        adj.setdefault(y, []).append((x, mb, ct))
    small = np.flatnonzero(size0 < merge_size)
    dpar: dict[int, int] = {}
    dsize = {int(r): int(size0[r]) for r in small}
    dkey = {int(r): int(keys[r]) for r in small}
    extra: dict[int, list[tuple[int, int, int]]] = {}

    def dfind(x: int) -> int:
        while x in dpar:
            x = dpar[x]
        return x

    def size_of(x: int) -> int:
        return dsize.get(x, int(size0[x]))

    def key_of(x: int) -> int:
        return dkey.get(x, int(keys[x]))

    heap = [(dsize[r], dkey[r], r) for r in dsize]
    heapq.heapify(heap)
    while heap:
        s, k, r = heapq.heappop(heap)
        if r in dpar or size_of(r) != s or s >= merge_size:
            continue
        links_r = adj.get(r, []) + extra.get(r, [])
        best = None
        for nb, mb, ct in links_r:
            t = dfind(nb)
            if t == r:
                continue
            cand = (-mb, ct, t)
            if best is None or cand < best:
                best = cand
        if best is None:
            continue  # an isolated group: nothing to join
        t = best[2]
        dpar[r] = t
        dsize[t] = size_of(t) + s
        dkey[t] = min(key_of(t), k)
        extra.setdefault(t, []).extend(links_r)
        extra.pop(r, None)
        if dsize[t] < merge_size:
            heapq.heappush(heap, (dsize[t], dkey[t], t))
    for r in list(dpar):
        root[r] = dfind(r)
    final = np.array([size_of(int(r)) for r in root.tolist()], np.int64) if n else np.zeros(0, np.int64)
    removed = final < remove_size if remove_size > 0 else np.zeros(n, bool)
    return root, removed
