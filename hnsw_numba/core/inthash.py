"""An open-addressing hash table int64 key -> int32 NodeId over two flat arrays.

A Python dict of ints costs ~90 bytes per key (the dict slot plus two int objects); this
table costs 12 bytes per slot at a load factor <= 1/2, and batch lookups run compiled
(:mod:`hnsw_numba.kernels.inthash`). Entries are removed only when a deleted NodeId is given
to another key (``Hnsw.rename_deleted``); compaction rebuilds the table.
"""

from __future__ import annotations

import numpy as np

from ..kernels.inthash import hash_insert, hash_lookup, hash_remove

__all__ = ["IntHash", "insert_args"]


def insert_args() -> tuple:
    """Arguments of the types of :meth:`IntHash.insert`'s ``hash_insert`` calls: what its
    specialisation is compiled for."""
    return np.zeros(16, np.int64), np.full(16, -1, np.int32), np.empty(0, np.int64), np.empty(0, np.int32)


class IntHash:
    """int64 -> int32 map over two arrays; grows by rehashing into new arrays.

    ``table`` holds ``(keys, vals)`` as one tuple so a concurrent reader always gets a
    matching pair, old or new.
    """

    def __init__(self, capacity: int = 16) -> None:
        size = 16
        while size < 2 * capacity:
            size *= 2
        self.table = (np.zeros(size, np.int64), np.full(size, -1, np.int32))
        self.count = 0
        self.used = 0  # slots taken: live entries plus removed ones (until a rehash)

    def __len__(self) -> int:
        return self.count

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """NodeIds of ``keys`` (int64 array), -1 where absent."""
        tkeys, tvals = self.table
        if self.count == 0:  # an empty map (a first build) loads, or compiles, no kernel
            return np.full(len(keys), -1, np.int32)
        keys = np.ascontiguousarray(keys, np.int64)
        out = np.empty(keys.shape[0], np.int32)
        hash_lookup(tkeys, tvals, keys, out)
        return out

    def insert(self, keys: np.ndarray, vals: np.ndarray) -> None:
        """Add new keys (the caller holds the writers' lock)."""
        keys = np.ascontiguousarray(keys, np.int64)
        vals = np.ascontiguousarray(vals, np.int32)
        if 2 * (self.used + keys.shape[0]) > self.table[0].shape[0]:
            self._rehash(self.count + keys.shape[0])
        tkeys, tvals = self.table
        added = int(hash_insert(tkeys, tvals, keys, vals))
        self.count += added
        self.used += added

    def remove(self, keys: np.ndarray) -> int:
        """Forget ``keys`` (absent ones are skipped; the caller holds the writers' lock).

        Returns how many were removed. Their slots stay taken (probe chains run through
        them) until the next rehash.
        """
        tkeys, tvals = self.table
        removed = int(hash_remove(tkeys, tvals, np.ascontiguousarray(keys, np.int64)))
        self.count -= removed
        return removed

    def _rehash(self, needed: int) -> None:
        bigger = IntHash(max(needed, 2 * self.count))
        tkeys, tvals = self.table
        live = tvals >= 0  # neither empty nor removed
        bigger.count = bigger.used = int(hash_insert(bigger.table[0], bigger.table[1], tkeys[live], tvals[live]))
        self.table = bigger.table
        self.used = bigger.used

    @property
    def nbytes(self) -> int:
        return int(self.table[0].nbytes + self.table[1].nbytes)
