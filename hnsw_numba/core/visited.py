"""Visited-tag arrays, one per thread (the role of hnswlib's ``VisitedListPool``).

Each array is ``uint16[capacity + 1]``; the last slot holds the current tag, so a search
marks nodes by writing the tag and only clears the array every 65,535 searches. Memory per
query is therefore O(ef), not O(index size). A thread runs one kernel at a time, so a
thread-local array needs no lock (the single-query path stays cheap).
"""

from __future__ import annotations

import threading

import numpy as np

from . import hugepages


#: Length of the per-thread scratch arrays of the single-query path.
SCRATCH = 8192


class VisitedPool:
    def __init__(self, capacity: int) -> None:
        self.capacity = int(capacity)
        self._local = threading.local()

    def acquire(self) -> np.ndarray:
        """This thread's tag array for the current capacity."""
        arr = getattr(self._local, "arr", None)
        if arr is None or arr.shape[0] != self.capacity + 1:
            arr = hugepages.zeros(self.capacity + 1, np.uint16)
            self._local.arr = arr
        return arr

    def single(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """This thread's ``(visited, float32 scratch, int32 scratch)`` for one query.

        The scratch arrays (``SCRATCH`` long) hold ``knn_one_kernel``'s heaps and outputs,
        so a single-query call allocates nothing for ``ef`` up to about 1,500 at 384-d (it
        allocates its own beyond). The pool's capacity never changes (a resized index
        makes a new pool), so the buffers are made once per thread.
        """
        buf = getattr(self._local, "single", None)
        if buf is None:
            buf = self._local.single = (self.acquire(), np.empty(SCRATCH, np.float32), np.empty(SCRATCH, np.int32))
        return buf
