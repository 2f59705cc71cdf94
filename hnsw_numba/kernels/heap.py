"""Fixed-capacity binary heaps over preallocated (distance, id) arrays.

Max-heaps keyed on float32 distance; a min-heap is a max-heap of negated distances.
``bounded_insert`` keeps a sorted array of at most ``ef`` pairs instead (the query paths'
beam results); ``group_bound`` bounds a k-th smallest value without a heap (the exact
searches' shortlists). The caller owns the arrays and the size, so nothing here allocates.
"""

from __future__ import annotations

import numpy as np

from .jit import helper

__all__ = ["heap_push", "heap_pop", "heap_to_sorted", "sort_pairs", "bounded_insert", "group_bound", "bound_groups", "GROUP_K", "GROUP_ROWS"]

#: ``group_bound`` reads ``max(GROUP_K k, n / GROUP_ROWS)`` groups of rows: more groups give a
#: tighter bound for a longer pass over their minima.
GROUP_K = 4
GROUP_ROWS = 16


@helper
def heap_push(dist, ids, size, d, v):
    """Push ``(d, v)`` into the max-heap ``dist[:size]``; return the new size."""
    j = size
    while j > 0:
        p = (j - 1) >> 1
        if dist[p] >= d:
            break
        dist[j] = dist[p]
        ids[j] = ids[p]
        j = p
    dist[j] = d
    ids[j] = v
    return size + 1


@helper
def heap_pop(dist, ids, size):
    """Remove the maximum of the heap ``dist[:size]``; return the new size."""
    # One path to the arrays' last use (no early return): see "One release per helper
    # call" in docs/design.md. Popping the last pair moves dist[0] onto itself.
    size -= 1
    d = dist[size]
    v = ids[size]
    j = np.int64(0)
    c = np.int64(1)
    while c < size:
        r = c + 1
        if r < size and dist[r] > dist[c]:
            c = r
        if d >= dist[c]:
            break
        dist[j] = dist[c]
        ids[j] = ids[c]
        j = c
        c = 2 * j + 1
    dist[j] = d
    ids[j] = v
    return size


@helper
def heap_to_sorted(res_d, res_i, n, out_d, out_i):
    """Drain the max-heap ``res_*[:n]`` into ``out_*[:n]`` ascending; return ``n``."""
    m = n
    while n > 0:
        out_d[n - 1] = res_d[0]
        out_i[n - 1] = res_i[0]
        n = heap_pop(res_d, res_i, n)
    return m


@helper
def sort_pairs(dist, ids, n):
    """Sort ``dist[:n]`` ascending, equal distances by NodeId descending (insertion sort: n is
    a degree or a layer search's results, nearly sorted already).

    The tie order is hnswlib's: its heuristic takes the candidates from a max-heap of
    ``(-distance, id)``. Among exact duplicates it puts the newest node first, so a node
    joining a full list of its duplicates wins a place there; taken in arrival order it never
    did, and most duplicates were left without an in-link.
    """
    for a in range(1, n):
        d = dist[a]
        v = ids[a]
        b = a - 1
        while b >= 0 and (dist[b] > d or (dist[b] == d and ids[b] < v)):
            dist[b + 1] = dist[b]
            ids[b + 1] = ids[b]
            b -= 1
        dist[b + 1] = d
        ids[b + 1] = v


@helper
def bounded_insert(dist: np.ndarray, ids: np.ndarray, n: int, ef: int, d: float, v: int) -> int:
    """Insert ``(d, v)`` into ``dist[:n]``, sorted ascending and at most ``ef`` long; return the new size.

    Larger entries move one slot right; when the array is full the largest falls off, and a
    pair no better than it is not inserted. Equal distances keep their insertion order.

    Parameters
    ----------
    dist, ids : float32[>= ef], int32[>= ef]
        The sorted pairs; ``dist[n - 1]`` is the worst kept.
    n, ef : int
        Current size and bound (``ef`` >= 1).
    d, v : float32, int32
        The new pair.
    """
    # One path to the arrays' last use (see heap_pop): a pair no better than the worst
    # of a full array writes that worst pair back onto itself.
    if n >= ef:
        j = ef - 1
        if d >= dist[j]:
            d = dist[j]
            v = ids[j]
    else:
        j = n
        n += 1
    while j > 0 and dist[j - 1] > d:
        dist[j] = dist[j - 1]
        ids[j] = ids[j - 1]
        j -= 1
    dist[j] = d
    ids[j] = v
    return n


@helper
def bound_groups(n, k):
    """How many groups :func:`group_bound` takes for ``n`` values and a k-th smallest."""
    return min(n, max(GROUP_K * k, n // GROUP_ROWS))


@helper
def group_bound(v, n, k, ids, base, tomb, gmin, garg, mins):
    """An upper bound on the ``k``-th smallest of ``v[:n]`` over live rows (value ``i`` is row
    ``base + i``, NodeId ``ids[base + i]``, live where ``tomb`` holds 0), or inf.

    Rows ``j, j + g, j + 2g, ...`` form group ``j`` (``g = len(gmin)``, at most ``n``), so one
    vectorised pass keeps every group's minimum (``gmin``) and its row (``garg``, int64); the
    k-th smallest minimum of a group whose minimum row is live is the value of k live rows, so
    at least the k-th smallest. A heap fed the values in order makes about ``k + k ln(n / k)``
    pushes (~50 at n = 500, k = 10); this pass, a sorted insertion for the ~``k ln(g / k)``
    minima that improve the bound, and a test per tombstone of those. ``mins``: float64 scratch
    of ``k``. inf where fewer than ``k`` groups have a live finite minimum.
    """
    g = gmin.shape[0]
    for j in range(g):
        gmin[j] = np.inf
        garg[j] = 0
    for r in range(0, n, g):
        for j in range(min(g, n - r)):
            x = v[r + j]
            old = gmin[j]
            gmin[j] = x if x < old else old
            garg[j] = r + j if x < old else garg[j]
    cnt = 0
    for j in range(g):
        x = gmin[j]
        if not x < (mins[k - 1] if cnt == k else np.inf) or tomb[ids[base + garg[j]]] != 0:
            continue
        i = cnt if cnt < k else k - 1
        while i > 0 and mins[i - 1] > x:
            mins[i] = mins[i - 1]
            i -= 1
        mins[i] = x
        if cnt < k:
            cnt += 1
    return mins[k - 1] if cnt == k else np.inf
