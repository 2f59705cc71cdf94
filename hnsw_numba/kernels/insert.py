"""Insertion and in-place update kernels (hnswlib ``addPoint`` / ``updatePoint``).

Locking follows hnswlib, simplified so that a thread never holds two node locks at once:
the global lock word (``header[H_LOCK]``) guards the entry point and is held for a whole
insertion only when the new node raises the top level; a node's lock is taken only while
its own link list is rewritten. Ids are written before a count is published with a
release store, so lock-free readers always see valid ids.

NodeIds, levels, upper-level offsets and vectors are set up by the Python wrapper before
these kernels run (allocation at the edges); the kernels only link.
"""

from __future__ import annotations

import numpy as np

from .atomics import atomic_add, atomic_store_release, spin_lock, spin_unlock
from .jit import helper, inlined, kernel
from .distances import decode_row, dist_pair, dist_query
from .heap import heap_pop, heap_push, sort_pairs
from .layout import H_ENTRY, H_LOCK, H_M, H_MAX_LEVEL, H_NODES
from .search import COUNT_MASK, cand_capacity, greedy_descend, links_view, next_tag, search_layer_grow
from .select import select_heuristic

__all__ = ["insert_kernel", "update_kernel"]


@helper
def _contains(ids, start, n, v):
    """Whether ``v`` is among ``ids[start:start + n]`` (offset instead of a slice: no view)."""
    for t in range(start, start + n):
        if ids[t] == v:
            return True
    return False


@inlined
def alloc_scratch(dim, efc, m0, nres):
    """Per-call scratch of the linking kernels (allocated once, reused for every node).

    Returns ``(q, res_d, res_i, cand_d, cand_i, sc_d, sc_i, sel, tmp_d, tmp_i, out)``:
    the node's float32 vector, the result heap (``nres`` slots), the candidate heap, the
    sorted candidates and selection, and room for merging / shrinking lists.
    """
    nsc = max(nres, efc, m0) + 2
    return (
        np.empty(dim, np.float32),
        np.empty(nres, np.float32),
        np.empty(nres, np.int32),
        np.empty(cand_capacity(efc, m0), np.float32),
        np.empty(cand_capacity(efc, m0), np.int32),
        np.empty(nsc, np.float32),
        np.empty(nsc, np.int32),
        np.empty(nsc, np.int32),
        np.empty(2 * nsc, np.float32),
        np.empty(2 * nsc, np.int32),
        np.empty(2 * nsc, np.int32),
    )


@helper
def _heap_to_sorted(res_d, res_i, n, out_d, out_i):
    """Drain a max-heap of size n into ``out_*`` ascending."""
    m = n
    while n > 0:
        out_d[n - 1] = res_d[0]
        out_i[n - 1] = res_i[0]
        n = heap_pop(res_d, res_i, n)
    return m


@helper
def _publish(lst, cnt):
    atomic_store_release(lst, 0, cnt)


@helper
def _set_own_links(g, rows, metric, node, level, sel, n_sel, max_c, tmp_d, tmp_i, out):
    """Write ``sel[:n_sel]`` as ``node``'s list at ``level`` (merging links others added)."""
    spin_lock(g.locks, node)
    lst = links_view(g, node, level)
    cnt = lst[0] & COUNT_MASK
    if cnt == 0:
        for j in range(n_sel):
            lst[1 + j] = sel[j]
        _publish(lst, n_sel)
    else:
        # Another thread linked to this node meanwhile: keep the best of the union.
        n = np.int64(0)
        for j in range(cnt):
            tmp_i[n] = lst[1 + j]
            n += 1
        for j in range(n_sel):
            if not _contains(tmp_i, np.int64(0), n, sel[j]):
                tmp_i[n] = sel[j]
                n += 1
        for t in range(n):
            tmp_d[t] = dist_pair(metric, rows, node, tmp_i[t])
        sort_pairs(tmp_d, tmp_i, n)
        kept = select_heuristic(metric, rows, tmp_d, tmp_i, n, max_c, out)
        for j in range(kept):
            lst[1 + j] = out[j]
        _publish(lst, kept)
    spin_unlock(g.locks, node)


@helper
def _add_link(g, rows, metric, s, node, level, max_c, tmp_d, tmp_i, out):
    """Add ``node`` to ``s``'s list at ``level``, shrinking it by the heuristic when full.

    Always checks for ``node`` first, even for a brand-new node: a concurrent ``set``
    repairing ``s`` may already have linked the new node there.
    """
    spin_lock(g.locks, s)
    lst = links_view(g, s, level)
    cnt = lst[0] & COUNT_MASK
    if not _contains(lst, np.int64(1), np.int64(cnt), node):
        if cnt < max_c:
            lst[1 + cnt] = node
            _publish(lst, cnt + 1)
        else:
            for j in range(cnt):
                tmp_i[j] = lst[1 + j]
                tmp_d[j] = dist_pair(metric, rows, s, tmp_i[j])
            tmp_i[cnt] = node
            tmp_d[cnt] = dist_pair(metric, rows, s, node)
            sort_pairs(tmp_d, tmp_i, cnt + 1)
            kept = select_heuristic(metric, rows, tmp_d, tmp_i, cnt + 1, max_c, out)
            for j in range(kept):
                lst[1 + j] = out[j]
            _publish(lst, kept)
    spin_unlock(g.locks, s)


@inlined
def _connect(g, rows, metric, node, level, res_d, res_i, n_res, m, is_update, sc_d, sc_i, sel, tmp_d, tmp_i, out, fill=False):
    """hnswlib ``mutuallyConnectNewElement``: select, link node -> selected and back.

    Returns the nearest candidate (the entry point for the next level down).
    """
    n_all = _heap_to_sorted(res_d, res_i, n_res, sc_d, sc_i)
    # A concurrent inserter may already have linked `node` into a list this search
    # walked (readers take no locks, unlike hnswlib's): never select the node itself.
    n = np.int64(0)
    for t in range(n_all):
        if sc_i[t] != node:
            sc_d[n] = sc_d[t]
            sc_i[n] = sc_i[t]
            n += 1
    if n == 0:
        return np.int32(-1), np.float32(0.0)
    m0 = g.links0.shape[1] - 1
    max_c = m0 if level == 0 else m
    n_sel = select_heuristic(metric, rows, sc_d, sc_i, n, m, sel)
    if fill:
        # keepPrunedConnections: top up with the nearest pruned candidates
        t = 0
        while n_sel < min(m, n) and t < n:
            if not _contains(sel, np.int64(0), n_sel, sc_i[t]):
                sel[n_sel] = sc_i[t]
                n_sel += 1
            t += 1
    if is_update:
        spin_lock(g.locks, node)
        lst = links_view(g, node, level)
        for j in range(n_sel):
            lst[1 + j] = sel[j]
        _publish(lst, n_sel)
        spin_unlock(g.locks, node)
    else:
        _set_own_links(g, rows, metric, node, level, sel, n_sel, max_c, tmp_d, tmp_i, out)
    for j in range(n_sel):
        _add_link(g, rows, metric, sel[j], node, level, max_c, tmp_d, tmp_i, out)
    return sc_i[0], sc_d[0]


@inlined
def _insert_one(g, rows, metric, node, efc, visited, q, res_d, res_i, cand_d, cand_i, sc_d, sc_i, sel, tmp_d, tmp_i, out):
    m = g.header[H_M]
    level = np.int64(g.levels[node])
    decode_row(rows, node, q)
    spin_lock(g.header, np.int64(H_LOCK))
    ep = g.header[H_ENTRY]
    if ep < 0:
        g.header[H_MAX_LEVEL] = level
        atomic_store_release(g.header, H_ENTRY, node)
        spin_unlock(g.header, np.int64(H_LOCK))
        return cand_d, cand_i
    max_level = g.header[H_MAX_LEVEL]
    hold_global = level > max_level
    if not hold_global:
        spin_unlock(g.header, np.int64(H_LOCK))
    cur = ep
    dcur = dist_query(metric, rows, np.uint32(cur), q)
    cur, dcur = greedy_descend(g, rows, metric, q, cur, dcur, max_level, level)
    empty_mask = np.empty(0, np.uint8)
    for lev in range(min(level, max_level), -1, -1):
        n_res, cand_d, cand_i = search_layer_grow(
            g, rows, metric, q, cur, dcur, efc, lev, visited, empty_mask, res_d, res_i, cand_d, cand_i
        )
        if n_res == 0:
            # Everything reachable is deleted: link to the entry of this level anyway,
            # so the new node stays connected (hnswlib adds a deleted entry point too).
            res_d[0] = dcur
            res_i[0] = cur
            n_res = 1
        nxt, dnxt = _connect(
            g, rows, metric, node, lev, res_d, res_i, n_res, m, False, sc_d, sc_i, sel, tmp_d, tmp_i, out
        )
        # The next level starts from the nearest candidate unless another thread is still
        # inserting it (no level-0 list yet: its lower lists are empty; see greedy_descend)
        if nxt >= 0 and (g.links0[nxt, 0] & COUNT_MASK) > 0:
            cur, dcur = nxt, dnxt
    if hold_global:
        g.header[H_MAX_LEVEL] = level
        atomic_store_release(g.header, H_ENTRY, node)
        spin_unlock(g.header, np.int64(H_LOCK))
    return cand_d, cand_i


@helper
def rows_dim(rows):
    """Vector dimension of any row class (its first field is the [cap, dim] array)."""
    return rows[0].shape[1]


@kernel
def insert_kernel(g, rows, metric, node_ids, efc, visited, counter):
    """Link the prepared nodes ``node_ids`` (int32[n]) into the graph.

    Vectors, levels and upper-level offsets of the nodes are already in place. Threads
    share ``counter`` (int64[1]) and take one node at a time, as hnswlib's ParallelFor.
    """
    m0 = g.links0.shape[1] - 1
    q, res_d, res_i, cand_d, cand_i, sc_d, sc_i, sel, tmp_d, tmp_i, out = alloc_scratch(rows_dim(rows), efc, m0, efc + 1)
    n = node_ids.shape[0]
    while True:
        i = atomic_add(counter, 0, 1)
        if i >= n:
            break
        cand_d, cand_i = _insert_one(
            g, rows, metric, node_ids[i], efc, visited, q, res_d, res_i, cand_d, cand_i,
            sc_d, sc_i, sel, tmp_d, tmp_i, out,
        )


@inlined
def _update_one(g, rows, metric, node, efc, visited, q, res_d, res_i, cand_d, cand_i, sc_d, sc_i, sel, tmp_d, tmp_i, out, hop_ids, hop_d, hop_i):
    """hnswlib ``updatePoint`` (neighbour probability 1) + ``repairConnectionsForUpdate``."""
    m = g.header[H_M]
    m0 = g.links0.shape[1] - 1
    decode_row(rows, node, q)
    ep = g.header[H_ENTRY]
    max_level = np.int64(g.levels[ep])
    level = np.int64(g.levels[node])
    if ep == node and g.header[H_NODES] == 1:
        return cand_d, cand_i
    # 1. Re-select the lists of the node's neighbours among its two-hop neighbourhood.
    for lev in range(0, level + 1):
        max_c = m0 if lev == 0 else m
        tag = next_tag(visited)
        n_cand = np.int64(0)
        hop_ids[n_cand] = node
        n_cand += 1
        visited[node] = tag
        one = links_view(g, node, lev)
        n_one = one[0] & COUNT_MASK
        if n_one == 0:
            continue
        for j in range(1, n_one + 1):
            a = one[j]
            if visited[a] != tag:
                visited[a] = tag
                hop_ids[n_cand] = a
                n_cand += 1
            two = links_view(g, a, lev)
            n_two = two[0] & COUNT_MASK
            for t in range(1, n_two + 1):
                b = two[t]
                if visited[b] != tag:
                    visited[b] = tag
                    hop_ids[n_cand] = b
                    n_cand += 1
        keep = min(efc, n_cand - 1)
        for j in range(1, n_one + 1):
            neigh = one[j]
            # the `keep` nearest through a bounded max-heap, then ascending into sc_*
            # (the heap helpers are compiled anyway; np.argsort cost 1.5 s of compile)
            n_h = np.int64(0)
            for t in range(n_cand):
                c = hop_ids[t]
                if c == neigh:
                    continue
                n_h = heap_push(hop_d, hop_i, n_h, dist_pair(metric, rows, neigh, c), c)
                if n_h > keep:
                    n_h = heap_pop(hop_d, hop_i, n_h)
            n_h = _heap_to_sorted(hop_d, hop_i, n_h, sc_d, sc_i)
            kept = select_heuristic(metric, rows, sc_d, sc_i, n_h, max_c, sel)
            spin_lock(g.locks, neigh)
            lst = links_view(g, neigh, lev)
            for t in range(kept):
                lst[1 + t] = sel[t]
            _publish(lst, kept)
            spin_unlock(g.locks, neigh)
    # 2. Reconnect the node itself as if it were inserted again.
    cur = ep
    dcur = dist_query(metric, rows, np.uint32(cur), q)
    if level < max_level:
        cur, dcur = greedy_descend(g, rows, metric, q, cur, dcur, max_level, level)
    empty_mask = np.empty(0, np.uint8)
    for lev in range(min(level, max_level), -1, -1):
        n_res, cand_d, cand_i = search_layer_grow(
            g, rows, metric, q, cur, dcur, efc + 1, lev, visited, empty_mask, res_d, res_i, cand_d, cand_i
        )
        # drop the node itself from the candidates
        n_f = np.int64(0)
        for t in range(n_res):
            if res_i[t] != node:
                tmp_d[n_f] = res_d[t]
                tmp_i[n_f] = res_i[t]
                n_f += 1
        if n_f == 0:
            continue
        # rebuild a max-heap of the filtered candidates for _connect
        n_h = np.int64(0)
        for t in range(n_f):
            n_h = heap_push(res_d, res_i, n_h, tmp_d[t], tmp_i[t])
        nxt, dnxt = _connect(
            g, rows, metric, node, lev, res_d, res_i, n_h, m, True, sc_d, sc_i, sel, tmp_d, tmp_i, out
        )
        if nxt >= 0:
            cur, dcur = nxt, dnxt
    return cand_d, cand_i


@kernel
def update_kernel(g, rows, metric, node_ids, efc, visited, counter):
    """Repair the graph around ``node_ids`` whose vectors were replaced in the store."""
    m0 = g.links0.shape[1] - 1
    hop_cap = 1 + m0 + m0 * m0  # the node, its neighbours and theirs
    q, res_d, res_i, cand_d, cand_i, sc_d, sc_i, sel, tmp_d, tmp_i, out = alloc_scratch(rows_dim(rows), efc, m0, max(efc + 2, hop_cap))
    hop_ids = np.empty(hop_cap, np.int32)
    hop_d = np.empty(hop_cap, np.float32)
    hop_i = np.empty(hop_cap, np.int32)
    n = node_ids.shape[0]
    while True:
        i = atomic_add(counter, 0, 1)
        if i >= n:
            break
        cand_d, cand_i = _update_one(
            g, rows, metric, node_ids[i], efc, visited, q, res_d, res_i, cand_d, cand_i,
            sc_d, sc_i, sel, tmp_d, tmp_i, out, hop_ids, hop_d, hop_i,
        )
