"""Exact k-NN over a list of allowed NodeIds: gathered from the store, or from a contiguous
copy of their rows.

``exact_top_k`` reads the allowed rows where the store keeps them, four at a time
(``dist_query4``), prefetching a few groups ahead. ``block_top_k`` reads a *block*: a
``*Rows`` tuple of the same class as the store's whose row ``c`` is the stored row of
``ids[c]`` (:class:`~hnsw_numba.core.filters.Filter` keeps one for a filter it searches
exactly more than once), so the scan streams contiguous memory as a matrix-vector product
does, and the distances are those of the store's own kernels. ``block_top_k_many`` answers
several queries over one block in tiles of rows that stay in the core's cache while every
query reads them (a batch then costs compute, not memory bandwidth).

All keep the k best in a bounded max-heap (partial selection: a row enters only when it
beats the current k-th distance) and check tombstones only for such rows.
"""

from __future__ import annotations

import numpy as np
from numba import types
from numba.extending import overload

from .distances import dist_query4, float_conv
from .heap import heap_pop, heap_push
from .jit import JIT_OPTIONS, helper
from .layout import L2_CODE, Qi8Rows
from .prefetch import prefetch, prefetch_at

__all__ = ["exact_top_k", "block_top_k", "block_top_k_many", "block_dists", "AHEAD", "TILE_BYTES", "SCAN_ROWS", "STREAM_BYTES", "STREAM_AHEAD"]

#: Groups of four rows prefetched ahead by the gathering scan.
AHEAD = 8
#: Blocks larger than this (a core's L2) are streamed with software prefetch ...
STREAM_BYTES = 1 << 20
#: ... of the row this many rows ahead.
STREAM_AHEAD = 4
#: Rows whose distances ``block_top_k`` computes before it selects among them.
SCAN_ROWS = 64
#: Bytes of block rows one tile of ``block_top_k_many`` holds (half a 1 MiB L2).
TILE_BYTES = 1 << 19


def block_dists(metric, rows, lo, hi, q, out):
    """Distances of ``q`` to rows ``lo .. hi - 1`` (consecutive) into ``out[0 : hi - lo]``."""


def _is_qi8(rows) -> bool:
    return isinstance(rows, types.BaseNamedTuple) and rows.instance_class is Qi8Rows


@overload(block_dists, jit_options=JIT_OPTIONS)
def _block_dists(metric, rows, lo, hi, q, out):
    # One loop over consecutive rows with the distance body inline (a matrix-vector
    # product: a call of dist_query4 per group of four costs about a quarter more on 384-d
    # rows). A block past the L2 cache is read from L3 or memory: the row STREAM_AHEAD rows
    # on is prefetched, which one core's hardware prefetcher does not do fast enough (a
    # third less time on 10,000 x 384 float32 rows; it costs a little on blocks in L2).
    # Per row the arithmetic is that of dist_query.
    if not _is_qi8(rows):
        conv = float_conv(rows)

        def impl(metric, rows, lo, hi, q, out):
            x = rows[0]
            row_bytes = np.int64(x.shape[1] * x.itemsize)
            stream = x.shape[0] * row_bytes > STREAM_BYTES
            last = x.shape[0] - 1
            one = np.float32(1.0)
            l2 = metric == L2_CODE
            for c in range(lo, hi):
                if stream:
                    for off in range(0, row_bytes, 64):
                        prefetch_at(x, min(c + STREAM_AHEAD, last), off)
                s = np.float32(0.0)
                if l2:
                    for k in range(q.shape[0]):
                        e = q[k] - conv(x[c, k])
                        s += e * e
                    out[c - lo] = s
                else:
                    for k in range(q.shape[0]):
                        s += q[k] * conv(x[c, k])
                    out[c - lo] = one - s

        return impl

    def impl(metric, rows, lo, hi, q, out):
        # Qi8: value = scale * (code - zero), as in dist_query
        x = rows.codes
        row_bytes = np.int64(x.shape[1])
        stream = x.shape[0] * row_bytes > STREAM_BYTES
        last = x.shape[0] - 1
        one = np.float32(1.0)
        l2 = metric == L2_CODE
        for c in range(lo, hi):
            if stream:
                for off in range(0, row_bytes, 64):
                    prefetch_at(x, min(c + STREAM_AHEAD, last), off)
            sc = rows.scale[c]
            z = np.float32(rows.zero[c])
            s = np.float32(0.0)
            if l2:
                for k in range(q.shape[0]):
                    e = q[k] - sc * (np.float32(x[c, k]) - z)
                    s += e * e
                out[c - lo] = s
            else:
                for k in range(q.shape[0]):
                    s += q[k] * (np.float32(x[c, k]) - z)
                out[c - lo] = one - sc * s

    return impl


@helper
def exact_top_k(rows, metric, q, ids, tomb, k, hd, hi):
    """The ``k`` nearest live rows among ``ids`` into the max-heap ``hd``/``hi``; returns its size."""
    n = ids.shape[0]
    data0 = rows[0]
    row_bytes = np.int64(data0.shape[1] * data0.itemsize)
    size = np.int64(0)
    lim = n - 1
    for c in range(min(n, 4 * AHEAD)):
        prefetch(data0, np.uint32(ids[c]))
    c = 0
    while c < n:
        # the group AHEAD groups on: all of its lines (rows up to 2 KiB), so the loads of
        # several groups are in flight while this one is computed
        for u in range(c + 4 * AHEAD, min(c + 4 * AHEAD + 4, n)):
            nxt = np.uint32(ids[u])
            for off in range(0, min(row_bytes, np.int64(2048)), 64):
                prefetch_at(data0, nxt, off)
        a = ids[c]
        b = ids[min(c + 1, lim)]
        e = ids[min(c + 2, lim)]
        f = ids[min(c + 3, lim)]
        d0, d1, d2, d3 = dist_query4(metric, rows, np.uint32(a), np.uint32(b), np.uint32(e), np.uint32(f), q)
        for j in range(min(4, n - c)):
            d = d0 if j == 0 else (d1 if j == 1 else (d2 if j == 2 else d3))
            if size < k or d < hd[0]:
                v = ids[c + j]
                if tomb[v] != 0:
                    continue
                if size == k:
                    size = heap_pop(hd, hi, size)
                size = heap_push(hd, hi, size, d, v)
        c += 4
    return size


@helper
def block_top_k(block, metric, q, ids, tomb, lo, hi, k, hd, hi_, size, buf):
    """As :func:`exact_top_k` over block rows ``lo .. hi - 1`` (row ``c`` is ``ids[c]``'s,
    read in order), into the heap ``hd``/``hi_`` that already holds ``size``; returns its
    size. ``buf``: float32 scratch, its length the rows computed per pass (``SCAN_ROWS``)."""
    step = buf.shape[0]
    for c0 in range(lo, hi, step):
        c1 = min(hi, c0 + step)
        block_dists(metric, block, c0, c1, q, buf)
        for c in range(c0, c1):
            d = buf[c - c0]
            if size < k or d < hd[0]:
                v = ids[c]
                if tomb[v] != 0:
                    continue
                if size == k:
                    size = heap_pop(hd, hi_, size)
                size = heap_push(hd, hi_, size, d, v)
    return size


@helper
def block_top_k_many(block, metric, queries, ids, tomb, k, hd, hi, sizes, buf):
    """:func:`block_top_k` of every row of ``queries`` (float32[nq, dim], prepared): query
    ``i``'s heap is ``hd[i]``/``hi[i]`` (float32 / int32 ``[nq, k + 1]``) of size ``sizes[i]``.

    Rows go in tiles of about ``TILE_BYTES``; each tile is read by every query while it is
    in cache.
    """
    n = ids.shape[0]
    nq = queries.shape[0]
    x0 = block[0]
    tile = max(4, (TILE_BYTES // max(x0.shape[1] * x0.itemsize, 1)) // 4 * 4)
    for qi in range(nq):
        sizes[qi] = 0
    for t0 in range(0, n, tile):
        t1 = min(n, t0 + tile)
        for qi in range(nq):
            sizes[qi] = block_top_k(block, metric, queries[qi], ids, tomb, t0, t1, k, hd[qi], hi[qi], sizes[qi], buf)
