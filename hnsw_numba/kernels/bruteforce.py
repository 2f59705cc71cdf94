"""Exact k-NN over a store: the test oracle and the fallback for very selective filters."""

from __future__ import annotations

import numpy as np

from .atomics import atomic_add
from .jit import kernel
from .distances import dist_query
from .heap import heap_pop, heap_push

__all__ = ["bruteforce_kernel"]


@kernel
def bruteforce_kernel(rows, metric, queries, cand_ids, k, counter, chunk, out_ids, out_d):
    """Exact k nearest of each query among ``cand_ids`` (int32[c]), best first.

    Threads share ``counter`` (int64[1]) like ``knn_kernel``; outputs are int32[n, k]
    (pre-filled -1) and float32[n, k] (pre-filled inf).
    """
    n = queries.shape[0]
    kk = min(k, cand_ids.shape[0])
    hd = np.empty(kk + 1, np.float32)
    hi = np.empty(kk + 1, np.int32)
    while True:
        start = atomic_add(counter, 0, chunk)
        if start >= n:
            break
        for qi in range(start, min(start + chunk, n)):
            q = queries[qi]
            size = np.int64(0)
            for c in range(cand_ids.shape[0]):
                v = cand_ids[c]
                d = dist_query(metric, rows, np.uint32(v), q)
                if size < kk:
                    size = heap_push(hd, hi, size, d, v)
                elif d < hd[0]:
                    size = heap_pop(hd, hi, size)
                    size = heap_push(hd, hi, size, d, v)
            while size > 0:
                out_ids[qi, size - 1] = hi[0]
                out_d[qi, size - 1] = hd[0]
                size = heap_pop(hd, hi, size)
