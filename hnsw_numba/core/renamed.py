"""Answers of lock-free searches that overlap a rename of keys (``Hnsw.rename_deleted``).

A search may find a node live, then a delete and a rename give its NodeId a key that was
never live (hnswlib's ``replace_deleted``), and the search reads that key: an answer of a
key that holds no vector. ``KeyMap.renames`` is a seqlock over the keys (odd while a rename
runs): a search that overlapped one runs again, :data:`RERUNS` times at most (renames
without pause), then once more holding ``alloc``, which renames, inserts, deletes and row
writes hold, and the lock shared, which a compaction holds exclusive. A compaction since the
search began (the state's epoch moved) renumbered its NodeIds: an overlap as a rename is.
"""

from __future__ import annotations

from typing import Any, Callable

from .state import IndexState

__all__ = ["RERUNS", "renamed_since", "keys_settled"]

#: Runs of a search again after it overlapped a rename, before its answer is settled.
RERUNS = 2


def renamed_since(keys: Any, count: int) -> bool:
    """Whether a rename of ``keys`` ran (or runs) since its ``renames`` read ``count``."""
    return bool(count & 1) or keys.renames != count


def keys_settled(state: IndexState, search: Callable[[], Any]) -> Any:
    """``search()``, run again while a rename or a compaction overlapped it (:data:`RERUNS`
    times at most), then once more holding the lock shared and ``alloc``: no compaction,
    rename, insert, delete or row write meanwhile, so that answer is whole (``k`` items live
    under the keys they hold, when as many are allowed)."""
    for _ in range(RERUNS + 1):
        keys, epoch = state.keys, state.epoch
        r0 = keys.renames
        answer = search()
        # a compaction meanwhile installed another key map, whose renames r0 does not count
        # (the search ran again on it): an overlap like a rename
        if not renamed_since(keys, r0) and state.keys is keys and state.epoch == epoch:
            return answer
    with state.lock.shared(), state.alloc:
        return search()
