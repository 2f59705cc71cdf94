"""Exact top-k over a block from dot products computed elsewhere (BLAS): a shortlist, re-scored.

A large float block is searched faster by a BLAS matrix-vector (or matrix-matrix) product,
which runs on every core, than by one core's scan. Its dot products round differently from
the store's own distance kernels, and L2 through ``||x||^2 - 2 x.q`` cancels, so they only
*shortlist*: every row whose approximate distance may reach the top-k is re-scored with
:func:`~hnsw_numba.kernels.exact.block_dists` (the scan's kernel), and the answer is the
top-k of those exact distances -- the scan's own answer and distances.

Why the shortlist cannot miss a row of the scan's top-k: let ``a_c`` be row ``c``'s
approximate distance, ``d_c`` its exact one (the scan's), ``E`` a bound on ``|a_c - d_c|``
for every row, and ``T`` the k-th smallest ``a`` among live rows. The k rows at or below
``T`` have ``d <= T + E``. A row with ``a_c > T + 2E`` has ``d_c > T + E``: k rows are
strictly nearer, so it is not in the top-k. Every row with ``a_c <= T + 2E`` is re-scored
(rows tied with the k-th exact distance included).

The bound ``E`` (``margin``): a float32 dot product of length ``n``, in any order, with or
without fused multiply-adds, is within ``g * sum |q_i x_i|`` of the exact one, ``g = n u /
(1 - n u)``, ``u = 2^-24`` (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed.,
section 3.1), and ``sum |q_i x_i| <= |q| |x|``. Both the BLAS dot and the scan's sum carry
such an error; a Qi8 block's dequantized copy adds ``u`` per element, and the final
``1 - s`` (or the float32 rounding of an L2 sum of squares, ``<= (|x| + |q|)^2``) one more
``u``. With ``X`` the largest row norm: ``E = 3 g |q| X + 4 u (1 + |q| X)`` for the inner
product, ``E = 4 g (X + |q|)^2`` for L2 (``g`` taken at ``n + 8``). Higham's bound is
relative and holds without underflow only: a product or sum below float32's smallest normal
``2^-126`` is rounded (or flushed to zero) with an absolute error up to ``2^-126``, so ``E``
carries ``4 (n + 8) 2^-126`` more (vectors of norm ~1e-20 and less: every row re-scored, else
their L2 distances, all subnormal, fell past the bound and their queries came back padded).
Generous factors cost a few more re-scored rows, nothing else.
"""

from __future__ import annotations

import numpy as np

from .atomics import fence_acquire
from .exact import SCAN_ROWS, block_dists, block_top_k
from .heap import bound_groups, bounded_insert, group_bound, heap_pop, heap_push
from .jit import helper, kernel
from .layout import L2_CODE
from .search import ONE_NOT_FINITE, ONE_OK, ONE_STALE, ONE_WRONG_DIM, prepare_query

__all__ = ["shortlist_top_k", "heap_hits", "exact_one_kernel", "shortlist_many_kernel", "error_bound", "prepared_query", "TINY"]

U = 2.0**-24
#: float32's smallest normal: the absolute error of one operation that underflows.
TINY = 2.0**-126
INF = np.float32(np.inf)


@helper
def error_bound(l2, dim, qnorm, xmax):
    """``E`` of the module docstring: bounds ``|approximate - exact|`` distance of any row."""
    nu = (dim + 8) * U
    g = nu / (1.0 - nu)
    under = 4.0 * (dim + 8) * TINY
    if l2:
        r = xmax + qnorm
        return 4.0 * g * r * r + under
    return 3.0 * g * qnorm * xmax + 4.0 * U * (1.0 + qnorm * xmax) + under


@helper
def shortlist_top_k(block, metric, q, ids, tomb, dots, sq, xmax, k, hd, hi, sel, fs, buf):
    """The ``k`` nearest live rows of ``block`` (row ``c`` is ``ids[c]``'s) into the max-heap
    ``hd``/``hi`` (float32 / int32 of ``k + 1``); returns its size.

    ``dots[c]``: an approximate ``x_c . q`` (float32, e.g. from BLAS over a float32 copy of the
    block); ``sq[c]``: ``|x_c|^2`` (float64; read for L2 only); ``xmax``: the largest row norm.
    Scratch: ``sel`` int64 and ``fs`` float64 of ``2 len(ids) + k``; ``buf`` float32 of 1.
    """
    n = ids.shape[0]
    l2 = metric == L2_CODE
    qn = np.float64(0.0)
    for j in range(q.shape[0]):
        qn += np.float64(q[j]) * np.float64(q[j])
    two_e = 2.0 * error_bound(l2, q.shape[0], np.sqrt(qn), xmax)
    # T, the k-th smallest approximate distance of a live row (rounded to float32 as the
    # final heap holds it), is at most group_bound's t: every row within T + 2E is within
    # t + 2E, a shortlist of k rows and a few more found without a heap
    g = bound_groups(n, k)
    ab = fs[:n]
    for c in range(n):
        ab[c] = sq[c] - 2.0 * np.float64(dots[c]) if l2 else -np.float64(dots[c])
    t = np.float64(np.float32(group_bound(ab, n, k, ids, 0, tomb, fs[n:n + g], sel[n:n + g], fs[2 * n:2 * n + k])))
    bound = t + two_e + 4.0 * U * abs(t)
    m = 0
    for c in range(n):
        if ab[c] <= bound:
            sel[m] = c
            m += 1
    # T among the live rows within the bound, sorted into hd[:k]
    size = 0
    for j in range(m):
        c = sel[j]
        a32 = np.float32(ab[c])
        if (size < k or a32 < hd[k - 1]) and tomb[ids[c]] == 0:
            size = bounded_insert(hd, hi, size, k, a32, np.int32(c))
    # the heap holds float32 values; the rounding of a float64 L2 value is covered by the 4u|T| slack
    limit = np.inf
    if size == k:
        t = np.float64(hd[k - 1])
        limit = t + two_e + 4.0 * U * abs(t)
    # exact distances of the shortlist with the scan's kernel, in block order (the scan's),
    # top-k as the scan keeps it
    size = np.int64(0)
    for j in range(m):
        c = sel[j]
        if ab[c] > limit or tomb[ids[c]] != 0:
            continue
        block_dists(metric, block, c, c + 1, q, buf)
        d = buf[0]
        if size < k or d < hd[0]:
            if size == k:
                size = heap_pop(hd, hi, size)
            size = heap_push(hd, hi, size, d, np.int32(ids[c]))
    return size


@kernel
def prepared_query(query, dim, prep):
    """``(status, q)``: raw ``query`` copied to float32 and prepared as the single-query kernels
    do (``prep``; the same rounding, so the scan and the shortlist see the same query)."""
    q = np.empty(dim, np.float32)
    if query.shape[0] != dim:
        return ONE_WRONG_DIM, q
    for j in range(dim):
        q[j] = query[j]
    if prep and not prepare_query(q, prep):
        return ONE_NOT_FINITE, q
    return ONE_OK, q


@kernel
def exact_one_kernel(rows, metric, query, dim, prep, ids, tomb, dots, sq, xmax, k, node_keys):
    """Exact filtered k-NN of one query over ``rows``, a Filter's block (row ``c`` is ``ids[c]``'s):
    ``(status, [(key, distance, NodeId), ...])`` best first, with ``knn_filter_one_kernel``'s
    status codes (``node_keys`` empty: the NodeId stands for the key).

    With ``dots`` of one value per row (BLAS ``x_c . q`` of the prepared query, ``prep`` then
    ``PREP_NONE``) the rows come from :func:`shortlist_top_k`; with ``dots`` empty from the
    scan (:func:`~hnsw_numba.kernels.exact.block_top_k`). Few arguments: for a small block
    the call's own cost (unboxing) is much of the query's.
    """
    res = [(np.int64(0), np.float32(0.0), np.int32(0)) for _ in range(0)]
    if query.shape[0] != dim or dim != rows[0].shape[1]:
        return ONE_WRONG_DIM, res
    fence_acquire()  # rows are read after the caller's row-rewrite count (core.rowwrites)
    q = np.empty(dim, np.float32)
    for j in range(dim):
        q[j] = query[j]
    if prep and not prepare_query(q, prep):
        return ONE_NOT_FINITE, res
    hd = np.empty(k + 1, np.float32)
    hi = np.empty(k + 1, np.int32)
    if dots.shape[0] == ids.shape[0] and ids.shape[0] > 0:
        n = ids.shape[0]
        size = shortlist_top_k(rows, metric, q, ids, tomb, dots, sq, xmax, k, hd, hi, np.empty(2 * n + k, np.int64), np.empty(2 * n + k, np.float64), np.empty(1, np.float32))
    else:
        size = block_top_k(rows, metric, q, ids, tomb, np.int64(0), ids.shape[0], k, hd, hi, np.int64(0), np.empty(SCAN_ROWS, np.float32))
    fence_acquire()  # ... and before the caller reads the count again
    return heap_hits(hd, hi, size, node_keys)


@helper
def heap_hits(hd, hi, size, node_keys):
    """The max-heap ``hd`` / ``hi`` of ``size`` rows as a single-query kernel's answer:
    ``(ONE_OK, [(key, distance, NodeId), ...])`` best first (``node_keys`` empty: the NodeId
    stands for the key), or ``ONE_STALE`` for a NodeId past ``node_keys`` (the caller binds again)."""
    res = [(np.int64(0), np.float32(0.0), np.int32(0)) for _ in range(0)]
    out_d = np.empty(size, np.float32)
    out_i = np.empty(size, np.int32)
    n = size
    while size > 0:
        out_i[size - 1] = hi[0]
        out_d[size - 1] = hd[0]
        size = heap_pop(hd, hi, size)
    with_keys = node_keys.shape[0] > 0
    for j in range(n):
        nid = out_i[j]
        if with_keys and nid >= node_keys.shape[0]:
            return ONE_STALE, res
        res.append((node_keys[nid] if with_keys else np.int64(nid), out_d[j], nid))
    return ONE_OK, res


@kernel
def shortlist_many_kernel(rows, metric, queries, ids, tomb, dots, sq, xmax, k, out_ids, out_d):
    """:func:`shortlist_top_k` of each prepared query ``queries[i]`` with ``dots[i]`` into row
    ``i`` of ``out_ids`` / ``out_d`` (int32 / float32 ``[nq, k]``, best first, padded with
    -1 / inf)."""
    hd = np.empty(k + 1, np.float32)
    hi = np.empty(k + 1, np.int32)
    sel = np.empty(2 * ids.shape[0] + k, np.int64)
    fs = np.empty(2 * ids.shape[0] + k, np.float64)
    buf = np.empty(1, np.float32)
    for i in range(queries.shape[0]):
        size = shortlist_top_k(rows, metric, queries[i], ids, tomb, dots[i], sq, xmax, k, hd, hi, sel, fs, buf)
        for j in range(size, k):
            out_ids[i, j] = -1
            out_d[i, j] = INF
        while size > 0:
            out_ids[i, size - 1] = hi[0]
            out_d[i, size - 1] = hd[0]
            size = heap_pop(hd, hi, size)
