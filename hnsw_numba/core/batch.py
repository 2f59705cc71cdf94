"""Unfiltered batch search: validated queries in, ``(keys, distances, NodeIds)`` arrays out, on all cores.

Filtered batches run in :mod:`.filtered`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..kernels.bruteforce import bruteforce_kernel
from ..kernels.layout import H_ENTRY, H_NODES, PREP_CHECK, PREP_NORMALIZE, exact_rows
from ..kernels.rowseq import acquire_fence
from ..kernels.search import knn_kernel, prepare_rows
from .errors import InvalidParameterError, nonfinite_error
from .limits import check_results
from .metrics import Metric
from .parallel import in_rounds, resolve_threads, run_parallel
from .rowwrites import settle_batch
from .state import IndexState
from .store_base import limit_error
from .validate import check_ef, check_flag, check_k, check_store, float32_vectors, prepare_vectors, rows_cover

__all__ = ["search_prepared", "prepare_queries", "prepare_args", "batch_args", "NO_STARTS", "NO_MASK"]

#: No start nodes: every query descends from the entry point.
NO_STARTS = np.empty(0, np.int32)
#: An empty mask: every node is allowed.
NO_MASK = np.empty(0, np.uint8)
#: Queries of a batch's first round of walks (later rounds aim at ``parallel.ROUND_SECONDS``):
#: the benchmarks' batches, and most others, run in one.
FIRST_ROUND = 4096
#: Distance components (rows x dim, summed over its queries) an exact batch's first round reads.
EXACT_ROUND_OPS = 500_000_000


def prepare_queries(metric: Metric, dim: int, vectors: Any, single: bool = False) -> np.ndarray:
    """Validated float32 queries ready for the kernels, shape ``(n, dim)`` (``(1, dim)`` if
    ``single``): :func:`~.validate.prepare_vectors`'s checks and errors, with the values the
    single-query path gives each query (``kernels.search.prepare_rows``: one kernel call
    checks and, for cosine, normalises every row, a fraction of NumPy's passes over them)."""
    v = float32_vectors(dim, vectors, single, metric.normalize)
    if metric.normalize:
        out = np.array(v, dtype=np.float32, order="C")  # normalised in place: never the caller's array
    else:
        out = np.ascontiguousarray(v)  # only read: no copy
        if not out.flags.writeable:  # (a mapped file) the kernel's type writes: NumPy checks it
            return prepare_vectors(metric, dim, out, False)
    if out.shape[0] == 0:
        return out
    bad = prepare_rows(out, PREP_NORMALIZE if metric.normalize else PREP_CHECK)  # as prepare_args
    if bad >= 0:
        if not np.isfinite(v[bad]).all():
            raise nonfinite_error(bad)
        raise limit_error(bad, dim)
    return out


def prepare_args(metric: Metric, dim: int) -> tuple:
    """Arguments of the types of :func:`prepare_queries`'s ``prepare_rows`` call."""
    return (np.zeros((1, dim), np.float32), PREP_NORMALIZE if metric.normalize else PREP_CHECK)


def batch_args(state: IndexState, arrays: Any, rows: tuple) -> tuple:
    """Arguments of the types of the graph walk's ``knn_kernel`` calls for ``arrays`` (the
    graph's) and ``rows`` (a store's checked ``rows()``): what its specialisation is compiled for."""
    dim = state.config.dim
    return (arrays, rows, state.metric.code, np.empty((0, dim), np.float32), 1, 1, NO_MASK, state.visited.acquire(), np.zeros(1, np.int64), 4,
            np.empty((0, 1), np.int32), np.empty((0, 1), np.float32), NO_STARTS)


def search_prepared(state: IndexState, store: Any, queries: np.ndarray, k: Any, flt: None = None, ef: Any = None,
                    num_threads: int | None = None, exact: bool = False, starts: np.ndarray = NO_STARTS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(keys, distances, NodeIds)`` of the k nearest live items of prepared ``queries``.

    ``flt`` must be None (a filter goes through :class:`~hnsw_numba.core.filtered.FilteredSearch`).

    Parameters
    ----------
    queries : float32 (n, dim)
        As :func:`~hnsw_numba.core.validate.prepare_vectors` returns them.
    starts : int32 (n,), optional
        Start each query's level-0 search at this NodeId instead of descending from the
        entry point (the self-join of ``knn_graph`` starts every item at its own node);
        a NodeId at or past the graph's node count raises InvalidParameterError.

    Notes
    -----
    Takes no lock: a search holds references to the arrays it reads, so a concurrent
    resize cannot pull memory from under it; it sees the old or the new graph. A
    compaction (which moves rows in place) running meanwhile is detected by the state's
    epoch (a seqlock): the search waits for it to end and runs again.
    """
    exact = check_flag("exact", exact)
    return state.read_stable(lambda: _search_once(state, store, queries, k, flt, ef, num_threads, exact, starts))


def _search_once(state: IndexState, store: Any, queries: np.ndarray, k: Any, flt: Any, ef: Any, num_threads: int | None,
                 exact: bool, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    k = check_k(k)
    ef = max(check_ef(ef, state.config.ef_search), k)
    # the graph's arrays before the rows: a growth resizes the store first, so rows read
    # after them hold a row for each of their NodeIds (in the other order a growth in
    # between pairs the grown graph with the old rows, and the walk and the exact scan read
    # past their end at the nodes inserted next); the count and entry point are theirs,
    # the count read after the rows too (see rows_cover: a shrink of the store)
    arrays = state.graph.arrays
    rows = check_store(state.metric, state.config.dim, int(arrays.header[H_NODES]), store, int(arrays.header[H_ENTRY]))
    count = rows_cover(arrays, rows)
    n = queries.shape[0]
    if starts.shape[0] and (starts.shape[0] != n or int(starts.max()) >= count):
        # NodeIds read from the index before (knn_graph's): a compaction and a shrink
        # since leave them past the arrays and the rows, where the walk would begin
        raise InvalidParameterError(f"starts must hold one NodeId per query, each below the {count:,} nodes of the graph")
    threads = resolve_threads(num_threads, n, 8)
    check_results(n, k)
    out_ids = np.full((n, k), -1, np.int32)
    out_d = np.full((n, k), np.inf, np.float32)
    if flt is not None:
        raise InvalidParameterError("core.batch.search_prepared takes no filter: use Hnsw.search_prepared")
    code = state.metric.code
    cand = np.flatnonzero(arrays.tombstones[:count] == 0).astype(np.int32) if exact else None
    visited = state.visited

    def run(qs: np.ndarray, st: np.ndarray, ids: np.ndarray, dists: np.ndarray, threads: int) -> tuple[np.ndarray, np.ndarray]:
        counter = np.zeros(1, np.int64)
        if cand is not None:
            vectors = exact_rows(rows)  # the vectors themselves, not a walk copy

            def work() -> None:
                bruteforce_kernel(vectors, code, qs, cand, k, counter, 1, ids, dists)

        else:

            def work() -> None:
                knn_kernel(arrays, rows, code, qs, k, ef, NO_MASK, visited.acquire(), counter, 4, ids, dists, st)

        run_parallel(work, threads)
        return ids, dists

    rw = state.row_writes
    s0 = rw.count  # row seqlock (see .rowwrites): the fence orders it before the rows read
    acquire_fence()

    def step(a: int, b: int) -> None:
        run(queries[a:b], starts[a:b] if starts.shape[0] else starts, out_ids[a:b], out_d[a:b], threads)

    # in rounds of ~0.5 s, so Ctrl-C stops a long batch; a batch of up to FIRST_ROUND walks
    # (or an exact scan's worth of distances) runs in one
    first = FIRST_ROUND if cand is None else max(8 * threads, EXACT_ROUND_OPS // max(1, cand.shape[0] * state.config.dim))
    in_rounds(n, step, first, least=8 * threads)

    def again(bad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        st = starts[bad] if starts.shape[0] else starts
        return run(queries[bad], st, np.full((bad.shape[0], k), -1, np.int32), np.full((bad.shape[0], k), np.inf, np.float32), 1)

    settle_batch(state, store, queries, s0, out_ids, out_d, again)
    return state.keys.keys_for(out_ids), out_d, out_ids
