"""The single-query path of ``Hnsw.search``: one compiled call per query.

A search answers in a few tens of microseconds, so the Python around it matters: the
query is checked (and for cosine normalised), searched, and the ``(key, distance, NodeId)``
tuples built in one call of ``knn_one_kernel`` through its compiled entry point, bound once
per store (the dispatcher's argument typing costs more than a small search). Right after a
search has streamed a megabyte of vectors through the caches every Python operation runs
cache-cold, so the binding is unpacked once rather than read attribute by attribute.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ..kernels.layout import PREP_CHECK, PREP_NONE, PREP_NORMALIZE
from ..kernels.search import ONE_NOT_FINITE, ONE_WRONG_DIM, knn_one_kernel
from ..kernels.search_row import knn_row_kernel
from .batch import prepare_queries  # the recipe of the batch path and of the kernel's own preparation
from .config import MAX_EF
from .errors import CapacityError, DimensionMismatchError, InvalidParameterError, InvalidVectorError
from .hits import Hits
from .progress import compile_step, interactive
from .renamed import RERUNS, renamed_since
from .rowwrites import settle_found
from .state import IndexState
from .store_base import same_rows
from .validate import check_ef, check_k, check_store, prepare_vectors

__all__ = ["SingleQuery", "NO_KEYS", "check_query_status", "one_query_args", "with_keys"]

#: "no int keys": knn_one_kernel then returns NodeIds where the keys go
NO_KEYS = np.empty(0, np.int64)
_F32 = np.dtype(np.float32)
_new_hits = object.__new__


def with_keys(found: list, state: IndexState) -> list:
    """A single-query kernel's ``[(NodeId, distance, NodeId), ...]`` for str keys (``NO_KEYS``:
    the NodeId in the key's place) with the keys looked up. IndexError: a NodeId past the key
    map (a compaction and a resize down since the kernel ran)."""
    key = state.keys.key
    return [(key(i), d, i) for _, d, i in found]


class Binding(NamedTuple):
    """A validated view of one store for the single-query path."""

    store: Any
    rows: tuple  # store.rows() when it was checked
    graph: Any  # the GraphArrays bound
    key_array: np.ndarray  # the key map's node_keys when bound
    node_keys: np.ndarray  # key_array for int keys, else NO_KEYS (the caller maps NodeIds)
    entry: Any  # the compiled knn_one_kernel entry point for these argument types
    dim: int
    prep: int  # PREP_NORMALIZE: the kernel normalises raw queries (cosine), PREP_CHECK: it only checks them
    metric_code: int


def check_query_status(status: int, state: IndexState, query: Any) -> None:
    """Raise for a single-query kernel's status that reports a bad query: ``ONE_NOT_FINITE``
    (NaN, inf or a component too large: the batch path's check names which) or
    ``ONE_WRONG_DIM``. Other statuses return."""
    if status == ONE_NOT_FINITE:
        prepare_vectors(state.metric, state.config.dim, query, True)
        raise InvalidVectorError("query contains NaN or inf")
    if status == ONE_WRONG_DIM:
        raise DimensionMismatchError(f"expected a vector of shape ({state.config.dim},), got {np.shape(query)}")


def one_query_args(state: IndexState, graph: Any, rows: tuple, key_array: np.ndarray) -> tuple:
    """Arguments of the types of ``knn_one_kernel``'s calls for ``graph``, ``rows`` (a
    store's checked ``rows()``) and the key map's ``node_keys`` array: what its
    specialisation is compiled for. Index 10 is the ``node_keys`` the calls pass."""
    int_keys = state.keys.is_int and key_array.dtype == np.int64 and key_array.flags.c_contiguous
    visited, scratch_f, scratch_i = state.visited.single()
    # a strided query types the signature for any layout, so no query needs a copy (the
    # kernel copies it anyway); its length does not matter, the kernel checks it
    q = np.zeros((2, 2), np.float32)[:, 0]
    return (graph, rows, state.metric.code, q, state.config.dim, 1, 1, visited, scratch_f, scratch_i, key_array if int_keys else NO_KEYS, 0)


class SingleQuery:
    """Searches one query at a time for an index (owned by ``Hnsw``; not thread-bound).

    The binding is replaced (never mutated), so concurrent callers each use a consistent one.
    """

    __slots__ = ("state", "bound", "row")

    def __init__(self, state: IndexState) -> None:
        self.state = state
        self.bound: Binding | None = None
        self.row: tuple[Binding, np.dtype, Any] | None = None  # (binding, key dtype, knn_row_kernel's entry point)

    def search(self, store: Any, query: Any, k: Any, ef: Any, reruns: int = 0, renamed: int = 0) -> Hits:
        """The ``k`` nearest live items to ``query`` (see ``Hnsw.search``); ``reruns``: the
        times it ran before because a row of its answer was rewritten meanwhile, ``renamed``:
        because a rename overlapped it (counted apart: an insert's row writes must not use up
        a rename's reruns)."""
        bound = self.bound
        if bound is None or bound[0] is not store:
            bound = self.bind(store)
        _, rows, graph, key_array, node_keys, entry, dim, prep, code = bound
        state = self.state
        epoch = state.epoch  # seqlock: a compaction running meanwhile makes us search again
        keys = state.keys
        r0 = keys.renames  # seqlock of renamed keys (KeyMap.rename)
        rw = state.row_writes
        s0 = rw.count  # row seqlock: the kernel's fences order it before the rows it reads
        now = store.rows()
        if (now is not rows and not same_rows(rows, now)) or graph is not state.graph.arrays or key_array is not state.keys.node_keys:
            # new arrays in the store, a resized or compacted graph, key map: check and bind
            # again (checked again after a compaction that moved rows under the check)
            _, rows, graph, key_array, node_keys, entry, dim, prep, code = state.read_stable(lambda: self.bind(store))
        if type(query) is not np.ndarray or query.dtype is not _F32 or query.ndim != 1:
            query, prep = prepare_queries(state.metric, dim, query, True)[0], PREP_NONE  # the entry point takes float32 (dim,)
        if type(k) is not int or not 0 < k <= MAX_EF:
            k = check_k(k)
        if ef is None:
            ef = state.config.ef_search
        elif type(ef) is not int or not 0 < ef <= MAX_EF:
            ef = check_ef(ef, 0)
        if ef < k:
            ef = k
        visited, scratch_f, scratch_i = state.visited.single()
        status, found = entry(graph, rows, code, query, dim, k, ef, visited, scratch_f, scratch_i, node_keys, prep)
        if status:
            found, node_keys = self._failed(status, store, query, k, ef, prep)
        if node_keys is NO_KEYS:  # str keys: the kernel returned NodeIds in their place
            try:
                found = with_keys(found, state)
            except IndexError:  # a compaction and a resize down since the kernel: a shorter key map
                if not (epoch & 1 or state.epoch != epoch):
                    raise
                state.wait_rewrite()
                return self.search(store, query, k, ef)
        if rw.count != s0 or s0 & 1:  # a row was rewritten meanwhile: was it one of ours?
            found = settle_found(state, store, query, prep, s0, found, reruns, lambda r: self.search(store, query, k, ef, r).raw)
        # after the settling: its distances computed again under alloc read the rows of
        # these NodeIds, which a compaction overlapping it moves
        if epoch & 1 or state.epoch != epoch:  # rows moved under us: wait for the compaction, search again
            state.wait_rewrite()
            return self.search(store, query, k, ef)
        if r0 & 1 or keys.renames != r0:  # renamed_since, in line: a key read may be one a rename gave a node found live before its delete
            if renamed < RERUNS:
                return self.search(store, query, k, ef, reruns, renamed + 1)
            # renames without pause: once more holding alloc (renames, inserts and row writes
            # hold it) and the lock shared (no compaction), so the answer is whole: k live keys
            # as they are (the batches' settling keeps the nodes found still live: fewer)
            with state.lock.shared(), state.alloc:
                return self.search(store, query, k, ef, reruns, renamed + 1)
        # Hits(found) without the Python-level __init__ call: right after a search that
        # call measures 1.6 us, this 0.7 (scratch harness, the caches as in use)
        hits = _new_hits(Hits)
        hits.raw = found
        return hits

    def search_row(self, store: Any, query: Any, k: Any, ef: Any, key_dtype: Any = np.int64) -> tuple[np.ndarray, np.ndarray, int] | None:
        """``search``'s answer as arrays: ``(keys (1, k), distances float32 (1, k), found)``.

        The shape of a one-row ``search_batch`` (padding: key -1, distance inf past
        ``found``), written by the kernel into fresh arrays, for callers that return arrays
        (``hnsw_numba.hnswlib``). ``key_dtype`` is ``np.int64`` or ``np.uint64``. Int keys
        only: returns ``None`` (and searches nothing) when the keys are not int64.
        """
        bound = self.bound
        if bound is None or bound[0] is not store:
            bound = self.bind(store)
        state = self.state
        epoch = state.epoch  # seqlocks, as in search
        keys_map = state.keys
        r0 = keys_map.renames
        rw = state.row_writes
        s0 = rw.count
        now = store.rows()
        if (now is not bound[1] and not same_rows(bound[1], now)) or bound[2] is not state.graph.arrays or bound[3] is not state.keys.node_keys:
            bound = self.bind(store)
        _, rows, graph, _, node_keys, _, dim, prep, code = bound
        if node_keys is NO_KEYS:
            return None
        row = self.row
        if row is None or row[0] is not bound or row[1] is not key_dtype:
            row = self.bind_row(bound, key_dtype)
        if type(query) is not np.ndarray or query.dtype is not _F32 or query.ndim != 1:
            query, prep = prepare_queries(state.metric, dim, query, True)[0], PREP_NONE
        if type(k) is not int or not 0 < k <= MAX_EF:
            k = check_k(k)
        if ef is None:
            ef = state.config.ef_search
        elif type(ef) is not int or not 0 < ef <= MAX_EF:
            ef = check_ef(ef, 0)
        if ef < k:
            ef = k
        keys, dists = np.empty((1, k), key_dtype), np.empty((1, k), _F32)
        visited, scratch_f, scratch_i = state.visited.single()
        status, found = row[2](graph, rows, code, query, dim, k, ef, visited, scratch_f, scratch_i, node_keys, prep, keys, dists)
        if status or epoch & 1 or state.epoch != epoch or rw.count != s0 or s0 & 1 or renamed_since(keys_map, r0):
            # a rejected query raises, a stale binding, a compaction, a row rewrite or a rename searches again: as search
            raw = self.search(store, query, k, ef).raw
            found = len(raw)
            keys[0, :found], dists[0, :found] = [t[0] for t in raw], [t[1] for t in raw]
            keys[0, found:], dists[0, found:] = (-1 if key_dtype is np.int64 else 2**64 - 1), np.inf
        return keys, dists, found

    def bind_row(self, bound: Binding, key_dtype: Any) -> tuple[Binding, Any, Any]:
        """Bind ``knn_row_kernel``'s compiled entry point for ``bound`` and ``key_dtype``."""
        if key_dtype is not np.int64 and key_dtype is not np.uint64:
            raise InvalidParameterError(f"key_dtype must be np.int64 or np.uint64, got {key_dtype!r}")
        visited, scratch_f, scratch_i = self.state.visited.single()
        q = np.zeros((2, 2), np.float32)[:, 0]  # as in bind: any layout, a wrong length
        args = (bound.graph, bound.rows, bound.metric_code, q, bound.dim, 1, 1, visited, scratch_f, scratch_i, bound.node_keys, 0,
                np.empty((1, 1), key_dtype), np.empty((1, 1), np.float32))
        compile_step(knn_row_kernel, args, bound.rows, interactive())
        knn_row_kernel(*args)
        sig = tuple(knn_row_kernel.typeof_pyval(a) for a in args)
        entry = knn_row_kernel.overloads[sig].entry_point if sig in knn_row_kernel.overloads else knn_row_kernel
        self.row = row = (bound, key_dtype, entry)
        return row

    def _failed(self, status: int, store: Any, query: np.ndarray, k: int, ef: int, prep: int) -> tuple[list, np.ndarray]:
        """Raise for a rejected query; after ``ONE_STALE`` bind again and search once more.

        Returns the kernel's result tuples and the binding's ``node_keys`` they were made with.
        """
        state = self.state
        check_query_status(status, state, query)
        # ONE_STALE: the index outgrew the bound rows. Bind again under the shared lock, so a
        # resize running now finishes first; check_store raises CapacityError if the store
        # really is too small.
        with state.lock.shared():
            b = self.bind(store)
            visited, scratch_f, scratch_i = state.visited.single()
            status, found = b.entry(b.graph, b.rows, b.metric_code, query, b.dim, k, ef, visited, scratch_f, scratch_i, b.node_keys, prep)
        if status:
            raise CapacityError(f"the index has {state.node_count} nodes but the store's rows cover fewer")
        return found, b.node_keys

    def bind(self, store: Any) -> Binding:
        """Validate ``store`` and bind the compiled entry point of the single-query path.

        The binding is kept until the store's rows, the graph's arrays or the key array
        change. Raises what :func:`check_store` raises for an unusable store.
        """
        state = self.state
        metric, dim = state.metric, state.config.dim
        # the graph before the rows: a growth resizes the store first, so rows read after
        # the graph cover every NodeId it can hold
        graph, key_array = state.graph.arrays, state.keys.node_keys
        rows = check_store(metric, dim, state.node_count, store, state.entry_point)
        args = one_query_args(state, graph, rows, key_array)
        node_keys = args[10]
        compile_step(knn_one_kernel, args, rows, interactive())  # a first compilation shows as a step
        knn_one_kernel(*args)  # loads the specialisation (compiled above)
        sig = tuple(knn_one_kernel.typeof_pyval(a) for a in args)
        entry = knn_one_kernel.overloads[sig].entry_point if sig in knn_one_kernel.overloads else knn_one_kernel
        prep = PREP_NORMALIZE if metric.normalize else PREP_CHECK
        self.bound = bound = Binding(store, rows, graph, key_array, node_keys, entry, dim, prep, metric.code)
        return bound
