"""Deleted NodeIds in use again: clear a tombstone, or hand the NodeId to another key.

A deleted node stays in the graph (its links route searches; see ``Hnsw.delete``), so

* :func:`undelete` only clears the tombstone: the key is returned again with the vector and
  links it had (hnswlib's ``unmark_deleted``);
* :func:`rename_deleted` gives the NodeIds of deleted keys to new keys, which stay deleted;
  inserting a new key then resurrects it on that NodeId with its own vector, relinking its
  neighbourhood as ``Hnsw.set`` does (hnswlib's ``replace_deleted``: an index whose items
  are replaced keeps its size instead of growing by one NodeId per replacement). The old
  keys are forgotten.

Both hold the state's lock shared and its ``alloc`` lock (as deletes do), so they exclude
saves, compaction, resize and repair (a save sees the tombstones and the deleted count
agree) and nothing else: a renamed node stays deleted, so a concurrent search never
returns it under either key.
"""

from __future__ import annotations

from typing import Any, Hashable

import numpy as np

from ..kernels.layout import COUNT_MASK, H_DELETED, H_ENTRY, GraphArrays
from .errors import InvalidParameterError, KeyExistsError, KeyNotFoundError
from .interrupts import held_interrupts
from .keymap import check_new_keys, first_repeat, key_at, normalize_keys
from .mutation import relink_resurrected
from .state import IndexState
from .validate import check_store

__all__ = ["undelete", "rename_deleted"]


def _linked(arrays: GraphArrays, nid: int) -> bool:
    """Whether node ``nid`` was ever linked (an interrupted insert leaves it without links)."""
    return bool(arrays.links0[nid, 0] & COUNT_MASK) or nid == int(arrays.header[H_ENTRY])


def undelete(state: IndexState, key: Hashable, store: Any = None) -> int:
    """Clear the tombstone of deleted ``key`` (normalised); returns its NodeId.

    With ``store`` the node is un-deleted and its links repaired, as an insert of a deleted
    key does (hnswlib's ``updatePoint`` on its own vector; claimed until repaired): ``repair`` drops
    every link to a deleted node, and newcomers never link to one, so after either the node
    would come back live with no walk reaching it. Without a store only the tombstone is
    cleared (hnswlib's ``unmark_deleted``).

    Raises
    ------
    KeyNotFoundError
        ``key`` is not in the index.
    KeyExistsError
        ``key`` is live (not deleted), or being inserted.
    InvalidParameterError
        ``key``'s insert was interrupted before it was linked, or ``key`` is a new name
        ``rename_deleted`` gave and its vector is still the old key's: insert it instead.
    """
    # Ctrl-C held from the claim to its release: in between, it left the key claimed for good
    # (a later set of it never returned); a single node's repair is short
    with state.lock.shared(), held_interrupts():
        with state.alloc:
            arrays = state.graph.arrays
            nid = state.keys.get(key)
            if nid < 0:
                raise KeyNotFoundError(f"key {key!r} is not in the index")
            if not arrays.tombstones[nid]:
                raise KeyExistsError(f"key {key!r} is not deleted")
            if nid in state.reviving:
                raise KeyExistsError(f"key {key!r} is being inserted")
            if not _linked(arrays, nid):
                raise InvalidParameterError(f"key {key!r} was never linked (its insert was interrupted); insert it again")
            if nid in state.keys.renamed:
                raise InvalidParameterError(f"key {key!r} was given by rename_deleted and never inserted (or the index was "
                                            "saved before such keys were recorded): insert it with its vector")
            if store is None:  # (the tombstone and the deleted count change together)
                arrays.tombstones[nid] = 0
                arrays.header[H_DELETED] -= 1
                state.tomb_writes += 1
                return nid
            state.reviving.add(nid)  # claimed until repaired, as an insert claims it
        claimed = {nid}  # released by the repair: then free for another call's claim
        try:
            rows = check_store(state.metric, state.config.dim, state.node_count, store, state.entry_point)  # this index's store
            relink_resurrected(state, rows, np.array([nid], np.int32), state.config.effective_ef_construction, claimed)
        finally:
            with state.alloc:
                state.reviving.difference_update(claimed)
        return nid


def _batch(keys: Any, what: str) -> tuple[list | None, np.ndarray | None, int]:
    """Normalised keys of a batch (list or int64 array) and its length."""
    if isinstance(keys, np.ndarray):
        n = keys.shape[0] if keys.ndim == 1 else -1
    elif isinstance(keys, (str, bytes)) or not hasattr(keys, "__len__"):
        raise InvalidParameterError(f"{what} must be a sequence of keys, got {type(keys).__name__}")
    else:
        n = len(keys)
    key_list, int_keys = normalize_keys(keys, n)
    return key_list, int_keys, n


def rename_deleted(state: IndexState, old_keys: Any, new_keys: Any) -> np.ndarray:
    """Give the NodeIds of the deleted ``old_keys`` to ``new_keys`` (same length); returns them (int32).

    The NodeIds stay deleted until the new keys are inserted (``insert`` / ``insert_batch``
    / ``set`` resurrect a deleted key on its NodeId). Everything is checked before anything
    changes.

    Raises
    ------
    KeyNotFoundError
        An old key is not in the index.
    KeyExistsError
        An old key is live, a new key is already in the index (live or deleted), or a key
        repeats within either batch.
    InvalidKeyError
        A key is neither int nor str, or a new key is one ``insert`` refuses (a negative
        int, a str that is not valid Unicode).
    """
    old_list, old_ints, n = _batch(old_keys, "old_keys")
    new_list, new_ints, n_new = _batch(new_keys, "new_keys")
    check_new_keys(new_list, new_ints)  # the new keys are inserted later: insert's rules
    if n != n_new:
        raise InvalidParameterError(f"{n} old keys for {n_new} new keys")
    for key_list, int_keys in ((old_list, old_ints), (new_list, new_ints)):
        dup = first_repeat(key_list, int_keys)
        if dup is not None:
            raise KeyExistsError(f"key {dup!r} appears twice in the batch")
    with state.lock.shared(), state.alloc:
        keymap, arrays = state.keys, state.graph.arrays
        nids = keymap.get_many(old_list, old_ints)
        if (nids < 0).any():
            i = int(np.argmax(nids < 0))
            raise KeyNotFoundError(f"key {key_at(old_list, old_ints, i)!r} is not in the index")
        busy = state.reviving_mask(nids)
        if busy.any():  # deleted still, but an insert is bringing it back
            i = int(np.argmax(busy))
            raise KeyExistsError(f"key {key_at(old_list, old_ints, i)!r} is being inserted")
        live = arrays.tombstones[nids] == 0
        if live.any():
            i = int(np.argmax(live))
            raise KeyExistsError(f"key {key_at(old_list, old_ints, i)!r} is not deleted")
        taken = keymap.get_many(new_list, new_ints) >= 0
        if taken.any():
            i = int(np.argmax(taken))
            raise KeyExistsError(f"key {key_at(new_list, new_ints, i)!r} is already in the index")
        ids = nids.astype(np.int32)
        if n:
            # the old keys are forgotten, as compaction forgets the removed ones: numbered adds
            # stay past them (and past the new keys, which a NodeId below the scanned ones holds)
            forgotten = keymap.int_ceiling_of(ids)
            with held_interrupts():  # a Ctrl-C inside left keys no look-up finds, and the seqlock odd
                keymap.rename(ids, new_list, new_ints)
                state.dropped_ceiling = max(state.dropped_ceiling, forgotten, keymap.int_ceiling_of(ids))
        return ids
