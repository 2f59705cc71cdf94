"""Answers of lock-free searches that overlap a rename of keys (``Hnsw.rename_deleted``).

A search may find a node live, then a delete and a rename give its NodeId a key that was
never live (hnswlib's ``replace_deleted``), and the search reads that key: an answer of a
key that holds no vector. ``KeyMap.renames`` is a seqlock over the keys (odd while a rename
runs): a search that overlapped one runs again, :data:`RERUNS` times at most (renames
without pause), then keeps only the nodes still live, their distances computed again and
their keys read while holding ``alloc``, which renames, inserts and row writes hold, and the
lock shared, which a compaction holds exclusive: a compaction since the search began
(the state's epoch moved) renumbered its NodeIds, and it runs again.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .filters import allowed_answers
from .hits import Hits
from .rowwrites import rescored_held
from .state import IndexState

__all__ = ["RERUNS", "renamed_since", "live_found", "live_rows", "live_answer", "keys_settled"]

#: Runs of a search again after it overlapped a rename, before its answer is settled.
RERUNS = 2


def renamed_since(keys: Any, count: int) -> bool:
    """Whether a rename of ``keys`` ran (or runs) since its ``renames`` read ``count``."""
    return bool(count & 1) or keys.renames != count


def live_found(state: IndexState, store: Any, query: np.ndarray, found: list, epoch: int, flt: Any = None) -> list | None:
    """A single query's ``found`` (``[(key, distance, NodeId), ...]``) settled: see :func:`live_rows`
    (None: a compaction since ``epoch``)."""
    ids = np.array([[nid for _, _, nid in found]], np.int32).reshape(1, -1)
    settled = live_rows(state, store, query.reshape(1, -1), (None, None, ids), epoch, flt)
    if settled is None:
        return None
    keys, dists, ids = settled
    return [(k, d, nid) for k, d, nid in zip(keys[0].tolist(), dists[0].tolist(), ids[0].tolist()) if nid >= 0]


def live_rows(state: IndexState, store: Any, queries: np.ndarray, answer: tuple, epoch: int,
              flt: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """A batch's ``(keys, distances, NodeIds)`` (prepared ``queries``) settled: the nodes still
    live and allowed by ``flt`` under the keys they hold now, their distances computed again
    and their keys read while holding ``alloc`` (no rename, insert or row write meanwhile: a
    NodeId deleted, renamed and inserted again kept the old vector's distance under the new
    key, and passed a filter its old key passed), best first, padding at the end. None when
    the state's epoch is no longer ``epoch``, read before the search began: a compaction
    since moved the rows and renumbered the answer's NodeIds (held off while settling)."""
    ids = answer[2]
    with state.lock.shared():
        if state.epoch != epoch or epoch & 1:
            return None
        with state.alloc:
            alive = (ids >= 0) & (state.graph.arrays.tombstones[np.maximum(ids, 0)] == 0)
            out_ids, out_d = rescored_held(state, store, queries, np.where(alive, ids, -1).astype(np.int32))
            keys = state.keys.keys_for(out_ids)
            if flt is not None:
                ok = allowed_answers(flt, keys, out_ids)
                if (ok != (out_ids >= 0)).any():  # keep the allowed ones in order, padding after them
                    order = np.argsort(~ok, axis=1, kind="stable")
                    ok = np.take_along_axis(ok, order, 1)
                    out_ids = np.where(ok, np.take_along_axis(out_ids, order, 1), -1).astype(np.int32)
                    out_d = np.where(ok, np.take_along_axis(out_d, order, 1), np.float32(np.inf)).astype(np.float32)
                    keys = state.keys.keys_for(out_ids)
            return keys, out_d, out_ids


def live_answer(state: IndexState, store: Any, query: np.ndarray, answer: Any, epoch: int, flt: Any = None) -> Any:
    """A single query's ``Hits`` (or ``(Hits, plan)``) settled: see :func:`live_rows` (None: a compaction since ``epoch``)."""
    found = live_found(state, store, query, (answer[0] if isinstance(answer, tuple) else answer).raw, epoch, flt)
    if found is None:
        return None
    return (Hits(found), answer[1]) if isinstance(answer, tuple) else Hits(found)


def keys_settled(state: IndexState, search: Callable[[], Any], settle: Callable[[Any, int], Any]) -> Any:
    """``search()``, run again while a rename overlapped it (:data:`RERUNS` times at most),
    then ``settle(answer, epoch)`` (:func:`live_rows`, :func:`live_answer` with their other
    arguments bound; ``epoch`` the state's before that search), searching again whenever a
    compaction came in between (``settle`` returns None)."""
    runs = 0
    while True:
        keys, epoch = state.keys, state.epoch
        r0 = keys.renames
        answer = search()
        # a compaction meanwhile installed another key map, whose renames r0 does not count
        # (the search ran again on it): an overlap like a rename
        if not renamed_since(keys, r0) and state.keys is keys and state.epoch == epoch:
            return answer
        runs += 1
        if runs > RERUNS:
            settled = settle(answer, epoch)
            if settled is not None:
                return settled
