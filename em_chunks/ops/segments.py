"""From merges to segment ids per fragment, shared by every single-process backend.

A backend (``ops/agglomerate.py``'s python merging, ``ops/agglomerate_waterz.py``'s C++ one) decides
which fragments form a segment; :func:`name_segments` then gives each segment its name (its fragment
with the smallest key, spelled as ``params.naming`` says) after the dust rule (``ops/dust.py``). One
function, called by each backend: the backends cannot disagree on naming or dust.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.sparse import csgraph

from em_chunks.ops.dust import dust, group_links
from em_chunks.ops.fragments import FragmentTable
from em_chunks.ops.merging import stop_key
from em_chunks.ops.params import DecodeParams
from em_chunks.ops.region_graph import EdgeHistograms


def components_below(n: int, a: np.ndarray, b: np.ndarray, level: np.ndarray, threshold: float) -> np.ndarray:
    """Component label of every node under the merges whose level is below ``threshold``."""
    sel = np.asarray(level) < stop_key(threshold)
    if not sel.any():
        return np.arange(n, dtype=np.int64)
    graph = sparse.coo_matrix((np.ones(int(sel.sum()), np.int8), (a[sel], b[sel])), shape=(n, n))
    return csgraph.connected_components(graph, directed=True, connection="weak")[1].astype(np.int64)


def first_of_components(comp: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Per node, the node of its component with the smallest key (a segment's name giver)."""
    if comp.size == 0:
        return np.zeros(0, np.int64)
    order = np.lexsort((keys, comp))
    starts = np.flatnonzero(np.r_[True, comp[order][1:] != comp[order][:-1]])
    leader = np.empty(int(comp.max()) + 1, np.int64)
    leader[comp[order][starts]] = order[starts]
    return leader[comp]


def edge_rows(table: FragmentTable, edges: EdgeHistograms) -> tuple[np.ndarray, np.ndarray]:
    """The table rows (key ranks) of every edge's two fragments."""
    if not len(edges):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return table.index_of(edges.u), table.index_of(edges.v)


def name_segments(table: FragmentTable, edges: EdgeHistograms, comp: np.ndarray, params: DecodeParams
                  ) -> np.ndarray:
    """Segment ids per fragment (uint64, aligned with ``table.ids``, 0 = removed dust) for one
    threshold's components ``comp`` (a label per table row), after dust handling."""
    keys = table.keys.astype(np.int64)
    first = first_of_components(comp, keys)
    if params.dust_merge_size > 0 or params.dust_remove_size > 0:
        rows_u, rows_v = edge_rows(table, edges)
        leaders, seg_of = np.unique(first, return_inverse=True)  # one node per segment
        sizes = np.bincount(seg_of, weights=table.sizes, minlength=leaders.size).astype(np.int64)
        links = group_links(seg_of[rows_u], seg_of[rows_v], edges.max_bin, edges.first_contact)
        root, removed = dust(sizes, keys[leaders], links, params.dust_merge_size, params.dust_remove_size)
        final = leaders[root[seg_of]]
        gone = removed[seg_of]
    else:
        final, gone = first, np.zeros(first.size, bool)
    names = table.ids if params.naming == "packed" else table.keys.astype(np.uint64) + np.uint64(1)
    seg = names[final] if len(table) else np.zeros(0, np.uint64)
    return np.where(gone, np.uint64(0), seg).astype(np.uint64)
