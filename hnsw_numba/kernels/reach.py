"""Linking rules that keep every node reachable at level 0 while the index holds deleted nodes.

hnswlib's heuristic drops a node from a full list when a kept node "covers" it, without
checking that the covering node links to it; a node whose last in-link is dropped is
lost to every search. Deleted nodes never link to newcomers, so after heavy deletion
that happens to whole groups of them. ``link.connect``, ``link``'s back-link step and an
update's rewrite of its neighbours' lists (``insert``) apply these rules (see
docs/design.md, "Deletion and reachability").
"""

from __future__ import annotations

import numpy as np

from .atomics import atomic_store_release, spin_lock, spin_unlock
from .distances import dist_pair
from .jit import helper
from .layout import COUNT_MASK, H_DELETED
from .search import links_view

__all__ = ["contains_id", "keeps_reach", "coverers", "forward_dropped", "hand_over", "copy_list", "rescue_dropped"]


@helper
def contains_id(ids, start, n, v):
    """Whether ``v`` is among ``ids[start:start + n]`` (offset instead of a slice: no view)."""
    for t in range(start, start + n):
        if ids[t] == v:
            return True
    return False


@helper
def keeps_reach(g):
    """Whether linking guards reachability at level 0 (``hand_over``, ``forward_dropped``): while the index holds deleted nodes.

    Without deletions the build stays exactly hnswlib's (tests compare the graphs), which
    strands a few nodes at small ``m`` in high dimensions; with them, pruned lists
    strand whole groups of newcomers, since deleted nodes never link to new ones.
    """
    return g.header[H_DELETED] > 0


@helper
def coverers(g, rows, metric, node, cand_d, cand_i, n_cand, out, n_out):
    """Pair each live node pruned from a shrunk list with the kept node that covers it.

    ``cand_*[:n_cand]``: the list's candidates (nearest first, their distances to the list's
    owner); ``out[:n_out]``: the kept ones. For every live candidate other than ``node`` that
    was dropped, ``(r, e)`` is written to ``out[n_out + 2 t : n_out + 2 t + 2]``: ``r`` is
    the first kept node nearer to ``e`` than the owner (the reason the heuristic dropped
    it), else the nearest kept one. Returns the number of pairs.
    """
    n_pair = np.int64(0)
    for t in range(n_cand):
        e = cand_i[t]
        if e == node or g.tombstones[e] != 0 or contains_id(out, np.int64(0), n_out, e):
            continue
        j = np.int64(0)
        while j < n_out and dist_pair(metric, rows, out[j], e) >= cand_d[t]:
            j += 1
        out[n_out + 2 * n_pair] = out[j] if j < n_out else out[0]
        out[n_out + 2 * n_pair + 1] = e
        n_pair += 1
    return n_pair


@helper
def _append_link(g, r, e, max_c):
    """Append ``e`` to ``r``'s level-0 list if it is missing and there is room; whether ``r`` links to ``e``."""
    spin_lock(g.locks, r)
    lst = links_view(g, r, np.int64(0))
    cnt = np.int64(lst[0] & COUNT_MASK)
    ok = True
    if not contains_id(lst, np.int64(1), cnt, e):
        if cnt < max_c:
            lst[1 + cnt] = e
            atomic_store_release(lst, 0, cnt + 1)
        else:
            ok = False
    spin_unlock(g.locks, r)
    return ok


@helper
def forward_dropped(g, s, r, e, alt, kept, n_kept, max_c):
    """Keep ``e`` reachable after ``s``'s list dropped it: a node ``s`` reaches links to it.

    The first with a free slot takes ``e``: ``r`` (which covers it), ``s`` itself (a
    shrink that drops several nodes leaves room), ``alt`` (the new node), the other nodes
    ``s`` still links to (``kept[:n_kept]``).
    """
    if _append_link(g, r, e, max_c) or _append_link(g, s, e, max_c):
        return
    if alt >= 0 and alt != r and _append_link(g, alt, e, max_c):
        return
    for j in range(n_kept):
        v = kept[j]
        if v != r and v != alt and v != e and _append_link(g, v, e, max_c):
            return


@helper
def hand_over(g, rows, metric, s, node, max_c):
    """Make ``s`` link to ``node`` at level 0, handing one of ``s``'s links over to ``node``.

    The heuristic can prune a new node from every list it was offered to, which leaves
    it without an in-link: no search reaches it. Here ``node`` takes the slot of the link ``e`` of ``s`` that it
    replaces best: a deleted one, else the farthest one that ``node`` already links to,
    else the farthest one, which ``node`` then links to in a free slot of its own list.
    The path ``s -> node -> e`` then keeps ``e`` reachable wherever ``s -> e`` did, so
    the hand-over strands no node (but for a concurrent insertion that fills ``node``'s
    list first).
    """
    own = links_view(g, node, np.int64(0))
    spin_lock(g.locks, s)
    lst = links_view(g, s, np.int64(0))
    cnt = lst[0] & COUNT_MASK
    if contains_id(lst, np.int64(1), np.int64(cnt), node):
        spin_unlock(g.locks, s)
        return
    if cnt < max_c:  # a concurrent rewrite shrank the list
        lst[1 + cnt] = node
        atomic_store_release(lst, 0, cnt + 1)
        spin_unlock(g.locks, s)
        return
    n_own = np.int64(own[0] & COUNT_MASK)
    best = np.int64(1)
    best_rank = np.int64(-1)
    best_d = np.float32(-np.inf)
    for j in range(1, cnt + 1):
        e = lst[j]
        d = dist_pair(metric, rows, s, e)
        rank = np.int64(2) if g.tombstones[e] != 0 else (np.int64(1) if contains_id(own, np.int64(1), n_own, e) else np.int64(0))
        if rank > best_rank or (rank == best_rank and d > best_d):
            best, best_rank, best_d = np.int64(j), rank, d
    victim = lst[best]
    lst[best] = node  # one slot: a lock-free reader sees the old id or the new one
    spin_unlock(g.locks, s)
    if best_rank == 0:
        spin_lock(g.locks, node)
        n_own = np.int64(own[0] & COUNT_MASK)
        if n_own < max_c and not contains_id(own, np.int64(1), n_own, victim):
            own[1 + n_own] = victim
            atomic_store_release(own, 0, n_own + 1)
        spin_unlock(g.locks, node)


@helper
def copy_list(g, node, out):
    """Copy ``node``'s level-0 links into ``out``; return their count."""
    lst = links_view(g, node, np.int64(0))
    cnt = np.int64(lst[0] & COUNT_MASK)
    for j in range(cnt):
        out[j] = lst[1 + j]
    return cnt


@helper
def rescue_dropped(g, rows, metric, owner, old, n_old, new, n_new, max_c):
    """Give an in-link to each live node that ``owner``'s rewritten level-0 list dropped
    (``old[:n_old]`` before, ``new[:n_new]`` after) and that none of its own neighbours
    links back to: its nearest live neighbour takes it (:func:`hand_over`).

    An update or a re-link replaces whole lists (an updated node's, and in hnswlib's
    ``updatePoint`` its neighbours'), and a node whose last in-link was in such a list
    is lost; a deleted node's lists are often the last in-links of the nodes around it.
    A link back from one of the node's own neighbours stands for "still reached" (it is
    not a proof, but a node linked from its neighbourhood is reached through it).
    """
    for t in range(n_old):
        x = old[t]
        if x == owner or g.tombstones[x] != 0 or contains_id(new, np.int64(0), n_new, x):
            continue
        own = links_view(g, x, np.int64(0))
        n_own = np.int64(own[0] & COUNT_MASK)
        back = False
        best = np.int32(-1)  # an int32 id, as every caller of hand_over passes (no int64 twin)
        best_d = np.float32(np.inf)
        for j in range(1, n_own + 1):
            y = own[j]
            if y == owner or g.tombstones[y] != 0:
                continue
            ly = links_view(g, y, np.int64(0))
            if contains_id(ly, np.int64(1), np.int64(ly[0] & COUNT_MASK), x):
                back = True
                break
            d = dist_pair(metric, rows, x, y)
            if d < best_d:
                best, best_d = y, d
        if not back and best >= 0:
            hand_over(g, rows, metric, best, x, max_c)
