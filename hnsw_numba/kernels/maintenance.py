"""Keeping a long-lived index healthy: statistics, repair around deleted nodes, compaction.

Deleted nodes stay in the graph (they still route searches), but every link that points
to one is a wasted slot, and after many deletions live nodes lose their good neighbours
and recall decays (a known hnswlib complaint). ``repair`` replaces links to deleted nodes
by the best live nodes around them (re-linking the node as hnswlib's ``updatePoint``
re-links a moved node, with ``link``'s reachability rules); ``compact`` (``core.health``) rebuilds the live nodes into a dense NodeId space.
"""

from __future__ import annotations

import numpy as np

from .atomics import atomic_add
from .jit import kernel
from .layout import COUNT_MASK, H_M, H_NODES
from .link import alloc_candidates, alloc_link_scratch, link_node, links_dead, rows_dim
from .search import links_view

__all__ = ["repair_kernel", "dead_link_nodes_kernel", "reach_parents_kernel", "reaching_kernel", "degree_kernel"]


@kernel
def repair_kernel(g, rows, metric, node_ids, efc, visited, counter, changed):
    """Re-link the live ``node_ids`` (int32[n]) that link to deleted nodes; threads share ``counter``.

    Like the second half of hnswlib's ``updatePoint``: the node's own vector is searched
    from the entry point down (deleted nodes route but are not selected), and on each level
    where the node links to a deleted node its live links join the candidates and the
    heuristic selects up to the level's full degree. ``changed`` (int64[1]) accumulates
    the number of lists rewritten.
    """
    m = g.header[H_M]
    m0 = g.links0.shape[1] - 1
    # the result heap also takes the node's current live links (up to m0 more)
    s = alloc_link_scratch(rows_dim(rows), efc, m0, efc + m0 + 2, np.int64(0))
    cand_d, cand_i = alloc_candidates(efc, m0)
    n = node_ids.shape[0]
    while True:
        i = atomic_add(counter, 0, 1)
        if i >= n:
            break
        c, cand_d, cand_i = link_node(
            g, rows, metric, node_ids[i], efc, visited, s, cand_d, cand_i,
            is_new=False, drop_self=False, dead_only=True, keep_live=True, keep0=m0, keep=m, fill=True,
        )
        if c:
            atomic_add(changed, 0, c)


@kernel
def dead_link_nodes_kernel(g):
    """uint8 mask: live nodes with a link (at any level) to a deleted node."""
    n = g.header[H_NODES]
    out = np.zeros(n, np.uint8)
    for u in range(n):
        if g.tombstones[u] != 0:
            continue
        for level in range(np.int64(g.levels[u]) + 1):
            # an int32 NodeId, as repair_kernel passes: one compiled links_dead serves both
            if links_dead(g, np.int32(u), level):
                out[u] = 1
                break
    return out


@kernel
def reach_parents_kernel(g, entry):
    """int32 array: for each node that level-0 links reach from ``entry``, the node whose
    link reached it first (``entry`` itself for ``entry``); -1 for the others.

    Level 0 only: a search returns what its level-0 walk meets, and a node that only
    upper-level links reach is never among its results. The parents' links form a
    spanning tree of what ``entry`` reaches: a link outside it can be replaced without
    losing a node (``core.health``'s repair).
    """
    n = g.header[H_NODES]
    parent = np.full(n, -1, np.int32)
    if entry < 0 or n == 0:
        return parent
    stack = np.empty(n, np.int64)
    stack[0] = entry
    top = 1
    parent[entry] = np.int32(entry)
    while top > 0:
        top -= 1
        u = stack[top]
        lst = g.links0[u]
        for j in range(1, (lst[0] & COUNT_MASK) + 1):
            v = lst[j]
            if v < n and parent[v] < 0:  # a node past the count read: an insert running beside stats()
                parent[v] = np.int32(u)
                stack[top] = v
                top += 1
    return parent


@kernel
def reaching_kernel(g, entry):
    """uint8 mask of the nodes whose level-0 links lead to ``entry``.

    A search's level-0 walk starts where its descent lands (any node on level 1 or above):
    one that cannot reach the entry point at level 0 may miss nodes the entry reaches.
    Inserts may run beside it (``stats()``): links to nodes past the count it read are
    skipped, and a list that grew between its two passes adds no more than was counted.
    """
    n = g.header[H_NODES]
    seen = np.zeros(n, np.uint8)
    if entry < 0 or n == 0:
        return seen
    start = np.zeros(n + 1, np.int64)  # the level-0 links reversed, as CSR
    for u in range(n):
        lst = g.links0[u]
        for j in range(1, (lst[0] & COUNT_MASK) + 1):
            if lst[j] < n:
                start[lst[j] + 1] += 1
    for v in range(n):
        start[v + 1] += start[v]
    fill = start[:n].copy()
    into = np.empty(start[n], np.int32)
    for u in range(n):
        lst = g.links0[u]
        for j in range(1, (lst[0] & COUNT_MASK) + 1):
            v = lst[j]
            if v < n and fill[v] < start[v + 1]:
                into[fill[v]] = u
                fill[v] += 1
    stack = np.empty(n, np.int64)
    stack[0] = entry
    top = 1
    seen[entry] = 1
    while top > 0:
        top -= 1
        v = stack[top]
        for i in range(start[v], fill[v]):  # fill: the in-links written (a list may have shrunk meanwhile)
            u = into[i]
            if seen[u] == 0:
                seen[u] = 1
                stack[top] = u
                top += 1
    return seen


@kernel
def degree_kernel(g, level):
    """Link counts of every node at ``level`` (-1 for nodes below that level)."""
    n = g.header[H_NODES]
    out = np.full(n, -1, np.int32)
    for u in range(n):
        if g.levels[u] >= level:
            out[u] = links_view(g, u, level)[0] & COUNT_MASK
    return out
