"""Insertion and in-place update kernels (hnswlib ``addPoint`` / ``updatePoint``).

Both link nodes through ``link.link_node`` (locking, and the rules that keep level 0
connected while the index holds deleted nodes, are described there). NodeIds, levels,
upper-level offsets and vectors are set up by the Python wrapper before these kernels run
(allocation at the edges); the kernels only link.
"""

from __future__ import annotations

import numpy as np

from .atomics import atomic_add
from .distances import dist_pair
from .heap import heap_pop, heap_push, heap_to_sorted, sort_pairs
from .jit import inlined, kernel
from .layout import COUNT_MASK, H_ENTRY, H_M, H_NODES
from .link import alloc_candidates, alloc_link_scratch, link_node, replace_links, rows_dim
from .refine import exact_view
from .search import links_view, next_tag
from .select import keep_live, select_heuristic

__all__ = ["insert_kernel", "update_kernel"]


@kernel
def insert_kernel(g, rows, metric, node_ids, efc, visited, counter):
    """Link the prepared nodes ``node_ids`` (int32[n]) into the graph.

    Vectors, levels and upper-level offsets of the nodes are already in place. Threads
    share ``counter`` (int64[1]) and take one node at a time, as hnswlib's ParallelFor.
    """
    m = g.header[H_M]
    m0 = g.links0.shape[1] - 1
    s = alloc_link_scratch(rows_dim(rows), efc, m0, efc + 1, np.int64(0))
    cand_d, cand_i = alloc_candidates(efc, m0)
    n = node_ids.shape[0]
    while True:
        i = atomic_add(counter, 0, 1)
        if i >= n:
            break
        _, cand_d, cand_i = link_node(
            g, rows, metric, node_ids[i], efc, visited, s, cand_d, cand_i,
            is_new=True, drop_self=False, dead_only=False, keep_live=False, keep0=m, keep=m, fill=False,
        )


@inlined
def _reselect_neighbours(g, rows, metric, node, efc, visited, s):
    """hnswlib ``repairConnectionsForUpdate`` with neighbour probability 1.

    On each of the node's levels, every neighbour's list is selected again among the
    node's two-hop neighbourhood (the node, its neighbours and theirs). A deleted
    neighbour's list lets pruned live candidates take its deleted links' slots
    (``select.keep_live``, as a full list taking a back link does): a node brought back
    among deleted ones has no other in-link (the re-link's walk finds nothing live to link
    to), and without one no search from the deleted entry point reaches it.
    """
    m = g.header[H_M]
    m0 = g.links0.shape[1] - 1
    level = np.int64(g.levels[node])
    hop_ids = s.hop_ids
    hop_d = s.hop_d
    hop_i = s.hop_i
    sc_d = s.sc_d
    sc_i = s.sc_i
    sel = s.sel
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
            # (the heap helpers are compiled anyway; np.argsort costs 1.5 s of compile)
            n_h = np.int64(0)
            for t in range(n_cand):
                c = hop_ids[t]
                if c == neigh:
                    continue
                n_h = heap_push(hop_d, hop_i, n_h, dist_pair(metric, rows, neigh, c), c)
                if n_h > keep:
                    n_h = heap_pop(hop_d, hop_i, n_h)
            n_h = heap_to_sorted(hop_d, hop_i, n_h, sc_d, sc_i)
            sort_pairs(sc_d, sc_i, n_h)  # equal distances newest first (sort_pairs)
            kept = select_heuristic(metric, rows, sc_d, sc_i, n_h, max_c, sel)
            if g.tombstones[neigh] != 0:  # its live candidates first (docstring)
                kept = keep_live(g.tombstones, sc_i, n_h, sel, kept, max_c)
            replace_links(g, rows, metric, neigh, lev, sel, kept, max_c, s.out)  # the nodes it drops keep an in-link


@kernel
def update_kernel(g, rows, metric, node_ids, efc, visited, counter):
    """Repair the graph around ``node_ids`` (int32[n]) whose vectors were replaced in the store.

    hnswlib ``updatePoint``: the lists of each node's neighbours are selected again, then
    the node is linked as if it were inserted again. Threads share ``counter`` (int64[1]).
    """
    m = g.header[H_M]
    m0 = g.links0.shape[1] - 1
    hop_cap = 1 + m0 + m0 * m0  # the node, its neighbours and theirs
    s = alloc_link_scratch(rows_dim(rows), efc, m0, max(efc + 2, hop_cap), hop_cap)
    cand_d, cand_i = alloc_candidates(efc, m0)
    n = node_ids.shape[0]
    while True:
        i = atomic_add(counter, 0, 1)
        if i >= n:
            break
        node = node_ids[i]
        if g.header[H_ENTRY] == node and g.header[H_NODES] == 1:
            continue  # the only node: nothing to link
        _reselect_neighbours(g, exact_view(rows), metric, node, efc, visited, s)  # selections compare exact distances
        # the node is in the graph: ask for one result more and drop the node itself
        _, cand_d, cand_i = link_node(
            g, rows, metric, node, efc + 1, visited, s, cand_d, cand_i,
            is_new=False, drop_self=True, dead_only=False, keep_live=False, keep0=m, keep=m, fill=False,
        )
