"""Python side of index maintenance: ``stats``, ``repair`` and ``compact`` (see maintenance.py)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .graph import Graph, draw_levels
from ..kernels.insert import insert_kernel
from .keymap import KeyMap
from ..kernels.maintenance import dead_link_nodes_kernel, degree_kernel, reachable_kernel, repair_kernel
from .parallel import resolve_threads, run_parallel

__all__ = ["index_stats", "repair_index", "compact_index"]


def index_stats(index) -> dict[str, Any]:
    """Counts and histograms describing the graph's health (see ``Hnsw.stats``)."""
    g = index._graph
    a = g.arrays
    n = g.node_count
    levels = a.levels[:n]
    live = a.tombstones[:n] == 0
    reach = reachable_kernel(a, np.int64(g.entry_point)) if n else np.zeros(0, np.uint8)
    deg0 = degree_kernel(a, 0) if n else np.zeros(0, np.int32)
    dead_links = 0
    if n:
        cols = np.arange(1, a.links0.shape[1])
        valid = cols[None, :] <= (a.links0[:n, :1] & 0xFFFF)
        targets = np.where(valid, a.links0[:n, 1:], 0)
        dead_links = int((valid & (a.tombstones[targets] != 0) & live[:, None]).sum())
    return {
        "live": int(live.sum()),
        "deleted": int(n - live.sum()),
        "node_count": n,
        "capacity": g.capacity,
        "max_level": g.max_level,
        "entry_point": g.entry_point,
        "level_histogram": np.bincount(levels.astype(np.int64), minlength=1).tolist() if n else [],
        "degree_histogram_level0": np.bincount(deg0[live], minlength=a.links0.shape[1]).tolist() if n else [],
        "live_links_to_deleted_level0": dead_links,
        "unreachable_live": int((live & (reach == 0)).sum()),
        "bytes": {**g.nbytes(), "keys": index._keys.nbytes()},
    }


def repair_index(index, store, num_threads: int | None = None) -> int:
    """Re-link every live node that links to a deleted one; returns the lists rewritten."""
    rows = index._rows_for(store)
    with index._rw.exclusive():
        a = index._graph.arrays
        if index.node_count == 0 or index._graph.entry_point < 0:
            return 0
        todo = np.flatnonzero(dead_link_nodes_kernel(a)).astype(np.int32)
        if todo.shape[0] == 0:
            return 0
        counter = np.zeros(1, np.int64)
        changed = np.zeros(1, np.int64)
        code = index.metric.code
        efc = index.config.effective_ef_construction

        def work() -> None:
            repair_kernel(a, rows, code, todo, efc, index._visited.acquire(), counter, changed)

        run_parallel(work, resolve_threads(num_threads, todo.shape[0], 16))
        return int(changed[0])


def _compact_store(store, keep: np.ndarray) -> None:
    """Move rows ``keep`` to the front of the store (in place), clearing the rest."""
    if callable(getattr(store, "compact_rows", None)):
        store.compact_rows(keep)
        return
    k = keep.shape[0]
    arrays = list(store.rows())
    if hasattr(store, "_written"):
        arrays.append(store._written)
    for arr in arrays:
        arr[:k] = arr[keep]
        arr[k:] = 0


def compact_index(index, store, num_threads: int | None = None) -> np.ndarray:
    """Rebuild the live nodes into a fresh, dense NodeId space, in place.

    The store's rows move to the front in NodeId order and the graph is built anew over
    them (fresh levels, all cores), so the result has the quality of a fresh build over the
    same contents. Returns old -> new NodeId (-1 for dropped nodes).
    """
    index._check_writable()
    rows = index._rows_for(store)
    with index._rw.exclusive():
        g = index._graph
        a = g.arrays
        n = g.node_count
        keep = np.flatnonzero(a.tombstones[:n] == 0).astype(np.int64)
        k = keep.shape[0]
        new_id = np.full(n, -1, np.int32)
        new_id[keep] = np.arange(k, dtype=np.int32)
        if k == n:
            return new_id
        keys = index._keys.node_keys[keep]
        _compact_store(store, keep)
        fresh = Graph.empty(g.capacity, g.m)
        levels = draw_levels(index._rng, k, index.config.level_mult)
        words = fresh.upper_words_needed(levels)
        if not fresh.upper_fits(words):
            fresh.grow_upper(words)
        nids = fresh.allocate(levels)
        rows = store.rows()
        counter = np.zeros(1, np.int64)
        arrays, code, efc = fresh.arrays, index.metric.code, index.config.effective_ef_construction

        def work() -> None:
            insert_kernel(arrays, rows, code, nids, efc, index._visited.acquire(), counter)

        run_parallel(work, resolve_threads(num_threads, k))
        index._keys = KeyMap.from_node_keys(keys, k, g.capacity)
        index._graph = fresh
        return new_id
