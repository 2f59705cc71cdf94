"""Keeping a long-lived index healthy: statistics, repair around deleted nodes, compaction.

Deleted nodes stay in the graph (they still route searches), but every link that points
to one is a wasted slot, and after many deletions live nodes lose their good neighbours
and recall decays (a known hnswlib complaint). ``repair`` replaces links to deleted nodes
by the best live nodes around them (re-linking the node as hnswlib's ``updatePoint``
re-links a moved node); ``compact`` (health.py) rebuilds the live nodes into a dense NodeId space.
"""

from __future__ import annotations

import numpy as np

from .atomics import atomic_add
from .jit import helper, kernel
from .distances import decode_row, dist_query
from .heap import heap_push
from .insert import _connect, alloc_scratch
from .layout import H_ENTRY, H_M, H_NODES
from .search import COUNT_MASK, greedy_descend, links_view, search_layer_grow

__all__ = ["repair_kernel", "dead_link_nodes_kernel", "reachable_kernel", "degree_kernel"]


@helper
def _links_dead(g, u, level):
    lst = links_view(g, u, level)
    for j in range(1, (lst[0] & COUNT_MASK) + 1):
        if g.tombstones[lst[j]] != 0:
            return True
    return False


@helper
def _relink_one(g, rows, metric, node, efc, visited, q, res_d, res_i, cand_d, cand_i, sc_d, sc_i, sel, tmp_d, tmp_i, out):
    """Re-link ``node`` on every level where it links to a deleted node.

    Like the second half of hnswlib's ``updatePoint``: search from the entry point with
    the node's own vector (deleted nodes route but are not selected), add its current
    live neighbours to the candidates, select by the heuristic and link back.
    """
    m = g.header[H_M]
    decode_row(rows, node, q)
    ep = g.header[H_ENTRY]
    max_level = np.int64(g.levels[ep])
    level = np.int64(g.levels[node])
    cur = ep
    dcur = dist_query(metric, rows, np.uint32(cur), q)
    if level < max_level:
        cur, dcur = greedy_descend(g, rows, metric, q, cur, dcur, max_level, level)
    changed = 0
    empty_mask = np.empty(0, np.uint8)
    for lev in range(min(level, max_level), -1, -1):
        n_res, cand_d, cand_i = search_layer_grow(
            g, rows, metric, q, cur, dcur, efc, lev, visited, empty_mask, res_d, res_i, cand_d, cand_i
        )
        dead = _links_dead(g, node, lev)
        if dead:
            # keep the live links the node has: the search may not rediscover them all
            tag = visited[visited.shape[0] - 1]
            lst = links_view(g, node, lev)
            for j in range(1, (lst[0] & COUNT_MASK) + 1):
                v = lst[j]
                if g.tombstones[v] == 0 and visited[v] != tag and n_res < res_d.shape[0] - 1:
                    n_res = heap_push(res_d, res_i, n_res, dist_query(metric, rows, np.uint32(v), q), v)
            # select up to the level's full degree (a new node starts with m and gains
            # reverse links later; a repaired one has no such second chance)
            keep = g.links0.shape[1] - 1 if lev == 0 else m
            nxt, dnxt = _connect(
                g, rows, metric, node, lev, res_d, res_i, n_res, keep, True, sc_d, sc_i, sel, tmp_d, tmp_i, out, True
            )
            changed += 1
        else:
            nxt = -1
            dnxt = np.float32(0.0)
            best = np.float32(np.inf)
            for t in range(n_res):
                if res_i[t] != node and res_d[t] < best:
                    best = res_d[t]
                    nxt = res_i[t]
            dnxt = best
        if nxt >= 0:
            cur, dcur = nxt, dnxt
    return changed, cand_d, cand_i


@kernel
def repair_kernel(g, rows, metric, node_ids, efc, visited, counter, changed):
    """Re-link the live ``node_ids`` (int32[n]) that link to deleted nodes; threads share ``counter``.

    ``changed`` (int64[1]) accumulates the number of lists rewritten.
    """
    m0 = g.links0.shape[1] - 1
    # the result heap also takes the node's current live links (up to m0 more)
    q, res_d, res_i, cand_d, cand_i, sc_d, sc_i, sel, tmp_d, tmp_i, out = alloc_scratch(rows[0].shape[1], efc, m0, efc + m0 + 2)
    n = node_ids.shape[0]
    while True:
        i = atomic_add(counter, 0, 1)
        if i >= n:
            break
        c, cand_d, cand_i = _relink_one(
            g, rows, metric, node_ids[i], efc, visited, q, res_d, res_i, cand_d, cand_i,
            sc_d, sc_i, sel, tmp_d, tmp_i, out,
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
            if _links_dead(g, u, level):
                out[u] = 1
                break
    return out


@kernel
def reachable_kernel(g, entry):
    """uint8 mask of the nodes reachable from ``entry`` (through any level)."""
    n = g.header[H_NODES]
    seen = np.zeros(n, np.uint8)
    if entry < 0 or n == 0:
        return seen
    stack = np.empty(n, np.int64)
    top = 0
    stack[0] = entry
    top = 1
    seen[entry] = 1
    while top > 0:
        top -= 1
        u = stack[top]
        for level in range(np.int64(g.levels[u]) + 1):
            lst = links_view(g, u, level)
            for j in range(1, (lst[0] & COUNT_MASK) + 1):
                v = lst[j]
                if seen[v] == 0:
                    seen[v] = 1
                    stack[top] = v
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
