"""``knn_row_kernel``: one query answered as a ``(1, k)`` row of keys and one of distances.

``knn_one_kernel`` answers ``Hnsw.search`` with a list of ``(key, distance, NodeId)``
tuples, which Python code turning them into arrays (hnswlib's ``knn_query`` returns a
``(1, k)`` uint64 and a ``(1, k)`` float32 array for one query) unpacks again element by
element: a few microseconds per call right after a search, when every Python operation
runs cache-cold. This kernel writes the two rows directly into arrays the caller owns.
It calls ``knn_one_kernel`` (compiled once, not inlined), so it adds only its own small
body to a first compilation.
"""

from __future__ import annotations

import numpy as np

from .jit import kernel
from .search import ONE_OK, knn_one_kernel

__all__ = ["knn_row_kernel"]


@kernel
def knn_row_kernel(g, rows, metric, query, dim, k, ef, visited, scratch_f, scratch_i, node_keys, prep, out_keys, out_d):
    """``knn_one_kernel``'s search, results written to ``out_keys[0, :k]`` / ``out_d[0, :k]``.

    Returns ``(status, found)``: ``knn_one_kernel``'s status and the number of results;
    slots past ``found`` hold key -1 and distance inf (as ``knn_kernel``'s padding).
    ``out_keys`` is an integer array of at least ``k`` columns (a key is cast to its type),
    ``out_d`` float32; both are left untouched unless the status is ``ONE_OK``.
    """
    status, res = knn_one_kernel(g, rows, metric, query, dim, k, ef, visited, scratch_f, scratch_i, node_keys, prep)
    found = len(res)
    if status != ONE_OK:
        return status, found
    for j in range(found):
        key, d, _ = res[j]
        out_keys[0, j] = key
        out_d[0, j] = d
    for j in range(found, k):
        out_keys[0, j] = -1
        out_d[0, j] = np.inf
    return status, found
