"""Answers of lock-free searches that overlap a rename of keys (``Hnsw.rename_deleted``).

A search may find a node live, then a delete and a rename give its NodeId a key that was
never live (hnswlib's ``replace_deleted``), and the search reads that key: an answer of a
key that holds no vector. ``KeyMap.renames`` is a seqlock over the keys (odd while a rename
runs): a search that overlapped one runs again, :data:`RERUNS` times at most (renames
without pause), then keeps only the nodes live at its end, with their keys read again: a
rename only changes the keys of deleted nodes.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .hits import Hits
from .state import IndexState

__all__ = ["RERUNS", "renamed_since", "live_found", "live_rows", "live_answer", "keys_settled"]

#: Runs of a search again after it overlapped a rename, before its answer is settled.
RERUNS = 2


def renamed_since(keys: Any, count: int) -> bool:
    """Whether a rename of ``keys`` ran (or runs) since its ``renames`` read ``count``."""
    return bool(count & 1) or keys.renames != count


def live_found(state: IndexState, found: list) -> list:
    """``found`` (``[(key, distance, NodeId), ...]``) without the nodes deleted by its end, keys read again."""
    tomb, keys = state.graph.arrays.tombstones, state.keys
    return [(keys.key(nid), d, nid) for _, d, nid in found if not tomb[nid]]


def live_rows(state: IndexState, answer: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A batch's ``(keys, distances, NodeIds)`` without the nodes deleted by its end (the rest move up,
    padding at the end), keys read again."""
    _, dists, ids = answer
    dead = (ids >= 0) & (state.graph.arrays.tombstones[np.maximum(ids, 0)] != 0)
    if dead.any():
        order = np.argsort(dead, axis=1, kind="stable")
        ids, dists = np.take_along_axis(ids, order, 1), np.take_along_axis(dists, order, 1)
        gone = np.take_along_axis(dead, order, 1)
        ids[gone], dists[gone] = -1, np.inf
    return state.keys.keys_for(ids), dists, ids


def live_answer(state: IndexState, answer: Any) -> Any:
    """A single query's ``Hits`` (or ``(Hits, plan)``) as :func:`live_found` leaves it."""
    if isinstance(answer, tuple):
        return Hits(live_found(state, answer[0].raw)), answer[1]
    return Hits(live_found(state, answer.raw))


def keys_settled(state: IndexState, search: Callable[[], Any], settle: Callable[[IndexState, Any], Any]) -> Any:
    """``search()``, run again while a rename overlapped it (:data:`RERUNS` times at most),
    then ``settle(state, answer)`` (:func:`live_rows`, :func:`live_answer`)."""
    for _ in range(RERUNS + 1):
        keys = state.keys
        r0 = keys.renames
        answer = search()
        if not renamed_since(keys, r0):
            return answer
    return settle(state, answer)
