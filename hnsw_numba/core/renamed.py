"""Answers of lock-free searches that overlap a rename of keys (``Hnsw.rename_deleted``).

A search may find a node live, then a delete and a rename give its NodeId a key that was
never live (hnswlib's ``replace_deleted``), and the search reads that key: an answer of a
key that holds no vector. ``KeyMap.renames`` is a seqlock over the keys (odd while a rename
runs): a search that overlapped one runs again, :data:`RERUNS` times at most (renames
without pause), then keeps only the nodes still live, their distances computed again and
their keys read while holding ``alloc``, which renames, inserts and row writes hold.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .hits import Hits
from .rowwrites import rescored_held
from .state import IndexState

__all__ = ["RERUNS", "renamed_since", "live_found", "live_rows", "live_answer", "keys_settled"]

#: Runs of a search again after it overlapped a rename, before its answer is settled.
RERUNS = 2


def renamed_since(keys: Any, count: int) -> bool:
    """Whether a rename of ``keys`` ran (or runs) since its ``renames`` read ``count``."""
    return bool(count & 1) or keys.renames != count


def live_found(state: IndexState, store: Any, query: np.ndarray, found: list) -> list:
    """A single query's ``found`` (``[(key, distance, NodeId), ...]``) settled: see :func:`live_rows`."""
    ids = np.array([[nid for _, _, nid in found]], np.int32).reshape(1, -1)
    keys, dists, ids = live_rows(state, store, query.reshape(1, -1), (None, None, ids))
    return [(k, d, nid) for k, d, nid in zip(keys[0].tolist(), dists[0].tolist(), ids[0].tolist()) if nid >= 0]


def live_rows(state: IndexState, store: Any, queries: np.ndarray, answer: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A batch's ``(keys, distances, NodeIds)`` (prepared ``queries``) settled: the nodes still
    live, their distances computed again and their keys read while holding ``alloc`` (no
    rename, insert or row write meanwhile: a NodeId deleted, renamed and inserted again kept
    the old vector's distance under the new key), best first, padding at the end."""
    ids = answer[2]
    with state.alloc:
        alive = (ids >= 0) & (state.graph.arrays.tombstones[np.maximum(ids, 0)] == 0)
        out_ids, out_d = rescored_held(state, store, queries, np.where(alive, ids, -1).astype(np.int32))
        return state.keys.keys_for(out_ids), out_d, out_ids


def live_answer(state: IndexState, store: Any, query: np.ndarray, answer: Any) -> Any:
    """A single query's ``Hits`` (or ``(Hits, plan)``) settled: see :func:`live_rows`."""
    if isinstance(answer, tuple):
        return Hits(live_found(state, store, query, answer[0].raw)), answer[1]
    return Hits(live_found(state, store, query, answer.raw))


def keys_settled(state: IndexState, search: Callable[[], Any], settle: Callable[[Any], Any]) -> Any:
    """``search()``, run again while a rename overlapped it (:data:`RERUNS` times at most),
    then ``settle(answer)`` (:func:`live_rows`, :func:`live_answer` with its arguments bound)."""
    for _ in range(RERUNS + 1):
        keys = state.keys
        r0 = keys.renames
        answer = search()
        if not renamed_since(keys, r0):
            return answer
    return settle(answer)
