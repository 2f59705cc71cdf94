"""Changing an index: insert (with growth of the upper-level links), update, delete, resize.

Locking: mutations (deletions included) hold the state's lock shared (the kernels synchronise among themselves
with per-node spin locks) and ``alloc`` while they hand out NodeIds or change the key map
and tombstone counts; growth of ``upper_links``, ``resize`` and the growth of a full index
and its store (:func:`grow`) take the lock exclusive because they replace arrays. The
arguments are validated by ``Hnsw`` before these run.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Hashable

import numpy as np

from ..kernels.insert import insert_kernel, update_kernel
from ..kernels.inthash import hash_insert
from ..kernels.layout import COUNT_MASK, H_DELETED, H_ENTRY
from ..kernels.search import knn_kernel, knn_one_kernel, prepare_rows
from .batch import batch_args, prepare_args
from .config import MAX_NODES
from .errors import CapacityError, KeyExistsError, KeyNotFoundError
from .graph import Graph, draw_levels
from .half_walk import half_walk_like
from .interrupts import held_interrupts
from .inthash import insert_args
from .keymap import key_at
from .limits import check_allocation
from .parallel import run_parallel
from .progress import Progress, compile_step, insert_seconds, interactive, want_progress
from .rowwrites import rewriting
from .single import one_query_args
from .state import IndexState
from .visited import VisitedPool

__all__ = ["INSERT_ROUND", "take_rows", "write_rows", "insert_prepared", "update_key", "delete_key", "delete_keys", "live_node_ids",
           "resize", "grow"]

#: Items linked per round of an insert that reports progress (or is large): Ctrl-C is
#: honoured and the progress bar updated between rounds.
INSERT_ROUND = 4096
#: No NodeIds: the insert kernel's arguments, typed for its compilation.
_NO_NIDS = np.empty(0, np.int32)


def take_rows(encoded: Any, rows: np.ndarray) -> Any:
    """Rows of a store's encoded batch (an array, or a tuple of per-row arrays for Qi8).

    ``rows``: a boolean mask or sorted distinct positions. Every row in order (a batch of
    new keys) is the batch itself: no copy of the vectors.
    """
    n = encoded[0].shape[0] if isinstance(encoded, tuple) else encoded.shape[0]
    if rows.dtype != np.bool_ and rows.shape[0] == n and (n == 0 or (rows[0] == 0 and rows[-1] == n - 1)):
        return encoded  # sorted distinct positions: the first and last fix them all
    if isinstance(encoded, tuple):
        return tuple(part[rows] for part in encoded)
    return encoded[rows]


def write_rows(state: IndexState, store: Any, ids: np.ndarray, encoded: Any) -> None:
    """Write encoded rows to ``store`` and into the float16 copies inserts are walking
    (:meth:`~.half_walk.HalfWalks.written`); the caller holds ``state.alloc``."""
    store.write(ids, encoded)
    state.half_walks.written(store, ids)


def _try_allocate(state: IndexState, store: Any, key_list: list | None, int_keys: np.ndarray | None, encoded: Any,
                  growable: bool) -> tuple[tuple | None, int, Any]:
    """Hand out NodeIds for the new keys of a batch and write their vectors; find the deleted
    keys to resurrect.

    The rows and the NodeId -> key side of the key map are written before the node count
    publishes the NodeIds: an exact scan reads every NodeId below it, linked or not, and must
    never read a row or key not yet written. The deleted keys' NodeIds are claimed
    (``state.reviving``) until the caller un-deletes them. The caller holds the lock
    shared. Returns ``(alloc, needed, words)``: ``alloc`` is
    ``(found, new_pos, nids, resurrect, walk)`` (which batch positions are deleted keys, the
    positions of new keys, their fresh NodeIds, the deleted keys' NodeIds, the rows the new
    nodes' walks read, to hand to ``state.half_walks.stop`` once linked), or None when
    the index and store must first grow to ``needed`` NodeIds (``growable``) or
    ``upper_links`` to ``words``.
    """
    with state.alloc:
        g = state.graph
        existing = state.keys.get_many(key_list, int_keys)
        found = existing >= 0
        if found.any():
            live = found & (g.arrays.tombstones[np.where(found, existing, 0)] == 0)
            if live.any():
                raise KeyExistsError(f"key {key_at(key_list, int_keys, int(np.argmax(live)))!r} is already in the index")
            busy = found & state.reviving_mask(existing)
            if busy.any():
                raise KeyExistsError(f"key {key_at(key_list, int_keys, int(np.argmax(busy)))!r} is being inserted by another call")
        new_pos = np.flatnonzero(~found)
        n_new = new_pos.shape[0]
        total, max_nodes = g.node_count + n_new, state.config.max_nodes
        if total > max_nodes or total > store.max_nodes:
            if not growable:
                if total > max_nodes:
                    raise CapacityError(f"index is full: {g.node_count} + {n_new} nodes > max_nodes {max_nodes}; "
                                        "call resize() or insert with grow=True")
                raise CapacityError(f"store is full: {g.node_count} + {n_new} rows > {store.max_nodes}; "
                                    "call store.resize() or insert with grow=True")
            return None, total, None
        levels = draw_levels(state.rng, n_new, state.config.level_mult)
        words = g.upper_words_needed(levels)
        if not g.upper_fits(words):
            return None, 0, words
        start = g.node_count
        nids = np.arange(start, start + n_new, dtype=np.int32)  # what allocate hands out
        if n_new:
            write_rows(state, store, nids, take_rows(encoded, new_pos))
        # rows and keys of the new NodeIds before the node count publishes them: a lock-free
        # exact scan reads every NodeId below it (a key written after was read as 0)
        new_keys = None if key_list is None else [key_list[i] for i in new_pos]
        new_ints = None if int_keys is None else int_keys[new_pos]
        new_keys = state.keys.write_keys(new_keys, nids, new_ints)
        g.allocate(levels)
        resurrect = existing[found].astype(np.int32)
        try:  # an exception from here on (a signal handler's) would leave the NodeIds live, never linked
            state.keys.index_keys(new_keys, nids, new_ints)
            state.reviving.update(resurrect.tolist())  # released as each is un-deleted (or the insert fails)
            # the rows the new nodes' walks read: a float16 copy for a large batch (see .half_walk)
            walk = state.half_walks.start(store, store.rows(), n_new, g.node_count) if n_new else store.rows()
        except BaseException:
            _tombstone_unlinked(state, nids)
            state.reviving.difference_update(resurrect.tolist())
            raise
        return (found, new_pos, nids, resurrect, walk), 0, None


def insert_prepared(state: IndexState, store: Any, key_list: list | None, int_keys: np.ndarray | None, encoded: Any, n: int,
                    threads: int, progress: Any, growable: bool = False) -> np.ndarray:
    """Insert a validated batch (keys unique, vectors encoded by ``store``); returns NodeIds.

    New keys get fresh NodeIds and are linked in rounds (progress, Ctrl-C between rounds);
    deleted keys are resurrected on their NodeIds with the update kernel. ``growable``:
    a full index and store grow (:func:`grow`) instead of raising CapacityError. The lock
    is held shared from the NodeId hand-out to the last link, so no compaction can
    renumber the NodeIds in between; growth (exclusive) happens before, between attempts.
    """
    if progress is not None and not isinstance(progress, Progress):
        progress = want_progress(progress)  # a bad value raises before anything changes
    efc = state.config.effective_ef_construction
    if n and not len(state.keys):  # a first batch: its keys are new; compile before any lock is taken
        rows = store.rows()
        walks = state.half_walks.predicts(store, rows, n, state.graph.node_count + n)
        _insert_kernel_ready(state, half_walk_like(rows) if walks else rows, efc, progress, rows)
    while True:
        with state.lock.shared():
            alloc = None
            claimed: set[int] | None = None  # the resurrected NodeIds this call still holds in state.reviving
            try:
                # a Ctrl-C between the hand-out and this try would leave the NodeIds live and
                # unlinked and the resurrected keys claimed for good: held until alloc is set
                with held_interrupts():
                    alloc, needed, words = _try_allocate(state, store, key_list, int_keys, encoded, growable)
                if alloc is not None:
                    found, new_pos, nids, resurrect, walk = alloc
                    claimed = set(resurrect.tolist())
                    node_ids = np.empty(n, np.int32)
                    node_ids[new_pos] = nids
                    node_ids[found] = resurrect
                    rows = store.rows()
                    if nids.shape[0]:
                        _link_new(state, walk, nids, efc, threads, progress, rows)
                    if resurrect.shape[0]:
                        with state.alloc, rewriting(state, resurrect):  # an update_key that found the key live before its removal may be writing the row
                            write_rows(state, store, resurrect, take_rows(encoded, found))
                        relink_resurrected(state, rows, resurrect, efc, claimed)
                    return node_ids
            except BaseException:
                if alloc is not None:
                    with held_interrupts():
                        _abandon(state, alloc[2])  # the new nodes no round linked: tombstoned
                raise
            finally:
                if alloc is not None:
                    with held_interrupts():
                        state.half_walks.stop(alloc[4])
                        if alloc[3].shape[0]:  # what an error left claimed (deleted, or live mid-repair) is free again
                            with state.alloc:
                                state.reviving.difference_update(alloc[3].tolist() if claimed is None else claimed)
        if needed:
            grow(state, store, needed)
            continue
        with state.lock.exclusive():
            if not state.graph.upper_fits(words):
                state.graph.grow_upper(words)


def _insert_kernel_ready(state: IndexState, rows: tuple, efc: int, progress: Any, search_rows: tuple) -> None:
    """Compile or load ``insert_kernel`` for ``rows``, shown as a step of its own when
    ``progress`` (as :func:`_link_new` takes it) shows a bar. When it must be compiled (an
    empty disk cache), a child process compiles the kernels that come next meanwhile: the
    key map's, the searches' over ``search_rows`` (the store's :mod:`.compile_ahead`)."""
    show = progress.enabled if isinstance(progress, Progress) else progress is True or (progress is None and interactive())
    g = state.graph.arrays

    def ahead() -> list:
        return [(hash_insert, insert_args()), (knn_one_kernel, one_query_args(state, g, search_rows, state.keys.node_keys)),
                (knn_kernel, batch_args(state, g, search_rows)), (prepare_rows, prepare_args(state.metric, state.config.dim))]

    compile_step(insert_kernel, (g, rows, state.metric.code, _NO_NIDS, efc, state.visited.acquire(), np.zeros(1, np.int64)), rows, show, ahead)


def _link_new(state: IndexState, rows: tuple, nids: np.ndarray, efc: int, threads: int, progress: Any, search_rows: tuple) -> None:
    """Run the insert kernel over ``nids`` in rounds (progress, Ctrl-C between rounds);
    ``rows``: what the walks read, ``search_rows``: the store's (see :func:`_insert_kernel_ready`).

    ``progress``: True / False / None (see :func:`~hnsw_numba.core.progress.want_progress`),
    or a :class:`Progress` bar of the caller's to advance. Before the first round, a kernel
    that is neither compiled in this process nor in the disk cache is compiled as a step of
    its own (shown when progress is), so the bar's rate and ETA are the linking's alone.
    """
    n = nids.shape[0]
    outer = progress if isinstance(progress, Progress) else None
    if outer is not None:
        show = outer.enabled
    else:
        show = want_progress(progress, insert_seconds(n, state.config.dim, efc, threads))
    round_size = n if n <= INSERT_ROUND and not show else max(INSERT_ROUND, 256 * threads)
    _insert_kernel_ready(state, rows, efc, progress, search_rows)
    done = 0
    bar = outer if outer is not None else Progress(n, "insert", show and (n > round_size or progress is True), unit="vec")
    try:
        bar.start()
        while done < n:
            part = nids[done : done + round_size]
            run_kernel(state, insert_kernel, rows, part, efc, min(threads, part.shape[0]))
            done += part.shape[0]
            bar.update(part.shape[0])
    finally:  # (an interrupt's unlinked nodes are tombstoned by insert_prepared, whose nodes these are)
        if outer is None:
            bar.close()


def _abandon(state: IndexState, nids: np.ndarray) -> None:
    """Tombstone allocated nodes that were never linked (an interrupted batch).

    A kernel round always finishes before the interrupt propagates, so a node of ``nids``
    was linked iff it has level-0 links or is the entry point; the others are in no list,
    so they can safely drop to level 0 (keeping the max level exact).
    """
    with state.alloc:
        _tombstone_unlinked(state, nids)


def _tombstone_unlinked(state: IndexState, nids: np.ndarray) -> None:
    """:func:`_abandon` for a caller holding ``state.alloc``."""
    a = state.graph.arrays
    unlinked = nids[((a.links0[nids, 0] & COUNT_MASK) == 0) & (nids != a.header[H_ENTRY])]
    a.levels[unlinked] = 0
    a.upper_start[unlinked] = -1
    fresh = unlinked[a.tombstones[unlinked] == 0]
    a.tombstones[fresh] = 1
    a.header[H_DELETED] += fresh.shape[0]
    state.tomb_writes += 1


def relink_resurrected(state: IndexState, rows: tuple, nids: np.ndarray, efc: int, claimed: set[int]) -> None:
    """Repair the links of deleted ``nids`` whose new vectors are written (hnswlib's
    ``updatePoint``), un-deleting each right before its own repair; each leaves ``claimed`` (the
    caller's claims in ``state.reviving``) and its claim once repaired: a clean-up releases only its own.

    The linking rules that keep nodes reachable (``kernels/reach.py``) hand in-links to
    live nodes only: un-deleted one by one, a node repaired earlier in the batch keeps its
    in-links while later repairs rewrite the lists around it. Deleted keys inserted again
    in one batch, live nodes no walk reaches: 74 -> 24 on 20,000 x 64 with half the keys
    (11 of them after the build itself), at the same speed (docs/design.md). Live during
    its own repair, the node is not the first link its new neighbours' full lists drop
    ("deleted nodes yield first"): 20 keys moved to large-norm vectors under inner product
    at m 4 were found 0.63 of the time repaired deleted, 0.93 live (``set``: 0.95).
    """
    for j in range(nids.shape[0]):
        one = nids[j : j + 1]
        _untombstone(state, one)  # live, still claimed: a rename or a second insert waits for the repair
        run_kernel(state, update_kernel, rows, one, efc, 1)
        with state.alloc:
            state.reviving.discard(int(one[0]))
            claimed.discard(int(one[0]))


def run_kernel(state: IndexState, kern: Any, rows: tuple, node_ids: np.ndarray, efc: int, threads: int) -> None:
    """Run a linking kernel (insert / update / ...) over ``node_ids`` on ``threads`` threads."""
    counter = np.zeros(1, np.int64)
    g, code, visited = state.graph.arrays, state.metric.code, state.visited

    def work() -> None:
        kern(g, rows, code, node_ids, efc, visited.acquire(), counter)

    run_parallel(work, threads)


def _untombstone(state: IndexState, nids: np.ndarray) -> None:
    with state.alloc, held_interrupts():  # tombstones and the deleted count agree
        tomb = state.graph.arrays.tombstones
        was = int(tomb[nids].sum())
        tomb[nids] = 0
        state.graph.arrays.header[H_DELETED] -= was
        state.tomb_writes += 1
        state.keys.renamed.difference_update(nids.tolist())  # inserted again: its vector is its key's


def update_inserted(state: IndexState, store: Any, key: Hashable, encoded: Any, wait: float = 2.0) -> int:
    """:func:`update_key` once another call's insert of ``key`` is done: ``set`` lost the race to
    insert it, and a deleted key that insert brings back stays deleted until it is linked.

    Returns -1 as soon as the key is absent or deleted with no insert bringing it back (that
    insert failed, or a delete followed it: the caller inserts the key itself), or after
    ``wait`` seconds.
    """
    deadline = time.monotonic() + wait
    while True:
        nid = update_key(state, store, key, encoded)
        if nid >= 0 or time.monotonic() > deadline:
            return nid
        with state.alloc:
            old = state.keys.get(key)
            if old < 0 or old not in state.reviving:
                return -1
        time.sleep(0.0002)


def update_key(state: IndexState, store: Any, key: Hashable, encoded: Any) -> int:
    """Write a live key's new vector and repair its neighbourhood (hnswlib ``updatePoint``).

    The key is resolved under the shared lock (a compaction cannot renumber it before the
    write). The row is written under ``alloc``: two calls for one key write it in turn, as
    a store writes a row column by column and NumPy may let another thread run in between
    (interleaved, the row would end as a mix of both vectors). Excludes other writes of
    the row; runs alongside searches, inserts, deletes and the other updates. A search reads
    the row without waiting; the write is bracketed by the row's sequence number
    (:func:`~.rowwrites.rewriting`), so a search whose answer holds the row half rewritten
    runs again: it answers with the old vector's distance or the new one's. Returns its NodeId, or -1 when the key is absent or deleted (nothing written).
    """
    with state.lock.shared():
        nid = state.keys.get(key)
        if nid < 0 or state.graph.arrays.tombstones[nid]:
            return -1
        ids = np.array([nid], np.int32)
        # Ctrl-C held from the write to the repair: between them the node's links fit its old
        # vector, and a search for the new one may not reach it
        with held_interrupts():
            with state.alloc:
                # looked up again: a delete and a rename_deleted since may have given the NodeId
                # to another key, whose row this write would take
                if state.keys.get(key) != nid or state.graph.arrays.tombstones[nid]:
                    return -1
                with rewriting(state, ids):
                    write_rows(state, store, ids, encoded)
            run_kernel(state, update_kernel, store.rows(), ids, state.config.effective_ef_construction, 1)
    return nid


def delete_key(state: IndexState, key: Hashable, shown: Any) -> int:
    """Tombstone the live ``key`` (normalised); ``shown`` is the key as the caller gave it.

    Holds the lock shared (a save, compaction or repair sees the tombstones and the
    header's deleted count agree) and ``alloc`` (the count is exact).
    """
    with state.lock.shared(), state.alloc:
        nid = state.keys.get(key)
        tomb = state.graph.arrays.tombstones
        if nid < 0 or tomb[nid]:
            raise KeyNotFoundError(f"key {shown!r} is not in the index")
        with held_interrupts():  # a Ctrl-C between the two left the count one short of the tombstones
            tomb[nid] = 1
            state.graph.arrays.header[H_DELETED] += 1
            state.tomb_writes += 1
    return nid


def live_node_ids(state: IndexState, key_list: list | None, int_keys: np.ndarray | None) -> np.ndarray:
    """NodeIds (int32) of live keys, a batch as :func:`~hnsw_numba.core.keymap.normalize_keys` returns it.

    Raises KeyNotFoundError naming the first key that is absent or deleted.
    """
    ids = state.keys.get_many(key_list, int_keys)
    bad = ids < 0
    bad[~bad] = state.graph.arrays.tombstones[ids[~bad]] != 0
    if bad.any():
        raise KeyNotFoundError(f"key {key_at(key_list, int_keys, int(np.argmax(bad)))!r} is not in the index")
    return ids.astype(np.int32)


def delete_keys(state: IndexState, key_list: list | None, int_keys: np.ndarray | None) -> np.ndarray:
    """Tombstone a batch of live keys (unique, normalised): all of them, or none on error.

    Returns their NodeIds (int32); KeyNotFoundError names the first absent or deleted key.
    Holds the lock shared and ``alloc`` (as :func:`delete_key`).
    """
    with state.lock.shared(), state.alloc:
        nids = live_node_ids(state, key_list, int_keys)
        with held_interrupts():  # tombstones and the deleted count agree
            state.graph.arrays.tombstones[nids] = 1
            state.graph.arrays.header[H_DELETED] += nids.shape[0]
            state.tomb_writes += 1
    return nids


def _resize_locked(state: IndexState, new_max_nodes: int) -> None:
    """Resize the graph and key map (the caller holds the exclusive lock)."""
    if new_max_nodes < state.node_count:
        raise CapacityError(f"cannot resize below the {state.node_count} NodeIds in use")
    # the key map and the visited pool first: a lock-free search that reads the new graph
    # then finds them at least as long (one that read the old key array meets NodeIds past
    # its end only after the resize: the kernels return ONE_STALE and the caller binds again)
    capacity = max(int(new_max_nodes), 2)  # Graph.resize's capacity
    state.keys.resize(capacity)
    state.visited = VisitedPool(capacity)
    state.graph.resize(new_max_nodes)
    state.config = dataclasses.replace(state.config, max_nodes=new_max_nodes)


def resize(state: IndexState, new_max_nodes: int) -> None:
    """Grow (or shrink down to the NodeIds in use) the capacity; takes the exclusive lock."""
    dataclasses.replace(state.config, max_nodes=new_max_nodes)  # validates the number
    check_allocation(Graph.bytes_for(new_max_nodes, state.config.m), f"a graph of {new_max_nodes:,} nodes")
    with state.lock.exclusive():
        _resize_locked(state, new_max_nodes)


def grow(state: IndexState, store: Any, needed: int) -> None:
    """Make room for ``needed`` NodeIds in the index and in ``store``, doubling what is short.

    Amortised doubling: a full index (or store) grows to ``max(needed, 2 * capacity)``
    (capped at ``MAX_NODES``), so n single inserts copy O(n) rows in all. Takes the exclusive
    lock (it replaces arrays: running mutations finish first, searches keep the arrays they
    hold) and resizes the store under it, so no insert writes to a store being copied.
    """
    if needed > MAX_NODES:
        raise CapacityError(f"{needed:,} NodeIds exceed the limit of {MAX_NODES:,}")
    with state.lock.exclusive():
        cap = state.config.max_nodes
        target = min(max(needed, 2 * cap), MAX_NODES) if cap < needed else cap
        if target != cap:  # checked before anything grows
            check_allocation(Graph.bytes_for(target, state.config.m), f"a graph of {target:,} nodes")
        # the store first: searches take no lock and bind the graph before the rows, so a
        # graph they bind is never newer than the rows (see Single.bind)
        store_grows = store.max_nodes < needed
        if store_grows:
            store.resize(min(max(needed, 2 * store.max_nodes), MAX_NODES))
        # new graph arrays whenever the store grows, at the same capacity if the graph has
        # room: a search still walking the old rows with the old arrays would otherwise meet
        # the nodes inserted next, whose rows lie past the end of its arrays
        if target != cap or store_grows:
            _resize_locked(state, target)
