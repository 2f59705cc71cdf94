"""The state of one index: what ``Hnsw`` holds and what the other layers may read.

:class:`IndexState` is the internal API between ``Hnsw`` and the modules that work on an
index (maintenance, persistence, the hnswlib loader, k-NN graphs): the graph arrays, the
key map, the readers-writer lock, the visited pool. ``Hnsw`` is built from one
(:meth:`hnsw_numba.Hnsw.from_state`) and exposes its own as ``index.state``. Operations
that replace the graph or key map (growth, compaction) build new objects and
:meth:`IndexState.install` them under the exclusive lock; readers that took a reference to
the old arrays finish on them.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import numpy as np

from ..kernels.layout import H_ENTRY, GraphArrays
from .config import HnswConfig
from .graph import Graph
from .half_walk import HalfWalks
from .keymap import KeyMap
from .limits import check_allocation
from .metrics import Metric
from .rowwrites import RowWrites
from .rwlock import RWLock
from .visited import VisitedPool

__all__ = ["IndexState"]


class IndexState:
    """Mutable state of one index (shared by reference, never copied).

    Attributes
    ----------
    metric : Metric
    config : HnswConfig
        ``config.max_nodes`` equals the graph's capacity.
    graph : Graph
        The flat graph arrays (``graph.arrays``) and NodeId hand-out.
    keys : KeyMap
        Key <-> NodeId (or a read-only stand-in with the same reading methods).
    lock : RWLock
        Shared: searches never take it; mutations take it shared (the kernels synchronise
        among themselves). Exclusive: growth, compaction, repair, save, integrity checks.
    alloc : threading.Lock
        Serialises NodeId hand-out, key-map writes and tombstone counts.
    reviving : set of int
        NodeIds of deleted keys an insert is bringing back (claimed under ``alloc`` until
        each is un-deleted): another insert of the key, ``undelete`` and ``rename_deleted``
        leave them alone.
    visited : VisitedPool
        Per-thread visited tags sized to the graph's capacity.
    rng : numpy.random.Generator
        Draws node levels.
    read_only : bool
        A view of foreign memory (a mapped hnswlib file): mutations raise.
    epoch : int
        Compaction generation, a seqlock: odd while :meth:`rewriting` rewrites rows in
        place, bumped again when it ends. A lock-free search reads it before and after;
        an odd or changed value means it may have mixed old NodeIds with moved vectors,
        so it waits for the lock and runs again (see :meth:`stable`).
    dropped_ceiling : int
        One past every NodeId and int key the index held before a compaction that dropped
        nodes (0 until one does): ``hn.Index`` numbers new items past it, so a number
        handed out never names a second item, in this index or a saved or pickled copy.
    row_writes : RowWrites
        Seqlock of rows rewritten in place by ``set`` (see :mod:`.rowwrites`): a search
        whose answer holds such a row runs again.
    half_walks : HalfWalks
        The float16 copies large inserts walk (see :mod:`.half_walk`): row writers keep them current.
    """

    __slots__ = ("metric", "config", "graph", "keys", "lock", "alloc", "reviving", "visited", "rng", "read_only", "epoch",
                 "dropped_ceiling", "row_writes", "half_walks", "tomb_writes", "renumbered")

    def __init__(self, metric: Metric, config: HnswConfig, graph: Graph, keys: Any, *, read_only: bool = False) -> None:
        self.metric = metric
        self.config = config
        self.graph = graph
        self.keys = keys
        self.lock = RWLock()
        self.alloc = threading.Lock()
        self.reviving: set[int] = set()
        self.visited = VisitedPool(graph.capacity)
        self.rng = np.random.default_rng(config.seed)
        self.read_only = read_only
        self.epoch = 0
        self.dropped_ceiling = 0
        self.row_writes = RowWrites()
        self.half_walks = HalfWalks()
        self.tomb_writes = 0  # changes of tombstones (deletes, resurrections): kept Filters count again
        self.renumbered = 0  # compactions and renumberings that moved NodeIds: a mask over the old ones names other items

    @classmethod
    def empty(cls, metric: Metric, config: HnswConfig) -> "IndexState":
        """An empty index of ``config.max_nodes`` NodeIds (checked against physical memory)."""
        check_allocation(Graph.bytes_for(config.max_nodes, config.m), f"a graph of {config.max_nodes:,} nodes")
        return cls(metric, config, Graph.empty(config.max_nodes, config.m), KeyMap(config.max_nodes))

    @classmethod
    def from_arrays(cls, metric: Metric, config: HnswConfig, arrays: GraphArrays, keys: Any, *, read_only: bool = False) -> "IndexState":
        """State over validated arrays (loaders call this after checking everything)."""
        return cls(metric, config, Graph(arrays), keys, read_only=read_only)

    def install(self, *, graph: Graph | None = None, keys: Any = None, config: HnswConfig | None = None) -> None:
        """Swap in a new graph, key map or configuration (the caller holds the exclusive lock).

        A graph of another capacity gets a new visited pool; a search that already read the
        old graph finishes on it (the kernels replace a visited array that is too short).
        """
        if graph is not None:
            if graph.capacity != self.graph.capacity:
                self.visited = VisitedPool(graph.capacity)
            self.graph = graph
        if keys is not None:
            self.keys = keys
        if config is not None:
            self.config = config

    @contextmanager
    def rewriting(self) -> Iterator[None]:
        """Mark an in-place rewrite of rows that lock-free searches read (the caller holds
        the exclusive lock): the epoch is odd inside, and differs from its value before."""
        self.epoch += 1
        try:
            yield
        finally:
            self.epoch += 1

    def stable(self, epoch: int) -> bool:
        """Whether a lock-free read that began at ``epoch`` saw no in-place rewrite.

        When False, the reader calls :meth:`wait_rewrite` and reads again.
        """
        return not epoch & 1 and self.epoch == epoch

    def read_stable(self, read: Callable[[], Any]) -> Any:
        """``read()`` (lock-free), run again until no in-place rewrite overlapped it.

        An error raised by a read that a rewrite overlapped runs it again too (rows moved
        under it can fail its checks, such as the store's row of the entry point); raised
        by a stable read, it propagates.
        """
        while True:
            epoch = self.epoch
            try:
                out = read()
            except Exception:
                if self.stable(epoch):
                    raise
                self.wait_rewrite()
                continue
            if self.stable(epoch):
                return out
            self.wait_rewrite()

    def wait_rewrite(self) -> None:
        """Wait until a running in-place rewrite (which holds the exclusive lock) ends."""
        with self.lock.shared():
            pass

    @property
    def node_count(self) -> int:
        """NodeIds handed out (live and deleted)."""
        return self.graph.node_count

    @property
    def entry_point(self) -> int:
        """The graph's entry point NodeId, -1 while it is empty."""
        return int(self.graph.arrays.header[H_ENTRY])

    def reviving_mask(self, nids: np.ndarray) -> np.ndarray:
        """``bool`` per NodeId of ``nids``: an insert is bringing it back (see ``reviving``)."""
        return np.isin(nids, list(self.reviving)) if self.reviving else np.zeros(np.shape(nids), bool)

    def live_ids(self) -> np.ndarray:
        """NodeIds (int32) of the live nodes, ascending."""
        n = self.graph.node_count
        return np.flatnonzero(self.graph.arrays.tombstones[:n] == 0).astype(np.int32)
