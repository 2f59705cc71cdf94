"""Exact distances for a walk's best results, for row classes whose walk reads a copy.

``refine_top(metric, rows, q, res_d, res_i, n, k)`` takes the ``n`` results of a level-0
search sorted ascending (``res_d`` / ``res_i``) and, for ``WalkRows``, replaces the
distances of the first ``min(n, refine_count(k))`` by exact float32 ones read from
``rows.data`` and sorts those again, so the answers carry the vectors' own distances and a
near-tie the float16 copy ordered wrongly is put right. For every other row class it does
nothing and compiles to nothing (an ``@overload`` resolved at typing time).
``refine_heap`` does the same for a walk's max-heap of results (the filtered walks), and
``exact_view(rows)`` gives the rows exact search reads: ``F32Rows(rows.data)`` for
``WalkRows``, ``rows`` itself for every other class.

``refine_links(metric, rows, node, res_d, res_i, n)`` re-scores all ``n`` results of a
linking walk from the node's own float32 row and sorts them again: the neighbour heuristic
then compares exact distances (it reads ``exact_view(rows)``), and only the walk, which
finds the candidates, reads the copy. Rounded distances in the heuristic cost recall where
many candidates lie at nearly equal distances (1,000,000 x 128: 0.9608 against 0.9652 at
ef 64, docs/design.md).
"""

from __future__ import annotations

import numpy as np
from numba import types
from numba.extending import overload

from .distances import dist_query4
from .heap import heap_pop, sort_pairs
from .jit import JIT_OPTIONS, helper
from .layout import F32Rows, WalkRows
from .prefetch import prefetch

__all__ = ["refine_top", "refine_heap", "refine_links", "exact_view", "refine_count", "REFINE_FACTOR", "MERGED_MAX"]

#: Results re-scored per answer wanted: a result the copy ranked within 2k can still enter
#: the top k once exact (float16 rounds each element to 11 significant bits).
REFINE_FACTOR = 2
#: The most rows a walk copy may round together into one group: the resolve check
#: (``core.store.float16_resolves``) refuses groups of ``HALF_GROUP = MERGED_MAX + 1`` rows.
#: The copy ties a group's rows, so their order in its results says nothing.
MERGED_MAX = 20


@helper
def refine_count(k):
    """Results re-scored for ``k`` answers: ``REFINE_FACTOR * k``, and at least ``k - 1`` rows
    and a whole merged group after them (a tied group can begin at rank ``k - 1`` and hold
    any of the true best ``k`` anywhere in it): 20 at k = 1, 29 at k = 10, 2k from k = 19."""
    return max(REFINE_FACTOR * k, k - 1 + MERGED_MAX)


def refine_top(metric, rows, q, res_d, res_i, n, k):
    """Re-score and re-sort the first ``min(n, refine_count(k))`` results (``WalkRows`` only)."""


def _walk_rows(rows) -> bool:
    return isinstance(rows, types.BaseNamedTuple) and rows.instance_class is WalkRows


@overload(refine_top, jit_options=JIT_OPTIONS)
def _refine_top(metric, rows, q, res_d, res_i, n, k):
    if not _walk_rows(rows):

        def noop(metric, rows, q, res_d, res_i, n, k):
            return None

        return noop

    def impl(metric, rows, q, res_d, res_i, n, k):
        m = min(n, refine_count(k))
        if m <= 0:
            return None
        _rescore(metric, rows.data, q, res_d, res_i, m)
        sort_pairs(res_d, res_i, m)  # an insertion sort: the copy's order is nearly right already
        return None

    return impl


def refine_heap(metric, rows, q, res_d, res_i, n, k):
    """Keep the best ``refine_count(k)`` of the max-heap ``res_*[:n]`` with exact distances
    (``WalkRows`` only; a max-heap still, sorted descending); return its size."""


@overload(refine_heap, jit_options=JIT_OPTIONS)
def _refine_heap(metric, rows, q, res_d, res_i, n, k):
    if not _walk_rows(rows):

        def same(metric, rows, q, res_d, res_i, n, k):
            return n

        return same

    def impl(metric, rows, q, res_d, res_i, n, k):
        m = refine_count(k)
        while n > m:
            n = heap_pop(res_d, res_i, n)
        refine_top(metric, rows, q, res_d, res_i, n, k)  # all n: re-scored, sorted ascending
        i, j = 0, n - 1
        while i < j:  # descending order is a max-heap
            res_d[i], res_d[j] = res_d[j], res_d[i]
            res_i[i], res_i[j] = res_i[j], res_i[i]
            i += 1
            j -= 1
        return n

    return impl


def refine_links(metric, rows, node, res_d, res_i, n):
    """Exact distances from row ``node`` for ``res_*[:n]``, sorted again (``WalkRows`` only)."""


@overload(refine_links, jit_options=JIT_OPTIONS)
def _refine_links(metric, rows, node, res_d, res_i, n):
    if not _walk_rows(rows):

        def noop(metric, rows, node, res_d, res_i, n):
            return None

        return noop

    def impl(metric, rows, node, res_d, res_i, n):
        if n > 0:
            _rescore(metric, rows.data, rows.data[node], res_d, res_i, n)
            sort_pairs(res_d, res_i, n)
        return None

    return impl


def exact_view(rows):
    """The rows exact search reads: ``F32Rows(rows.data)`` for ``WalkRows``, else ``rows``."""


@overload(exact_view, jit_options=JIT_OPTIONS)
def _exact_view(rows):
    if _walk_rows(rows):
        return lambda rows: F32Rows(rows.data)
    return lambda rows: rows


@helper
def _rescore(metric, x, q, res_d, res_i, m):
    """Exact float32 distances (rows ``x``) for ``res_i[:m]`` into ``res_d[:m]``."""
    exact = F32Rows(x)
    for j in range(m):  # the float32 rows were not read by the walk: ask for all at once
        prefetch(x, np.uint32(res_i[j]))
    for j in range(0, m, 4):
        # a last group of one to three repeats its last row (see the walk's second pass)
        a = res_i[j]
        b = res_i[min(j + 1, m - 1)]
        c = res_i[min(j + 2, m - 1)]
        d = res_i[min(j + 3, m - 1)]
        d0, d1, d2, d3 = dist_query4(metric, exact, np.uint32(a), np.uint32(b), np.uint32(c), np.uint32(d), q)
        res_d[j] = d0
        if j + 1 < m:
            res_d[j + 1] = d1
        if j + 2 < m:
            res_d[j + 2] = d2
        if j + 3 < m:
            res_d[j + 3] = d3
