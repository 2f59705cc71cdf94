"""Changing an index: insert (with growth of the upper-level links), update, delete, resize.

Locking: mutations hold the state's lock shared (the kernels synchronise among themselves
with per-node spin locks) and ``alloc`` while they hand out NodeIds or change the key map
and tombstone counts; growth of ``upper_links`` and ``resize`` take the lock exclusive
because they replace arrays. The arguments are validated by ``Hnsw`` before these run.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Hashable

import numpy as np

from ..kernels.insert import insert_kernel, update_kernel
from ..kernels.layout import H_DELETED, H_ENTRY
from ..kernels.search import COUNT_MASK
from .errors import CapacityError, KeyExistsError, KeyNotFoundError
from .graph import Graph, draw_levels
from .limits import check_allocation
from .parallel import run_parallel
from .progress import Progress, want_progress
from .state import IndexState
from .visited import VisitedPool

__all__ = ["INSERT_ROUND", "take_rows", "insert_prepared", "update_one", "delete_key", "resize"]

#: Items linked per round of an insert that reports progress (or is large): Ctrl-C is
#: honoured and the progress bar updated between rounds.
INSERT_ROUND = 4096


def take_rows(encoded: Any, rows: np.ndarray) -> Any:
    """Rows of a store's encoded batch (an array, or a tuple of per-row arrays for Qi8)."""
    if isinstance(encoded, tuple):
        return tuple(part[rows] for part in encoded)
    return encoded[rows]


def _allocate(state: IndexState, store: Any, key_list: list | None, int_keys: np.ndarray | None, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Hand out NodeIds for the new keys of a batch; find the deleted ones to resurrect.

    Returns ``(found, new_pos, nids, resurrect)``: which batch positions are deleted keys,
    the positions of new keys, their fresh NodeIds, and the deleted keys' NodeIds.
    Grows ``upper_links`` under the exclusive lock when the new levels do not fit.
    """
    while True:
        with state.lock.shared():
            with state.alloc:
                g = state.graph
                existing = state.keys.get_many(key_list, int_keys)
                found = existing >= 0
                if found.any():
                    live = found & (g.arrays.tombstones[np.where(found, existing, 0)] == 0)
                    if live.any():
                        first = int(np.argmax(live))
                        k = key_list[first] if key_list is not None else int(int_keys[first])
                        raise KeyExistsError(f"key {k!r} is already in the index")
                new_pos = np.flatnonzero(~found)
                n_new = new_pos.shape[0]
                max_nodes = state.config.max_nodes
                if g.node_count + n_new > max_nodes:
                    raise CapacityError(f"index is full: {g.node_count} + {n_new} nodes > max_nodes {max_nodes}; call resize()")
                if g.node_count + n_new > store.max_nodes:
                    raise CapacityError(f"store is full: {g.node_count} + {n_new} rows > {store.max_nodes}; call store.resize()")
                levels = draw_levels(state.rng, n_new, state.config.level_mult)
                words = g.upper_words_needed(levels)
                if g.upper_fits(words):
                    nids = g.allocate(levels)
                    new_keys = None if key_list is None else [key_list[i] for i in new_pos]
                    state.keys.add(new_keys, nids, None if int_keys is None else int_keys[new_pos])
                    return found, new_pos, nids, existing[found].astype(np.int32)
        with state.lock.exclusive():
            if not state.graph.upper_fits(words):
                state.graph.grow_upper(words)


def insert_prepared(state: IndexState, store: Any, key_list: list | None, int_keys: np.ndarray | None, encoded: Any, n: int, threads: int, progress: bool | None) -> np.ndarray:
    """Insert a validated batch (keys unique, vectors encoded by ``store``); returns NodeIds.

    New keys get fresh NodeIds and are linked in rounds (progress, Ctrl-C between rounds);
    deleted keys are resurrected on their NodeIds with the update kernel.
    """
    found, new_pos, nids, resurrect = _allocate(state, store, key_list, int_keys, n)
    efc = state.config.effective_ef_construction
    node_ids = np.empty(n, np.int32)
    node_ids[new_pos] = nids
    node_ids[found] = resurrect
    with state.lock.shared():
        rows = store.rows()
        if nids.shape[0]:
            store.write(nids, take_rows(encoded, new_pos))
            _link_new(state, rows, nids, efc, threads, progress)
        if resurrect.shape[0]:
            store.write(resurrect, take_rows(encoded, found))
            run_kernel(state, update_kernel, rows, resurrect, efc, 1)
            _untombstone(state, resurrect)
    return node_ids


def _link_new(state: IndexState, rows: tuple, nids: np.ndarray, efc: int, threads: int, progress: bool | None) -> None:
    """Run the insert kernel over ``nids`` in rounds (progress, Ctrl-C between rounds)."""
    n = nids.shape[0]
    round_size = n if n <= INSERT_ROUND and not progress else max(INSERT_ROUND, 256 * threads)
    done = 0
    with Progress(n, "insert", want_progress(progress) and n > round_size) as bar:
        try:
            while done < n:
                part = nids[done : done + round_size]
                run_kernel(state, insert_kernel, rows, part, efc, min(threads, part.shape[0]))
                done += part.shape[0]
                bar.update(part.shape[0])
        except KeyboardInterrupt:
            _abandon(state, nids[done:])
            raise


def _abandon(state: IndexState, nids: np.ndarray) -> None:
    """Tombstone allocated nodes that were never linked (an interrupted batch).

    A kernel round always finishes before the interrupt propagates, so a node of ``nids``
    was linked iff it has level-0 links or is the entry point; the others are in no list,
    so they can safely drop to level 0 (keeping the max level exact).
    """
    with state.alloc:
        a = state.graph.arrays
        unlinked = nids[((a.links0[nids, 0] & COUNT_MASK) == 0) & (nids != a.header[H_ENTRY])]
        a.levels[unlinked] = 0
        a.upper_start[unlinked] = -1
        fresh = unlinked[a.tombstones[unlinked] == 0]
        a.tombstones[fresh] = 1
        a.header[H_DELETED] += fresh.shape[0]


def run_kernel(state: IndexState, kern: Any, rows: tuple, node_ids: np.ndarray, efc: int, threads: int) -> None:
    """Run a linking kernel (insert / update / ...) over ``node_ids`` on ``threads`` threads."""
    counter = np.zeros(1, np.int64)
    g, code, visited = state.graph.arrays, state.metric.code, state.visited

    def work() -> None:
        kern(g, rows, code, node_ids, efc, visited.acquire(), counter)

    run_parallel(work, threads)


def _untombstone(state: IndexState, nids: np.ndarray) -> None:
    with state.alloc:
        tomb = state.graph.arrays.tombstones
        was = int(tomb[nids].sum())
        tomb[nids] = 0
        state.graph.arrays.header[H_DELETED] -= was


def update_one(state: IndexState, store: Any, nid: int, encoded: Any) -> None:
    """Write a live node's new vector and repair its neighbourhood (hnswlib ``updatePoint``)."""
    ids = np.array([nid], np.int32)
    with state.lock.shared():
        store.write(ids, encoded)
        run_kernel(state, update_kernel, store.rows(), ids, state.config.effective_ef_construction, 1)


def delete_key(state: IndexState, key: Hashable, shown: Any) -> int:
    """Tombstone the live ``key`` (normalised); ``shown`` is the key as the caller gave it."""
    with state.alloc:
        nid = state.keys.get(key)
        tomb = state.graph.arrays.tombstones
        if nid < 0 or tomb[nid]:
            raise KeyNotFoundError(f"key {shown!r} is not in the index")
        tomb[nid] = 1
        state.graph.arrays.header[H_DELETED] += 1
    return nid


def resize(state: IndexState, new_max_nodes: int) -> None:
    """Grow (or shrink down to the NodeIds in use) the capacity; takes the exclusive lock."""
    new_config = dataclasses.replace(state.config, max_nodes=new_max_nodes)
    check_allocation(Graph.bytes_for(new_max_nodes, state.config.m), f"a graph of {new_max_nodes:,} nodes")
    with state.lock.exclusive():
        if new_max_nodes < state.node_count:
            raise CapacityError(f"cannot resize below the {state.node_count} NodeIds in use")
        state.graph.resize(new_max_nodes)
        state.keys.resize(state.graph.capacity)
        state.visited = VisitedPool(state.graph.capacity)
        state.config = new_config
