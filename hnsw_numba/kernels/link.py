"""Linking one node into the graph: the walk that insertion, update and repair share.

``link_node`` is hnswlib's ``addPoint`` walk, which its ``updatePoint`` repeats for a moved
node: a greedy descent from the entry point to the node's top level, then on each level from
there down to 0 a beam search around the node's own vector (``search_layer_grow``), the
neighbour heuristic over what it found, and links both ways (``connect``). The callers differ
only in the parameters they pass:

* ``insert_kernel`` links a new node (``is_new``): it may raise the entry point, so it
  reads the entry point under the global lock; it merges its lists with links that other
  inserters add meanwhile; it links to the level's entry when every node it reaches is
  deleted (a new node must be reachable); and it steps down only through nodes that already
  have level-0 links (one still being inserted has no lower lists yet).
* ``update_kernel`` re-links a node whose vector moved (``drop_self``): the node is in the
  graph, so the search asks for ``ef + 1`` results and drops the node's own id before the
  selection; a level with nothing else in reach keeps its list.
* ``repair_kernel`` re-links the levels on which a node links to a deleted one
  (``dead_only``), adds the node's current live links to the candidates (``keep_live``: the
  search may not rediscover them all), selects up to the level's full degree (``keep0``)
  and tops the selection up with pruned candidates (``fill``): a new node gains reverse
  links later, a repaired one has no such second chance.

While the index holds deleted nodes, linking also keeps every node reachable at level 0
(``reach.keeps_reach``): a node a shrunk list drops moves to a node that list still
reaches (``reach.forward_dropped``), a new node that every neighbour pruned takes a
slot of its nearest one (``reach.hand_over``), and a node that a re-link's rewritten list
drops keeps an in-link (``reach.rescue_dropped``). Without deletions the build is exactly hnswlib's.

Locking follows hnswlib, simplified so that a thread never holds two node locks at once:
the global lock word (``header[H_LOCK]``) guards the entry point and is held for a whole
insertion only when the new node raises the top level; a node's lock is taken only while
its own link list is rewritten. Ids are written before a count is published with a
release store, so lock-free readers always see valid ids.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .atomics import atomic_store_release, spin_lock, spin_unlock
from .distances import decode_row, dist_pair, dist_query, dist_query_as4
from .heap import bounded_insert, sort_pairs
from .jit import helper, inlined
from .prefetch import prefetch, prefetch_at
from .layout import COUNT_MASK, H_ENTRY, H_LOCK, H_M, H_MAX_LEVEL
from .search import cand_capacity, greedy_descend, links_view, search_layer_grow
from .reach import contains_id, copy_list, coverers, forward_dropped, hand_over, keeps_reach, rescue_dropped
from .refine import exact_view, refine_links
from .select import keep_live, select_heuristic

__all__ = ["LinkScratch", "alloc_link_scratch", "alloc_candidates", "publish", "links_dead", "connect", "link_node", "rows_dim", "replace_links"]


class LinkScratch(NamedTuple):
    """Fixed-size scratch of the linking kernels: allocated once per kernel call, reused for every node.

    The candidate heap of the layer search is not part of it: ``search_layer_grow``
    replaces that pair of arrays by larger ones when it runs short, so it travels beside
    the tuple (``alloc_candidates``; ``link_node`` takes it and returns it). Carrying it
    inside would mean returning a new tuple of every array after each node, which doubles
    the reference-count operations in the insert kernel's unoptimised code (1,016 against
    548) and adds about 1.5 s to its compile.

    q : float32[dim]
        The node's vector, decoded.
    res_d, res_i : float32[nres], int32[nres]
        Results of the layer search, sorted ascending (room for the caller's extra candidates).
    sc_d, sc_i : float32[nsc], int32[nsc]
        The update's candidates sorted ascending.
    sel : int32[nsc]
        The selection.
    tmp_d, tmp_i, out : float32[2 nsc], int32[2 nsc], int32[2 nsc]
        Room for merging and shrinking link lists.
    hop_ids, hop_d, hop_i : int32[h], float32[h], int32[h]
        The update's two-hop neighbourhood and its heap (``h`` = 0 for the other kernels).
    """

    q: np.ndarray
    res_d: np.ndarray
    res_i: np.ndarray
    sc_d: np.ndarray
    sc_i: np.ndarray
    sel: np.ndarray
    tmp_d: np.ndarray
    tmp_i: np.ndarray
    out: np.ndarray
    hop_ids: np.ndarray
    hop_d: np.ndarray
    hop_i: np.ndarray


@helper
def alloc_link_scratch(dim, efc, m0, nres, hop_cap):
    """A ``LinkScratch`` for beam width ``efc``, ``nres`` result slots and ``hop_cap`` hop slots."""
    nsc = max(nres, efc, m0) + 2
    return LinkScratch(
        np.empty(dim, np.float32),
        np.empty(nres, np.float32),
        np.empty(nres, np.int32),
        np.empty(nsc, np.float32),
        np.empty(nsc, np.int32),
        np.empty(nsc, np.int32),
        np.empty(2 * nsc, np.float32),
        np.empty(2 * nsc, np.int32),
        np.empty(2 * nsc, np.int32),
        np.empty(hop_cap, np.int32),
        np.empty(hop_cap, np.float32),
        np.empty(hop_cap, np.int32),
    )


@helper
def alloc_candidates(ef, m0):
    """A candidate heap ``(float32[c], int32[c])`` for beam width ``ef`` (see ``cand_capacity``)."""
    c = cand_capacity(ef, m0)
    return np.empty(c, np.float32), np.empty(c, np.int32)


@helper
def rows_dim(rows):
    """Vector dimension of any row class (its first field is the [cap, dim] array)."""
    return rows[0].shape[1]


@helper
def publish(lst, cnt):
    """Publish ``cnt`` as the count of the block ``lst`` after its ids (release store)."""
    atomic_store_release(lst, 0, cnt)


@helper
def links_dead(g, u, level):
    """Whether node ``u`` links to a deleted node at ``level``."""
    lst = links_view(g, u, level)
    for j in range(1, (lst[0] & COUNT_MASK) + 1):
        if g.tombstones[lst[j]] != 0:
            return True
    return False


@helper
def _top_up(sel, n_sel, sc_i, n, keep):
    """hnswlib's keepPrunedConnections: add the nearest pruned candidates until ``keep``; return the count."""
    t = 0
    while n_sel < min(keep, n) and t < n:
        if not contains_id(sel, np.int64(0), n_sel, sc_i[t]):
            sel[n_sel] = sc_i[t]
            n_sel += 1
        t += 1
    return n_sel


@helper
def replace_links(g, rows, metric, node, level, sel, n_sel, max_c, out):
    """Write ``sel[:n_sel]`` as ``node``'s whole list at ``level``.

    At level 0, while the index keeps every node reachable (``reach.keeps_reach``), a live
    node the old list held and the new one drops keeps an in-link (``reach.rescue_dropped``);
    ``out`` holds the old list meanwhile. A re-link and an update's rewrite of its
    neighbours' lists both come here.
    """
    rescue = level == 0 and keeps_reach(g)
    n_old = copy_list(g, node, out) if rescue else np.int64(0)
    spin_lock(g.locks, node)
    lst = links_view(g, node, level)
    for j in range(n_sel):
        lst[1 + j] = sel[j]
    publish(lst, n_sel)
    spin_unlock(g.locks, node)
    if rescue:
        rescue_dropped(g, rows, metric, node, out, n_old, sel, n_sel, max_c)


@helper
def _set_own_links(g, rows, metric, node, level, sel, n_sel, max_c, tmp_d, tmp_i, out):
    """Write ``sel[:n_sel]`` as ``node``'s list at ``level`` (merging links others added)."""
    spin_lock(g.locks, node)
    lst = links_view(g, node, level)
    cnt = lst[0] & COUNT_MASK
    if cnt == 0:
        for j in range(n_sel):
            lst[1 + j] = sel[j]
        publish(lst, n_sel)
    else:
        # Another thread linked to this node meanwhile: keep the best of the union.
        n = np.int64(0)
        for j in range(cnt):
            tmp_i[n] = lst[1 + j]
            n += 1
        for j in range(n_sel):
            if not contains_id(tmp_i, np.int64(0), n, sel[j]):
                tmp_i[n] = sel[j]
                n += 1
        for t in range(n):
            tmp_d[t] = dist_pair(metric, rows, node, tmp_i[t])
        sort_pairs(tmp_d, tmp_i, n)
        kept = select_heuristic(metric, rows, tmp_d, tmp_i, n, max_c, out)
        for j in range(kept):
            lst[1 + j] = out[j]
        publish(lst, kept)
    spin_unlock(g.locks, node)


@helper
def _add_link(g, rows, metric, s, node, level, max_c, tmp_d, tmp_i, out):
    """Add ``node`` to ``s``'s list at ``level``, shrinking it by the heuristic when full.

    Always checks for ``node`` first, even for a brand-new node: a concurrent ``set``
    repairing ``s`` may already have linked the new node there. Returns whether ``s``
    links to ``node`` afterwards.
    """
    spin_lock(g.locks, s)
    lst = links_view(g, s, level)
    cnt = lst[0] & COUNT_MASK
    kept = True
    n_pair = np.int64(0)
    n_out = np.int64(0)
    if not contains_id(lst, np.int64(1), np.int64(cnt), node):
        if cnt < max_c:
            lst[1 + cnt] = node
            publish(lst, cnt + 1)
        else:
            # the list's rows first, all at once, so their loads overlap (as in search_layer;
            # with select_heuristic's prefetch the build is 1.03-1.04x faster: docs/design.md)
            data0 = rows[0]
            for j in range(cnt):
                tmp_i[j] = lst[1 + j]
                prefetch(data0, np.uint32(tmp_i[j]))
                prefetch_at(data0, np.uint32(tmp_i[j]), np.int64(64))
            for j in range(cnt):
                tmp_d[j] = dist_pair(metric, rows, s, tmp_i[j])
            tmp_i[cnt] = node
            tmp_d[cnt] = dist_pair(metric, rows, s, node)
            sort_pairs(tmp_d, tmp_i, cnt + 1)
            n_out = select_heuristic(metric, rows, tmp_d, tmp_i, cnt + 1, max_c, out)
            n_out = keep_live(g.tombstones, tmp_i, cnt + 1, out, n_out, max_c)  # deleted nodes yield first
            kept = contains_id(out, np.int64(0), n_out, node)
            for j in range(n_out):
                lst[1 + j] = out[j]
            publish(lst, n_out)
            if level == 0 and keeps_reach(g):
                n_pair = coverers(g, rows, metric, node, tmp_d, tmp_i, cnt + 1, out, n_out)
    spin_unlock(g.locks, s)
    if n_pair > 0:
        alt = node if kept else np.int32(-1)
        for t in range(n_pair):
            forward_dropped(g, s, out[n_out + 2 * t], out[n_out + 2 * t + 1], alt, out, n_out, max_c)
    return kept


@inlined
def connect(g, rows, metric, node, level, sc_d, sc_i, n_res, keep, merge, fill, sel, tmp_d, tmp_i, out):
    """hnswlib ``mutuallyConnectNewElement``: select, link node -> selected and back.

    Selects up to ``keep`` of the ``n_res`` candidates ``sc_*`` (sorted ascending: the layer
    search's results) by the heuristic (topped up with the nearest pruned ones when
    ``fill``), writes them as the node's list (merged with links other threads added
    meanwhile when ``merge``, else replacing the list) and adds the node to each selected
    node's list. Returns the nearest candidate (the entry point for the next level down),
    ``-1`` when there is none.
    """
    # A concurrent inserter may already have linked `node` into a list this search
    # walked (readers take no locks, unlike hnswlib's): never select the node itself.
    n = _drop_node(sc_d, sc_i, n_res, node)
    if n == 0:
        return np.int32(-1), np.float32(0.0)
    max_c = g.links0.shape[1] - 1 if level == 0 else g.header[H_M]
    sort_pairs(sc_d, sc_i, n)  # equal distances newest first, as the heuristic takes them (sort_pairs)
    n_sel = select_heuristic(metric, rows, sc_d, sc_i, n, keep, sel)
    if fill:
        n_sel = _top_up(sel, n_sel, sc_i, n, keep)
    if merge:
        _set_own_links(g, rows, metric, node, level, sel, n_sel, max_c, tmp_d, tmp_i, out)
    else:  # a re-link: a node its old list held and the new one drops keeps an in-link
        replace_links(g, rows, metric, node, level, sel, n_sel, max_c, out)
    linked_back = False
    for j in range(n_sel):
        if _add_link(g, rows, metric, sel[j], node, level, max_c, tmp_d, tmp_i, out):
            linked_back = True
    if level == 0 and n_sel > 0 and not linked_back and keeps_reach(g):
        # every selected neighbour pruned the node: the nearest one links to it anyway
        hand_over(g, rows, metric, sel[0], node, max_c)
    return sc_i[0], sc_d[0]


# The per-caller steps of link_node are helpers rather than inline code: link_node is
# inlined into three kernels, and Numba copies the whole IR of an inlined function (branches
# that the caller's constants prune included) into each caller, which costs compile time
# in proportion to its size.


@helper
def _enter(g, node, level):
    """Read the entry point for a new node under the global lock: ``(entry, max level, hold)``.

    An empty graph makes the node the entry point (entry -1 is returned). When the node
    raises the top level the lock stays held (``hold``) until ``_become_entry``, so no
    other insertion links below a top level that is about to change.
    """
    spin_lock(g.header, np.int64(H_LOCK))
    ep = g.header[H_ENTRY]
    if ep < 0:
        g.header[H_MAX_LEVEL] = level
        atomic_store_release(g.header, H_ENTRY, node)
        spin_unlock(g.header, np.int64(H_LOCK))
        return ep, level, False
    max_level = g.header[H_MAX_LEVEL]
    hold = level > max_level
    if not hold:
        spin_unlock(g.header, np.int64(H_LOCK))
    return ep, max_level, hold


@helper
def _become_entry(g, node, level):
    """Publish ``node`` as the entry point at ``level`` and release the global lock."""
    g.header[H_MAX_LEVEL] = level
    atomic_store_release(g.header, H_ENTRY, node)
    spin_unlock(g.header, np.int64(H_LOCK))


@helper
def _nearest_other(res_d, res_i, n_res, node):
    """The nearest of the ``n_res`` results other than ``node``: ``(NodeId or -1, distance)``."""
    nxt = np.int64(-1)
    best = np.float32(np.inf)
    for t in range(n_res):
        if res_i[t] != node and res_d[t] < best:
            best = res_d[t]
            nxt = np.int64(res_i[t])
    return nxt, best


@helper
def _add_live_links(g, rows, metric, node, level, q, visited, res_d, res_i, n_res):
    """Insert ``node``'s live links at ``level`` that the last search did not reach into the sorted results.

    Stops one short of the arrays' room (nothing falls off); returns the new count.
    """
    tag = visited[visited.shape[0] - 1]  # the tag of the search just run
    lst = links_view(g, node, level)
    for j in range(1, (lst[0] & COUNT_MASK) + 1):
        v = lst[j]
        if g.tombstones[v] == 0 and visited[v] != tag and n_res < res_d.shape[0] - 1:
            n_res = bounded_insert(res_d, res_i, n_res, res_d.shape[0], dist_query_as4(metric, rows, np.uint32(v), q), v)
    return n_res


@helper
def _drop_node(res_d, res_i, n_res, node):
    """Remove ``node`` from the sorted ``res_*[:n_res]`` (the others keep their order); return the count."""
    n = np.int64(0)
    for t in range(n_res):
        if res_i[t] != node:
            res_d[n] = res_d[t]
            res_i[n] = res_i[t]
            n += 1
    return n


@inlined
def link_node(g, rows, metric, node, ef, visited, s, cand_d, cand_i, is_new, drop_self, dead_only, keep_live, keep0, keep, fill):
    """Link ``node`` (its vector in ``rows``, its level in ``g.levels``) on each of its levels.

    Parameters
    ----------
    ef : int
        Beam width of the layer searches.
    s : LinkScratch
    cand_d, cand_i : float32[c], int32[c]
        The candidate heap (``alloc_candidates``).
    is_new : bool
        A node being inserted (see the module docstring); otherwise the node is re-linked.
    drop_self : bool
        Drop the node's own id from the results before the selection.
    dead_only : bool
        Link only the levels on which the node links to a deleted node.
    keep_live : bool
        Add the node's current live links to the candidates.
    keep0, keep : int
        How many neighbours to select at level 0 and above.
    fill : bool
        Top the selection up to ``keep`` with the nearest pruned candidates.

    Returns
    -------
    (int, float32[c'], int32[c'])
        The number of levels linked, and the candidate heap (larger arrays when the
        layer search grew it): the caller passes it on to its next node.
    """
    q = s.q
    res_d = s.res_d
    res_i = s.res_i
    tmp_d = s.tmp_d
    tmp_i = s.tmp_i
    level = np.int64(g.levels[node])
    decode_row(rows, node, q)
    if is_new:
        ep, max_level, hold_global = _enter(g, node, level)
        if ep < 0:  # the first node: it is the entry point now
            return np.int64(0), cand_d, cand_i
    else:
        ep = g.header[H_ENTRY]
        max_level = np.int64(g.levels[ep])
        hold_global = False
    cur = ep
    dcur = dist_query(metric, rows, np.uint32(cur), q)
    cur, dcur = greedy_descend(g, rows, metric, q, cur, dcur, max_level, level)
    linked = np.int64(0)
    empty_mask = np.empty(0, np.uint8)
    # a runtime bool, not the literal True: a Literal argument would compile a second
    # search_layer for the linking paths (tests/kernels/test_compile_budget.py)
    ordered = np.bool_(True)
    for lev in range(min(level, max_level), -1, -1):
        # sorted results (ordered): the selection reads them as they are, no heap drain
        n_res, cand_d, cand_i = search_layer_grow(
            g, rows, metric, q, cur, ef, lev, visited, empty_mask, res_d, res_i, cand_d, cand_i, ordered
        )
        if dead_only and not links_dead(g, node, lev):
            # nothing to repair here: step down from the nearest other node found
            nxt, dnxt = _nearest_other(res_d, res_i, n_res, node)
            if nxt >= 0:
                cur, dcur = nxt, dnxt
            continue
        if keep_live:
            n_res = _add_live_links(g, rows, metric, node, lev, q, visited, res_d, res_i, n_res)
        if drop_self:
            n_res = _drop_node(res_d, res_i, n_res, node)
        refine_links(metric, rows, node, res_d, res_i, n_res)  # a walk copy found them; the heuristic compares exact distances
        if is_new and n_res == 0:
            # Everything reachable is deleted: link to the entry of this level anyway,
            # so the new node stays connected (hnswlib adds a deleted entry point too).
            res_d[0] = dcur
            res_i[0] = cur
            n_res = 1
        nxt, dnxt = connect(
            g, exact_view(rows), metric, node, lev, res_d, res_i, n_res, keep0 if lev == 0 else keep, is_new, fill,
            s.sel, tmp_d, tmp_i, s.out,
        )
        linked += 1
        # The next level starts from the nearest candidate; a new node skips one that
        # another thread is still inserting (no level-0 list yet: its lower lists are
        # empty; see greedy_descend)
        if nxt >= 0 and (not is_new or (g.links0[nxt, 0] & COUNT_MASK) > 0):
            cur, dcur = nxt, dnxt
    if hold_global:
        _become_entry(g, node, level)
    return linked, cand_d, cand_i
