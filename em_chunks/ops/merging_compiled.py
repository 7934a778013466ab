"""The merging loop of ``ops/merging.py`` compiled with numba: the same decisions, in the same order.

``_Merger`` (pure Python) is the specification; this is its fast path (used when numba imports,
unless ``EMCHUNKS_MERGER=python``). The state is flat arrays instead of dictionaries:

* a hash map (numba typed dict) from a pair of region roots to their one live edge;
* per region a linked list of its edge entries; a merged region's list is appended to the
  survivor's (the one with the longer list), so an entry moves O(log N) times; dead or stale
  entries are skipped when a list is walked;
* a binary heap of (score key, ident, edge) for rescored edges beside the presorted initial ones;
* histograms of combined edges as sorted (bin, count) runs in a growing pool.

``tests/test_ops_merging.py`` checks that both give identical results.
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.typed import Dict

_F = 1.0 / 4294967296.0  # 2**-32: fixed-point affinity unit


@njit(cache=True)
def _f32_key(x: float, buf: np.ndarray) -> int:
    if x < 0.0:
        x = 0.0
    buf[0] = x  # rounds to float32 like struct.pack("<f")
    return np.int64(buf.view(np.uint32)[0])


@njit(cache=True)
def _find(parent: np.ndarray, x: int) -> int:
    while parent[x] != x:
        parent[x] = parent[parent[x]]
        x = parent[x]
    return x


@njit(cache=True)
def _less(ka, ia, kb, ib) -> bool:
    return ka < kb or (ka == kb and ia < ib)


@njit(cache=True)
def _heap_push(hk, hi, he, size, k, i, e):
    j = size
    hk[j], hi[j], he[j] = k, i, e
    while j > 0:
        p = (j - 1) >> 1
        if _less(hk[j], hi[j], hk[p], hi[p]):
            hk[j], hk[p] = hk[p], hk[j]
            hi[j], hi[p] = hi[p], hi[j]
            he[j], he[p] = he[p], he[j]
            j = p
        else:
            break
    return size + 1


@njit(cache=True)
def _heap_pop(hk, hi, he, size):
    size -= 1
    hk[0], hi[0], he[0] = hk[size], hi[size], he[size]
    j = 0
    while True:
        a, b, m = 2 * j + 1, 2 * j + 2, j
        if a < size and _less(hk[a], hi[a], hk[m], hi[m]):
            m = a
        if b < size and _less(hk[b], hi[b], hk[m], hi[m]):
            m = b
        if m == j:
            break
        hk[j], hk[m] = hk[m], hk[j]
        hi[j], hi[m] = hi[m], hi[j]
        he[j], he[m] = he[m], he[j]
        j = m
    return size


@njit(cache=True)
def _merge_loop(n, ea, eb, key, ident, count, aff_sum, combined, hstart, hbin, hcount, closed, frozen, order,
                stop, kind_mean, quantile):
    ne = ea.size
    buf = np.empty(1, np.float32)
    key0, ident0 = key.copy(), ident.copy()  # the presorted stream's entries, as first queued
    alive = np.ones(ne, np.bool_)
    parent = np.arange(n)
    # per-edge histogram in the pool: offset and length (-1: still the input rows)
    hoff = np.full(ne, -1, np.int64)
    hlen = np.zeros(ne, np.int64)
    pool_b = np.empty(max(16, 2 * hbin.size), np.int64)
    pool_c = np.empty(max(16, 2 * hbin.size), np.int64)
    pool_n = 0
    # adjacency: entries (edge) in per-region linked lists
    ent_edge = np.empty(2 * ne, np.int64)
    ent_next = np.full(2 * ne, -1, np.int64)
    head = np.full(n, -1, np.int64)
    tail = np.full(n, -1, np.int64)
    length = np.zeros(n, np.int64)
    deg = np.zeros(n, np.int64)  # live neighbours: the survivor of a merge is the one with more (as _Merger)
    pair = Dict.empty(key_type=types.int64, value_type=types.int64)
    for e in range(ne):
        for side in range(2):
            x = ea[e] if side == 0 else eb[e]
            s = 2 * e + side
            ent_edge[s] = e
            if head[x] < 0:
                head[x] = s
            else:
                ent_next[tail[x]] = s
            tail[x] = s
            length[x] += 1
        a, b = ea[e], eb[e]
        pair[min(a, b) * n + max(a, b)] = e
        deg[a] += 1
        deg[b] += 1
    hk = np.empty(ne + 1, np.int64)
    hi = np.empty(ne + 1, np.int64)
    he = np.empty(ne + 1, np.int64)
    hsize = 0
    merges = np.empty((max(n, 1), 3), np.int64)
    n_merges = 0
    pos = 0
    n_stream = order.size
    tmp_b = np.empty(512, np.int64)
    tmp_c = np.empty(512, np.int64)
    while True:
        if pos < n_stream and (hsize == 0 or _less(key0[order[pos]], ident0[order[pos]], hk[0], hi[0])):
            e = order[pos]
            k, i = key0[e], ident0[e]
            if k >= stop:
                break
            pos += 1
        elif hsize > 0:
            e, k, i = he[0], hk[0], hi[0]
            if k >= stop:
                break
            hsize = _heap_pop(hk, hi, he, hsize)
        else:
            break
        if not alive[e] or key[e] != k or ident[e] != i:
            continue
        ra, rb = _find(parent, ea[e]), _find(parent, eb[e])
        ca, cb = closed[ra], closed[rb]
        if ca and cb:
            if frozen[ra] or frozen[rb]:
                frozen[ra] = True
                frozen[rb] = True
                continue
        elif ca or cb:
            c = ra if ca else rb
            ok = not frozen[c]
            if ok:  # the only open region it touches, and no frozen neighbour
                n_open, first_open = 0, -1
                s = head[c]
                while s >= 0 and ok:
                    f = ent_edge[s]
                    if alive[f]:
                        nb = _find(parent, ea[f])
                        if nb == c:
                            nb = _find(parent, eb[f])
                        if nb != c:
                            if not closed[nb]:
                                if first_open < 0:
                                    first_open = nb
                                elif nb != first_open:
                                    ok = False
                            elif frozen[nb]:
                                ok = False
                    s = ent_next[s]
            if not ok:
                frozen[c] = True
                continue
        else:
            continue
        # ---- merge ra and rb -----------------------------------------------------------------
        alive[e] = False
        merges[n_merges, 0], merges[n_merges, 1], merges[n_merges, 2] = ra, rb, k
        n_merges += 1
        if deg[ra] >= deg[rb]:
            w, l = ra, rb
        else:
            w, l = rb, ra
        deg[w] += deg[l] - 2
        parent[l] = w
        closed[w] = ca and cb
        del pair[min(ra, rb) * n + max(ra, rb)]
        s = head[l]
        while s >= 0:
            el = ent_edge[s]
            s = ent_next[s]
            if not alive[el]:
                continue
            x, y = ea[el], eb[el]
            nb = _find(parent, x) if _find(parent, x) != w else _find(parent, y)
            if nb == w:  # both ends now w: cannot happen for a live edge
                continue
            # this live edge is l's (its other end nb): does w have an edge to nb?
            lk = min(l, nb) * n + max(l, nb)
            if lk in pair and pair[lk] == el:
                del pair[lk]
            wk = min(w, nb) * n + max(w, nb)
            if wk not in pair:
                pair[wk] = el
                continue
            ew = pair[wk]
            if ew == el:
                continue
            keep, gone = (ew, el) if ew < el else (el, ew)
            pair[wk] = keep
            deg[w] -= 1
            deg[nb] -= 1
            alive[gone] = False
            count[keep] += count[gone]
            aff_sum[keep] += aff_sum[gone]
            if kind_mean:
                nk = _f32_key(1.0 - (aff_sum[keep] * _F) / count[keep], buf)
            else:
                # merge the two sorted histograms into the pool
                m = 0
                ka_, la_ = (hoff[keep], hlen[keep]) if hoff[keep] >= 0 else (-1, hstart[keep + 1] - hstart[keep])
                kb_, lb_ = (hoff[gone], hlen[gone]) if hoff[gone] >= 0 else (-1, hstart[gone + 1] - hstart[gone])
                if pool_n + la_ + lb_ > pool_b.size:
                    nb_ = np.empty(2 * (pool_n + la_ + lb_), np.int64)
                    nc_ = np.empty(2 * (pool_n + la_ + lb_), np.int64)
                    nb_[:pool_n] = pool_b[:pool_n]
                    nc_[:pool_n] = pool_c[:pool_n]
                    pool_b, pool_c = nb_, nc_
                if la_ + lb_ > tmp_b.size:
                    tmp_b = np.empty(2 * (la_ + lb_), np.int64)
                    tmp_c = np.empty(2 * (la_ + lb_), np.int64)
                p, q = 0, 0
                bp, cp, bq, cq = 0, 0, 0, 0
                while p < la_ or q < lb_:
                    if p < la_:
                        bp = pool_b[ka_ + p] if ka_ >= 0 else hbin[hstart[keep] + p]
                        cp = pool_c[ka_ + p] if ka_ >= 0 else hcount[hstart[keep] + p]
                    if q < lb_:
                        bq = pool_b[kb_ + q] if kb_ >= 0 else hbin[hstart[gone] + q]
                        cq = pool_c[kb_ + q] if kb_ >= 0 else hcount[hstart[gone] + q]
                    if q >= lb_ or (p < la_ and bp < bq):
                        tmp_b[m], tmp_c[m] = bp, cp
                        p += 1
                    elif p >= la_ or bq < bp:
                        tmp_b[m], tmp_c[m] = bq, cq
                        q += 1
                    else:
                        tmp_b[m], tmp_c[m] = bp, cp + cq
                        p += 1
                        q += 1
                    m += 1
                pool_b[pool_n:pool_n + m] = tmp_b[:m]
                pool_c[pool_n:pool_n + m] = tmp_c[:m]
                hoff[keep], hlen[keep] = pool_n, m
                pool_n += m
                total = 0
                for j in range(m):
                    total += tmp_c[j]
                pivot = quantile * total // 100 + 1
                acc = 0
                qb = tmp_b[m - 1]
                for j in range(m):
                    acc += tmp_c[j]
                    if acc >= pivot:
                        qb = tmp_b[j]
                        break
                nk = _f32_key(1.0 - (qb + 0.5) / 256.0, buf)
            key[keep] = nk
            if ident[gone] > ident[keep]:
                ident[keep] = ident[gone]
            combined[keep] = True
            if nk < stop:
                hsize = _heap_push(hk, hi, he, hsize, nk, ident[keep], keep)
        # l's list joins w's
        if head[l] >= 0:
            if head[w] < 0:
                head[w] = head[l]
            else:
                ent_next[tail[w]] = head[l]
            tail[w] = tail[l]
            length[w] += length[l]
        head[l] = -1
        tail[l] = -1
        length[l] = 0
    root = np.empty(n, np.int64)
    for x in range(n):
        root[x] = _find(parent, x)
    return (merges[:n_merges], root, frozen, alive, key, ident, count, aff_sum, combined, hoff, hlen,
            pool_b[:pool_n], pool_c[:pool_n])


def merge_regions_compiled(g, s, max_threshold: float, frozen=None):
    """``ops.merging.merge_regions`` computed by the compiled loop (same result)."""
    from em_chunks.ops.merge_graph import MergeGraph, MergeResult, initial_scores, score_keys, stop_key

    n, ne = g.n, int(g.u.size)
    keys = score_keys(initial_scores(s, g)) if ne else np.zeros(0, np.int64)
    stop = stop_key(max_threshold)
    below = np.flatnonzero(keys < stop)
    order = below[np.lexsort((g.ident[below], keys[below]))].astype(np.int64)
    hstart = np.searchsorted(g.hist_edge, np.arange(ne + 1)).astype(np.int64) if s.kind != "mean" else \
        np.zeros(ne + 1, np.int64)
    fr = np.zeros(n, np.bool_) if frozen is None else np.asarray(frozen, np.bool_).copy()
    out = _merge_loop(n, g.u.astype(np.int64), g.v.astype(np.int64), keys.astype(np.int64).copy(),
                      g.ident.astype(np.int64).copy(), g.count.astype(np.int64).copy(),
                      g.aff_sum.astype(np.int64).copy(), g.combined.astype(np.bool_).copy(), hstart,
                      g.hist_bin.astype(np.int64), g.hist_count.astype(np.int64), g.closed.astype(np.bool_).copy(),
                      fr, order, np.int64(stop), s.kind == "mean", np.int64(s.quantile))
    merges, root, frz, alive, _, ident, count, aff_sum, combined, hoff, hlen, pool_b, pool_c = out
    live = np.flatnonzero(alive).astype(np.int64)
    u, v = root[g.u[live]], root[g.v[live]]
    z = np.zeros(0, np.int64)
    if s.kind == "mean":
        he, hb, hc = z, z.copy(), z.copy()
    else:
        new = np.full(ne, -1, np.int64)
        new[live] = np.arange(live.size)
        orig = new[g.hist_edge] >= 0
        orig &= hoff[g.hist_edge] < 0
        pooled = live[hoff[live] >= 0]
        lens = hlen[pooled]
        idx = np.repeat(hoff[pooled], lens) + (np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens))
        he = np.r_[new[g.hist_edge[orig]], np.repeat(new[pooled], lens)].astype(np.int64)
        hb = np.r_[g.hist_bin[orig], pool_b[idx]].astype(np.int64)
        hc = np.r_[g.hist_count[orig], pool_c[idx]].astype(np.int64)
        o = np.lexsort((hb, he))
        he, hb, hc = he[o], hb[o], hc[o]
    edges = MergeGraph(g.closed, u, v, count[live], aff_sum[live], ident[live], he, hb, hc, combined[live])
    m = merges.reshape(-1, 3)
    return MergeResult(m[:, 0].copy(), m[:, 1].copy(), m[:, 2].copy(), root, frz[root], edges, live)
