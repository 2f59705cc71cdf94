"""The graph's flat arrays on the Python side: allocation, NodeId hand-out, growth."""

from __future__ import annotations

import numpy as np

from .config import MAX_LEVEL
from . import hugepages
from .limits import check_allocation
from ..kernels.layout import (
    H_DELETED,
    H_ENTRY,
    H_M,
    H_MAX_LEVEL,
    H_NODES,
    H_UPPER_USED,
    HEADER_SIZE,
    GraphArrays,
)

__all__ = ["Graph", "draw_levels"]


def draw_levels(rng: np.random.Generator, n: int, mult: float) -> np.ndarray:
    """hnswlib's level distribution ``floor(-ln(U) * mult)``, U uniform in (0, 1]."""
    u = 1.0 - rng.random(n)
    return np.minimum(np.floor(-np.log(u) * mult), MAX_LEVEL).astype(np.int8)


def _upper_words_for(capacity: int, m: int) -> int:
    # Expected upper blocks per node are 1/(m-1); 25% head-room, grown on demand.
    return int(capacity / max(m - 1, 1) * 1.25 + 64) * (m + 1)


class Graph:
    """Owns one :class:`GraphArrays` and hands out NodeIds (callers hold the locks)."""

    def __init__(self, arrays: GraphArrays):
        self.arrays = arrays

    @staticmethod
    def bytes_for(capacity: int, m: int) -> int:
        """Bytes ``empty(capacity, m)`` allocates (checked before allocating)."""
        cap = max(int(capacity), 2)
        per_node = 1 + (2 * m + 1) * 4 + 8 + 1 + 4  # levels, links0, upper_start, tombstones, locks
        return cap * per_node + _upper_words_for(cap, m) * 4

    @classmethod
    def for_load(cls, capacity: int, m: int, used: int) -> "Graph":
        """An empty graph with room for ``capacity`` NodeIds and ``used`` upper-link words
        (a loaded graph's), its memory checked against the limit first."""
        check_allocation(cls.bytes_for(capacity, m) + used * 4, f"a graph of {capacity:,} nodes")
        g = cls.empty(capacity, m)
        if used > g.arrays.upper_links.shape[0]:
            g.grow_upper(used)
        return g

    @classmethod
    def empty(cls, capacity: int, m: int) -> "Graph":
        """A graph with room for ``capacity`` NodeIds."""
        cap = max(int(capacity), 2)  # >= 2 keeps row views of links0 C-contiguous typed
        header = np.zeros(HEADER_SIZE, np.int64)
        header[H_ENTRY] = -1
        header[H_MAX_LEVEL] = -1
        header[H_M] = m
        arrays = GraphArrays(
            levels=np.full(cap, -1, np.int8),
            links0=hugepages.zeros((cap, 2 * m + 1), np.int32),
            upper_start=np.full(cap, -1, np.int64),
            upper_links=np.zeros(_upper_words_for(cap, m), np.int32),
            tombstones=np.zeros(cap, np.uint8),
            locks=np.zeros(cap, np.int32),
            header=header,
        )
        return cls(arrays)

    # -- scalars -------------------------------------------------------------------
    @property
    def m(self) -> int:
        return int(self.arrays.header[H_M])

    @property
    def capacity(self) -> int:
        return int(self.arrays.levels.shape[0])

    @property
    def node_count(self) -> int:
        return int(self.arrays.header[H_NODES])

    @property
    def deleted_count(self) -> int:
        return int(self.arrays.header[H_DELETED])

    @property
    def entry_point(self) -> int:
        return int(self.arrays.header[H_ENTRY])

    @property
    def max_level(self) -> int:
        return int(self.arrays.header[H_MAX_LEVEL])

    # -- allocation ----------------------------------------------------------------
    def upper_words_needed(self, levels: np.ndarray) -> int:
        """Words of ``upper_links`` that nodes with these levels would take."""
        return int(levels.astype(np.int64).sum()) * (self.m + 1)

    def upper_fits(self, words: int) -> bool:
        return int(self.arrays.header[H_UPPER_USED]) + words <= self.arrays.upper_links.shape[0]

    def allocate(self, levels: np.ndarray) -> np.ndarray:
        """Hand out consecutive NodeIds with the given levels; returns them (int32).

        The caller has checked capacity and ``upper_fits``.
        """
        a = self.arrays
        n = levels.shape[0]
        start = int(a.header[H_NODES])
        nids = np.arange(start, start + n, dtype=np.int32)
        words = levels.astype(np.int64) * (self.m + 1)
        offsets = int(a.header[H_UPPER_USED]) + np.cumsum(words) - words
        a.upper_start[start : start + n] = np.where(levels > 0, offsets, -1)
        a.links0[start : start + n] = 0
        a.levels[start : start + n] = levels
        a.header[H_UPPER_USED] += int(words.sum())
        a.header[H_NODES] += n
        return nids

    # -- growth (caller holds the exclusive lock) ----------------------------------
    # Searches take no lock and keep the GraphArrays they bound, so growth gives the new
    # arrays a header of their own: the replaced arrays keep the entry point, max level and
    # node count that describe them. A shared header would hand such a search an entry
    # point inserted later, whose upper lists and NodeId lie past the end of its arrays.
    def grow_upper(self, min_words: int) -> None:
        """Replace ``upper_links`` by one of at least ``used + min_words`` words (1.5x)."""
        a = self.arrays
        used = int(a.header[H_UPPER_USED])
        size = max(int(a.upper_links.shape[0] * 1.5), used + min_words)
        new = np.zeros(size, np.int32)
        new[:used] = a.upper_links[:used]
        self.arrays = a._replace(upper_links=new, header=a.header.copy())

    def resize(self, capacity: int) -> None:
        a = self.arrays
        cap = max(int(capacity), 2)
        n = self.node_count
        used = int(a.header[H_UPPER_USED])

        def grown(arr: np.ndarray, fill) -> np.ndarray:
            out = hugepages.full((cap,) + arr.shape[1:], fill, arr.dtype)
            out[:n] = arr[:n]
            return out

        # upper_links is copied too, even when it is long enough: the replaced arrays stay in
        # use by searches, and upper lists shared with them would receive the NodeIds inserted
        # next, past the end of those arrays and of the rows bound with them
        keep = a.upper_links.shape[0] if cap >= a.levels.shape[0] else used  # a shrink gives back the rest
        upper = np.zeros(max(_upper_words_for(cap, self.m), keep), np.int32)
        upper[:used] = a.upper_links[:used]
        self.arrays = a._replace(
            levels=grown(a.levels, -1),
            links0=grown(a.links0, 0),
            upper_start=grown(a.upper_start, -1),
            upper_links=upper,
            tombstones=grown(a.tombstones, 0),
            locks=np.zeros(cap, np.int32),
            header=a.header.copy(),
        )

    def nbytes(self) -> dict[str, int]:
        """Bytes held per array."""
        return {name: int(getattr(self.arrays, name).nbytes) for name in GraphArrays._fields}
