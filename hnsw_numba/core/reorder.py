"""Renumbering an index in breadth-first order, so that a search's memory reads cluster.

The kernels are in :mod:`hnsw_numba.kernels.reorder` (which cites the measurement this
rests on). :func:`reorder_arrays` builds the renumbered graph and key map and moves the
store's rows in place; ``Hnsw.compact(store, reorder=True)`` calls it under the exclusive
lock inside the state's rewrite epoch, exactly as compaction does, so lock-free searches
that overlap it run again.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..kernels.layout import GraphArrays
from ..kernels.reorder import bfs_order_kernel, permute_graph_kernel
from . import hugepages
from .errors import InvalidParameterError
from .graph import Graph
from .keymap import KeyMap
from .state import IndexState

__all__ = ["bfs_order", "reorder_arrays", "permute_store_rows", "READ_MOSTLY_REORDER", "renumber_read_mostly"]

#: From this many nodes an index the library builds for read-mostly use (a scikit-learn
#: estimator's, a Dask shard) is renumbered once built: 1.03-1.18x faster searches at 200,000
#: vectors and 1.04-1.45x at 1,000,000 for ~1 % of the build, nothing measurable at 20,000.
READ_MOSTLY_REORDER = 100_000


def renumber_read_mostly(index: Any, store: Any, num_threads: int | None = None) -> bool:
    """Renumber an ``Hnsw`` just built to be queried rather than grown (``compact(reorder=True)``)
    when it holds ``READ_MOSTLY_REORDER`` nodes or more; returns whether it did."""
    if index.node_count < READ_MOSTLY_REORDER:
        return False
    index.compact(store, num_threads=num_threads, reorder=True)
    return True


def bfs_order(arrays: GraphArrays, node_count: int) -> np.ndarray:
    """Old NodeIds (int32, ``node_count``) in breadth-first order over level 0 from the entry point."""
    order = np.empty(node_count, np.int32)
    bfs_order_kernel(arrays, order, np.zeros(node_count, np.uint8))
    return order


def permute_store_rows(store: Any, order: np.ndarray) -> None:
    """Move row ``order[i]`` of ``store`` to row ``i`` for every ``i < len(order)``, in place.

    A store with ``permute_rows`` (the built-in ones) does it itself, its written flags
    included; any other store's ``rows()`` arrays are permuted. Rows past ``len(order)``
    stay where they are.
    """
    if callable(getattr(store, "permute_rows", None)):
        store.permute_rows(order)
        return
    n = order.shape[0]
    for arr in store.rows():
        arr[:n] = arr[order]


def reorder_arrays(state: IndexState, store: Any) -> tuple[np.ndarray, Graph, KeyMap]:
    """Renumber every node (deleted ones too) in breadth-first order; the caller installs the result.

    Moves the store's rows in place, so the caller holds the exclusive lock inside
    :meth:`IndexState.rewriting`. The graph keeps every edge and link order: searches
    visit the same nodes and return the same keys and distances.

    Returns
    -------
    new_id : int32 (node count,)
        Old -> new NodeId (a permutation).
    graph, keys : Graph, KeyMap
        The renumbered graph (same capacity) and key map.
    """
    g = state.graph
    a = g.arrays
    n = g.node_count
    written = getattr(store, "written", None)
    if isinstance(written, np.ndarray) and n:
        unwritten = (written[:n] == 0) & (a.tombstones[:n] == 0)
        if unwritten.any():
            missing = int(np.argmax(unwritten))
            raise InvalidParameterError(f"the store holds no vector for live NodeId {missing}: not this index's store")
    order = bfs_order(a, n)
    new_id = np.empty(n, np.int32)
    new_id[order] = np.arange(n, dtype=np.int32)
    dst = GraphArrays(
        levels=np.full_like(a.levels, -1),
        links0=hugepages.zeros(a.links0.shape, a.links0.dtype),
        upper_start=np.full_like(a.upper_start, -1),
        upper_links=np.zeros_like(a.upper_links),
        tombstones=np.zeros_like(a.tombstones),
        locks=np.zeros_like(a.locks),
        header=np.zeros_like(a.header),
    )
    permute_graph_kernel(a, order, new_id, dst)
    keys = KeyMap.from_node_keys(state.keys.node_keys[order], n, g.capacity)
    permute_store_rows(store, order)
    return new_id, Graph(dst), keys
