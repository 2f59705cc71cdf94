"""Kernels of the open-addressing hash table int64 key -> int32 NodeId (``core.inthash.IntHash``).

A Python dict of ints costs ~90 bytes per key (the dict slot plus two int objects); this
table costs 12 bytes per slot at a load factor <= 1/2, and batch lookups run compiled.
An entry is removed only when a deleted NodeId is given to another key
(``Hnsw.rename_deleted``): its value becomes ``REMOVED``, so probe chains through the slot
stay intact; inserts do not reuse the slot (a rehash drops it).

Readers may probe while a writer (holding the key map's lock) inserts: the writer stores
the key before publishing the value with a release store, and an empty slot is marked by
value -1, so a reader never pairs a value with the wrong key; a removal publishes
``REMOVED`` the same way, so a reader sees the old NodeId or none.
"""

from __future__ import annotations

import numpy as np

from .atomics import atomic_store_release
from .jit import helper, kernel

__all__ = ["hash_lookup", "hash_insert", "hash_remove", "REMOVED"]

#: Value of a removed entry (an empty slot is -1).
REMOVED = -2


@helper
def _slot_of(key, mask):
    # splitmix64 finaliser: spreads sequential keys over the table
    h = np.uint64(key)
    h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    h = h ^ (h >> np.uint64(31))
    return np.int64(h & np.uint64(mask))


@kernel
def hash_lookup(tkeys, tvals, keys, out):
    """``out[i]`` = NodeId of ``keys[i]`` or -1."""
    mask = tkeys.shape[0] - 1
    for i in range(keys.shape[0]):
        k = keys[i]
        s = _slot_of(k, mask)
        out[i] = -1
        while True:
            v = tvals[s]
            if v == -1:
                break
            if v >= 0 and tkeys[s] == k:
                out[i] = v
                break
            s = (s + 1) & mask


@kernel
def hash_insert(tkeys, tvals, keys, vals):
    """Insert pairs (the caller guarantees new keys and room); returns how many were new."""
    mask = tkeys.shape[0] - 1
    added = 0
    for i in range(keys.shape[0]):
        k = keys[i]
        s = _slot_of(k, mask)
        while True:
            v = tvals[s]
            if v == -1:
                tkeys[s] = k
                atomic_store_release(tvals, s, vals[i])
                added += 1
                break
            if v >= 0 and tkeys[s] == k:
                break
            s = (s + 1) & mask
    return added


@kernel
def hash_remove(tkeys, tvals, keys):
    """Mark the entries of ``keys`` removed (absent keys are skipped); returns how many were."""
    mask = tkeys.shape[0] - 1
    removed = 0
    for i in range(keys.shape[0]):
        k = keys[i]
        s = _slot_of(k, mask)
        while True:
            v = tvals[s]
            if v == -1:
                break
            if v >= 0 and tkeys[s] == k:
                atomic_store_release(tvals, s, REMOVED)
                removed += 1
                break
            s = (s + 1) & mask
    return removed
