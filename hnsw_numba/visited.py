"""Visited-tag arrays, one per thread (the role of hnswlib's ``VisitedListPool``).

Each array is ``uint16[capacity + 1]``; the last slot holds the current tag, so a search
marks nodes by writing the tag and only clears the array every 65,535 searches. Memory per
query is therefore O(ef), not O(index size). A thread runs one kernel at a time, so a
thread-local array needs no lock (the single-query path stays cheap).
"""

from __future__ import annotations

import threading

import numpy as np


class VisitedPool:
    def __init__(self, capacity: int) -> None:
        self.capacity = int(capacity)
        self._local = threading.local()

    def acquire(self) -> np.ndarray:
        """This thread's tag array for the current capacity."""
        arr = getattr(self._local, "arr", None)
        if arr is None or arr.shape[0] != self.capacity + 1:
            arr = np.zeros(self.capacity + 1, np.uint16)
            self._local.arr = arr
        return arr

    def single(self, k: int) -> tuple:
        """This thread's buffers for one query of ``k`` results.

        Returns ``(visited, counter, out_ids, out_d, out_keys, ids, d, keys, k, capacity)``:
        the kernel's ``(1, k)`` outputs, 1-D views of them (``view.tolist()`` skips making
        a row view per call) and what they were made for (re-made when ``k`` or the
        capacity changes). The single-query path reuses them on every call (the
        caller copies the results out before returning), so a small search allocates
        no NumPy arrays in Python. ``counter`` is reset to 0.
        """
        loc = self._local
        buf = getattr(loc, "single", None)
        if buf is None or buf[8] != k or buf[9] != self.capacity:
            out = (np.empty((1, k), np.int32), np.empty((1, k), np.float32), np.empty((1, k), np.int64))
            buf = (self.acquire(), np.zeros(1, np.int64), *out, *(a.reshape(k) for a in out), k, self.capacity)
            loc.single = buf
        buf[1][0] = 0
        return buf
