"""Stage C: the fragment adjacency graph with exact, additive edge statistics.

Every voxel-edge ``(v, v - e_c)`` is counted by the one chunk whose core holds ``v``, so per-chunk
statistics add up to the whole-volume ones exactly, for any chunk grid. Per fragment pair we keep
integers only: the largest affinity bin (waterz's ``InitWithMax`` histogram), the number of
voxel-edges (contact area), the affinity sum in fixed point (exact mean) and, optionally, the full
256-bin histogram as sparse (edge, bin, count) triples. Integer sums do not depend on order, so the
merged graph is bit-identical whatever the chunking.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from em_chunks.geometry import Box, Chunk, ChunkGrid
from em_chunks.ops.affinity import check_context, discretize, select_channels, to_fixed
from em_chunks.ops.ids import IdLookup
from em_chunks.ops.params import DecodeParams


@dataclass(frozen=True, eq=False)
class EdgeHistograms:
    """Fragment-pair edges sorted by (u, v), u < v, with per-edge integer statistics.

    u, v: uint64 canonical fragment ids. max_bin: uint8, waterz bin of the largest affinity.
    count: int64 voxel-edges. aff_sum: int64 sum of affinities in units of 2**-32.
    first_contact: int64 smallest voxel-edge index ``3 * flat(v) + c`` of the pair (the tie-breaking
    identity of ops/merging.py: unique per pair, the same for every chunk grid).
    hist_edge / hist_bin / hist_count: the full histograms as sparse rows sorted by (edge, bin),
    or None when only the InitWithMax statistics were collected.
    """

    u: np.ndarray
    v: np.ndarray
    max_bin: np.ndarray
    count: np.ndarray
    aff_sum: np.ndarray
    first_contact: np.ndarray
    hist_edge: np.ndarray | None = None
    hist_bin: np.ndarray | None = None
    hist_count: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.u.size)

    @property
    def has_histograms(self) -> bool:
        return self.hist_edge is not None

    @property
    def nbytes(self) -> int:
        arrays = [self.u, self.v, self.max_bin, self.count, self.aff_sum, self.first_contact, self.hist_edge, self.hist_bin, self.hist_count]
        return int(sum(a.nbytes for a in arrays if a is not None))

    @staticmethod
    def empty(full: bool = False) -> "EdgeHistograms":
        z = np.zeros(0, np.int64)
        return EdgeHistograms(
            z.astype(np.uint64), z.astype(np.uint64), z.astype(np.uint8), z, z, z,
            *( (z, z.astype(np.uint8), z) if full else (None, None, None) ),
        )


def _group(u: np.ndarray, v: np.ndarray, max_bin, count, aff_sum, first_contact, hist=None) -> EdgeHistograms:
    """Combine rows with equal (u, v): max of max_bin, min of first_contact, sums of the rest;
    ``hist`` = (row, bin, count)."""
    if u.size == 0:
        return EdgeHistograms.empty(hist is not None)
    order = np.lexsort((v, u))
    us, vs = u[order], v[order]
    new = np.r_[True, (us[1:] != us[:-1]) | (vs[1:] != vs[:-1])]
    starts = np.flatnonzero(new)
    group_of_row = np.empty(u.size, np.int64)
    group_of_row[order] = np.cumsum(new) - 1
    out = dict(
        u=us[starts],
        v=vs[starts],
        max_bin=np.maximum.reduceat(np.asarray(max_bin)[order], starts).astype(np.uint8),
        count=np.add.reduceat(np.asarray(count, np.int64)[order], starts),
        aff_sum=np.add.reduceat(np.asarray(aff_sum, np.int64)[order], starts),
        first_contact=np.minimum.reduceat(np.asarray(first_contact, np.int64)[order], starts),
    )
    if hist is not None:
        rows, bins, counts = hist
        code = group_of_row[rows] * 256 + bins.astype(np.int64)
        order_h = np.argsort(code, kind="stable")
        code_s = code[order_h]
        hstarts = np.flatnonzero(np.r_[True, code_s[1:] != code_s[:-1]])
        out.update(
            hist_edge=code_s[hstarts] // 256,
            hist_bin=(code_s[hstarts] % 256).astype(np.uint8),
            hist_count=np.add.reduceat(np.asarray(counts, np.int64)[order_h], hstarts),
        )
    return EdgeHistograms(**out)


def region_graph_chunk(
    affs_ctx: np.ndarray,
    canon_ctx: np.ndarray,
    core: Box,
    context: Box,
    params: DecodeParams,
    full_histograms: bool | None = None,
    lookup: IdLookup | None = None,
    volume_shape: Sequence[int] | None = None,
) -> EdgeHistograms:
    """Stage C: statistics of every voxel-edge (v, v - e_c) with v in the core whose two labels differ.

    ``canon_ctx`` holds canonical fragment ids on ``context`` (which must contain ``core`` grown by 1),
    0 outside the volume and on background, so edges leaving the volume or touching background are
    skipped. Only the core and the three predecessor faces (-z, -y, -x) are read. With ``lookup``,
    ``canon_ctx`` may hold the stored stage-A labels instead: the lookup (local -> canonical) is then
    applied to the voxels read only, so it needs the ids of this chunk and of its face predecessors
    (``stage_c_chunks``). ``full_histograms`` defaults to ``not init_with_max``. ``volume_shape``
    (default: the core's end) numbers voxels globally for ``first_contact``.
    """
    a = select_channels(affs_ctx, params.channels)
    check_context(core, context, a.shape[1:])
    canon_ctx = np.asarray(canon_ctx, dtype=np.uint64)
    if canon_ctx.shape != context.shape:
        raise ValueError(f"canon_ctx shape {canon_ctx.shape} != context shape {context.shape}")
    full = (not params.init_with_max) if full_histograms is None else bool(full_histograms)
    mapped = (lambda x: x) if lookup is None else lookup
    here = mapped(canon_ctx[core.slices(context)])
    vshape = tuple(volume_shape) if volume_shape is not None else tuple(core.end)
    us, vs, affs, contacts = [], [], [], []
    flat = None
    for c in range(3):
        shift = [0, 0, 0]
        shift[c] = -1
        # the predecessor of each core voxel: the core itself, shifted, except one face plane
        there = np.empty_like(here)
        inner = [slice(None)] * 3
        inner[c] = slice(1, None)
        outer = [slice(None)] * 3
        outer[c] = slice(0, 1)
        there[tuple(inner)] = here[tuple([slice(None, -1) if i == c else slice(None) for i in range(3)])]
        face = Box(core.shift(shift).offset, tuple(1 if i == c else n for i, n in enumerate(core.shape)))
        there[tuple(outer)] = mapped(canon_ctx[face.slices(context)])
        sel = (here != there) & (here != 0) & (there != 0)
        if not sel.any():
            continue
        h, t = here[sel], there[sel]
        us.append(np.minimum(h, t))
        vs.append(np.maximum(h, t))
        affs.append(a[c][core.slices(context)][sel])
        if flat is None:
            flat = _flat_index(core, vshape)
        contacts.append(flat[sel] * 3 + c)
    if not us:
        return EdgeHistograms.empty(full)
    u, v, aff = np.concatenate(us), np.concatenate(vs), np.concatenate(affs)
    contact = np.concatenate(contacts)
    bins = discretize(aff)
    # group through dense local indices: cheaper than sorting pairs of uint64
    labels, inv = np.unique(np.concatenate([u, v]), return_inverse=True)
    ui, vi = inv[: u.size].astype(np.int64), inv[u.size :].astype(np.int64)
    code = ui * labels.size + vi
    uniq, row = np.unique(code, return_inverse=True)
    n = uniq.size
    max_bin = np.zeros(n, np.uint8)
    np.maximum.at(max_bin, row, bins)
    count = np.bincount(row, minlength=n).astype(np.int64)
    aff_sum = np.zeros(n, np.int64)
    np.add.at(aff_sum, row, to_fixed(aff))
    first_contact = np.full(n, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(first_contact, row, contact)
    eu, ev = labels[uniq // labels.size], labels[uniq % labels.size]
    kw = {}
    if full:
        hcode, hcount = np.unique(row.astype(np.int64) * 256 + bins, return_counts=True)
        kw = dict(hist_edge=hcode // 256, hist_bin=(hcode % 256).astype(np.uint8), hist_count=hcount.astype(np.int64))
    # uniq is sorted by (ui, vi) and labels are sorted, so (eu, ev) is already in (u, v) order
    return EdgeHistograms(eu, ev, max_bin, count, aff_sum, first_contact, **kw)


def _flat_index(core: Box, volume_shape: Sequence[int]) -> np.ndarray:
    """Global C-order voxel index of every voxel of ``core`` (int64, core shape)."""
    z, y, x = (np.arange(o, o + n, dtype=np.int64) for o, n in zip(core.offset, core.shape))
    _, ny, nx = (int(s) for s in volume_shape)
    return (z[:, None, None] * ny + y[None, :, None]) * nx + x[None, None, :]


def stage_c_chunks(grid: ChunkGrid, chunk: Chunk) -> list[int]:
    """Ids of the chunks whose stage-A labels stage C reads for ``chunk``: itself and its -z/-y/-x faces."""
    out = [chunk.id]
    for axis in range(3):
        if chunk.index[axis] > 0:
            idx = list(chunk.index)
            idx[axis] -= 1
            out.append(grid.flat_id(idx))
    return out


def merge_histograms(parts: Sequence[EdgeHistograms]) -> EdgeHistograms:
    """Sum per-chunk statistics into the global graph (exact: integer sums and a max)."""
    parts = [p for p in parts if p is not None]
    if not parts:
        return EdgeHistograms.empty()
    full = all(p.has_histograms for p in parts)
    u = np.concatenate([p.u for p in parts])
    v = np.concatenate([p.v for p in parts])
    hist = None
    if full:
        offsets = np.cumsum([0] + [len(p) for p in parts[:-1]])
        hist = (
            np.concatenate([p.hist_edge + o for p, o in zip(parts, offsets)]),
            np.concatenate([p.hist_bin for p in parts]),
            np.concatenate([p.hist_count for p in parts]),
        )
    return _group(
        u, v,
        np.concatenate([p.max_bin for p in parts]),
        np.concatenate([p.count for p in parts]),
        np.concatenate([p.aff_sum for p in parts]),
        np.concatenate([p.first_contact for p in parts]),
        hist,
    )
