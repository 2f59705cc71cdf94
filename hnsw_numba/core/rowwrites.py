"""Rows rewritten in place (``set`` of a live key) against searches that take no lock.

A search reads rows while ``set`` may be rewriting one: a row read half old, half new (a
Qi8 row: codes of one vector, scale of the other) gives a distance that belongs to neither
vector. The walk may read such a row (it only steers the walk), but no answer may carry
one. :class:`RowWrites` is a seqlock per row: a global count, odd while a rewrite runs,
and the count each row was last rewritten under. A reader takes the count before it reads
rows and compares it after; while no rewrite ran that is one attribute read. Otherwise the
answers holding a row rewritten meanwhile run again (:data:`RERUNS` times at most, for a
key rewritten without pause), then have their distances computed again under ``alloc``,
which every row rewrite holds.

Memory order. Writer: ``count = s`` (odd), ``seq[rows] = s``, release fence, the row
stores, release fence, ``seq[rows] = s + 1``, ``count = s + 1``. Reader: ``s0 = count``,
acquire fence, the row loads, acquire fence, ``count`` and ``seq`` loads. A reader's row
load that sees any store of the rewrite makes the writer's first fence synchronise with
the reader's second one: the reader then sees ``seq >= s`` and reruns. A reader whose
``s0`` is the ended rewrite's ``s + 1`` sees (second writer fence, first reader fence) the
whole new row. On x86 the fences compile to no instruction (loads are not reordered with
loads, nor stores with stores) and only keep the compiler from moving accesses across
them; on ARM they are ``dmb ishld`` (acquire) and ``dmb ish`` (release). The GIL orders
Python-level reads and writes of ``count`` between threads but not a thread's own
Python-level read against the loads of a kernel it runs without the GIL, hence the
fences: in ``knn_one_kernel`` itself on the single-query path (free on x86), through
:func:`~hnsw_numba.kernels.rowseq.acquire_fence` elsewhere.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

import numpy as np

from ..kernels.bruteforce import bruteforce_kernel
from ..kernels.layout import exact_rows
from ..kernels.rowseq import acquire_fence, mark_rows, publish_rows, rows_rewritten
from ..kernels.shortlist import prepared_query
from .store_base import decode_rows

__all__ = ["RowWrites", "RERUNS", "rewriting", "settle_found", "settle_batch", "read_rows", "rescored"]

#: Times a search whose answer holds a row rewritten meanwhile runs again before its
#: distances are computed under ``alloc`` instead (a key rewritten without pause).
RERUNS = 2


class RowWrites:
    """The seqlock of in-place row rewrites (one per index, in ``IndexState.row_writes``).

    Attributes
    ----------
    count : int
        Even at rest, odd while a rewrite runs; bumped under ``alloc`` only.
    seq : int64 ndarray
        Per NodeId, the count its last rewrite began (odd) or ended (even) under; grown
        by writers, 0 for rows never rewritten. Compaction moves rows without renumbering
        them here: every value stays <= ``count``, so none looks newer than a later reader's
        ``s0``, and a search that overlaps the compaction runs again anyway.
    """

    __slots__ = ("count", "seq")

    def __init__(self) -> None:
        self.count = 0
        self.seq = np.zeros(0, np.int64)

    def rewritten(self, s0: int, ids: np.ndarray) -> np.ndarray:
        """``bool`` like ``ids`` (int32 NodeIds, C-contiguous, -1 padding): rows a rewrite
        may have torn for a reader that took the count ``s0`` (after an acquire fence)."""
        return rows_rewritten(self.seq, ids.ravel(), s0).reshape(ids.shape)

    def quiet(self, s0: int) -> bool:
        """Whether no rewrite began or ran since the count ``s0`` (an acquire fence first)."""
        acquire_fence()
        return self.count == s0 and not s0 & 1


@contextmanager
def rewriting(state: Any, nids: np.ndarray) -> Iterator[None]:
    """Bracket an in-place write of rows ``nids`` (int32; the caller holds ``state.alloc``)."""
    rw = state.row_writes
    need = int(nids.max()) + 1 if nids.shape[0] else 0
    if rw.seq.shape[0] < need:  # a new array before the count moves: readers of the old one see older rewrites only
        grown = np.zeros(max(need, state.graph.capacity), np.int64)
        grown[: rw.seq.shape[0]] = rw.seq
        rw.seq = grown
    s = rw.count + 1
    rw.count = s
    mark_rows(rw.seq, nids, s)
    try:
        yield
    finally:
        publish_rows(rw.seq, nids, s + 1)
        rw.count = s + 1


def rescored(state: Any, store: Any, queries: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, distances)``: each row of ``ids`` (int32 ``(n, k)``, -1 padding) with its
    distances to the prepared ``queries`` (float32 ``(n, dim)``) computed again while
    holding ``alloc`` (no row is rewritten meanwhile), best first."""
    out_ids = np.full(ids.shape, -1, np.int32)
    out_d = np.full(ids.shape, np.inf, np.float32)
    counter = np.zeros(1, np.int64)
    with state.alloc:
        vectors = exact_rows(store.rows())  # the vectors answers carry, not a walk copy
        n_rows = vectors[0].shape[0]
        for i in range(ids.shape[0]):
            # NodeIds past the rows: a compaction and a shrink of the store since the search
            # (whose caller sees the compaction's epoch and searches again)
            cand = np.ascontiguousarray(ids[i][(ids[i] >= 0) & (ids[i] < n_rows)])
            counter[0] = 0
            bruteforce_kernel(vectors, state.metric.code, queries[i : i + 1], cand, ids.shape[1], counter, 1, out_ids[i : i + 1], out_d[i : i + 1])
    return out_ids, out_d


def settle_found(state: Any, store: Any, query: np.ndarray, prep: int, s0: int, found: list, reruns: int, again: Callable[[int], list]) -> list:
    """A single query's ``found`` (``[(key, distance, NodeId), ...]``) once no result's row
    was rewritten during the search that began at count ``s0``.

    ``again(reruns + 1)`` runs the search again (it settles its own answer); after
    :data:`RERUNS` of them the distances are computed again under ``alloc``. ``query``
    (float32 ``(dim,)``) and ``prep`` as the search's kernel took them.
    """
    nids = np.fromiter((hit[2] for hit in found), np.int32, len(found))
    if not state.row_writes.rewritten(s0, nids).any():
        return found
    if reruns < RERUNS:
        return again(reruns + 1)
    _, q = prepared_query(query, state.config.dim, prep)  # the kernel's own preparation: accepted by the search
    ids, dists = rescored(state, store, q[None, :], nids[None, :])
    key_of = {hit[2]: hit[0] for hit in found}
    return [(key_of[nid], d, nid) for nid, d in zip(ids[0].tolist(), dists[0].tolist()) if nid >= 0]


def settle_batch(state: Any, store: Any, queries: np.ndarray, s0: int, out_ids: np.ndarray, out_d: np.ndarray,
                 again: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]) -> None:
    """Make every row of ``out_ids`` / ``out_d`` (a batch's NodeIds and distances, in place)
    free of rows rewritten during the search that began at count ``s0``.

    ``again(rows)`` searches ``queries[rows]`` again and returns their ``(ids, distances)``;
    after :data:`RERUNS` rounds the remaining rows' distances are computed under ``alloc``.
    """
    rw = state.row_writes
    rows = None  # all rows, then the ones searched again (each checked against its own search's count)
    for tries in range(RERUNS + 1):
        if rw.quiet(s0):
            return
        torn = rw.rewritten(s0, out_ids if rows is None else out_ids[rows]).any(axis=1)
        rows = np.flatnonzero(torn) if rows is None else rows[torn]
        if rows.shape[0] == 0:
            return
        if tries == RERUNS:
            out_ids[rows], out_d[rows] = rescored(state, store, queries[rows], out_ids[rows])
            return
        s0 = rw.count
        acquire_fence()
        out_ids[rows], out_d[rows] = again(rows)


def read_rows(state: Any, store: Any, nids: np.ndarray, read: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """:func:`~.store_base.decode_rows` of ``nids`` (float32 ``(n, dim)``) with no row read
    while a rewrite tore it: rows rewritten meanwhile are read again, the last time under
    ``alloc``. ``read(nids)``, when given, reads the rows instead of ``decode_rows`` (a new
    float32 array, one row per NodeId)."""
    if read is None:
        read = lambda ids: decode_rows(store, ids)  # noqa: E731
    rw = state.row_writes
    s0 = rw.count
    acquire_fence()
    out = read(nids)
    rows = np.arange(nids.shape[0])
    for tries in range(RERUNS + 1):
        if rw.quiet(s0):
            return out
        rows = rows[rw.rewritten(s0, nids[rows])]
        if rows.shape[0] == 0:
            return out
        if tries == RERUNS:
            with state.alloc:
                out[rows] = read(nids[rows])
            return out
        s0 = rw.count
        acquire_fence()
        out[rows] = read(nids[rows])
    return out
