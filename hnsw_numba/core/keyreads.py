"""Lock-free reads of the key map, each giving the answer of one generation of the index.

A compaction (and its renumbering) installs a new graph and a new key map under the
exclusive lock, one after the other; these reads take no lock. A read that took the key
map of one generation and the tombstones or node count of another answers for neither:
a removed key reported present, the keys of NodeIds that moved, the fill value of a key
array past the new node count. Each read here runs inside
:meth:`~hnsw_numba.core.state.IndexState.read_stable`, so one that a compaction overlapped
waits for it and runs again, as searches do.
"""

from __future__ import annotations

from typing import Hashable, Iterator

import numpy as np

from .errors import KeyNotFoundError
from .state import IndexState

__all__ = ["live_node", "node_key", "is_deleted", "live_keys", "iter_live_keys"]

#: Keys converted to Python objects at a time by :func:`iter_live_keys`.
_CHUNK = 4096


def live_node(state: IndexState, key: Hashable) -> int:
    """NodeId of a live key (normalised: a plain int or str), -1 when absent or deleted."""
    def read() -> int:
        nid = state.keys.get(key)
        return nid if nid >= 0 and not state.graph.arrays.tombstones[nid] else -1
    return state.read_stable(read)


def _check_node(state: IndexState, nid: int) -> None:
    """KeyNotFoundError unless ``nid`` is in ``[0, node_count)`` (the count read now: arrays
    read after it are at least that long, as growth installs longer ones)."""
    count = state.graph.node_count
    if not 0 <= nid < count:
        raise KeyNotFoundError(f"NodeId {nid} is out of range [0, {count})")


def node_key(state: IndexState, nid: int) -> Hashable:
    """Key of NodeId ``nid`` (deleted nodes too); KeyNotFoundError outside ``[0, node_count)``."""
    def read() -> Hashable:
        _check_node(state, nid)
        return state.keys.key(nid)
    return state.read_stable(read)


def is_deleted(state: IndexState, nid: int) -> bool:
    """Whether NodeId ``nid`` is tombstoned; KeyNotFoundError outside ``[0, node_count)``."""
    def read() -> bool:
        _check_node(state, nid)
        return bool(state.graph.arrays.tombstones[nid])  # read after the count (see _check_node)
    return state.read_stable(read)


def live_keys(state: IndexState) -> np.ndarray:
    """Keys of the live nodes in NodeId order (a new array: int64 for int keys, else object)."""
    def read() -> np.ndarray:
        keys = state.keys
        return keys.keys_for(state.live_ids())
    return state.read_stable(read)


def iter_live_keys(state: IndexState) -> Iterator[Hashable]:
    """The keys of :func:`live_keys`, read when called, as plain ints or strs."""
    return _each(live_keys(state))


def _each(arr: np.ndarray) -> Iterator[Hashable]:
    # a chunk at a time: a Python object per key for the whole index at once would cost
    # ~30 bytes a key beside the array
    for start in range(0, arr.shape[0], _CHUNK):
        yield from arr[start:start + _CHUNK].tolist()
