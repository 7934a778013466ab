"""Dust handling on the octree (the rule is ``ops/dust.py``'s; this is how it is split into blocks).

Per threshold, *tracked* segments (smaller than ``max(merge_size, remove_size)``) and their contacts
(largest affinity bin, first contact) go up the octree. A tracked segment is complete in every block
that contains the block that named it (all its fragments are closed there). A *cluster* (tracked
segments connected by their mutual contacts) is decided in the first block where all its members
are complete: the rule only reads the cluster and the names of the segments it touches. Decisions
(the name a segment ends with, or removal) travel back down to the chunks that hold the segment.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Sequence

import numpy as np

from em_chunks.geometry.octree import Block, Octree
from em_chunks.ops.dust import dust, group_links
from em_chunks.ops.octree_merge import closed_in
from em_chunks.ops.octree_util import components, concat, runs
from em_chunks.ops.params import DecodeParams

_I64, _U64 = np.int64, np.uint64


class _Arrays:
    def arrays(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_arrays(cls, arrays):
        return cls(**{f.name: np.asarray(arrays[f.name]) for f in fields(cls)})


@dataclass(frozen=True, eq=False)
class DustMessage(_Arrays):
    """Tracked segments not yet decided (``n_t`` threshold index, ``n_rid`` name, ``n_key``, ``n_size``,
    the naming block ``n_level``/``n_block``) and contacts (``l_t``, ``l_a``/``l_b`` segment names and
    ``l_ka``/``l_kb`` their keys, ``l_max_bin``, ``l_contact``) with at least one tracked end."""

    n_t: np.ndarray
    n_rid: np.ndarray
    n_key: np.ndarray
    n_size: np.ndarray
    n_level: np.ndarray
    n_block: np.ndarray
    l_t: np.ndarray
    l_a: np.ndarray
    l_b: np.ndarray
    l_ka: np.ndarray
    l_kb: np.ndarray
    l_max_bin: np.ndarray
    l_contact: np.ndarray


@dataclass(frozen=True, eq=False)
class DustDecisions(_Arrays):
    """Per (threshold index ``t``, segment ``rid``): the name it ends with (``final_rid``,
    ``final_key``) and whether it is removed."""

    t: np.ndarray
    rid: np.ndarray
    final_rid: np.ndarray
    final_key: np.ndarray
    removed: np.ndarray

    @staticmethod
    def empty() -> "DustDecisions":
        z = np.zeros(0, _I64)
        return DustDecisions(z, z.astype(_U64), z.astype(_U64), z.copy(), np.zeros(0, bool))

    def select(self, t: np.ndarray, rid: np.ndarray) -> "DustDecisions":
        """The decisions about (t, rid) pairs (those present)."""
        if self.t.size == 0 or np.asarray(t).size == 0:
            return DustDecisions.empty()
        mine = np.stack([np.asarray(t, _I64), np.asarray(rid, _U64).astype(_I64)], 1)
        have = np.stack([self.t.astype(_I64), self.rid.astype(_U64).astype(_I64)], 1)
        keep = _rows_in(have, mine)
        return DustDecisions(*(getattr(self, f.name)[keep] for f in fields(self)))


def _rows_in(have: np.ndarray, want: np.ndarray) -> np.ndarray:
    """Mask of the rows of ``have`` that occur in ``want`` (both (k, 2) int64)."""
    if have.shape[0] == 0 or want.shape[0] == 0:
        return np.zeros(have.shape[0], bool)
    dt = np.dtype([("a", _I64), ("b", _I64)])  # exact pair membership through a structured view
    hv = np.ascontiguousarray(have, _I64).view(dt).ravel()
    wv = np.ascontiguousarray(want, _I64).view(dt).ravel()
    return np.isin(hv, wv)


@dataclass(frozen=True, eq=False)
class DustState(_Arrays):
    """Decisions made in a block, and what each child reported (``c_child``, ``c_t``, ``c_rid``)."""

    d_t: np.ndarray
    d_rid: np.ndarray
    d_final_rid: np.ndarray
    d_final_key: np.ndarray
    d_removed: np.ndarray
    c_child: np.ndarray
    c_t: np.ndarray
    c_rid: np.ndarray

    def decisions(self) -> DustDecisions:
        return DustDecisions(self.d_t, self.d_rid, self.d_final_rid, self.d_final_key, self.d_removed)


def dust_leaf(fragment_rid: np.ndarray, names, edges, params: DecodeParams) -> DustMessage:
    """A chunk's tracked segments and their contacts, per threshold.

    ``fragment_rid``: the leaf's fragment ids (sorted), ``names``: their
    :class:`~em_chunks.ops.octree_merge.Names` (thresholds x fragments), ``edges``: the chunk's
    stage-C edges between canonical fragments (partial: max bin and first contact are per chunk).
    """
    n_t, limit = names.rid.shape[0], params.dust_limit
    frag = np.asarray(fragment_rid, _U64)
    iu = np.searchsorted(frag, np.asarray(edges.u, _U64))
    iv = np.searchsorted(frag, np.asarray(edges.v, _U64))
    nodes, links = [], []
    for t in range(n_t):
        tracked = names.size[t] < limit
        sel = np.flatnonzero(tracked)
        _, first = np.unique(names.rid[t, sel], return_index=True)
        s = sel[first]
        nodes.append((np.full(s.size, t, _I64), names.rid[t, s], names.key[t, s], names.size[t, s],
                      names.level[t, s], names.block[t, s]))
        sa, sb = names.rid[t, iu], names.rid[t, iv]
        ka, kb = names.key[t, iu], names.key[t, iv]
        keep = (sa != sb) & (tracked[iu] | tracked[iv])
        swap = sa > sb
        lo, hi = np.where(swap, sb, sa)[keep], np.where(swap, sa, sb)[keep]
        klo, khi = np.where(swap, kb, ka)[keep], np.where(swap, ka, kb)[keep]
        links.append((np.full(lo.size, t, _I64), lo, hi, klo, khi, edges.max_bin[keep].astype(_I64),
                      edges.first_contact[keep].astype(_I64)))
    return _message(nodes, links)


def _message(nodes, links) -> DustMessage:
    cat = lambda parts, i, dt: np.concatenate([p[i] for p in parts]).astype(dt) if parts else np.zeros(0, dt)  # noqa
    lt, la, lb = cat(links, 0, _I64), cat(links, 1, _U64), cat(links, 2, _U64)
    lka, lkb, lm, lc = cat(links, 3, _I64), cat(links, 4, _I64), cat(links, 5, _I64), cat(links, 6, _I64)
    order, starts = runs(lt, la, lb)
    red = (lambda f, x: f.reduceat(x[order], starts)) if starts.size else (lambda f, x: np.zeros(0, x.dtype))
    first = order[starts]
    return DustMessage(cat(nodes, 0, _I64), cat(nodes, 1, _U64), cat(nodes, 2, _I64), cat(nodes, 3, _I64),
                       cat(nodes, 4, _I64), cat(nodes, 5, _I64), lt[first], la[first], lb[first], lka[first],
                       lkb[first], red(np.maximum, lm), red(np.minimum, lc))


def dust_block(children: Sequence[DustMessage], block: Block, tree: Octree, params: DecodeParams
               ) -> tuple[DustMessage, DustState]:
    """Decide the clusters that are complete in ``block``; pass the others up."""
    nt, nrid = concat(children, "n_t", _I64), concat(children, "n_rid", _U64)
    c_child = np.repeat(np.arange(len(children), dtype=_I64), [c.n_t.size for c in children])
    order, starts = runs(nt, nrid)
    pick = order[starts]
    node = {f: concat(children, f, dt)[pick] for f, dt in (("n_t", _I64), ("n_rid", _U64), ("n_key", _I64),
                                                           ("n_size", _I64), ("n_level", _I64), ("n_block", _I64))}
    closed = closed_in(tree, block, node["n_level"], node["n_block"])
    merged = _message([], [tuple(concat(children, f, dt) for f, dt in (
        ("l_t", _I64), ("l_a", _U64), ("l_b", _U64), ("l_ka", _I64), ("l_kb", _I64), ("l_max_bin", _I64),
        ("l_contact", _I64)))])
    decided, up_nodes, up_links = [], [], []
    for t in np.unique(np.r_[node["n_t"], merged.l_t]).tolist():
        sel = np.flatnonzero(node["n_t"] == t)
        rid_t = node["n_rid"][sel]
        lsel = np.flatnonzero(merged.l_t == t)
        la, lb = merged.l_a[lsel], merged.l_b[lsel]
        ia = _index(rid_t, la)
        ib = _index(rid_t, lb)
        both = (ia >= 0) & (ib >= 0)
        comp = components(rid_t.size, ia[both], ib[both])
        ready = np.ones(int(comp.max()) + 1 if rid_t.size else 0, bool)
        np.logical_and.at(ready, comp, closed[sel])
        done = ready[comp] if rid_t.size else np.zeros(0, bool)
        if done.any():
            decided.append(_decide(t, sel[done], node, la, lb, merged, lsel, ia, ib, done, params))
        keep_n = sel[~done]
        up_nodes.append(tuple(node[f][keep_n] for f in ("n_t", "n_rid", "n_key", "n_size", "n_level", "n_block")))
        open_end = ((ia >= 0) & ~done[np.maximum(ia, 0)]) | ((ib >= 0) & ~done[np.maximum(ib, 0)])
        ls = lsel[open_end]
        up_links.append(tuple(getattr(merged, f)[ls] for f in ("l_t", "l_a", "l_b", "l_ka", "l_kb", "l_max_bin",
                                                                "l_contact")))
    d = [np.concatenate([x[i] for x in decided]) if decided else None for i in range(5)]
    dd = DustDecisions(*(d[i] if d[i] is not None else empty for i, empty in
                         enumerate(DustDecisions.empty().arrays().values())))
    state = DustState(dd.t, dd.rid, dd.final_rid, dd.final_key, dd.removed, c_child, nt, nrid)
    return _message(up_nodes, up_links), state


def _index(sorted_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    pos = np.minimum(np.searchsorted(sorted_ids, ids), max(sorted_ids.size - 1, 0))
    return np.where((sorted_ids.size > 0) & (sorted_ids[pos] == ids), pos, -1).astype(_I64) if sorted_ids.size else \
        np.full(ids.shape, -1, _I64)


def _decide(t, members, node, la, lb, merged, lsel, ia, ib, done, params: DecodeParams):
    """Run the dust rule on complete clusters: members (node rows) and the segments they touch."""
    mem_rid = node["n_rid"][members]
    touch = ((ia >= 0) & done[np.maximum(ia, 0)]) | ((ib >= 0) & done[np.maximum(ib, 0)])
    a, b = la[touch], lb[touch]
    ends, end_keys = np.r_[a, b], np.r_[merged.l_ka[lsel][touch], merged.l_kb[lsel][touch]]
    others, at = np.unique(ends, return_index=True)
    keep = ~np.isin(others, mem_rid)
    others, other_keys = others[keep], end_keys[at][keep]
    ids = np.r_[mem_rid, others]  # members first, then passive neighbours
    order = np.argsort(ids)
    sorted_ids = ids[order]
    ga = order[np.searchsorted(sorted_ids, a)]
    gb = order[np.searchsorted(sorted_ids, b)]
    sizes = np.r_[node["n_size"][members], np.full(others.size, params.dust_limit, _I64)]
    keys = np.r_[node["n_key"][members], other_keys]
    links = group_links(ga, gb, merged.l_max_bin[lsel][touch], merged.l_contact[lsel][touch])
    root, removed = dust(sizes, keys, links, params.dust_merge_size, params.dust_remove_size)
    k = mem_rid.size
    return (np.full(k, t, _I64), mem_rid, ids[root[:k]].astype(_U64), keys[root[:k]].astype(_I64), removed[:k])


def route_down(state: DustState, parent: DustDecisions | None, child: int) -> DustDecisions:
    """The decisions (made here or above) about the segments child ``child`` reported."""
    own = state.decisions()
    allc = own if parent is None else DustDecisions(*(np.r_[getattr(own, f.name), getattr(parent, f.name)]
                                                     for f in fields(DustDecisions)))
    mine = state.c_child == child
    return allc.select(state.c_t[mine], state.c_rid[mine])


def run_dust(tree: Octree, leaves: dict[int, DustMessage], params: DecodeParams) -> dict[int, DustDecisions]:
    """The whole dust pass in one process (the reference of the engine's tasks): per chunk id, the
    decisions about the tracked segments it reported."""
    states: dict[tuple[int, int], DustState] = {}
    msgs: dict[tuple[int, int], DustMessage] = {}
    for level in tree.levels:
        for b in tree.blocks(level):
            kids = [leaves[tree.grid.flat_id(b.lo)]] if level == 0 else [msgs[(level - 1, c.id)] for c in tree.children(b)]
            msgs[(level, b.id)], states[(level, b.id)] = dust_block(kids, b, tree, params)
            if level == tree.top and msgs[(level, b.id)].n_t.size:
                raise AssertionError("the root left dust undecided")
    down: dict[tuple[int, int], DustDecisions | None] = {(tree.top, 0): None}
    out: dict[int, DustDecisions] = {}
    for level in reversed(tree.levels):
        for b in tree.blocks(level):
            st = states[(level, b.id)]
            if level == 0:
                out[tree.grid.flat_id(b.lo)] = route_down(st, down[(level, b.id)], 0)
            for i, c in enumerate(tree.children(b)):
                down[(level - 1, c.id)] = route_down(st, down[(level, b.id)], i)
    return out


def apply_dust(names, decisions: DustDecisions, params: DecodeParams) -> tuple[np.ndarray, np.ndarray]:
    """Final (rid, key) per threshold and item after dust: ``names`` (thresholds x items) with each
    decided segment renamed, removed ones set to rid 0 / key -1. Without dust merging, segments
    smaller than ``params.dust_remove_size`` are removed directly."""
    merge_size, remove_size = params.dust_merge_size, params.dust_remove_size
    rid, key = names.rid.copy(), names.key.copy()
    gone = np.zeros(rid.shape, bool)
    if merge_size <= 0:
        if remove_size > 0:
            gone = names.size < remove_size
    elif decisions.t.size:
        have = np.stack([decisions.t.astype(_I64), decisions.rid.astype(_U64).astype(_I64)], 1)
        order = np.lexsort((have[:, 1], have[:, 0]))
        have = have[order]
        for t in range(rid.shape[0]):
            lo, hi = np.searchsorted(have[:, 0], [t, t + 1])
            ids = have[lo:hi, 1].astype(_U64)
            if ids.size == 0:
                continue
            pos = np.minimum(np.searchsorted(ids, rid[t]), ids.size - 1)
            hit = ids[pos] == rid[t]
            src = order[lo + pos[hit]]
            rid[t, hit] = decisions.final_rid[src]
            key[t, hit] = decisions.final_key[src]
            gone[t, hit] = decisions.removed[src]
    rid[gone] = 0
    key[gone] = -1
    return rid, key
