"""The ``Hnsw`` index: a thin wrapper that validates, allocates and calls the kernels."""

from __future__ import annotations

import dataclasses
import threading
from typing import Any, Hashable, Iterator, NamedTuple

import numpy as np

from ..kernels.bruteforce import bruteforce_kernel
from .config import MAX_EF, HnswConfig
from .errors import (
    CapacityError,
    DimensionMismatchError,
    IntegrityError,
    InvalidParameterError,
    InvalidVectorError,
    KeyExistsError,
    KeyNotFoundError,
    MetricMismatchError,
    ReadOnlyIndexError,
)
from .filters import filter_to_mask
from .graph import Graph, draw_levels
from .hits import Hit, Hits  # noqa: F401  (Hit: hnsw_numba.core.index.Hit still imports)
from ..kernels.insert import insert_kernel, update_kernel
from ..kernels.integrity import INTEGRITY_MESSAGES, check_graph_kernel
from .keymap import KeyMap, normalize_key, normalize_keys
from .limits import check_allocation
from .metrics import Metric
from .parallel import resolve_threads, run_parallel
from .progress import Progress, want_progress
from ..kernels.layout import H_DELETED, BF16Rows, F16Rows, F32Rows, Qi8Rows
from .rwlock import RWLock
from ..kernels.search import ONE_NOT_FINITE, ONE_WRONG_DIM, knn_kernel, knn_one_kernel
from .visited import VisitedPool

__all__ = ["Hnsw"]

_NO_MASK = np.empty(0, np.uint8)
# "no int keys": knn_one_kernel then returns NodeIds where the keys go
_NO_KEYS = np.empty(0, np.int64)
_NO_STARTS = np.empty(0, np.int32)
_F32 = np.dtype(np.float32)
_new_hits = object.__new__
_ROWS_FOR_KIND = {"float": (F32Rows, F16Rows, BF16Rows), "qi8": (Qi8Rows,)}


def _same_rows(a: tuple, b: tuple) -> bool:
    """Whether two ``rows()`` tuples hold the very same arrays."""
    return len(a) == len(b) and all(x is y for x, y in zip(a, b))


class _Binding(NamedTuple):
    """The single-query path's validated view of one store (see ``Hnsw._bind_search``)."""

    store: Any
    rows: tuple  # store.rows() when it was checked
    graph: Any  # the GraphArrays bound
    key_array: np.ndarray  # the key map's node_keys when bound
    node_keys: np.ndarray  # key_array for int keys, else _NO_KEYS (the caller maps NodeIds)
    entry: Any  # the compiled knn_one_kernel entry point for these argument types
    dim: int
    prep: int  # 2: the kernel normalises raw queries (cosine), 1: it only checks them
    metric_code: int


def _take(encoded: Any, rows: np.ndarray) -> Any:
    """Rows of a store's encoded batch (an array, or a tuple of per-row arrays for Qi8)."""
    if isinstance(encoded, tuple):
        return tuple(part[rows] for part in encoded)
    return encoded[rows]


def _check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= MAX_EF:
        raise InvalidParameterError(f"k must be an int in [1, {MAX_EF}], got {k!r}")
    return int(k)


def _check_ef(ef: Any, default: int) -> int:
    if ef is None:
        return default
    if isinstance(ef, bool) or not isinstance(ef, (int, np.integer)) or not 1 <= ef <= MAX_EF:
        raise InvalidParameterError(f"ef must be an int in [1, {MAX_EF}], got {ef!r}")
    return int(ef)


class Hnsw:
    """Hierarchical Navigable Small World index over a separate vector store.

    Parameters
    ----------
    metric : Metric
        ``L2()``, ``Cosine()``, ``InnerProduct()`` or a ``*Qi8`` variant.
    config : HnswConfig
        Dimension, capacity and graph parameters.

    Notes
    -----
    Keys are ints or strs, mapped to dense NodeIds ``0, 1, 2, ...`` in insertion order;
    a deleted key keeps its NodeId (never reused) and ``set`` resurrects it there.
    Every method validates all of its input before it changes anything.
    """

    #: A filtered search whose allowed live items number at most
    #: ``max(FILTER_EXACT_MIN, FILTER_EXACT_FRACTION * live)`` is answered exactly.
    FILTER_EXACT_MIN = 1024
    #: Items linked per round of ``insert_batch`` when it reports progress (or is large):
    #: Ctrl-C is honoured and the progress bar updated between rounds.
    INSERT_ROUND = 4096
    FILTER_EXACT_FRACTION = 0.01

    def __init__(self, metric: Metric, config: HnswConfig):
        if not isinstance(metric, Metric):
            raise InvalidParameterError(f"metric must be a Metric instance such as L2(), got {metric!r}")
        if not isinstance(config, HnswConfig):
            raise InvalidParameterError(f"config must be an HnswConfig, got {config!r}")
        self._metric = metric
        self._config = config
        check_allocation(Graph.bytes_for(config.max_nodes, config.m), f"a graph of {config.max_nodes:,} nodes")
        self._graph = Graph.empty(config.max_nodes, config.m)
        self._keys = KeyMap(config.max_nodes)
        self._rng = np.random.default_rng(config.seed)
        self._rw = RWLock()
        self._alloc = threading.Lock()
        self._visited = VisitedPool(self._graph.capacity)
        self._read_only = False
        self._bound = None
        self._prep = 2 if metric.normalize else 1

    @classmethod
    def _from_parts(cls, metric: Metric, config: HnswConfig, arrays, keymap: KeyMap, *, read_only: bool = False) -> "Hnsw":
        """Assemble an index from validated arrays (loaders call this after checking everything)."""
        self = cls.__new__(cls)
        self._metric = metric
        self._config = config
        self._graph = Graph(arrays)
        self._keys = keymap
        self._rng = np.random.default_rng(config.seed)
        self._rw = RWLock()
        self._alloc = threading.Lock()
        self._visited = VisitedPool(self._graph.capacity)
        self._read_only = read_only
        self._bound = None
        self._prep = 2 if metric.normalize else 1
        return self

    @property
    def graph_arrays(self):
        """The graph's :class:`~hnsw_numba.kernels.layout.GraphArrays` (read them, do not write)."""
        return self._graph.arrays

    @property
    def key_map(self) -> KeyMap:
        return self._keys

    # ------------------------------------------------------------------ properties
    @property
    def metric(self) -> Metric:
        return self._metric

    @property
    def config(self) -> HnswConfig:
        return self._config

    @property
    def dim(self) -> int:
        return self._config.dim

    @property
    def max_nodes(self) -> int:
        return self._config.max_nodes

    @property
    def node_count(self) -> int:
        """NodeIds handed out (live and deleted)."""
        return self._graph.node_count

    @property
    def deleted_count(self) -> int:
        return self._graph.deleted_count

    @property
    def read_only(self) -> bool:
        return self._read_only

    def __len__(self) -> int:
        return self._graph.node_count - self._graph.deleted_count

    def __contains__(self, key: object) -> bool:
        try:
            nid = self._keys.get(normalize_key(key))
        except Exception:
            return False
        return nid >= 0 and not self._graph.arrays.tombstones[nid]

    def __repr__(self) -> str:
        return (
            f"Hnsw({self._metric!r}, dim={self.dim}, live={len(self)}, "
            f"deleted={self.deleted_count}, max_nodes={self.max_nodes}, m={self._config.m})"
        )

    def node_id(self, key: Hashable) -> int:
        """NodeId of a live key (KeyNotFoundError otherwise)."""
        nid = self._keys.get(normalize_key(key))
        if nid < 0 or self._graph.arrays.tombstones[nid]:
            raise KeyNotFoundError(f"key {key!r} is not in the index")
        return nid

    def key(self, node_id: int) -> Hashable:
        """Key of a NodeId (also for deleted nodes)."""
        nid = int(node_id)
        if not 0 <= nid < self.node_count:
            raise KeyNotFoundError(f"NodeId {node_id} is out of range [0, {self.node_count})")
        return self._keys.key(nid)

    def keys(self) -> Iterator[Hashable]:
        """Live keys in NodeId order."""
        tomb = self._graph.arrays.tombstones
        for nid in range(self.node_count):
            if not tomb[nid]:
                yield self._keys.key(nid)

    def is_deleted(self, node_id: int) -> bool:
        return bool(self._graph.arrays.tombstones[int(node_id)])

    # ------------------------------------------------------------------ validation
    def _check_writable(self) -> None:
        if self._read_only:
            raise ReadOnlyIndexError("this index is read-only (memory-mapped); call materialize() first")

    def _rows_for(self, store: Any):
        if getattr(store, "kind", None) != self._metric.store_kind:
            raise MetricMismatchError(
                f"{self._metric!r} reads '{self._metric.store_kind}' stores, but "
                f"{type(store).__name__} is a '{getattr(store, 'kind', '?')}' store"
            )
        if getattr(store, "dim", None) != self.dim:
            raise DimensionMismatchError(f"store has dim {getattr(store, 'dim', None)}, index has dim {self.dim}")
        rows = store.rows()
        if not isinstance(rows, _ROWS_FOR_KIND[self._metric.store_kind]):
            raise MetricMismatchError(f"store.rows() returned {type(rows).__name__}, not a row type of {self._metric!r}")
        for arr in rows:
            if not isinstance(arr, np.ndarray) or not arr.flags.c_contiguous:
                raise InvalidParameterError("store.rows() arrays must be C-contiguous NumPy arrays")
        if rows[0].ndim != 2 or rows[0].shape[1] < self.dim:
            raise InvalidParameterError(f"store.rows()[0] must be 2-D with at least {self.dim} columns, got shape {rows[0].shape}")
        if rows[0].shape[0] < self.node_count:
            raise CapacityError(f"store has {rows[0].shape[0]} rows but the index has {self.node_count} nodes")
        return rows

    def _vectors(self, vectors: Any, single: bool) -> np.ndarray:
        if callable(getattr(vectors, "dequantize", None)):
            # Qi8 / Qi8Batch: search asymmetrically with the float32 values they encode.
            vectors = vectors.dequantize()
        try:
            v = np.asarray(vectors)
            if v.dtype == object or v.dtype.kind not in "fiub" and v.dtype.name != "bfloat16":
                raise TypeError(f"dtype {v.dtype}")
            v = np.asarray(v, dtype=np.float32)  # no copy when already float32
        except (TypeError, ValueError) as exc:
            raise InvalidVectorError(f"cannot read vectors as float32: {exc}") from None
        if single:
            if v.ndim == 2 and v.shape[0] == 1:
                v = v[0]
            if v.ndim != 1 or v.shape[0] != self.dim:
                raise DimensionMismatchError(f"expected a vector of shape ({self.dim},), got {v.shape}")
            v = v[None, :]
        elif v.ndim != 2 or v.shape[1] != self.dim:
            raise DimensionMismatchError(f"expected vectors of shape (n, {self.dim}), got {v.shape}")
        finite = np.isfinite(v).all(axis=1)
        if not finite.all():
            raise InvalidVectorError(f"vector {int(np.argmin(finite))} contains NaN or inf")
        return np.ascontiguousarray(self._metric.prepare(v), dtype=np.float32)

    # ------------------------------------------------------------------ mutation
    def insert(self, store: Any, key: Hashable, vector: Any) -> int:
        """Insert a new key; KeyExistsError if it is live. Returns its NodeId.

        A deleted key is resurrected on its old NodeId (as :meth:`set` does).
        """
        return int(self.insert_batch(store, [key], self._vectors(vector, True), num_threads=1, _prepared=True)[0])

    def insert_batch(self, store: Any, keys: Any, vectors: Any, *, num_threads: int | None = None, progress: bool | None = None, _prepared: bool = False) -> np.ndarray:
        """Insert many new keys at once, in parallel. Returns their NodeIds (int32).

        All keys must be new (or deleted) and unique within the batch; on any input error
        nothing changes. Work proceeds in rounds: ``progress`` shows a tqdm bar (default:
        when stderr is a terminal), and Ctrl-C stops after the current round, leaving the
        items inserted so far searchable and the rest tombstoned (inserting those keys
        again resurrects them).
        """
        self._check_writable()
        v = vectors if _prepared else self._vectors(vectors, False)
        n = v.shape[0]
        key_list, int_keys = normalize_keys(keys, n)
        unique = np.unique(int_keys).shape[0] if int_keys is not None else len(set(key_list))
        if unique != n:
            seen: set = set()
            listed = key_list if key_list is not None else int_keys.tolist()
            dup = next(k for k in listed if k in seen or seen.add(k))
            raise KeyExistsError(f"key {dup!r} appears twice in the batch")
        rows = self._rows_for(store)
        encoded = store.encode(v)
        threads = resolve_threads(num_threads, n)
        efc = self._config.effective_ef_construction
        while True:
            with self._rw.shared():
                with self._alloc:
                    g = self._graph
                    existing = self._keys.get_many(key_list, int_keys)
                    found = existing >= 0
                    if found.any():
                        live = found & (g.arrays.tombstones[np.where(found, existing, 0)] == 0)
                        if live.any():
                            first = int(np.argmax(live))
                            k = key_list[first] if key_list is not None else int(int_keys[first])
                            raise KeyExistsError(f"key {k!r} is already in the index")
                    new_pos = np.flatnonzero(~found)
                    n_new = new_pos.shape[0]
                    if g.node_count + n_new > self.max_nodes:
                        raise CapacityError(
                            f"index is full: {g.node_count} + {n_new} nodes > max_nodes {self.max_nodes}; call resize()"
                        )
                    if g.node_count + n_new > store.max_nodes:
                        raise CapacityError(
                            f"store is full: {g.node_count} + {n_new} rows > {store.max_nodes}; call store.resize()"
                        )
                    levels = draw_levels(self._rng, n_new, self._config.level_mult)
                    words = g.upper_words_needed(levels)
                    if g.upper_fits(words):
                        nids = g.allocate(levels)
                        new_keys = None if key_list is None else [key_list[i] for i in new_pos]
                        self._keys.add(new_keys, nids, None if int_keys is None else int_keys[new_pos])
                        resurrect = existing[found].astype(np.int32)
                        break
            with self._rw.exclusive():
                if not self._graph.upper_fits(words):
                    self._graph.grow_upper(words)
        node_ids = np.empty(n, np.int32)
        node_ids[new_pos] = nids
        node_ids[found] = resurrect
        with self._rw.shared():
            rows = store.rows()
            if n_new:
                store.write(nids, _take(encoded, new_pos))
                self._link_new(rows, nids, efc, threads, progress)
            if resurrect.shape[0]:
                store.write(resurrect, _take(encoded, found))
                self._run_kernel(update_kernel, rows, resurrect, efc, 1)
                self._untombstone(resurrect)
        return node_ids

    def _link_new(self, rows, nids: np.ndarray, efc: int, threads: int, progress: bool | None) -> None:
        """Run the insert kernel over ``nids`` in rounds (progress, Ctrl-C between rounds)."""
        n = nids.shape[0]
        round_size = n if n <= 4096 and not progress else max(self.INSERT_ROUND, 256 * threads)
        done = 0
        with Progress(n, "insert", want_progress(progress) and n > round_size) as bar:
            try:
                while done < n:
                    part = nids[done : done + round_size]
                    self._run_kernel(insert_kernel, rows, part, efc, min(threads, part.shape[0]))
                    done += part.shape[0]
                    bar.update(part.shape[0])
            except KeyboardInterrupt:
                self._abandon(nids[done:])
                raise

    def _abandon(self, nids: np.ndarray) -> None:
        """Tombstone allocated nodes that were never linked (an interrupted batch).

        A kernel round always finishes before the interrupt propagates, so a node of
        ``nids`` was linked iff it has level-0 links or is the entry point; the others are
        in no list, so they can safely drop to level 0 (keeping the max level exact).
        """
        with self._alloc:
            a = self._graph.arrays
            unlinked = nids[((a.links0[nids, 0] & 0xFFFF) == 0) & (nids != a.header[0])]
            a.levels[unlinked] = 0
            a.upper_start[unlinked] = -1
            fresh = unlinked[a.tombstones[unlinked] == 0]
            a.tombstones[fresh] = 1
            a.header[H_DELETED] += fresh.shape[0]

    def _run_kernel(self, kern, rows, node_ids: np.ndarray, efc: int, threads: int) -> None:
        counter = np.zeros(1, np.int64)
        g, code = self._graph.arrays, self._metric.code

        def work() -> None:
            kern(g, rows, code, node_ids, efc, self._visited.acquire(), counter)

        run_parallel(work, threads)

    def _untombstone(self, nids: np.ndarray) -> None:
        with self._alloc:
            tomb = self._graph.arrays.tombstones
            was = int(tomb[nids].sum())
            tomb[nids] = 0
            self._graph.arrays.header[H_DELETED] -= was

    def set(self, store: Any, key: Hashable, vector: Any) -> int:
        """Insert or update ``key`` (upsert). Returns its NodeId.

        A live key gets the new vector and its neighbourhood is repaired; a deleted key is
        resurrected on the same NodeId; a new key is inserted.
        """
        self._check_writable()
        k = normalize_key(key)
        v = self._vectors(vector, True)
        nid = self._keys.get(k)
        if nid < 0 or self._graph.arrays.tombstones[nid]:
            try:
                return self.insert(store, k, v[0])
            except KeyExistsError:
                nid = self._keys.get(k)  # another thread inserted it meanwhile: update
                if nid < 0:
                    raise
        self._rows_for(store)  # validates the store before anything changes
        encoded = store.encode(v)
        ids = np.array([nid], np.int32)
        with self._rw.shared():
            store.write(ids, encoded)
            self._run_kernel(update_kernel, store.rows(), ids, self._config.effective_ef_construction, 1)
        return nid

    def delete(self, key: Hashable) -> int:
        """Tombstone a live key: it is never returned again. Returns its NodeId."""
        self._check_writable()
        k = normalize_key(key)
        with self._alloc:
            nid = self._keys.get(k)
            tomb = self._graph.arrays.tombstones
            if nid < 0 or tomb[nid]:
                raise KeyNotFoundError(f"key {key!r} is not in the index")
            tomb[nid] = 1
            self._graph.arrays.header[H_DELETED] += 1
        return nid

    def resize(self, new_max_nodes: int) -> None:
        """Grow (or shrink down to the NodeIds in use) the index capacity."""
        self._check_writable()
        new_config = dataclasses.replace(self._config, max_nodes=new_max_nodes)
        check_allocation(Graph.bytes_for(new_max_nodes, self._config.m), f"a graph of {new_max_nodes:,} nodes")
        with self._rw.exclusive():
            if new_max_nodes < self.node_count:
                raise CapacityError(f"cannot resize below the {self.node_count} NodeIds in use")
            self._graph.resize(new_max_nodes)
            self._keys.resize(self._graph.capacity)
            self._visited = VisitedPool(self._graph.capacity)
            self._config = new_config

    # ------------------------------------------------------------------ search
    def search(self, store: Any, query: Any, k: int, filter: Any = None, *, ef: int | None = None, exact: bool = False) -> Hits:
        """The ``k`` nearest live items to ``query``, best first.

        Parameters
        ----------
        store : VectorStore
            The store holding this index's vectors.
        query : array_like (dim,)
            Query vector (float32, or anything convertible; a ``Qi8`` is dequantized).
        k : int
            Number of results; fewer come back only if fewer live items exist.
        filter : optional
            Boolean mask over NodeIds, collection of keys, or predicate on keys; applied
            during the graph walk (and answered exactly when very selective).
        ef : int, optional
            Beam width (default ``config.ef_search``); ``max(ef, k)`` is used.
        exact : bool
            Brute force instead of the graph.

        Returns
        -------
        Hits
            Up to ``k`` ``Hit(key, distance, node_id)``, best first (fewer only if fewer
            live items pass the filter); reads like a list of them.
        """
        if filter is None and not exact:
            # The lean path: one compiled call checks (and for cosine normalises) the query,
            # searches and returns the (key, distance, NodeId) tuples; see knn_one_kernel.
            # Right after a search every Python operation runs cache-cold, so the binding
            # is unpacked once rather than read attribute by attribute.
            bound = self._bound
            if bound is None or bound[0] is not store:
                bound = self._bind_search(store)
            _, rows, graph, key_array, node_keys, entry, dim, prep, code = bound
            now = store.rows()
            if (now is not rows and not _same_rows(rows, now)) or graph is not self._graph.arrays or key_array is not self._keys.node_keys:
                # new arrays in the store, a resized graph or key map: check and bind again
                _, rows, graph, key_array, node_keys, entry, dim, prep, code = self._bind_search(store)
            if type(query) is not np.ndarray or query.dtype is not _F32 or query.ndim != 1:
                query, prep = self._vectors(query, True)[0], 0  # the entry point takes float32 (dim,)
            if type(k) is not int or not 0 < k <= MAX_EF:
                k = _check_k(k)
            if ef is None:
                ef = self._config.ef_search
            elif type(ef) is not int or not 0 < ef <= MAX_EF:
                ef = _check_ef(ef, 0)
            if ef < k:
                ef = k
            visited, scratch_f, scratch_i = self._visited.single()
            status, found = entry(graph, rows, code, query, dim, k, ef, visited, scratch_f, scratch_i, node_keys, prep)
            if status:
                found, node_keys = self._search_one_failed(status, store, query, k, ef, prep)
            if node_keys is _NO_KEYS:  # str keys: the kernel returned NodeIds in their place
                key = self._keys.key
                found = [(key(i), d, i) for _, d, i in found]
            # Hits(found) without the Python-level __init__ call: right after a search
            # that call measured 1.6 us, this 0.7 (scratch harness, the caches as in use)
            hits = _new_hits(Hits)
            hits._raw = found
            return hits
        keys, out_d, out_ids = self._search(store, self._vectors(query, True), k, filter, ef, 1, exact)
        ids, keys, dists = out_ids[0].tolist(), keys[0].tolist(), out_d[0].tolist()
        if ids[-1] == -1:  # padding (fewer live items than k)
            n = ids.index(-1)
            ids, dists, keys = ids[:n], dists[:n], keys[:n]
        return Hits(list(zip(keys, dists, ids)))

    def _search_one_failed(self, status: int, store: Any, query: np.ndarray, k: int, ef: int, prep: int) -> tuple[list, np.ndarray]:
        """Raise for a rejected query; after ``ONE_STALE`` bind again and search once more.

        Returns the kernel's result tuples and the binding's ``node_keys`` they were made with.
        """
        if status == ONE_NOT_FINITE:
            raise InvalidVectorError("query contains NaN or inf")
        if status == ONE_WRONG_DIM:
            raise DimensionMismatchError(f"expected a vector of shape ({self.dim},), got {query.shape}")
        # ONE_STALE: the index outgrew the bound rows. Bind again under the shared lock, so a
        # resize running now finishes first; _rows_for raises CapacityError if the store
        # really is too small.
        with self._rw.shared():
            b = self._bind_search(store)
            visited, scratch_f, scratch_i = self._visited.single()
            status, found = b.entry(b.graph, b.rows, b.metric_code, query, b.dim, k, ef, visited, scratch_f, scratch_i, b.node_keys, prep)
        if status:
            raise CapacityError(f"the index has {self.node_count} nodes but the store's rows cover fewer")
        return found, b.node_keys

    def _bind_search(self, store: Any) -> _Binding:
        """Validate ``store`` and bind the compiled entry point of the single-query path.

        The binding is cached until the store's rows, the graph's arrays or the key array
        change: re-validating a store and letting the dispatcher type a dozen arguments
        costs more than a small search. Raises what ``_rows_for`` raises for an unusable
        store.
        """
        rows = self._rows_for(store)
        graph, key_array = self._graph.arrays, self._keys.node_keys
        int_keys = self._keys.is_int and key_array.dtype == np.int64 and key_array.flags.c_contiguous
        node_keys = key_array if int_keys else _NO_KEYS
        visited, scratch_f, scratch_i = self._visited.single()
        # a strided query types the signature for any layout, so no query needs a copy (the
        # kernel copies it anyway); its length does not matter, the kernel checks it
        q = np.zeros((2, 2), np.float32)[:, 0]
        args = (graph, rows, self._metric.code, q, self.dim, 1, 1, visited, scratch_f, scratch_i, node_keys, 0)
        knn_one_kernel(*args)  # compiles or loads the specialisation
        sig = tuple(knn_one_kernel.typeof_pyval(a) for a in args)
        entry = knn_one_kernel.overloads[sig].entry_point if sig in knn_one_kernel.overloads else knn_one_kernel
        self._bound = bound = _Binding(store, rows, graph, key_array, node_keys, entry, self.dim, self._prep, self._metric.code)
        return bound

    def search_batch(self, store: Any, queries: Any, k: int, filter: Any = None, *, ef: int | None = None, num_threads: int | None = None, exact: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """k-NN of every row of ``queries`` (n, dim), in parallel.

        Returns
        -------
        keys : ndarray (n, k)
            int64 (int keys; padding -1) or object (padding None), best first.
        distances : ndarray float32 (n, k)
            Padding ``inf`` where fewer than k live (allowed) items exist.
        """
        keys, dists, _ = self._search(store, self._vectors(queries, False), k, filter, ef, num_threads, exact)
        return keys, dists

    def search_batch_ids(self, store: Any, queries: Any, k: int, filter: Any = None, *, ef: int | None = None, num_threads: int | None = None, exact: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`search_batch` but returns NodeIds (int32, padding -1)."""
        _, dists, ids = self._search(store, self._vectors(queries, False), k, filter, ef, num_threads, exact)
        return ids, dists

    def knn_graph(self, store: Any, k: int, *, ef: int | None = None, exclude_self: bool = True, num_threads: int | None = None, progress: bool | None = None):
        """k-NN graph of every live item as a ``scipy.sparse.csr_matrix`` (node_count x node_count).

        Row/column ``i`` is NodeId ``i`` (key ``self.key(i)``), values are distances, rows
        best first, deleted rows empty; see :func:`hnsw_numba.core.knn.knn_graph`.
        """
        from .knn import knn_graph

        return knn_graph(self, store, k, ef=ef, exclude_self=exclude_self, num_threads=num_threads, progress=progress)

    def _search(self, store, q: np.ndarray, k, flt, ef, num_threads, exact, starts: np.ndarray = _NO_STARTS):
        """(keys, distances, NodeIds) of prepared queries ``q``; ``starts``: see ``knn_kernel``."""
        k = _check_k(k)
        ef = max(_check_ef(ef, self._config.ef_search), k)
        rows = self._rows_for(store)
        n = q.shape[0]
        threads = resolve_threads(num_threads, n, 8)
        check_allocation(n * k * 8, f"results for {n:,} queries x k={k:,}")
        out_ids = np.full((n, k), -1, np.int32)
        out_d = np.full((n, k), np.inf, np.float32)
        # No lock: a search holds references to the arrays it reads, so a concurrent
        # resize cannot pull memory from under it; it sees the old or the new graph.
        g = self._graph
        count = g.node_count
        tomb = g.arrays.tombstones
        mask = _NO_MASK
        cand = None
        if flt is not None:
            mask = filter_to_mask(flt, self._keys, count, g.capacity, tomb)
            allowed = np.flatnonzero(mask[:count] & (tomb[:count] == 0))
            limit = max(self.FILTER_EXACT_MIN, self.FILTER_EXACT_FRACTION * (count - g.deleted_count))
            if exact or allowed.shape[0] <= limit:
                cand = allowed.astype(np.int32)
        elif exact:
            cand = np.flatnonzero(tomb[:count] == 0).astype(np.int32)
        counter = np.zeros(1, np.int64)
        code = self._metric.code
        if cand is not None:

            def work() -> None:
                bruteforce_kernel(rows, code, q, cand, k, counter, 1, out_ids, out_d)

        else:
            arrays = g.arrays

            def work() -> None:
                knn_kernel(arrays, rows, code, q, k, ef, mask, self._visited.acquire(), counter, 4, out_ids, out_d, starts)

        run_parallel(work, threads)
        return self._keys.keys_for(out_ids), out_d, out_ids

    # ------------------------------------------------------------------ health
    def stats(self) -> dict[str, Any]:
        """Live / deleted counts, level and degree histograms, unreachable live nodes, bytes."""
        from .health import index_stats

        return index_stats(self)

    def repair(self, store: Any, *, num_threads: int | None = None) -> int:
        """Replace links to deleted nodes by nearby live nodes; returns lists rewritten.

        Run it after many deletions to keep recall from decaying (takes the exclusive lock).
        """
        self._check_writable()
        from .health import repair_index

        return repair_index(self, store, num_threads)

    def compact(self, store: Any, *, num_threads: int | None = None) -> np.ndarray:
        """Drop deleted nodes: rebuild the live ones into dense NodeIds, in place.

        The store's rows are compacted and the graph is rebuilt over them (all cores), so
        the index then matches a fresh build; ``resize`` can reclaim the memory.
        Deleted keys are forgotten.

        Returns
        -------
        ndarray int32 (old node count,)
            New NodeId of every old NodeId, -1 for dropped ones. Keys are unchanged.
        """
        self._check_writable()
        from .health import compact_index

        return compact_index(self, store, num_threads)

    def materialize(self, store: Any) -> tuple["Hnsw", Any]:
        """A writable in-memory copy ``(index, store)`` of a read-only (mapped) index."""
        from .materialize import materialize

        return materialize(self, store)

    # ------------------------------------------------------------------ checks
    def check_integrity(self) -> None:
        """Verify the graph and key-map invariants; raise IntegrityError naming the first broken one."""
        with self._rw.exclusive():
            code, node, level = check_graph_kernel(self._graph.arrays)
            if code:
                raise IntegrityError(f"{INTEGRITY_MESSAGES[code]} (node {node}, level {level})")
            n = self.node_count
            if len(self._keys) != n:
                raise IntegrityError(f"key map has {len(self._keys)} keys for {n} nodes")
            for nid in range(n) if n <= 200_000 else np.random.default_rng(0).integers(0, n, 200_000):
                if self._keys.get(self._keys.key(int(nid))) != nid:
                    raise IntegrityError(f"key map is not a bijection at NodeId {nid}")
