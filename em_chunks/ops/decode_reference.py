"""The sequential reference decoder: stages A-D over a chunk grid, in plain numpy, in memory.

This is the specification of the stage order that the Dask engine runs (one task per chunk per
stage), and the oracle the tests use to prove that the result does not depend on the grid::

    A  fragment_chunk(affs[ctx])                 -> labels[core] (packed ids), FragmentSummary
    B  link_chunk(affs[ctx], labels[ctx])        -> crossing joins           (needs A of neighbours)
    -- resolve_fragments(summaries, links)       -> FragmentTable            (client)
    C  region_graph_chunk(affs[ctx], labels[ctx], lookup=table.canonical_lookup(stage_c_chunks))
                                                 -> EdgeHistograms           (lookup applied to the voxels read)
    -- merge_histograms, agglomerate             -> segment id per fragment  (client)
    D  relabel_chunk(labels[core], lookup)       -> segmentation[core]

Every context is the core grown by one voxel (``CONTEXT_GROW``) and zero-padded outside the volume.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from em_chunks.geometry import Box, ChunkGrid
from em_chunks.ops.agglomerate import agglomerate
from em_chunks.ops.fragments import FragmentTable, fragment_chunk, link_chunk, resolve_fragments
from em_chunks.ops.ids import relabel_chunk
from em_chunks.ops.params import DecodeParams
from em_chunks.ops.region_graph import EdgeHistograms, merge_histograms, region_graph_chunk, stage_c_chunks

CONTEXT_GROW = 1


def zero_padded_crop(volume: np.ndarray, box: Box, leading: int = 0) -> np.ndarray:
    """``volume[box]`` with zeros where ``box`` leaves the volume (the last 3 axes are spatial)."""
    spatial = volume.shape[leading:]
    inner = box.intersect(Box.from_shape(spatial))
    out = np.zeros(volume.shape[:leading] + tuple(box.shape), volume.dtype)
    if not inner.empty:
        lead = (slice(None),) * leading
        out[lead + inner.slices(box)] = volume[lead + inner.slices()]
    return out


def fragments_volume(affs: np.ndarray, grid: ChunkGrid, params: DecodeParams):
    """Stages A, B and the join: (stage-A labels of the whole volume, FragmentTable)."""
    shape = tuple(affs.shape[1:])
    labels = np.zeros(shape, np.uint64)
    summaries = []
    for ch in grid:
        lab, summary = fragment_chunk(zero_padded_crop(affs, ch.context, 1), ch.core, ch.context, ch.id, params, shape)
        labels[ch.core.slices()] = lab
        summaries.append(summary)
    links = [
        link_chunk(zero_padded_crop(affs, ch.context, 1), zero_padded_crop(labels, ch.context), ch.core, ch.context, params, shape)
        for ch in grid
    ]
    return labels, resolve_fragments(summaries, links)


def region_graph_volume(
    affs: np.ndarray, labels: np.ndarray, table: FragmentTable, grid: ChunkGrid, params: DecodeParams,
    full_histograms: bool | None = None,
) -> EdgeHistograms:
    """Stage C over all chunks, merged."""
    parts = []
    for ch in grid:
        lookup = table.canonical_lookup(stage_c_chunks(grid, ch))
        parts.append(region_graph_chunk(zero_padded_crop(affs, ch.context, 1), zero_padded_crop(labels, ch.context), ch.core,
                                         ch.context, params, full_histograms, lookup=lookup,
                                         volume_shape=affs.shape[1:]))
    return merge_histograms(parts)


def decode_volume(
    affs: np.ndarray, pieces: Sequence[int] = (1, 1, 1), params: DecodeParams = DecodeParams()
) -> list[np.ndarray]:
    """Decode ``affs`` (C, Z, Y, X) chunk by chunk: one uint64 segmentation per ``params.thresholds``."""
    affs = np.asarray(affs)
    if affs.ndim != 4:
        raise ValueError(f"affinities must be (C, Z, Y, X), got shape {affs.shape}")
    grid = ChunkGrid(tuple(affs.shape[1:]), tuple(pieces), CONTEXT_GROW)
    labels, table = fragments_volume(affs, grid, params)
    edges = region_graph_volume(affs, labels, table, grid, params)
    per_threshold = agglomerate(table, edges, params)
    out = []
    for seg_of_fragment in per_threshold:
        seg = np.zeros(labels.shape, np.uint64)
        for ch in grid:
            lookup = table.segment_lookup(seg_of_fragment, [ch.id])
            seg[ch.core.slices()] = relabel_chunk(labels[ch.core.slices()], lookup)
        if params.segment_ids == "consecutive":  # ids 1..N in the order of the packed ids
            uniq, inv = np.unique(seg, return_inverse=True)
            seg = (inv.reshape(seg.shape) + (0 if uniq[0] == 0 else 1)).astype(np.uint64)
        out.append(seg)
    return out


def decode_volume_octree(
    affs: np.ndarray, pieces: Sequence[int] = (1, 1, 1), params: DecodeParams = DecodeParams()
) -> list[np.ndarray]:
    """The distributed decoder's stage order, run sequentially: stages A and B per chunk, the
    fragment join on the octree, stage C per chunk on canonical fragments, the agglomeration on the
    octree (bottom-up, then names top-down), dust, stage D. Equal to :func:`decode_volume`."""
    from em_chunks.geometry.octree import Octree
    from em_chunks.ops.ids import IdLookup
    from em_chunks.ops.octree_dust import DustDecisions, apply_dust, dust_leaf, run_dust
    from em_chunks.ops.octree_fragments import catalog, leaf_join_message, run_joins, select
    from em_chunks.ops.octree_merge import leaf_message, run_octree

    affs = np.asarray(affs)
    shape = tuple(affs.shape[1:])
    grid = ChunkGrid(shape, tuple(pieces), CONTEXT_GROW)
    tree = Octree(grid)
    labels = np.zeros(shape, np.uint64)
    summaries = {}
    for ch in grid:
        lab, s = fragment_chunk(zero_padded_crop(affs, ch.context, 1), ch.core, ch.context, ch.id, params, shape)
        labels[ch.core.slices()] = lab
        summaries[ch.id] = s
    joins = {}
    for ch in grid:
        links = link_chunk(zero_padded_crop(affs, ch.context, 1), zero_padded_crop(labels, ch.context), ch.core, ch.context,
                           params, shape)
        s = summaries[ch.id]
        joins[ch.id] = leaf_join_message(s.ids, s.sizes, s.keys, s.faces, links)
    infos = run_joins(tree, joins)
    leaves, own, edges_of = {}, {}, {}
    for ch in grid:
        near = stage_c_chunks(grid, ch)
        lookup, frags = catalog([summaries[c].ids for c in near], [infos[c] for c in near])
        edges = region_graph_chunk(zero_padded_crop(affs, ch.context, 1), zero_padded_crop(labels, ch.context), ch.core,
                                   ch.context, params, params.full_histograms, lookup=lookup, volume_shape=shape)
        own[ch.id] = IdLookup(summaries[ch.id].ids, infos[ch.id].canonical)
        edges_of[ch.id] = edges
        present = np.unique(np.concatenate([infos[ch.id].canonical, edges.u, edges.v]))
        leaves[ch.id] = leaf_message(ch.id, select(frags, present), edges, params)
    names = run_octree(tree, leaves, params)
    decisions = {ch.id: DustDecisions.empty() for ch in grid}
    if params.dust_limit > 0:
        dust_leaves = {ch.id: dust_leaf(leaves[ch.id].rid, names[ch.id], edges_of[ch.id], params) for ch in grid}
        decisions = run_dust(tree, dust_leaves, params)
    final = {ch.id: apply_dust(names[ch.id], decisions[ch.id], params) for ch in grid}
    out = []
    for i in range(len(params.thresholds)):
        seg = np.zeros(shape, np.uint64)
        for ch in grid:
            rid, key = final[ch.id]
            name = rid[i] if params.segment_ids == "packed" else (key[i] + 1).astype(np.uint64)
            to_name = IdLookup(leaves[ch.id].rid, name)
            seg[ch.core.slices()] = relabel_chunk(labels[ch.core.slices()], own[ch.id].compose(to_name))
        out.append(seg)
    return out
