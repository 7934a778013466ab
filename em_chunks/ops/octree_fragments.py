"""The fragment join on the octree: stage-A pieces joined by stage-B links into whole fragments.

Bottom-up, a block unites the pieces whose links have both ends inside it. A joined fragment none of
whose pieces touches the block's outer faces is *closed*: it is complete, so its canonical id (the
packed id of its piece with the smallest key), key, size and *closing block* are final. The others
go up with their face pieces (the only pieces a neighbour's link can name) and the links that leave
the block: surface-sized. Top-down, every piece learns its fragment (:class:`FragmentInfo`).

The closing block matters to the agglomeration: a fragment is closed in every block that contains
its closing block, and only there are all of its edges known.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Sequence

import numpy as np

from em_chunks.geometry.octree import Block, Octree
from em_chunks.ops.ids import chunk_of
from em_chunks.ops.octree_util import components, concat, lookup, min_key_member

_I64, _U64 = np.int64, np.uint64


@dataclass(frozen=True, eq=False)
class JoinMessage:
    """Open fragments of a block: ``rid`` (first piece), ``key``, ``size``; their face pieces
    (``fp_id``, ``fp_region``, ``fp_bits``: the faces of the piece's chunk still possibly outer) and
    the links leaving the block (``link_a`` inside, ``link_b`` outside)."""

    rid: np.ndarray
    key: np.ndarray
    size: np.ndarray
    fp_id: np.ndarray
    fp_region: np.ndarray
    fp_bits: np.ndarray
    link_a: np.ndarray
    link_b: np.ndarray

    def arrays(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_arrays(cls, arrays) -> "JoinMessage":
        return cls(**{f.name: np.asarray(arrays[f.name]) for f in fields(cls)})


@dataclass(frozen=True, eq=False)
class FragmentInfo:
    """Per item: its fragment's canonical id, key, size and closing block (level, flat id there)."""

    canonical: np.ndarray
    key: np.ndarray
    size: np.ndarray
    close_level: np.ndarray
    close_block: np.ndarray

    def take(self, index: np.ndarray) -> "FragmentInfo":
        return FragmentInfo(*(getattr(self, f.name)[index] for f in fields(self)))

    def arrays(self) -> dict[str, np.ndarray]:
        return {f"f_{f.name}": getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_arrays(cls, arrays) -> "FragmentInfo":
        return cls(*(np.asarray(arrays[f"f_{f.name}"]) for f in fields(cls)))


@dataclass(frozen=True, eq=False)
class JoinState:
    """Per node (child fragment, in order): its joined fragment; per joined fragment: its info when
    closed here, or its index in the up message."""

    node_child: np.ndarray
    node_comp: np.ndarray
    comp_rid: np.ndarray
    comp_key: np.ndarray
    comp_size: np.ndarray
    comp_up: np.ndarray

    def arrays(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_arrays(cls, arrays) -> "JoinState":
        return cls(**{f.name: np.asarray(arrays[f.name]) for f in fields(cls)})


def leaf_join_message(ids: np.ndarray, sizes: np.ndarray, keys: np.ndarray, faces: np.ndarray,
                      links: np.ndarray) -> JoinMessage:
    """A chunk's stage-A summary and stage-B links: every piece an open-or-closed fragment."""
    ids = np.asarray(ids, _U64)
    faces = np.asarray(faces, np.uint8)
    on_face = np.flatnonzero(faces)
    links = np.asarray(links, _U64).reshape(-1, 2)
    return JoinMessage(ids, np.asarray(keys, _I64), np.asarray(sizes, _I64), ids[on_face], on_face.astype(_I64),
                       faces[on_face], links[:, 0].copy(), links[:, 1].copy())


def join_block(children: Sequence[JoinMessage], block: Block, tree: Octree) -> tuple[JoinMessage, JoinState]:
    """Unite the children's open fragments along the links inside ``block``."""
    n_child = [c.rid.size for c in children]
    offsets = np.cumsum([0] + n_child[:-1]).astype(_I64)
    node_rid, node_key = concat(children, "rid", _U64), concat(children, "key", _I64)
    node_size = concat(children, "size", _I64)
    n = int(node_rid.size)
    fp_id = concat(children, "fp_id", _U64)
    fp_node = np.concatenate([c.fp_region.astype(_I64) + o for c, o in zip(children, offsets)]) if children else \
        np.zeros(0, _I64)
    fp_bits = concat(children, "fp_bits", np.uint8)
    node_of = lookup(fp_id, fp_node)
    la, lb = concat(children, "link_a", _U64), concat(children, "link_b", _U64)
    na, nb = node_of(la), node_of(lb)
    inside = (na >= 0) & (nb >= 0)
    if (na < 0).any() or tree.contains_chunks(block, tree.chunk_index_of(chunk_of(lb[nb < 0]))).any():
        raise ValueError(f"block {block.name}: a link names a piece the block does not hold")
    comp = components(n, na[inside], nb[inside])
    nc = int(comp.max()) + 1 if n else 0
    first = min_key_member(comp, node_key, nc)
    comp_rid, comp_key = node_rid[first], node_key[first]
    comp_size = np.bincount(comp, weights=node_size, minlength=nc).astype(_I64)
    fp_comp = comp[fp_node]
    outer = tree.outer_faces(block, tree.chunk_index_of(chunk_of(fp_id)), fp_bits)
    is_open = np.zeros(nc, bool)
    is_open[fp_comp[outer != 0]] = True
    up = np.flatnonzero(is_open)
    up = up[np.argsort(comp_rid[up], kind="stable")]
    comp_up = np.full(nc, -1, _I64)
    comp_up[up] = np.arange(up.size)
    keep_fp = (outer != 0)
    msg = JoinMessage(comp_rid[up], comp_key[up], comp_size[up], fp_id[keep_fp], comp_up[fp_comp[keep_fp]],
                      outer[keep_fp], la[~inside], lb[~inside])
    node_child = np.repeat(np.arange(len(children), dtype=_I64), n_child)
    return msg, JoinState(node_child, comp, comp_rid, comp_key, comp_size, comp_up)


def resolve_block(state: JoinState, block: Block, parent: FragmentInfo | None) -> FragmentInfo:
    """Every node's fragment: closed here, or as the parent says for the fragments passed up."""
    nc = state.comp_rid.size
    info = FragmentInfo(state.comp_rid.copy(), state.comp_key.copy(), state.comp_size.copy(),
                        np.full(nc, block.level, _I64), np.full(nc, block.id, _I64))
    up = np.flatnonzero(state.comp_up >= 0)
    if up.size:
        if parent is None:
            raise ValueError(f"block {block.name} passes fragments up but has no parent")
        src = parent.take(state.comp_up[up])
        for f in fields(FragmentInfo):
            getattr(info, f.name)[up] = getattr(src, f.name)
    return info.take(state.node_comp)


def child_info(state: JoinState, info: FragmentInfo, child: int) -> FragmentInfo:
    """The part of a block's node infos that belongs to child ``child`` (its message order)."""
    return info.take(np.flatnonzero(state.node_child == child))


def run_joins(tree: Octree, leaves: dict[int, JoinMessage]) -> dict[int, FragmentInfo]:
    """The whole join in one process (the reference of the engine's tasks): per chunk id, the
    fragment of each of its pieces (in stage-A order)."""
    states: dict[tuple[int, int], JoinState] = {}
    msgs: dict[tuple[int, int], JoinMessage] = {}
    for level in tree.levels:
        for b in tree.blocks(level):
            kids = [leaves[tree.grid.flat_id(b.lo)]] if level == 0 else [msgs[(level - 1, c.id)] for c in tree.children(b)]
            msgs[(level, b.id)], states[(level, b.id)] = join_block(kids, b, tree)
    infos: dict[tuple[int, int], FragmentInfo | None] = {(tree.top, 0): None}
    out: dict[int, FragmentInfo] = {}
    for level in reversed(tree.levels):
        for b in tree.blocks(level):
            st = states[(level, b.id)]
            own = resolve_block(st, b, infos[(level, b.id)])
            if level == 0:
                out[tree.grid.flat_id(b.lo)] = child_info(st, own, 0)
            for i, c in enumerate(tree.children(b)):
                infos[(level - 1, c.id)] = child_info(st, own, i)
    return out


def catalog(pieces: Sequence[np.ndarray], infos: Sequence[FragmentInfo]):
    """The piece -> canonical id lookup over several chunks' pieces, and the infos of their
    fragments (unique, sorted by canonical id): what stage C of a chunk needs of itself and of the
    chunks whose faces it reads."""
    from em_chunks.ops.ids import IdLookup

    ids = np.concatenate([np.asarray(p, _U64) for p in pieces]) if pieces else np.zeros(0, _U64)
    cat = FragmentInfo(*(np.concatenate([np.asarray(getattr(i, f.name)) for i in infos]) if infos else
                         np.zeros(0, _I64) for f in fields(FragmentInfo)))
    order = np.argsort(ids, kind="stable")
    piece_lookup = IdLookup(ids[order], np.asarray(cat.canonical, _U64)[order])
    _, first = np.unique(np.asarray(cat.canonical, _U64), return_index=True)
    frags = cat.take(first)
    return piece_lookup, FragmentInfo(np.asarray(frags.canonical, _U64), *(np.asarray(getattr(frags, f.name), _I64)
                                                                          for f in fields(FragmentInfo)[1:]))


def select(frags: FragmentInfo, ids: np.ndarray) -> FragmentInfo:
    """The infos of fragments ``ids`` (unique) from a catalog sorted by canonical id."""
    ids = np.asarray(ids, _U64)
    pos = np.searchsorted(frags.canonical, ids)
    if ids.size and not np.array_equal(frags.canonical[np.minimum(pos, frags.canonical.size - 1)], ids):
        raise KeyError("a fragment id is not in the catalog")
    return frags.take(pos)
