"""Filtered and planned searches: one query or a batch, one filter or one per query.

``Hnsw.search`` / ``search_batch`` come here when a filter or a plan is given. The filter is
compiled (:class:`~hnsw_numba.core.filters.Filter`; a compiled one is reused as is), the
planner (:mod:`.planner`) picks the graph walk, the widened walk or exact search over the
allowed rows, and one compiled call answers. The single-query call binds the compiled entry
point once per store, as :mod:`.single` does, so a reused Filter costs no O(n) work per call.
Exact search through a kept Filter reads its block with a lean kernel, and from ``SKETCH_ROWS``
allowed rows (or ``SKETCH_ELEMS`` rows x dimensions) re-scores only the rows an int8 sketch's
error bounds leave open (:mod:`~hnsw_numba.kernels.sketch`); a batch takes dot products from
NumPy's matmul (every core) and re-scores a shortlist (:mod:`~hnsw_numba.kernels.shortlist`).
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any, NamedTuple

import numpy as np

from ..kernels.codedot import VNNI
from ..kernels.filtered import PLAN_DEFER, PLAN_EXACT, PLAN_WALK, USED_ACORN, USED_DESCEND, USED_EXACT, USED_PLANNED, USED_POST, USED_WIDE, knn_filter_kernel, knn_filter_one_kernel
from ..kernels.layout import PREP_CHECK, PREP_NONE, PREP_NORMALIZE, BF16Rows, F16Rows, F32Rows, Qi8Rows, exact_rows
from ..kernels.rowseq import acquire_fence
from ..kernels.search import ONE_OK
from ..kernels.shortlist import shortlist_many_kernel
from . import filters as filter_blocks
from .batch import NO_STARTS, prepare_queries, search_prepared
from .block_search import NO_KEYS, exact_one, kept_sketch, sketch_batch, sketch_for, entry_point as _entry, found_hits as _found_hits
from .config import MAX_EF
from .errors import CapacityError
from .batch_filters import check_filters, per_query_filters
from .filters import Filter, empty_block, mask_filter
from .hits import Hits
from .kept_exact import search_kept
from .kept_walk import KeptWalk, remember_walk, search_kept_walk
from .limits import RESULT_ENTRY_BYTES, check_allocation
from .parallel import available_cores, resolve_threads, run_parallel
from .planner import PLANS, SearchPlan, check_plan, choose_plan
from .progress import compile_step, interactive
from .rowwrites import settle_batch, settle_found
from .single import check_query_status
from .state import IndexState
from .store_base import same_rows
from .validate import check_ef, check_flag, check_k, check_store, rows_cover

__all__ = ["FilteredSearch", "NO_KEYS", "BLAS_ROWS", "BATCH_BLAS_ROWS", "BATCH_BLAS_ELEMS", "SKETCH_ROWS", "SKETCH_ELEMS", "DEFER_ROWS", "SPLIT_ROWS"]

_F32 = np.dtype(np.float32)
#: From this many allowed rows, a batch of exact queries through a kept Filter (and a single one
#: the sketch does not take) computes dot products with BLAS (NumPy's matmul over the Filter's
#: float32 copy: every core) and re-scores a shortlist with the scan's kernel; a batch already from
#: ``BATCH_BLAS_ROWS`` rows and ``BATCH_BLAS_ELEMS`` rows x dimensions (docs/design.md).
BLAS_ROWS, BATCH_BLAS_ROWS, BATCH_BLAS_ELEMS = 1200, 64, 2048
#: From this many allowed rows (per row class of the store's vectors), a single exact query
#: through a kept Filter estimates distances from the block's int8 sketch and re-scores the rows
#: their error bounds leave open (:mod:`~hnsw_numba.kernels.sketch`); below, the scan is as
#: fast or faster (half-precision and Qi8 rows scan faster than float32 ones; docs/design.md).
#: Where its sums run through ``vpdpbusd`` (``VNNI``) the sketch is faster from ``SKETCH_ELEMS``
#: allowed rows x dimensions too: fewer rows from 140-200 dimensions (384-d float32: 261).
SKETCH_ROWS = {F32Rows: 500, Qi8Rows: 500, F16Rows: 700, BF16Rows: 700}
SKETCH_ELEMS = {F32Rows: 100_000, Qi8Rows: 70_000, F16Rows: 115_000, BF16Rows: 115_000} if VNNI else {}
#: From this many allowed rows, a query whose walk leaves for exact search through a kept Filter
#: with a sketch returns unanswered from the walk's kernel and is answered from the sketch (a
#: second call, which the sketch pays for from about a thousand rows).
DEFER_ROWS = 1200
#: From this many allowed rows, a single query's exact scan without a block or a sketch (a filter
#: not kept, a store without ``version``) runs on every core, one part of the rows each.
SPLIT_ROWS = 50_000
#: Dot products one GEMM tile of a batch holds (float32: 8 MiB).
TILE_DOTS = 1 << 21


class _Binding(NamedTuple):
    store: Any
    rows: tuple  # the walks' (a walk copy where the store keeps one)
    vectors: tuple  # the exact paths' and a Filter's copy's: the vectors themselves
    graph: Any
    key_array: np.ndarray
    node_keys: np.ndarray
    entry: Any
    dim: int
    prep: int
    code: int
    empty: tuple  # a block of no rows: exact search gathers from the store
    exact: dict  # block class -> compiled entry point of exact_one_kernel (and prepared_query -> its own)


class FilteredSearch:
    """Filtered and planned searches of one index (owned by ``Hnsw``).

    ``last_plan`` is the :class:`~hnsw_numba.core.planner.SearchPlan` of the latest call
    through here, from whichever thread made it (a batch with one filter per query: its last query's).
    ``recent``: the Filter the latest single query made of a boolean mask (:func:`~.filters.mask_filter`).
    """

    __slots__ = ("state", "bound", "last_plan", "recent")

    def __init__(self, state: IndexState) -> None:
        self.state = state
        self.bound: _Binding | None = None
        self.last_plan: SearchPlan | None = None
        self.recent: Filter | None = None

    def compiled(self, flt: Any, since: int | None = None) -> Filter:
        """``flt`` as a Filter of this index (a Filter is checked and reused); ``since``: the
        index's renumberings when the call began (a mask made again on a rerun checks them)."""
        if type(flt) is Filter:
            flt.current(self.state)
            return flt
        return Filter(self.state, flt, since=since)

    def plan_for(self, f: Filter, k: int, ef: int, plan: str, held: bool = False, store: Any = None) -> SearchPlan:
        """The planner's choice for ``f`` (``held``: a Filter the caller keeps, whose exact search
        over a ``store`` with a ``version`` reads its block's sketch when the block fits), cached
        on the filter per (k, ef, plan) until it is compiled again."""
        c = f.current()
        key = (k, ef, plan)
        p = f.plans.get(key)
        if p is None:
            g, dim = self.state.graph, self.state.config.dim
            sketched = held and type(getattr(store, "version", None)) is int and DEFER_ROWS <= c.ids.shape[0] and filter_blocks.block_fits(store.rows(), c.ids.shape[0])
            p = f.plans[key] = choose_plan(f.live, g.node_count - g.deleted_count, c.graph.links0.shape[1] - 1, ef, plan, dim, sketched, k)
        return p

    def _unfiltered(self, ef: int, forced: bool, exact: bool) -> SearchPlan:
        g = self.state.graph
        live = g.node_count - g.deleted_count
        return SearchPlan("exact" if exact else "unfiltered", ef, live, live, 0.0, 0.0, forced)

    # ------------------------------------------------------------------ one query
    def search(self, store: Any, query: Any, k: Any, flt: Any, ef: Any, exact: bool, plan: str, explain: bool, reruns: int = 0) -> Any:
        """``Hnsw.search`` with a filter, a plan or ``explain`` (see there); rerun when a
        compaction overlapped it (see :meth:`IndexState.read_stable`) or rewrote a row of its
        answer (``reruns``: the times it ran before, see :mod:`.rowwrites`)."""
        state = self.state
        since = state.renumbered  # read before the epoch: a renumbering after it changes the epoch too
        epoch = state.epoch
        s0 = state.row_writes.count  # before the rows: the fence orders them (Filter blocks are copied here too)
        acquire_fence()
        try:
            out = self._search(store, query, k, flt, ef, exact, plan, explain)
        except Exception:
            if state.stable(epoch):  # as read_stable: only a read a compaction overlapped runs again
                raise
            out = None
        if out is None or not state.stable(epoch):  # IndexState.read_stable without a closure per call
            out = state.read_stable(lambda: self._search(store, query, k, flt, ef, exact, plan, explain, since))
        if state.row_writes.quiet(s0):
            return out
        hits = out[0] if explain else out
        q = prepare_queries(state.metric, state.config.dim, query, True)[0]
        hits = Hits(settle_found(state, store, q, PREP_NONE, s0, hits.raw, reruns,
                                 lambda r: self.search(store, query, k, flt, ef, exact, plan, False, r).raw))
        if not state.stable(epoch):  # the settling read rows of these NodeIds: a compaction since the start moves them
            state.wait_rewrite()
            return self.search(store, query, k, flt, ef, exact, plan, explain, reruns)
        return (hits, out[1]) if explain else hits

    def kept(self, store: Any, query: Any, k: Any, flt: Filter, ef: Any, plan: str) -> Hits | None:
        """The answer of the call kept on ``flt`` (``search_kept[_walk]``), or None: not current, or overlapped."""
        out = (search_kept_walk if type(flt.kept) is KeptWalk else search_kept)(self.state, flt, store, query, k, ef, plan)
        if out is not None:
            self.last_plan = out[1]
            return out[0]
        return None

    def _search(self, store: Any, query: Any, k: Any, flt: Any, ef: Any, exact: bool, plan: str, explain: bool, since: int | None = None) -> Any:
        state = self.state
        if explain is not False:
            explain = check_flag("explain", explain)
        if exact is not False and check_flag("exact", exact):
            plan = "exact"
        elif plan not in PLANS:
            check_plan(plan)
        if type(k) is not int or not 0 < k <= MAX_EF:
            k = check_k(k)
        if ef is None:
            ef = state.config.ef_search
        elif type(ef) is not int or not 0 < ef <= MAX_EF:
            ef = check_ef(ef, 0)
        if ef < k:
            ef = k
        if flt is None:
            chosen = self._unfiltered(ef, plan != "auto", plan == "exact")
            keys, out_d, out_ids = search_prepared(state, store, prepare_queries(state.metric, state.config.dim, query, True), k, None, ef, 1, plan == "exact")
            hits = Hits.of_row(keys[0].tolist(), out_d[0].tolist(), out_ids[0].tolist())
        else:
            if type(flt) is not np.ndarray or flt.dtype != np.bool_:
                f = flt if type(flt) is Filter and flt.state is state else self.compiled(flt, since)
            else:  # a single query attaches no block or sketch to a Filter it was not given: one to reuse
                f = self.recent = mask_filter(self.recent, state, flt, since)
            c = f.current()
            chosen = f.plans.get((k, ef, plan))
            if chosen is None:
                chosen = self.plan_for(f, k, ef, plan, f is flt, store)
            hits, chosen = self._one(store, query, (k, ef, plan), f, c, chosen, f is flt, explain)
        self.last_plan = chosen
        return (hits, chosen) if explain else hits

    def _one(self, store: Any, query: Any, key: tuple, f: Filter, c: Any, chosen: SearchPlan, held: bool, explain: bool) -> tuple[Hits, SearchPlan]:
        k = key[0]  # key: (k, ef, plan), the plan's on the Filter
        bound = self.bound
        if bound is None or bound.store is not store:
            bound = self.bind(store)
        state = self.state
        now = store.rows()
        if (now is not bound.rows and not same_rows(bound.rows, now)) or bound.graph is not state.graph.arrays or bound.key_array is not state.keys.node_keys:
            bound = self.bind(store)
        prep = bound.prep
        if type(query) is not np.ndarray or query.dtype is not _F32 or query.ndim != 1:
            query, prep = prepare_queries(state.metric, bound.dim, query, True)[0], PREP_NONE
        block = bound.empty
        plan_code = chosen.code
        deferred = None
        if plan_code == PLAN_EXACT or ((f.block is not None or f.sketch is not None) and chosen.short_plan == "exact"):
            if held:  # a Filter the caller keeps: its block serves the next searches too
                if plan_code == PLAN_EXACT:
                    if c.ids.shape[0] >= SKETCH_ROWS.get(type(bound.vectors), BLAS_ROWS) or c.ids.shape[0] * bound.dim >= SKETCH_ELEMS.get(type(bound.vectors), 1 << 62):
                        sketch = sketch_for(f, store, bound.vectors, c, True)  # without a block: of the store's rows
                        if sketch is not None:
                            return exact_one(self, bound, query, prep, k, c, sketch.block, sketch, (f, store, chosen)), chosen
                    if c.ids.shape[0] >= BLAS_ROWS:
                        dense = f.dense_for(store, bound.vectors, c)
                        if dense is not None:
                            return exact_one(self, bound, query, prep, k, c, dense.block, dense), chosen
                    kept = f.block_for(store, bound.vectors, c)
                    if kept is not None:
                        return exact_one(self, bound, query, prep, k, c, kept, None, (f, store, chosen)), chosen
                else:  # the walk may leave for exact search: the kept block serves it
                    block = f.block_for(store, bound.vectors, c) or block
                    sketch = kept_sketch(f, store, bound.vectors, c, block)
                    if c.ids.shape[0] >= DEFER_ROWS and sketch is not None:
                        plan_code |= PLAN_DEFER  # a query that leaves comes back for the sketch
                        deferred = sketch
        # many allowed rows and no block: an exact answer scans them on every core
        split = block is bound.empty and c.ids.shape[0] >= SPLIT_ROWS and (plan_code == PLAN_EXACT or chosen.short_plan == "exact") and available_cores() > 1
        visited, sf, si = state.visited.single()
        if split and plan_code == PLAN_EXACT:
            (status, found), used, local = self._split_scan(bound, query, prep, k, c), USED_PLANNED, -1.0
        else:
            # the graph the filter was compiled for: its mask covers that graph's NodeIds, and the
            # rows checked above (after the compilation) cover them too; the bound graph may be
            # newer (a growth between the two), with NodeIds past the mask's end
            status, found, used, local = bound.entry(c.graph, bound.rows, block, bound.code, query, bound.dim, k, chosen.ef, visited, sf, si, bound.node_keys, prep,
                                        c.mask, c.ids, c.seeds, plan_code | (PLAN_DEFER if split else 0))
            if split and deferred is None and used == USED_EXACT and not status:  # the walk left it unanswered
                status, found = self._split_scan(bound, query, prep, k, c)
            elif held and not status and plan_code & 1 == PLAN_WALK and used != USED_EXACT and c.graph is state.graph.arrays:  # the next walk directly
                remember_walk(f, store, bound.rows, c, bound.key_array, key, chosen, bound.entry, bound.empty, bound.code, bound.dim, bound.prep, bound.node_keys)
        node_keys = bound.node_keys
        if status:
            check_query_status(status, state, query)
            with state.lock.shared():  # stale rows: the index grew; bind again and retry once
                b = self.bind(store)
                c = f.current()
                deferred = None
                plan_code &= ~PLAN_DEFER
                status, found, used, local = b.entry(b.graph, b.rows, b.empty, b.code, query, b.dim, k, chosen.ef, visited, sf, si, b.node_keys, prep, c.mask, c.ids, c.seeds,
                                                     plan_code)
                node_keys = b.node_keys
            if status:
                raise CapacityError(f"the index has {state.node_count} nodes but the store's rows cover fewer")
        if used == USED_EXACT and deferred is not None:
            hits = exact_one(self, bound, query, prep, k, c, deferred.block, deferred)
        else:
            hits = _found_hits(found, node_keys, state)
        if used:  # the walk's probe sent the query from the planned walk
            chosen = chosen.left(1, 1, local, used)
            if used == USED_EXACT and held and deferred is None:  # the next queries that leave read it
                sketch_for(f, store, bound.vectors, c, True) if c.ids.shape[0] >= DEFER_ROWS else f.block_for(store, bound.vectors, c)
        elif explain and chosen.probe > 0.0:
            chosen = chosen._replace(local=local)
        return hits, chosen

    def _split_scan(self, bound: _Binding, query: np.ndarray, prep: int, k: int, c: Any) -> tuple[int, list]:
        """The single-query kernel's exact scan of ``c.ids`` in one part per core, run side by
        side: ``(status, found)`` as the kernel returns them, the k nearest of all parts."""
        n = c.ids.shape[0]
        parts = resolve_threads(None, n, SPLIT_ROWS // 2)
        cuts = np.linspace(0, n, parts + 1).astype(np.int64)
        out: list = [None] * parts
        taken = iter(range(parts))  # next() on a range iterator is atomic under the GIL
        visited_pool = self.state.visited

        def work() -> None:
            visited, sf, si = visited_pool.single()  # this thread's (the exact scan reads no tags)
            for i in taken:
                ids = c.ids[cuts[i] : cuts[i + 1]]
                status, found, _, _ = bound.entry(c.graph, bound.rows, bound.empty, bound.code, query, bound.dim, k, 1, visited, sf, si, bound.node_keys, prep,
                                                  c.mask, ids, c.seeds, PLAN_EXACT)
                out[i] = (status, found)

        run_parallel(work, parts)
        for status, found in out:
            if status:
                return status, found
        return ONE_OK, sorted((hit for _, found in out for hit in found), key=itemgetter(1))[:k]

    def _blas_batch(self, queries: np.ndarray, k: int, c: Any, dense: Any, out_ids: np.ndarray, out_d: np.ndarray) -> None:
        """Exact search of prepared ``queries`` over a large block: one GEMM per tile of queries
        (BLAS threads), then each query's shortlist re-scored on this thread (so BLAS threads
        and ours never run at once)."""
        n = c.ids.shape[0]
        step = max(1, min(queries.shape[0], TILE_DOTS // max(n, 1)))  # a tile's dot products stay within TILE_DOTS floats
        tomb, metric = c.graph.tombstones, self.state.metric.code
        xt = dense.x.T
        for t0 in range(0, queries.shape[0], step):
            t1 = min(queries.shape[0], t0 + step)
            dots = queries[t0:t1] @ xt
            shortlist_many_kernel(dense.block, metric, queries[t0:t1], c.ids, tomb, dots, dense.sq, dense.xmax, k, out_ids[t0:t1], out_d[t0:t1])

    def bind(self, store: Any) -> _Binding:
        """Validate ``store`` and bind the compiled entry point of ``knn_filter_one_kernel``."""
        state = self.state
        metric, dim = state.metric, state.config.dim
        graph, key_array = state.graph.arrays, state.keys.node_keys  # before the rows, as Single.bind
        rows = check_store(metric, dim, state.node_count, store, state.entry_point)
        vectors = exact_rows(rows)
        int_keys = state.keys.is_int and key_array.dtype == np.int64 and key_array.flags.c_contiguous
        node_keys = key_array if int_keys else NO_KEYS
        visited, sf, si = state.visited.single()
        q = np.zeros((2, 2), np.float32)[:, 0]  # strided: the signature serves any query layout
        mask, ids = np.zeros(graph.links0.shape[0], np.uint8), np.zeros(1, np.int32)
        empty = empty_block(vectors)
        args = (graph, rows, empty, metric.code, q, dim, 1, 1, visited, sf, si, node_keys, PREP_NONE, mask, ids, ids[:0], PLAN_WALK)
        compile_step(knn_filter_one_kernel, args, rows, interactive())
        entry = _entry(knn_filter_one_kernel, args)
        if self.recent is not None and self.recent.compiled.graph is not graph:  # it holds the old graph's arrays: they go with the binding
            self.recent = None
        self.bound = b = _Binding(store, rows, vectors, graph, key_array, node_keys, entry, dim, PREP_NORMALIZE if metric.normalize else PREP_CHECK, metric.code, empty, {})
        return b

    # ------------------------------------------------------------------ batches
    def batch(self, store: Any, queries: np.ndarray, k: Any, flt: Any, ef: Any, num_threads: int | None, exact: bool, plan: str,
              starts: np.ndarray = NO_STARTS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(keys, distances, NodeIds)`` of prepared ``queries`` with a filter (one, or one per query) or
        a plan; see ``Hnsw.search_batch``. The plan runs per filter. Rerun when a compaction overlapped it."""
        since = self.state.renumbered  # masks made again on a rerun name the NodeIds of the call's start
        return self.state.read_stable(lambda: self._batch(store, queries, k, flt, ef, num_threads, exact, plan, starts, since))

    def _batch(self, store: Any, queries: np.ndarray, k: Any, flt: Any, ef: Any, num_threads: int | None, exact: bool, plan: str,
               starts: np.ndarray, since: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        state = self.state
        s0 = state.row_writes.count  # row seqlock, as in search
        acquire_fence()
        plan = "exact" if check_flag("exact", exact) else check_plan(plan)
        if flt is None:
            self.last_plan = self._unfiltered(max(check_ef(ef, state.config.ef_search), 1), plan != "auto", plan == "exact")
            return search_prepared(state, store, queries, k, None, ef, num_threads, plan == "exact", starts)
        k = check_k(k)
        ef = max(check_ef(ef, state.config.ef_search), k)
        n = queries.shape[0]
        many = per_query_filters(flt, n)
        if many is not None:  # every query's filter checked before any query runs
            check_filters(many, state)
        check_store(state.metric, state.config.dim, state.node_count, store, state.entry_point)  # before any work
        check_allocation(n * k * (RESULT_ENTRY_BYTES + 8), f"results for {n:,} queries x k={k:,}")  # + the answers of queries run again

        def run(rows: np.ndarray | None, threads: int | None) -> tuple[np.ndarray, np.ndarray]:  # rows None: all queries
            m = n if rows is None else rows.shape[0]
            ids, dists = np.full((m, k), -1, np.int32), np.full((m, k), np.inf, np.float32)
            if many is None:
                self._run(store, queries if rows is None else queries[rows], k, ef, self.compiled(flt, since), plan, threads, ids, dists, type(flt) is Filter)
            else:  # one filter per query: each query answers exactly as a call of its own would
                for j, i in enumerate(range(n) if rows is None else rows.tolist()):
                    self._run(store, queries[i : i + 1], k, ef, self.compiled(many[i], since), plan, 1, ids[j : j + 1], dists[j : j + 1], type(many[i]) is Filter)
            return ids, dists

        out_ids, out_d = run(None, num_threads)
        settle_batch(state, store, queries, s0, out_ids, out_d, lambda rows: run(rows, 1))
        return state.keys.keys_for(out_ids), out_d, out_ids

    def _run(self, store: Any, queries: np.ndarray, k: int, ef: int, f: Filter, plan: str, num_threads: int | None,
             out_ids: np.ndarray, out_d: np.ndarray, held: bool) -> None:
        state = self.state
        chosen = self.plan_for(f, k, ef, plan, held, store)._replace(queries=queries.shape[0])
        c = f.current()
        # the rows after the graph the filter was compiled against (as Single.bind): a growth
        # resizes the store first, so they cover every NodeId of c.graph (the batch kernel
        # does not check; older rows paired with a grown graph read past their end), and
        # c.graph's count read after them, as the unfiltered batch (see rows_cover)
        rows = check_store(state.metric, state.config.dim, c.node_count, store, state.entry_point)
        rows_cover(c.graph, rows)
        code = chosen.code
        vectors = exact_rows(rows)  # a Filter's copy holds the vectors, not a walk copy
        block = None
        if code == PLAN_EXACT and (held or queries.shape[0] > 1):  # the copy pays for itself over several queries
            block = f.block_for(store, vectors, c)
            if block is not None and queries.shape[0] > 1 and c.ids.shape[0] >= min(BLAS_ROWS, max(BATCH_BLAS_ROWS, BATCH_BLAS_ELEMS // queries.shape[1])):
                dense = f.dense_for(store, vectors, c)
                if dense is not None:
                    self._blas_batch(queries, k, c, dense, out_ids, out_d)
                    self.last_plan = chosen
                    return
        elif held and f.block is not None and chosen.short_plan == "exact":  # copied when queries left the walk before
            block = f.block_for(store, vectors, c)
        # exact answers through a sketch: without a block (too large for one) the store-row
        # sketch's for the exact plan; for queries that leave a walk, the block's or that one
        wide = held and block is None
        if block is None:
            block = empty_block(vectors)
        threads = resolve_threads(num_threads, queries.shape[0], 8)
        if wide and code == PLAN_EXACT and c.ids.shape[0] >= SKETCH_ROWS.get(type(vectors), BLAS_ROWS):
            rest = self._sketched(store, vectors, f, c, queries, np.arange(queries.shape[0]), k, out_ids, out_d, threads)
            self._kernel(rows, block, queries, None if rest.shape[0] == queries.shape[0] else rest, k, chosen.ef, c, code, threads, out_ids, out_d)
            self.last_plan = chosen
            return
        if held and code != PLAN_EXACT and chosen.short_plan == "exact" and c.ids.shape[0] >= DEFER_ROWS:
            code |= PLAN_DEFER
        used, local = self._kernel(rows, block, queries, None, k, chosen.ef, c, code, threads, out_ids, out_d)
        if code & PLAN_DEFER:
            deferred = np.flatnonzero(used == USED_EXACT)
            if deferred.shape[0]:
                rest = self._sketched(store, vectors, f, c, queries, deferred, k, out_ids, out_d, threads)
                self._kernel(rows, block, queries, rest, k, chosen.ef, c, PLAN_EXACT, threads, out_ids, out_d)
        left = np.flatnonzero(used)
        if left.shape[0]:  # queries whose probe sent them from the planned walk
            ran = set(used[left].tolist())  # named by the farthest any of them went
            most = next(u for u in (USED_EXACT, USED_WIDE, USED_DESCEND, USED_ACORN, USED_POST) if u in ran)
            chosen = chosen.left(int(left.shape[0]), queries.shape[0], float(local[left].mean()), most)
            if held and f.block is None and chosen.short_plan == "exact":
                f.block_for(store, vectors, c)  # the next queries that leave read it
        self.last_plan = chosen

    def _kernel(self, rows: tuple, block: tuple, queries: np.ndarray, todo: np.ndarray | None, k: int, ef: int, c: Any, code: int, threads: int,
                out_ids: np.ndarray, out_d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``knn_filter_kernel`` over ``queries`` (``todo``: only those rows, answered into
        the same rows of the outputs) on ``threads`` threads: ``(used, local)`` per query."""
        qs = queries if todo is None else queries[todo]
        m = qs.shape[0]
        ids, dists = (out_ids, out_d) if todo is None else (np.empty((m, k), np.int32), np.empty((m, k), np.float32))
        used, local = np.zeros(m, np.int8), np.empty(m, np.float32)
        if m:
            counter, visited, metric = np.zeros(1, np.int64), self.state.visited, self.state.metric.code

            def work() -> None:
                knn_filter_kernel(c.graph, rows, block, metric, qs, k, ef, c.mask, c.ids, c.seeds, code, visited.acquire(), counter, 4, ids, dists, used, local)

            run_parallel(work, max(1, min(threads, m)))
            if todo is not None:
                out_ids[todo], out_d[todo] = ids, dists
        return used, local

    def _sketched(self, store: Any, vectors: tuple, f: Filter, c: Any, queries: np.ndarray, todo: np.ndarray, k: int,
                  out_ids: np.ndarray, out_d: np.ndarray, threads: int) -> np.ndarray:
        """Exact answers of ``queries[todo]`` through the filter's sketch (its block's, or else the store-row
        sketch, made once ``SKETCH_AFTER`` exact queries asked for it): the queries left for the scan."""
        sketch = sketch_for(f, store, vectors, c, True, todo.shape[0])
        return todo if sketch is None else sketch_batch(sketch, self.state.metric.code, queries, todo, k, c, out_ids, out_d, threads)
