"""The filtered descent: a greedy walk down the upper levels that moves through allowed nodes only.

The plain descent (:func:`.search.greedy_descend`) reaches the node nearest the query
whatever the filter. When the allowed items lie away from the query (a filter
anti-correlated with it), that node sits among filtered-out ones and a level-0 walk from it
spends its beam travelling towards them. As ACORN (Patel et al., SIGMOD 2024) does on every
level, this descent considers allowed nodes only: from the entry point, or from the nearest
allowed node around it on the highest level that has one, it moves greedily on each upper
level to the nearest allowed neighbour and, the upper levels being sparse, looks through a
filtered-out neighbour to its own neighbours on that level. It keeps the nearest allowed
nodes it computes (``KEEP``) and on level 1 expands them best-first (up to ``EXPAND``): the
allowed region need not be convex, so the greedy walk's first local minimum is not its edge.
The level-0 walk (:func:`.filtered.filtered_layer`) starts from all the kept nodes, at the
edge of the allowed region facing the query, the nearest allowed items of which may lie in
several directions.

Readers take no locks: a node met on level ``l`` has an ``l``-level block (it was linked
there), counts are read with ``COUNT_MASK``, and a node without level-0 links (being
inserted) is never moved to or kept, as in the plain descent.
"""

from __future__ import annotations

import numpy as np

from .distances import dist_query
from .heap import heap_pop, heap_push
from .jit import helper
from .layout import COUNT_MASK, H_ENTRY, H_M

__all__ = ["filtered_descend", "descend_starts", "KEEP"]

INF = np.float32(np.inf)
#: Allowed nodes the descent keeps for the level-0 walk to start from.
KEEP = 16
#: Kept nodes the descent expands on level 1 at most.
EXPAND = 32


@helper
def keep(near_d, near_i, n_near, d, v):
    """Offer ``(d, v)`` to the kept nearest allowed nodes: a max-heap of ``near_d.shape[0] - 1``
    (one slot of scratch); returns its size."""
    cap = near_d.shape[0] - 1
    if n_near >= cap and d >= near_d[0]:
        return n_near
    for j in range(n_near):
        if near_i[j] == v:
            return n_near
    n_near = heap_push(near_d, near_i, n_near, d, np.int32(v))
    if n_near > cap:
        n_near = heap_pop(near_d, near_i, n_near)
    return n_near


@helper
def offer(rows, metric, q, nb, cur, dcur, near_d, near_i, n_near):
    """Compute allowed node ``nb``'s distance, offer it to the kept nodes and move to it when it
    is nearer than ``(cur, dcur)``; returns ``(node, distance, kept nodes)``."""
    d = dist_query(metric, rows, np.uint32(nb), q)
    n_near = keep(near_d, near_i, n_near, d, nb)
    if d < dcur:
        return nb, d, n_near
    return cur, dcur, n_near


@helper
def nearest_allowed(g, rows, metric, q, mask, node, level, cur, dcur, near_d, near_i, n_near):
    """The allowed node nearest ``q`` among ``node``'s neighbours on ``level`` and, through
    the filtered-out ones, theirs, capped at ``m`` allowed nodes (ACORN's budget), or
    ``(cur, dcur)`` when none is nearer; every one computed is offered to the kept nodes.
    Returns ``(node, distance, kept nodes)``."""
    upper = g.upper_links
    ustart = g.upper_start
    links0 = g.links0
    m = g.header[H_M]
    base = ustart[node] + (level - 1) * (m + 1)
    cnt = upper[base] & COUNT_MASK
    met = np.int64(0)
    for j in range(1, cnt + 1):
        nb = upper[base + j]
        if mask[np.uint32(nb)] != 0 and (links0[nb, 0] & COUNT_MASK) > 0:
            met += 1
            cur, dcur, n_near = offer(rows, metric, q, nb, cur, dcur, near_d, near_i, n_near)
    # the upper levels are sparse: look through the filtered-out neighbours
    for j in range(1, cnt + 1):
        if met >= m:
            break
        x = upper[base + j]
        if mask[np.uint32(x)] != 0:
            continue
        b2 = ustart[x] + (level - 1) * (m + 1)
        cnt2 = upper[b2] & COUNT_MASK
        for i in range(1, cnt2 + 1):
            nb = upper[b2 + i]
            if mask[np.uint32(nb)] != 0 and nb != node and (links0[nb, 0] & COUNT_MASK) > 0:
                met += 1
                cur, dcur, n_near = offer(rows, metric, q, nb, cur, dcur, near_d, near_i, n_near)
                if met >= m:
                    break
    return cur, dcur, n_near


@helper
def filtered_descend(g, rows, metric, q, mask, seeds, near_d, near_i):
    """Greedy descent over the allowed nodes (see the module docstring) down to level 1.

    ``mask``: uint8 allow-list over NodeIds; ``seeds``: allowed NodeIds offered when nothing
    allowed lies around the entry point on any upper level; ``near_d``/``near_i``: float32 /
    int32 scratch of one more than the nodes to keep. Returns the number of nodes kept in
    ``near_i[:count]`` (0 when nothing allowed was found).
    """
    ep = g.header[H_ENTRY]
    top = np.int64(g.levels[ep])
    cur = np.int32(ep)
    dcur = INF
    n_near = np.int64(0)
    if mask[np.uint32(ep)] != 0:
        dcur = dist_query(metric, rows, np.uint32(ep), q)
        n_near = keep(near_d, near_i, n_near, dcur, cur)
    for level in range(top, 0, -1):
        if dcur == INF:  # not yet on an allowed node: the nearest allowed one around the entry point
            nb, d, n_near = nearest_allowed(g, rows, metric, q, mask, cur, level, np.int32(-1), INF, near_d, near_i, n_near)
            if nb < 0:
                continue  # none on this level: look again one level down, where lists are denser
            cur, dcur = nb, d
        while True:
            nb, d, n_near = nearest_allowed(g, rows, metric, q, mask, cur, level, cur, dcur, near_d, near_i, n_near)
            if nb == cur:
                break
            cur, dcur = nb, d
    if top > 0 and n_near > 0:
        # level 1 best-first over the kept nodes (a beam of their number): the greedy
        # descent stops at the first local minimum, the region's edge is not convex
        done = np.empty(EXPAND, np.int32)
        n_done = 0
        while n_done < EXPAND:
            best = np.int32(-1)
            bd = INF
            for j in range(n_near):
                if near_d[j] < bd:
                    v = near_i[j]
                    seen = False
                    for i in range(n_done):
                        if done[i] == v:
                            seen = True
                            break
                    if not seen:
                        best, bd = v, near_d[j]
            if best < 0:
                break
            done[n_done] = best
            n_done += 1
            _, _, n_near = nearest_allowed(g, rows, metric, q, mask, best, 1, best, bd, near_d, near_i, n_near)
    if n_near == 0:  # nothing allowed around the entry point on any upper level: the seeds
        for s in range(seeds.shape[0]):
            v = seeds[s]
            if (g.links0[np.uint32(v), 0] & COUNT_MASK) > 0:
                n_near = keep(near_d, near_i, n_near, dist_query(metric, rows, np.uint32(v), q), v)
    return n_near


@helper
def descend_starts(g, rows, metric, q, mask, seeds, cur, dcur):
    """Where the level-0 walk of a query the filter avoids starts: ``(node, distance, starts)``,
    the nearest of the nodes the filtered descent keeps and all of them, or ``(cur, dcur,
    seeds)`` when it finds none."""
    near_d = np.empty(KEEP + 1, np.float32)
    near_i = np.empty(KEEP + 1, np.int32)
    n_near = filtered_descend(g, rows, metric, q, mask, seeds, near_d, near_i)
    if n_near == 0:
        return cur, dcur, seeds
    b = np.argmin(near_d[:n_near])
    return near_i[b], near_d[b], near_i[:n_near]
