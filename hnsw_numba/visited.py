"""A pool of visited-tag arrays, one per concurrent search (hnswlib ``VisitedListPool``).

Each array is ``uint16[capacity + 1]``; the last slot holds the current tag, so a search
marks nodes by writing the tag and only clears the array every 65,535 searches. Memory per
query is therefore O(ef), not O(index size).
"""

from __future__ import annotations

import threading

import numpy as np


class VisitedPool:
    def __init__(self, capacity: int) -> None:
        self.capacity = int(capacity)
        self._free: list[np.ndarray] = []
        self._lock = threading.Lock()

    def acquire(self) -> np.ndarray:
        with self._lock:
            if self._free:
                return self._free.pop()
        return np.zeros(self.capacity + 1, np.uint16)

    def release(self, arr: np.ndarray) -> None:
        if arr.shape[0] != self.capacity + 1:
            return  # from before a resize
        with self._lock:
            self._free.append(arr)
