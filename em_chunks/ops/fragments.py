"""Stages A and B and the client join: fragments by a local watershed rule that stitches exactly.

The rule (see docs/decoding.md): a voxel ``v`` whose largest incident affinity ``m`` is ``> low`` is
foreground; it is joined to the neighbour across its largest edge (ties: the first of -z, -y, -x, +z,
+y, +x, waterz's order), and across every edge with affinity ``>= high``. Fragments are the connected
components of these joins. Every join is decided by one voxel from its 6 incident edges, so a chunk
decides all joins of its core voxels from a 1-voxel context: stage A applies those that stay inside
the core, stage B returns those that cross into the halo, and a union-find over the crossings
(``resolve_fragments``) yields exactly the fragments of the whole volume, for any chunk grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
from scipy import sparse
from scipy.sparse import csgraph

from em_chunks.geometry import Box
from em_chunks.ops.affinity import check_context, edge_affinities, select_channels
from em_chunks.ops.ids import IdLookup, chunk_range, pack_ids
from em_chunks.ops.params import DecodeParams

# direction k (0..5) -> (axis, step), waterz's order
_DIRS = ((0, -1), (1, -1), (2, -1), (0, 1), (1, 1), (2, 1))


@dataclass(frozen=True, eq=False)
class FragmentSummary:
    """What stage A sends to the client for one chunk: per local fragment its id, size and key."""

    chunk_id: int
    ids: np.ndarray  # uint64 packed ids, increasing
    sizes: np.ndarray  # int64 voxel counts
    keys: np.ndarray  # int64 min global flat voxel index (C order over the volume): chunk-invariant
    faces: np.ndarray | None = None  # uint8: bit f set when the fragment has a voxel on face f of the core

    @property
    def nbytes(self) -> int:
        return int(self.ids.nbytes + self.sizes.nbytes + self.keys.nbytes)


def face_bits(labels_core: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Per id of ``ids`` (sorted), bit f (0..5 = -z, -y, -x, +z, +y, +x) set when the id occurs on that
    face plane of ``labels_core``: where a fragment can continue into (or touch) the next chunk."""
    out = np.zeros(ids.size, np.uint8)
    if ids.size == 0:
        return out
    for f, (axis, step) in enumerate(_DIRS):
        plane = np.take(labels_core, 0 if step < 0 else -1, axis=axis)
        present = np.unique(plane[plane != 0])
        pos = np.searchsorted(ids, present)
        out[pos] |= np.uint8(1 << f)
    return out


def _decide(a: np.ndarray, box: Box, context: Box, volume_shape: Sequence[int], low: float):
    """Per voxel of ``box``: the direction of its largest edge (0..5) and whether it is foreground."""
    e = edge_affinities(a, box, context, volume_shape)
    d = np.argmax(e, axis=0).astype(np.int8)  # first maximum: waterz's direction order breaks ties
    m = np.take_along_axis(e, d[None].astype(np.intp), axis=0)[0]
    return d, m > np.float32(low)


def fragment_chunk(
    affs_ctx: np.ndarray,
    core: Box,
    context: Box,
    chunk_id: int,
    params: DecodeParams,
    volume_shape: Sequence[int],
) -> tuple[np.ndarray, FragmentSummary]:
    """Stage A: local fragments of the core (uint64 packed ids, core shape) and their summary.

    ``affs_ctx`` (C, *context.shape) covers ``context`` ⊇ ``core`` grown by 1, zero outside the volume.
    Only joins between two core voxels are applied; local ids k = 1..n follow the C order of each
    fragment's first voxel, so ids within a chunk increase with their keys.
    """
    a = select_channels(affs_ctx, params.channels)
    check_context(core, context, a.shape[1:])
    shape = tuple(core.shape)
    n = core.size
    if n == 0:
        empty = np.zeros(0, np.int64)
        return np.zeros(shape, np.uint64), FragmentSummary(chunk_id, empty.astype(np.uint64), empty, empty,
                                                          empty.astype(np.uint8))
    d, fg = _decide(a, core, context, volume_shape, params.aff_threshold_low)
    strides = (shape[1] * shape[2], shape[2], 1)
    itype = np.int32 if 4 * n < 2**31 else np.int64  # what csgraph uses internally: no conversion copy
    idx = np.arange(n, dtype=itype).reshape(shape)

    # column 0: the steepest-ascent join of each voxel (a self loop where it has none in the core)
    offsets = np.array([-strides[0], -strides[1], -1, strides[0], strides[1], 1], itype)
    inside = np.ones((6,) + shape, bool)
    for k, (axis, step) in enumerate(_DIRS):
        sl = [slice(None)] * 3
        sl[axis] = 0 if step < 0 else -1
        inside[(k,) + tuple(sl)] = False
    ok = fg & np.take_along_axis(inside, d[None].astype(np.intp), axis=0)[0]
    cols = np.empty(shape + (4,), itype)
    cols[..., 0] = np.where(ok, idx + offsets[d], idx)
    # columns 1..3: joins across edges >= high to the predecessor along each axis (edges are symmetric)
    rel = core.relative_to(context)
    high = np.float32(params.aff_threshold_high)
    for c in range(3):
        h = a[c][rel.slices()] >= high
        sl = [slice(None)] * 3
        sl[c] = 0
        h[tuple(sl)] = False  # predecessor outside the core: stage B's business
        cols[..., 1 + c] = np.where(h, idx - strides[c], idx)
    graph = sparse.csr_matrix(
        (np.ones(4 * n, np.int8), cols.reshape(-1), np.arange(0, 4 * n + 1, 4, dtype=itype)),
        shape=(n, n),
    )
    _, comp = csgraph.connected_components(graph, directed=True, connection="weak")

    fg_flat = np.flatnonzero(fg.reshape(-1))
    labels = np.zeros(n, np.uint64)
    if fg_flat.size == 0:
        empty = np.zeros(0, np.int64)
        return labels.reshape(shape), FragmentSummary(chunk_id, empty.astype(np.uint64), empty, empty,
                                                      empty.astype(np.uint8))
    _, first, inverse = np.unique(comp[fg_flat], return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")  # components in C order of their first voxel
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    local = rank[inverse].astype(np.uint64) + np.uint64(1)
    labels[fg_flat] = pack_ids(chunk_id, local)
    first_sorted = fg_flat[first[order]]
    coords = np.unravel_index(first_sorted, shape)
    keys = np.ravel_multi_index(
        tuple(cz + o for cz, o in zip(coords, core.offset)), tuple(volume_shape)
    ).astype(np.int64)
    sizes = np.bincount(local.astype(np.int64), minlength=order.size + 1)[1:].astype(np.int64)
    ids = pack_ids(chunk_id, np.arange(1, order.size + 1, dtype=np.uint64))
    labels = labels.reshape(shape)
    return labels, FragmentSummary(chunk_id, ids, sizes, keys, face_bits(labels, ids))


def _face(core: Box, axis: int, step: int) -> Box:
    """The one-voxel slab of ``core`` on its face along ``axis`` (low side for step -1)."""
    off = list(core.offset)
    shp = list(core.shape)
    if step > 0:
        off[axis] = core.end[axis] - 1
    shp[axis] = 1 if core.shape[axis] else 0
    return Box(tuple(off), tuple(shp))


def link_chunk(
    affs_ctx: np.ndarray,
    labels_ctx: np.ndarray,
    core: Box,
    context: Box,
    params: DecodeParams,
    volume_shape: Sequence[int],
) -> np.ndarray:
    """Stage B: the joins decided by core voxels that cross into the halo, as unique (n, 2) uint64 pairs.

    ``labels_ctx`` holds the stored stage-A labels on ``context`` (0 outside the volume); each pair is
    (label of the core voxel, label of the halo voxel). The neighbouring chunk returns the joins that
    its own voxels decide, so together the chunks return every join that crosses a chunk face.
    """
    a = select_channels(affs_ctx, params.channels)
    check_context(core, context, a.shape[1:])
    labels_ctx = np.asarray(labels_ctx, dtype=np.uint64)
    if labels_ctx.shape != context.shape:
        raise ValueError(f"labels_ctx shape {labels_ctx.shape} != context shape {context.shape}")
    high = np.float32(params.aff_threshold_high)
    pairs = []
    for k, (axis, step) in enumerate(_DIRS):
        face = _face(core, axis, step)
        if face.empty:
            continue
        if (step < 0 and face.begin[axis] == 0) or (step > 0 and face.end[axis] == volume_shape[axis]):
            continue  # this face lies on the volume border: nothing beyond it
        d, fg = _decide(a, face, context, volume_shape, params.aff_threshold_low)
        shift = [0, 0, 0]
        shift[axis] = step
        mine = labels_ctx[face.slices(context)]
        theirs = labels_ctx[face.shift(shift).slices(context)]
        # steepest-ascent joins that point out of the core through this face
        sel = fg & (d == k)
        # joins across edges >= high through this face (the edge's channel sits at the later voxel)
        later = face if step < 0 else face.shift(shift)
        sel |= a[axis][later.slices(context)] >= high
        if sel.any():
            pairs.append(np.stack([mine[sel], theirs[sel]], axis=1))
    if not pairs:
        return np.zeros((0, 2), np.uint64)
    out = np.unique(np.concatenate(pairs), axis=0)
    if (out == 0).any():
        raise ValueError("link_chunk: a join reached a voxel labelled 0; labels do not match affinities")
    return out


@dataclass(frozen=True, eq=False)
class FragmentTable:
    """The global fragments after the join: small arrays the client keeps (O(#fragments)).

    ``local_ids`` / ``local_canonical``: every stage-A id (increasing) and its global fragment's id.
    ``ids``, ``keys``, ``sizes``: the global fragments in increasing key order; a fragment's id is the
    packed id of its member with the smallest key, so it does not depend on the chunk grid except
    through the bits that say which chunk holds its first voxel.
    """

    local_ids: np.ndarray
    local_canonical: np.ndarray
    ids: np.ndarray
    keys: np.ndarray
    sizes: np.ndarray

    def __len__(self) -> int:
        return int(self.ids.size)

    def _rows(self, chunk_ids: Iterable[int] | None) -> np.ndarray:
        if chunk_ids is None:
            return np.arange(self.local_ids.size)
        parts = []
        for c in sorted(set(int(c) for c in chunk_ids)):
            lo, hi = chunk_range(c)
            a, b = np.searchsorted(self.local_ids, [np.uint64(lo), np.uint64(hi)])
            parts.append(np.arange(a, b))
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    def canonical_lookup(self, chunk_ids: Iterable[int] | None = None) -> IdLookup:
        """local id -> canonical fragment id, for the ids of ``chunk_ids`` (all when None)."""
        rows = self._rows(chunk_ids)
        return IdLookup(self.local_ids[rows], self.local_canonical[rows])

    def index_of(self, canonical_ids: np.ndarray) -> np.ndarray:
        """Row (= key rank) of each canonical fragment id."""
        order = self._id_order
        pos = np.searchsorted(self.ids[order], np.asarray(canonical_ids, np.uint64))
        pos = np.minimum(pos, max(order.size - 1, 0))
        rows = order[pos]
        if not bool(np.all(self.ids[rows] == canonical_ids)):
            raise KeyError("index_of: unknown canonical fragment id")
        return rows

    @property
    def _id_order(self) -> np.ndarray:
        cached = self.__dict__.get("_order")
        if cached is None:
            cached = np.argsort(self.ids, kind="stable")
            object.__setattr__(self, "_order", cached)
        return cached

    def segment_lookup(
        self, segment_of_fragment: np.ndarray, chunk_ids: Iterable[int] | None = None
    ) -> IdLookup:
        """local id -> segment id, given one segment id per global fragment (aligned with ``ids``)."""
        rows = self._rows(chunk_ids)
        seg = np.asarray(segment_of_fragment, np.uint64)
        return IdLookup(self.local_ids[rows], seg[self.index_of(self.local_canonical[rows])])


def resolve_fragments(summaries: Sequence[FragmentSummary], links: Sequence[np.ndarray]) -> FragmentTable:
    """Client join: union-find over all stage-B links; canonical id = member with the smallest key."""
    if summaries:
        ids = np.concatenate([s.ids for s in summaries]).astype(np.uint64)
        sizes = np.concatenate([s.sizes for s in summaries]).astype(np.int64)
        keys = np.concatenate([s.keys for s in summaries]).astype(np.int64)
    else:
        ids = np.zeros(0, np.uint64)
        sizes = keys = np.zeros(0, np.int64)
    order = np.argsort(ids, kind="stable")
    ids, sizes, keys = ids[order], sizes[order], keys[order]
    if ids.size > 1 and not bool(np.all(ids[1:] > ids[:-1])):
        raise ValueError("resolve_fragments: the same local id appears in two summaries")
    n = ids.size
    pairs = np.concatenate([np.asarray(p, np.uint64).reshape(-1, 2) for p in links]) if links else np.zeros((0, 2), np.uint64)
    if pairs.size:
        pos = np.searchsorted(ids, pairs)
        pos = np.minimum(pos, n - 1)
        if not bool(np.all(ids[pos] == pairs)):
            raise ValueError("resolve_fragments: a link names an id that no summary has")
        graph = sparse.coo_matrix((np.ones(len(pos), np.int8), (pos[:, 0], pos[:, 1])), shape=(n, n))
        _, comp = csgraph.connected_components(graph, directed=True, connection="weak")
    else:
        comp = np.arange(n)
    if n == 0:
        z = np.zeros(0, np.int64)
        return FragmentTable(ids, ids.copy(), ids.copy(), z, z.copy())
    # per component: the member with the smallest key (keys are unique voxel indices)
    by_key = np.lexsort((keys, comp))
    starts = np.flatnonzero(np.r_[True, comp[by_key][1:] != comp[by_key][:-1]])
    leader = by_key[starts]  # one row per component, components in increasing comp label
    comp_size = np.add.reduceat(sizes[by_key], starts)
    canon_of_comp = ids[leader]
    key_of_comp = keys[leader]
    korder = np.argsort(key_of_comp, kind="stable")
    return FragmentTable(
        local_ids=ids,
        local_canonical=canon_of_comp[comp],
        ids=canon_of_comp[korder],
        keys=key_of_comp[korder],
        sizes=comp_size[korder].astype(np.int64),
    )
