"""Exact top-k over a block from an int8 sketch of its rows: estimates with per-row error bounds,
and the rows the bounds cannot settle re-scored with the scan's kernel.

The sketch (built by :func:`~hnsw_numba.core.sketch.build_sketch`) holds per row ``c`` of
the block's float32 form ``x_c`` (``as_float32``: float16 / bfloat16 widened exactly, Qi8
dequantized) uint8 codes ``u_c`` with ``x_c = lo_c + s_c u_c + e_c`` (``lo_c``, ``s_c``: the
row's minimum and ``(max - min) / 255``), and the terms of the bound: ``|e_c|`` (computed in
float64 and rounded up), ``s_c |u_c|``, ``|x_c|`` and ``|x_c|^2``. A query ``q`` is rounded to
int16 ``q16`` with a power-of-two scale ``sq`` small enough that ``sum q16 u`` cannot overflow
an int32 (and within 15 bits), and every row's dot product is estimated as ``A_c = lo_c sum(q) +
s_c sq sum(q16 u_c)`` (the integer sum four rows at a time with AVX-512 VNNI's ``vpdpbusd``,
else with int16 x int16 -> int32 products, ``vpmaddwd``: :mod:`.codedot`; a quarter of the
float32 block's bytes).

The bound: ``q . x_c - A_c = q . e_c + s_c (q - sq q16) . u_c``, so ``|q . x_c - A_c| <=
|q| |e_c| + |q - sq q16| s_c |u_c|`` (Cauchy-Schwarz; ``r = q - sq q16`` is exact in float64).
The scan's own distance (float32 arithmetic) is within ``F_c`` of the real one, the bound of
:func:`~hnsw_numba.kernels.shortlist.error_bound` with ``|x_c|`` for the largest norm (its
absolute term for products and sums below float32's smallest normal included: without it,
distances of vectors of norm ~1e-22 fell past the bound and the sketch kept other rows); the
float64 arithmetic of the estimate adds a slack of ``2^-40`` times the magnitudes it adds up.
For the inner product (and cosine) ``a_c = 1 - A_c``, for L2 ``a_c = |q|^2 - 2 A_c + |x_c|^2``
(the dot product's bound doubled), and ``E_c`` the sum of the three bounds: ``|a_c - d_c| <=
E_c`` for the scan's distance ``d_c``.

Why re-scoring every row with ``a_c - E_c <= T``, ``T`` the k-th smallest ``a_c + E_c`` among
live rows, returns the scan's answer: the k rows at or below ``T`` have ``d <= T``, so the
k-th smallest exact distance ``D <= T``; a row with ``d_c <= D`` has ``a_c - E_c <= d_c <= T``
and is re-scored (rows tied with ``D`` included). The re-scored rows go through the scan's
heap in block order with their exact distances, so the distances are the scan's bit for bit
(among rows tied at ``D`` the heap may keep others than the scan's, as the BLAS shortlist's).

A filter too large for a block has a sketch of the store's rows ``ids`` (``gather``): the rows
it leaves open are re-scored from the store by NodeId with ``dist_query4``, the gathering scan's
kernel (:func:`~.exact.exact_top_k`), so the distances are that scan's. A range of the rows
answers with the k best of its own rows (its own ``T``): the k best of the ranges' answers are
the whole answer, so the ranges can be read on several cores.
"""

from __future__ import annotations

import math

import numpy as np

from .atomics import fence_acquire
from .codedot import QUERY_LIMIT, code_dots, split_query
from .distances import dist_query4
from .exact import SCAN_ROWS, block_dists, block_top_k, exact_top_k
from .heap import bound_groups, group_bound, heap_pop, heap_push
from .jit import helper, kernel
from .layout import L2_CODE
from .search import ONE_NOT_FINITE, ONE_STALE, ONE_WRONG_DIM, prepare_query
from .shortlist import TINY, heap_hits

__all__ = ["sketch_top_k", "sketch_one_kernel", "quantize_query", "T_LO", "T_SCALE", "T_ERR", "T_SU", "T_NORM", "T_SQ", "TERMS", "CHUNK"]

U = 2.0**-24
#: Relative slack of the float64 arithmetic of an estimate and its bound.
SLACK = 2.0**-40
# Rows of the sketch's float64 ``terms`` [TERMS, n].
T_LO = 0  # lo_c
T_SCALE = 1  # s_c
T_ERR = 2  # |e_c|, rounded up
T_SU = 3  # s_c |u_c|
T_NORM = 4  # |x_c|
T_SQ = 5  # |x_c|^2
TERMS = 6
#: Rows estimated per pass before any is selected.
CHUNK = 512
#: Rows whose lower bounds are compared with ``T`` at once, skipped together when none is within.
SPAN = 64
#: Rows within ``T`` kept between chunks that the first attempt has room for (see
#: :func:`sketch_top_k`).
KEPT = 256


@helper
def quantize_query(q, q16):
    """``q16`` (int16) = ``q / sq`` rounded, ``sq`` a power of two with ``|q16| * 255 * dim``
    within an int32 and ``|q16| <= QUERY_LIMIT`` (two bytes for ``vpdpbusd``); returns ``(sq,
    |q - sq q16|)`` (float64; ``sq`` 0 when the dimension is too large for 8 bits of the query)."""
    d = q.shape[0]
    lim = min(QUERY_LIMIT, (2**31 - 1) // (255 * max(d, 1)))
    qmax = 0.0
    for j in range(d):
        qmax = max(qmax, abs(np.float64(q[j])))
    if lim < 255:
        return 0.0, 0.0
    if qmax == 0.0:
        for j in range(d):
            q16[j] = 0
        return 1.0, 0.0
    m, e = math.frexp(qmax / lim)  # qmax / lim = m 2^e, 0.5 <= m < 1: sq = 2^e >= qmax / lim
    sq = math.ldexp(1.0, e)
    r2 = 0.0
    for j in range(d):
        v = np.float64(q[j]) / sq
        t = min(max(np.floor(v + 0.5), -lim), lim)
        q16[j] = np.int16(t)
        r = np.float64(q[j]) - sq * t
        r2 += r * r
    return sq, np.sqrt(r2)


@helper
def _bounds(l2, dots, c0, cnt, tlo, tsc, terr, tsu, tnorm, tsq, sq, rn, qs, qa, qq, qn, g, under, lbv, ubv):
    """``a_c - E_c`` / ``a_c + E_c`` of rows ``c0 .. c0 + cnt - 1`` (uint64) into ``lbv`` /
    ``ubv`` (``dots[i]``: row ``c0 + i``'s integer sum; ``under``: the scan's underflow term)."""
    f0 = 4.0 * U  # the inner product kernel's error (shortlist.error_bound) is f0 + f1 |x_c|
    f1 = 3.0 * g * qn + 4.0 * U * qn
    if l2:
        for i in range(np.uint64(0), cnt):
            idot = np.float64(dots[i])
            su = tsc[c0 + i] * sq
            xn = tnorm[c0 + i]
            dot = tlo[c0 + i] * qs + su * idot
            big = abs(tlo[c0 + i]) * qa + su * abs(idot) + qn * xn
            a = qq - 2.0 * dot + tsq[c0 + i]
            r = xn + qn
            e = (2.0 * (qn * terr[c0 + i] + rn * tsu[c0 + i]) + 4.0 * g * r * r) * (1.0 + SLACK) + SLACK * (2.0 * big + qq + tsq[c0 + i]) + under
            lbv[i] = a - e
            ubv[i] = a + e
    else:
        for i in range(np.uint64(0), cnt):
            idot = np.float64(dots[i])
            su = tsc[c0 + i] * sq
            xn = tnorm[c0 + i]
            dot = tlo[c0 + i] * qs + su * idot
            big = abs(tlo[c0 + i]) * qa + su * abs(idot) + qn * xn
            a = 1.0 - dot
            e = (qn * terr[c0 + i] + rn * tsu[c0 + i] + f0 + f1 * xn) * (1.0 + SLACK) + SLACK * (big + 1.0) + under
            lbv[i] = a - e
            ubv[i] = a + e

@helper
def _rescore_gathered(rows, metric, q, ids, tomb, k, hd, hi, sel, lbs, m, t):
    """The rows of ``sel[:m]`` with ``lbs <= t`` re-scored from the store's rows by NodeId, four
    at a time with ``dist_query4`` (the gathering scan's kernel and grouping), into the heap."""
    w = np.int64(0)
    for j in range(m):  # the live rows within T, in order, to the front of sel
        c = sel[j]
        if lbs[j] <= t and tomb[ids[c]] == 0:
            sel[w] = c
            w += 1
    size = np.int64(0)
    lim = w - 1
    for j in range(0, w, 4):
        a = ids[sel[j]]
        d0, d1, d2, d3 = dist_query4(metric, rows, np.uint32(a), np.uint32(ids[sel[min(j + 1, lim)]]), np.uint32(ids[sel[min(j + 2, lim)]]),
                                     np.uint32(ids[sel[min(j + 3, lim)]]), q)
        for i in range(min(4, w - j)):
            dist = d0 if i == 0 else (d1 if i == 1 else (d2 if i == 2 else d3))
            if size < k or dist < hd[0]:
                if size == k:
                    size = heap_pop(hd, hi, size)
                size = heap_push(hd, hi, size, dist, np.int32(ids[sel[j + i]]))
    return size


@helper
def sketch_top_k(block, metric, q, ids, tomb, codes, terms, lo, n, k, hd, hi, sel, lbs, ubd, ubi, dots, buf, gather):
    """The ``k`` nearest live rows among rows ``lo .. n - 1`` of ``block`` (row ``c`` is
    ``ids[c]``'s) into the max-heap ``hd``/``hi`` (float32 / int32 of ``k + 1``), the scan's
    answer; returns its size, -1 when the query cannot be quantized (the caller scans), or -2
    when ``sel`` is too short (the caller runs it again with room for every row).

    ``codes`` / ``terms``: the sketch of the rows (module docstring), row ``c`` at ``c``. With
    ``gather`` ``block`` is the store's own rows and row ``c`` is re-scored from row ``ids[c]``
    with the gathering scan's kernel (``dist_query4``, as :func:`~.exact.exact_top_k`). Scratch:
    ``sel`` int64 and ``lbs`` float64 (the rows within ``T``: room for those kept from earlier
    chunks and one chunk, else -2 is returned; ``n - lo`` always suffices); ``ubd`` / ``ubi``
    float64 / int64 of ``k + 1``; ``dots`` int32 (its length the rows estimated per pass) and
    ``buf`` float32 of at least 1.
    """
    d = q.shape[0]
    l2 = metric == L2_CODE
    q16 = np.empty(d, np.int16)
    sq, rn = quantize_query(q, q16)
    if sq == 0.0:
        return np.int64(-1)
    qh = np.empty(d, np.int8)
    ql = np.empty(d, np.int8)
    split_query(q16, qh, ql)
    qs = 0.0
    qa = 0.0
    qq = 0.0
    for j in range(d):
        v = np.float64(q[j])
        qs += v
        qa += abs(v)
        qq += v * v
    qn = np.sqrt(qq) * (1.0 + SLACK)
    nu = (d + 8) * U
    g = nu / (1.0 - nu)
    under = 4.0 * (d + 8) * TINY  # as shortlist.error_bound's
    tlo, tsc, terr, tsu, tnorm, tsq = terms[T_LO], terms[T_SCALE], terms[T_ERR], terms[T_SU], terms[T_NORM], terms[T_SQ]
    step = dots.shape[0]
    lbv = np.empty(step, np.float64)
    ubv = np.empty(step, np.float64)
    # T: the k-th smallest upper bound a_c + E_c among live rows (a max-heap of k). It only
    # falls, so a row whose lower bound is within the final T is within the T current when
    # it is read: keep every such row (sel), then drop those past the final T. The first
    # chunk's group_bound t0 bounds T from above before any row is read, so only rows with
    # an upper bound within t0 enter the heap (k and a few, not ~k ln(n / k)); T is the same.
    size = np.int64(0)
    t = np.inf
    t0 = np.inf
    m = np.int64(0)
    for c0 in range(lo, n, step):
        c1 = min(n, c0 + step)
        if m + (c1 - c0) > sel.shape[0]:
            return np.int64(-2)
        code_dots(codes, c0, c1, q16, qh, ql, dots)
        # the chunk's bounds (vectorised: no branch, and unsigned indices into slices, so no
        # negative-index wrap-around turns the loads into gathers), then the rows within T
        _bounds(l2, dots, np.uint64(c0), np.uint64(c1 - c0), tlo, tsc, terr, tsu, tnorm, tsq, sq, rn, qs, qa, qq, qn, g, under, lbv, ubv)
        if c0 == lo:  # nothing kept yet: sel, lbs and the heap's ubd are the bound's scratch
            gc = bound_groups(c1 - c0, k)
            t0 = t = group_bound(ubv, c1 - c0, k, ids, c0, tomb, lbs[:gc], sel[:gc], ubd[:k])
        for b0 in range(c0, c1, SPAN):
            b1 = min(c1, b0 + SPAN)
            near = np.int64(0)  # counted without a branch (vectorised): once T has fallen most spans have none
            for i in range(np.uint64(b0 - c0), np.uint64(b1 - c0)):
                near += np.int64(lbv[i] <= t)
            if near == 0:
                continue
            for i in range(np.uint64(b0 - c0), np.uint64(b1 - c0)):  # unsigned: no wrap-around arithmetic per row
                lb = lbv[i]
                if lb <= t:
                    c = c0 + np.int64(i)
                    sel[m] = c
                    lbs[m] = lb
                    m += 1
                    ub = ubv[i]
                    if ub <= t0 and (size < k or ub < ubd[0]):
                        if tomb[ids[c]] != 0:
                            continue
                        if size == k:
                            size = heap_pop(ubd, ubi, size)
                        size = heap_push(ubd, ubi, size, ub, np.int64(c))
                        if size == k:
                            t = ubd[0]
        w = np.int64(0)  # drop the rows T has passed since (in order: the scan's)
        for j in range(m):
            if lbs[j] <= t:
                sel[w] = sel[j]
                lbs[w] = lbs[j]
                w += 1
        m = w
    # the exact distances of the rows kept, with the scan's kernel, in block order (the
    # scan's), into the heap as the scan keeps it
    size = np.int64(0)
    if gather:
        return _rescore_gathered(block, metric, q, ids, tomb, k, hd, hi, sel, lbs, m, t)
    for j in range(m):
        if lbs[j] > t:
            continue
        c = sel[j]
        if tomb[ids[c]] != 0:
            continue
        block_dists(metric, block, c, c + 1, q, buf)
        dist = buf[0]
        if size < k or dist < hd[0]:
            if size == k:
                size = heap_pop(hd, hi, size)
            size = heap_push(hd, hi, size, dist, np.int32(ids[c]))
    return size


@kernel
def sketch_one_kernel(rows, metric, query, dim, prep, ids, tomb, codes, terms, k, node_keys, lo, hi, gather):
    """Exact filtered k-NN of one query over rows ``lo .. hi - 1`` of ``rows``, a Filter's block
    (row ``c`` is ``ids[c]``'s) with its sketch ``codes`` / ``terms``: ``(status, [(key, distance,
    NodeId), ...])`` best first, as :func:`~hnsw_numba.kernels.shortlist.exact_one_kernel`
    returns them. With ``gather`` ``rows`` are the store's own (exact) rows and ``codes`` /
    ``terms`` the sketch of rows ``ids`` (:func:`sketch_top_k`). A part ``lo .. hi - 1`` of the
    rows returns the k best of that part: the parts' answers merged are the whole one's."""
    res = [(np.int64(0), np.float32(0.0), np.int32(0)) for _ in range(0)]
    if query.shape[0] != dim or dim != rows[0].shape[1] or dim != codes.shape[1]:
        return ONE_WRONG_DIM, res
    n = ids.shape[0]
    if not (0 <= lo <= hi <= n and codes.shape[0] == n and terms.shape[1] == n):
        return ONE_WRONG_DIM, res
    if gather and hi > lo and ids[hi - 1] >= rows[0].shape[0]:  # ids ascend: rows older than the filter
        return ONE_STALE, res
    fence_acquire()  # rows are read after the caller's row-rewrite count (core.rowwrites)
    q = np.empty(dim, np.float32)
    for j in range(dim):
        q[j] = query[j]
    if prep and not prepare_query(q, prep):
        return ONE_NOT_FINITE, res
    hd = np.empty(k + 1, np.float32)
    hi_ = np.empty(k + 1, np.int32)
    buf = np.empty(SCAN_ROWS, np.float32)
    # room for the few dozen rows within T a query usually keeps (an array of every row costs
    # page faults on each call); near duplicates that keep more run again with room for all
    room = min(hi - lo, KEPT + CHUNK)
    ubd, ubi, dots = np.empty(k + 1, np.float64), np.empty(k + 1, np.int64), np.empty(CHUNK, np.int32)
    size = sketch_top_k(rows, metric, q, ids, tomb, codes, terms, lo, hi, k, hd, hi_, np.empty(room, np.int64), np.empty(room, np.float64), ubd, ubi, dots, buf, gather)
    if size == -2:
        size = sketch_top_k(rows, metric, q, ids, tomb, codes, terms, lo, hi, k, hd, hi_, np.empty(hi - lo, np.int64), np.empty(hi - lo, np.float64), ubd, ubi, dots, buf,
                            gather)
    if size < 0:  # no int16 form of the query: the scan
        if gather:
            size = exact_top_k(rows, metric, q, ids[lo:hi], tomb, k, hd, hi_)
        else:
            size = block_top_k(rows, metric, q, ids, tomb, lo, hi, k, hd, hi_, np.int64(0), buf)
    fence_acquire()  # ... and before the caller reads the count again
    return heap_hits(hd, hi_, size, node_keys)
