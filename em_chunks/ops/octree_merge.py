"""One block of the distributed agglomeration: merge what the block can decide, pass the rest up
(docs/decoding.md, "Distributed agglomeration").

Nodes are whole fragments (canonical ids from the join, ``ops/octree_fragments.py``). A fragment is
*closed* in a block that contains its closing block: all its voxel-edges, so all its edges, are
counted by the block's chunks. Bottom-up, per block (level 0: one chunk; above: the children's
messages):

1. *Regions* of the children are united by id (an open fragment appears in every block it crosses,
   once for real in its owner chunk and as a stand-in elsewhere); edges arrive as partial
   statistics of fragment pairs, and partials of one pair combine (max bin, first contact, sums).
2. *Merging* (``ops/merging.py``): closed regions merge greedily, a closed region touching one open
   region joins it when that is its smallest edge, and what depends on the outside is frozen.
3. *Up message*: the open and the frozen regions, and the edges among them (an edge to a region
   that is done here can never merge again).

Thresholds: a merge at level ``s`` belongs to every segmentation with threshold above ``s``. A region
that goes up carries, per threshold, its *anchor part*: the part that the merges above connect to
(for an open region, the part holding its open fragment). Top-down (:func:`name_block`), each node
learns its segment per threshold as ``(rid, key, size)`` (the packed id and key of the segment's
first fragment, its size) and the block that decided it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Sequence

import numpy as np

from em_chunks.geometry.octree import Block, Octree
from em_chunks.ops.ids import chunk_of
from em_chunks.ops.merging import MergeGraph, merge_regions, tie_order
from em_chunks.ops.octree_util import concat, lookup, min_key_member, runs
from em_chunks.ops.params import DecodeParams
from em_chunks.ops.segments import components_below

_I64, _U64 = np.int64, np.uint64
NO_KEY = np.iinfo(np.int64).max  # a stand-in's key: larger than every real key


def _z(dtype=np.int64) -> np.ndarray:
    return np.zeros(0, dtype)


class _Arrays:
    """npz-friendly (de)serialisation of a dataclass of arrays."""

    def arrays(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_arrays(cls, arrays):
        return cls(**{f.name: np.asarray(arrays[f.name]) for f in fields(cls)})


@dataclass(frozen=True, eq=False)
class UpMessage(_Arrays):
    """What a block passes to its parent (for a chunk: what its stages produced).

    regions: ``rid`` (an open region: its open fragment's id; a closed one: a member's), closing block
    (``close_level``, ``close_block``), per threshold (columns) the anchor part's ``t_size``,
    ``t_key`` and ``t_rid`` (a stand-in: 0, ``NO_KEY``, 0).
    edges: ``e_u``/``e_v`` (region rids) and statistics. *Raw* edges hold one fragment pair, maybe
    partially: ``e_ident`` is their first contact, ``e_max_bin`` their largest bin. *Combined* edges
    (``e_combined``) sum several pairs: ``e_ident`` is their tie-order ident, ``e_max_bin`` -1.
    ``e_complete``: the edge's statistics are whole (one end was closed below; counted there).
    Histogram rows ``h_edge``/``h_bin``/``h_count``: combined edges, and every edge when full
    histograms are kept.
    """

    rid: np.ndarray
    close_level: np.ndarray
    close_block: np.ndarray
    t_size: np.ndarray
    t_key: np.ndarray
    t_rid: np.ndarray
    e_u: np.ndarray
    e_v: np.ndarray
    e_count: np.ndarray
    e_aff_sum: np.ndarray
    e_ident: np.ndarray
    e_max_bin: np.ndarray
    e_combined: np.ndarray
    e_complete: np.ndarray
    h_edge: np.ndarray
    h_bin: np.ndarray
    h_count: np.ndarray

    @property
    def n_regions(self) -> int:
        return int(self.rid.size)


@dataclass(frozen=True, eq=False)
class BlockState(_Arrays):
    """What the top-down pass needs of a block: its nodes and their per-threshold values, the node of
    each child region (children in order), the merges (node pairs, levels) and, per passed-up region,
    its anchor node."""

    node_t_size: np.ndarray
    node_t_key: np.ndarray
    node_t_rid: np.ndarray
    node_of_region: np.ndarray
    region_child: np.ndarray
    merge_a: np.ndarray
    merge_b: np.ndarray
    merge_level: np.ndarray
    up_anchor: np.ndarray


@dataclass(frozen=True, eq=False)
class Names(_Arrays):
    """Per threshold (rows) and item (columns): the segment's first fragment ``rid`` and ``key``, its
    ``size``, and the block that decided it (``level``, ``block`` flat id at that level)."""

    rid: np.ndarray
    key: np.ndarray
    size: np.ndarray
    level: np.ndarray
    block: np.ndarray

    def take(self, index: np.ndarray) -> "Names":
        return Names(*(getattr(self, f.name)[:, index] for f in fields(self)))


def leaf_message(chunk_id: int, fragments, edges, m: DecodeParams) -> UpMessage:
    """A chunk's region graph as a message.

    ``fragments``: :class:`~em_chunks.ops.octree_fragments.FragmentInfo` of every fragment the chunk
    holds or touches (unique canonical ids); ``edges``: the chunk's stage-C edges between canonical
    fragments (:class:`~em_chunks.ops.region_graph.EdgeHistograms`, partial sums). A fragment is a real
    node in its owner chunk (the one holding its first piece) and a stand-in elsewhere.
    """
    n_t = len(m.thresholds)
    rid = np.asarray(fragments.canonical, _U64)
    own = chunk_of(rid) == int(chunk_id)
    size = np.where(own, fragments.size, 0).astype(_I64)
    key = np.where(own, fragments.key, NO_KEY).astype(_I64)
    ne = len(edges)
    if m.full_histograms and edges.has_histograms:
        he, hb, hc = edges.hist_edge.astype(_I64), edges.hist_bin.astype(_I64), edges.hist_count.astype(_I64)
    else:
        he, hb, hc = _z(), _z(), _z()
    return UpMessage(
        rid=rid, close_level=np.asarray(fragments.close_level, _I64), close_block=np.asarray(fragments.close_block, _I64),
        t_size=np.repeat(size[:, None], n_t, 1), t_key=np.repeat(key[:, None], n_t, 1),
        t_rid=np.repeat(np.where(own, rid, 0).astype(_U64)[:, None], n_t, 1),
        e_u=np.asarray(edges.u, _U64), e_v=np.asarray(edges.v, _U64), e_count=edges.count.astype(_I64),
        e_aff_sum=edges.aff_sum.astype(_I64), e_ident=edges.first_contact.astype(_I64),
        e_max_bin=edges.max_bin.astype(_I64), e_combined=np.zeros(ne, bool), e_complete=np.zeros(ne, bool),
        h_edge=he, h_bin=hb, h_count=hc,
    )


def closed_in(tree: Octree, block: Block, close_level: np.ndarray, close_block: np.ndarray) -> np.ndarray:
    """True where the closing block lies inside ``block`` (the fragment is complete there)."""
    level = np.asarray(close_level, _I64)
    out = level <= block.level
    if not out.any():
        return out
    idx = np.flatnonzero(out)
    for lv in np.unique(level[idx]):
        sel = idx[level[idx] == lv]
        ci = np.stack(np.unravel_index(np.asarray(close_block, _I64)[sel], tree.shape(int(lv))), axis=1)
        up = ci >> (block.level - int(lv))
        out[sel] = np.all(up == np.asarray(block.index), axis=1)
    return out


def _parts(n: int, merges: tuple, level_cap: float, t_size: np.ndarray, t_key: np.ndarray, t_rid: np.ndarray,
           thresholds: Sequence[float], i: int):
    """Components of the nodes under the merges below threshold ``i`` and their (size, key, rid)."""
    comp = components_below(n, merges[0], merges[1], merges[2], thresholds[i])
    nc = int(comp.max()) + 1 if n else 0
    size = np.bincount(comp, weights=t_size[:, i], minlength=nc).astype(_I64) if n else _z()
    first = min_key_member(comp, t_key[:, i], nc)
    return comp, size, t_key[first, i], t_rid[first, i]


def merge_block(children: Sequence[UpMessage], block: Block, tree: Octree, m: DecodeParams
                ) -> tuple[UpMessage, BlockState, dict[str, int]]:
    """Steps 1-3 of the module docstring for one block; returns (up message, state for naming,
    counts: ``edges`` = fragment pairs whose statistics became whole here)."""
    n_t = len(m.thresholds)
    # ---- 1. nodes: the children's regions united by id ----------------------------------------
    r_rid = concat(children, "rid", _U64)
    region_child = np.repeat(np.arange(len(children), dtype=_I64), [c.n_regions for c in children])
    rids, node_of_region = np.unique(r_rid, return_inverse=True)
    node_of_region = node_of_region.astype(_I64)
    n = int(rids.size)
    r_size = np.concatenate([c.t_size.reshape(-1, n_t) for c in children]).astype(_I64) if children else \
        np.zeros((0, n_t), _I64)
    r_key = np.concatenate([c.t_key.reshape(-1, n_t) for c in children]).astype(_I64) if children else \
        np.zeros((0, n_t), _I64)
    r_trid = np.concatenate([c.t_rid.reshape(-1, n_t) for c in children]).astype(_U64) if children else \
        np.zeros((0, n_t), _U64)
    t_size = np.zeros((n, n_t), _I64)
    np.add.at(t_size, node_of_region, r_size)
    t_key = np.full((n, n_t), NO_KEY, _I64)
    np.minimum.at(t_key, node_of_region, r_key)
    t_rid = np.zeros((n, n_t), _U64)
    for i in range(n_t):  # the rid of the smallest key (stand-ins have none)
        first = min_key_member(node_of_region, r_key[:, i], n)
        t_rid[:, i] = r_trid[first, i]
    close_level = np.zeros(n, _I64)
    close_block = np.zeros(n, _I64)
    close_level[node_of_region] = concat(children, "close_level", _I64)
    close_block[node_of_region] = concat(children, "close_block", _I64)
    closed = closed_in(tree, block, close_level, close_block)

    # ---- edges --------------------------------------------------------------------------------
    node_of = lookup(rids, np.arange(n, dtype=_I64))
    eu, ev = node_of(concat(children, "e_u", _U64)), node_of(concat(children, "e_v", _U64))
    if (eu < 0).any() or (ev < 0).any():
        raise ValueError(f"block {block.name}: an edge names a fragment no region holds")
    g, raw = _merge_input(children, eu, ev, closed, m)

    # ---- 2. merging -----------------------------------------------------------------------------
    res = merge_regions(g, m)
    root = res.root
    is_root = root == np.arange(n)
    region_open = np.zeros(n, bool)
    np.logical_or.at(region_open, root, ~closed)
    up_root = np.flatnonzero(is_root & (region_open | res.frozen))
    # the anchor of an open region is its (only) open fragment; of a frozen one, its root
    open_nodes = np.flatnonzero(~closed)
    anchor_of_root = np.arange(n, dtype=_I64)
    anchor_of_root[root[open_nodes]] = open_nodes
    up_anchor = anchor_of_root[up_root]
    order = np.argsort(rids[up_anchor], kind="stable")
    up_root, up_anchor = up_root[order], up_anchor[order]
    merges = (res.merge_a, res.merge_b, res.merge_level)
    up_size = np.zeros((up_root.size, n_t), _I64)
    up_key = np.zeros((up_root.size, n_t), _I64)
    up_rid = np.zeros((up_root.size, n_t), _U64)
    for i in range(n_t):
        comp, size, key, rid = _parts(n, merges, m.max_threshold, t_size, t_key, t_rid, m.thresholds, i)
        c = comp[up_anchor]
        up_size[:, i], up_key[:, i], up_rid[:, i] = size[c], key[c], rid[c]

    # ---- 3. the up message ----------------------------------------------------------------------
    end_index = np.full(n, -1, _I64)
    end_index[up_root] = np.arange(up_root.size)
    e = res.edges
    ku, kv = end_index[e.u], end_index[e.v]
    keep = np.flatnonzero((ku >= 0) & (kv >= 0))
    src = res.edge_index[keep]
    msg_rid = rids[up_anchor]
    complete = raw["complete"][src] | closed[g.u[src]] | closed[g.v[src]] | e.combined[keep]
    msg = UpMessage(
        rid=msg_rid,
        close_level=np.where(region_open[up_root], close_level[up_anchor], block.level).astype(_I64),
        close_block=np.where(region_open[up_root], close_block[up_anchor], block.id).astype(_I64),
        t_size=up_size, t_key=up_key, t_rid=up_rid,
        **_edges_out(e, keep, msg_rid[ku[keep]], msg_rid[kv[keep]], raw["max_bin"][src], raw["contact"][src], m),
        e_complete=complete,
    )
    state = BlockState(t_size, t_key, t_rid, node_of_region, region_child, res.merge_a.astype(_I64),
                       res.merge_b.astype(_I64), res.merge_level.astype(_I64), up_anchor.astype(_I64))
    newly = ~g.combined & ~raw["complete"] & (closed[g.u] | closed[g.v])
    return msg, state, {"edges": int(newly.sum())}


def _merge_input(children: Sequence[UpMessage], eu: np.ndarray, ev: np.ndarray, closed: np.ndarray, m: DecodeParams
                 ) -> tuple[MergeGraph, dict[str, np.ndarray]]:
    """The children's edges as a :class:`MergeGraph` over the block's nodes.

    Rows with the same ends are partials of one fragment pair (only raw edges between fragments that
    were open below can arrive twice): max bin, first contact (min), sums. Also returns the raw
    columns (max_bin, contact; -1 for combined edges) that an up message keeps.
    """
    count, aff = concat(children, "e_count", _I64), concat(children, "e_aff_sum", _I64)
    ident, max_bin = concat(children, "e_ident", _I64), concat(children, "e_max_bin", _I64)
    combined = concat(children, "e_combined", bool)
    complete = concat(children, "e_complete", bool)
    e_off = np.cumsum([0] + [c.e_u.size for c in children[:-1]]).astype(_I64)
    h_edge = np.concatenate([c.h_edge.astype(_I64) + o for c, o in zip(children, e_off)]) if children else _z()
    h_bin, h_count = concat(children, "h_bin", _I64), concat(children, "h_count", _I64)
    if (eu == ev).any():
        raise ValueError("an edge joins a region to itself")
    a, b = np.minimum(eu, ev), np.maximum(eu, ev)
    order, starts = runs(a, b)
    ng = starts.size
    group = np.empty(a.size, _I64)
    group[order] = np.cumsum(np.isin(np.arange(order.size), starts)) - 1 if a.size else _z()
    if combined[np.bincount(group, minlength=ng)[group] > 1].any() if a.size else False:
        raise ValueError("a combined edge arrived twice: the blocks' messages disagree")
    red = (lambda f, x: f.reduceat(x[order], starts)) if ng else (lambda f, x: _z())
    g_u, g_v = a[order][starts], b[order][starts]
    g_comb = combined[order][starts] if ng else np.zeros(0, bool)
    g_bin, g_contact = red(np.maximum, max_bin), red(np.minimum, ident)
    if m.scoring.kind == "mean":
        he, hb, hc = _z(), _z(), _z()
    else:
        re_, rb, rc = group[h_edge] if h_edge.size else _z(), h_bin, h_count
        if m.init_with_max:  # a raw fragment pair counts once, at its largest bin
            rs = np.flatnonzero(~g_comb)
            re_, rb, rc = np.r_[re_, rs], np.r_[rb, g_bin[rs]], np.r_[rc, np.ones(rs.size, _I64)]
        code = re_ * 256 + rb
        uniq, inv = np.unique(code, return_inverse=True)
        he, hb = uniq // 256, uniq % 256
        hc = np.bincount(inv, weights=rc, minlength=uniq.size).astype(_I64) if uniq.size else _z()
    g = MergeGraph(closed, g_u.astype(_I64), g_v.astype(_I64), red(np.add, count), red(np.add, aff),
                   np.where(g_comb, g_contact, tie_order(g_contact)), he.astype(_I64), hb.astype(_I64), hc, g_comb)
    g_complete = np.maximum.reduceat(complete[order], starts) if ng else np.zeros(0, bool)
    return g, {"max_bin": np.where(g_comb, -1, g_bin), "contact": np.where(g_comb, -1, g_contact),
               "complete": g_complete | g_comb}


def _edges_out(e: MergeGraph, keep: np.ndarray, u_id: np.ndarray, v_id: np.ndarray, raw_bin: np.ndarray,
               raw_contact: np.ndarray, m: DecodeParams) -> dict[str, np.ndarray]:
    """The surviving edges ``keep`` of a merge result as message columns."""
    combined = e.combined[keep]
    if m.scoring.kind == "mean":
        he, hb, hc = _z(), _z(), _z()
    else:
        new = np.full(e.u.size, -1, _I64)
        new[keep] = np.arange(keep.size)
        want = new >= 0
        if m.init_with_max:
            want &= e.combined  # a raw edge's histogram is one count at its max bin
        sel = want[e.hist_edge] if e.hist_edge.size else np.zeros(0, bool)
        he, hb, hc = new[e.hist_edge[sel]], e.hist_bin[sel], e.hist_count[sel]
    return dict(e_u=u_id.astype(_U64), e_v=v_id.astype(_U64), e_count=e.count[keep], e_aff_sum=e.aff_sum[keep],
                e_ident=np.where(combined, e.ident[keep], raw_contact).astype(_I64),
                e_max_bin=np.where(combined, -1, raw_bin).astype(_I64), e_combined=combined,
                h_edge=he.astype(_I64), h_bin=hb.astype(_I64), h_count=hc.astype(_I64))


def name_block(state: BlockState, block: Block, parent: Names | None, thresholds: Sequence[float]) -> Names:
    """Every node's segment per threshold; ``parent`` names the block's passed-up regions' anchor
    parts (None at the root, which passes nothing up)."""
    n = state.node_t_size.shape[0]
    n_t = len(thresholds)
    out = Names(np.zeros((n_t, n), _U64), np.zeros((n_t, n), _I64), np.zeros((n_t, n), _I64),
                np.full((n_t, n), block.level, _I64), np.full((n_t, n), block.id, _I64))
    if state.up_anchor.size and parent is None:
        raise ValueError(f"block {block.name} passes regions up but has no parent")
    merges = (state.merge_a, state.merge_b, state.merge_level)
    for i in range(n_t):
        comp, size, key, rid = _parts(n, merges, 0.0, state.node_t_size, state.node_t_key, state.node_t_rid,
                                      thresholds, i)
        out.rid[i], out.key[i], out.size[i] = rid[comp], key[comp], size[comp]
        if state.up_anchor.size:
            # the part of each passed-up region that the merges above reach is named above
            named = np.full(int(comp.max()) + 1, -1, _I64)
            named[comp[state.up_anchor]] = np.arange(state.up_anchor.size)
            which = named[comp]
            hit = which >= 0
            for f in fields(Names):
                getattr(out, f.name)[i, hit] = getattr(parent, f.name)[i, which[hit]]
    return out


def child_names(state: BlockState, names: Names, child: int) -> Names:
    """The names of child ``child``'s regions (in its message order)."""
    return names.take(state.node_of_region[state.region_child == child])


def run_octree(tree: Octree, leaves: dict[int, UpMessage], m: DecodeParams) -> dict[int, Names]:
    """The whole bottom-up and top-down pass in one process (the sequential reference of the engine's
    tasks): per chunk id, the names of its leaf message's regions."""
    states: dict[tuple[int, int], BlockState] = {}
    msgs: dict[tuple[int, int], UpMessage] = {}
    for level in tree.levels:
        for b in tree.blocks(level):
            kids = [leaves[tree.grid.flat_id(b.lo)]] if level == 0 else [msgs[(level - 1, c.id)] for c in tree.children(b)]
            msgs[(level, b.id)], states[(level, b.id)], _ = merge_block(kids, b, tree, m)
    names: dict[tuple[int, int], Names | None] = {(tree.top, 0): None}
    out: dict[int, Names] = {}
    for level in reversed(tree.levels):
        for b in tree.blocks(level):
            st = states[(level, b.id)]
            own = name_block(st, b, names[(level, b.id)], m.thresholds)
            if level == 0:
                out[tree.grid.flat_id(b.lo)] = child_names(st, own, 0)
            for i, c in enumerate(tree.children(b)):
                names[(level - 1, c.id)] = child_names(st, own, i)
    return out
