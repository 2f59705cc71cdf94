"""The ``Hnsw`` index: public methods that validate their input and orchestrate the work.

The work lives beside it: :mod:`.mutation` (insert, update, delete, resize), :mod:`.single`
(one query), :mod:`.batch` (batches), :mod:`.filtered` (filters and plans), :mod:`.health`,
:mod:`.knn`; the state is one :class:`~hnsw_numba.core.state.IndexState` (``index.state``).

Concurrency (docs/design.md): searches take no lock (rerun if a compaction overlapped
them); mutations hold it shared; resize, repair, compact, checks and saves exclusive.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Hashable, Iterator

import numpy as np

from ..kernels.layout import H_DELETED, H_NODES
from . import keyreads, mutation
from .batch import NO_STARTS, prepare_queries, search_prepared
from .config import HnswConfig
from .errors import InvalidParameterError, KeyExistsError, KeyNotFoundError, ReadOnlyIndexError
from .filters import Filter
from .hits import Hit, Hits  # noqa: F401  (Hit: hnsw_numba.core.index.Hit still imports)
from .keymap import KeyMap, check_new_keys, key_batch, normalize_key
from .lazy import OnFirstUse, made_once
from .metrics import Metric
from .parallel import check_threads, resolve_threads
from .quantize import Qi8, Qi8Batch
from .renamed import keys_settled
from .rowwrites import read_rows
from .rwlock import RWLock
from .single import SingleQuery
from .state import IndexState
from .validate import check_ef, check_flag, check_node_id, check_store, prepare_qi8, prepare_vectors

__all__ = ["Hnsw"]

health, knn, pickling, revive, _mat = (OnFirstUse(f"{__package__}.{m}") for m in ("health", "knn", "pickling", "revive", "materialize"))


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
    Keys are ints (>= 0) or strs, mapped to dense NodeIds ``0, 1, 2, ...`` in insertion
    order; a deleted key keeps its NodeId (reused only by ``rename_deleted``) and
    ``insert`` / ``set`` resurrect it there. Every method validates all of its input
    before it changes anything.

    An index pickles (``pickle``, ``copy.deepcopy``, joblib) through its arrays: the copy
    has new locks and pools and continues as the original would. Pickle the store beside
    it in one moment, ``with h.lock.exclusive(): pickle.dumps((h, store))`` (a compaction
    between the two would pair old NodeIds with moved rows; ``hn.Index`` pickles so), and a
    read-only index raises ReadOnlyIndexError: pickle ``materialize(store)`` instead.
    """

    #: Items linked per round of ``insert_batch`` when it reports progress (or is large).
    INSERT_ROUND = mutation.INSERT_ROUND

    def __init__(self, metric: Metric, config: HnswConfig):
        if not isinstance(metric, Metric):
            raise InvalidParameterError(f"metric must be a Metric instance such as L2(), got {metric!r}")
        if not isinstance(config, HnswConfig):
            raise InvalidParameterError(f"config must be an HnswConfig, got {config!r}")
        self._adopt(IndexState.empty(metric, config))

    @classmethod
    def from_state(cls, state: IndexState) -> "Hnsw":
        """An index over existing state (loaders build one from validated arrays)."""
        self = cls.__new__(cls)
        self._adopt(state)
        return self

    @classmethod
    def from_parts(cls, metric: Metric, config: HnswConfig, arrays: Any, keymap: Any, *, read_only: bool = False) -> "Hnsw":
        """An index over validated graph arrays and a key map (see :meth:`IndexState.from_arrays`)."""
        return cls.from_state(IndexState.from_arrays(metric, config, arrays, keymap, read_only=read_only))

    def _adopt(self, state: IndexState) -> None:
        self._state = state
        self._single = SingleQuery(state)
        self._filtered = None  # a FilteredSearch, made on the first filtered or planned call

    def __getstate__(self) -> dict[str, Any]:
        """The index as plain arrays (see :mod:`hnsw_numba.core.pickling`); excludes mutations while copying."""
        return pickling.snapshot(self._state)

    def __setstate__(self, data: dict[str, Any]) -> None:
        self._adopt(pickling.restore(data))

    # ------------------------------------------------------------------ state
    @property
    def state(self) -> IndexState:
        """The index's :class:`IndexState` (the internal API of the other layers)."""
        return self._state

    @property
    def lock(self) -> RWLock:
        """The readers-writer lock: ``with index.lock.exclusive():`` excludes every mutation."""
        return self._state.lock

    @property
    def graph_arrays(self) -> Any:
        """The graph's :class:`~hnsw_numba.kernels.layout.GraphArrays` (read them, do not write)."""
        return self._state.graph.arrays

    @property
    def key_map(self) -> KeyMap:
        return self._state.keys

    @property
    def metric(self) -> Metric:
        return self._state.metric

    @property
    def config(self) -> HnswConfig:
        return self._state.config

    @property
    def dim(self) -> int:
        return self._state.config.dim

    @property
    def max_nodes(self) -> int:
        return self._state.config.max_nodes

    @property
    def node_count(self) -> int:
        """NodeIds handed out (live and deleted)."""
        return self._state.graph.node_count

    @property
    def deleted_count(self) -> int:
        return self._state.graph.deleted_count

    @property
    def read_only(self) -> bool:
        return self._state.read_only

    def __len__(self) -> int:
        # both counts from one arrays' header: a growth between two reads of the graph's
        # properties pairs the old arrays' node count with the deleted count of the new ones
        header = self._state.graph.arrays.header
        return int(header[H_NODES] - header[H_DELETED])

    def __contains__(self, key: object) -> bool:
        try:
            k = normalize_key(key)
        except Exception:
            return False
        return keyreads.live_node(self._state, k) >= 0

    def __repr__(self) -> str:
        return (
            f"Hnsw({self.metric!r}, dim={self.dim}, live={len(self)}, "
            f"deleted={self.deleted_count}, max_nodes={self.max_nodes}, m={self.config.m})"
        )

    def node_id(self, key: Hashable) -> int:
        """NodeId of a live key (KeyNotFoundError otherwise)."""
        nid = keyreads.live_node(self._state, normalize_key(key))
        if nid < 0:
            raise KeyNotFoundError(f"key {key!r} is not in the index")
        return nid

    def key(self, node_id: int) -> Hashable:
        """Key of a NodeId (also for deleted nodes); InvalidKeyError for what is no int."""
        return keyreads.node_key(self._state, check_node_id(node_id))

    def keys(self) -> Iterator[Hashable]:
        """Live keys in NodeId order, as of the call (a compaction meanwhile makes it read again)."""
        return keyreads.iter_live_keys(self._state)

    def is_deleted(self, node_id: int) -> bool:
        """Whether a NodeId in ``[0, node_count)`` is tombstoned (KeyNotFoundError outside)."""
        return keyreads.is_deleted(self._state, check_node_id(node_id))

    # ------------------------------------------------------------------ validation
    def check_store(self, store: Any) -> tuple:
        """The store's ``rows()`` after checking it can serve this index (kind, dim, rows), again if a compaction overlapped it."""
        s = self._state
        return s.read_stable(lambda: check_store(s.metric, s.config.dim, s.node_count, store, s.entry_point))

    def prepare_queries(self, vectors: Any, single: bool = False) -> np.ndarray:
        """Validated float32 ``(n, dim)`` queries as the kernels take them (unit length for cosine)."""
        return prepare_queries(self.metric, self.dim, vectors, single)

    def _check_writable(self) -> None:
        if self._state.read_only:
            raise ReadOnlyIndexError("this index is read-only (memory-mapped); call materialize() first")

    # ------------------------------------------------------------------ mutation
    def insert(self, store: Any, key: Hashable, vector: Any, *, grow: bool = False) -> int:
        """Insert a new key; KeyExistsError if it is live. Returns its NodeId.

        A deleted key is resurrected on its old NodeId (as :meth:`set` does). ``grow``: a full index
        and store double instead of raising CapacityError (see :meth:`insert_batch`)."""
        encoded, n = self.encode(store, vector, True)
        return int(self._insert(store, [key], encoded, n, 1, None, grow)[0])

    def insert_batch(self, store: Any, keys: Any, vectors: Any, *, num_threads: int | None = None, progress: Any = None,
                     grow: bool = False) -> np.ndarray:
        """Insert many new keys at once, in parallel. Returns their NodeIds (int32).

        ``keys``: new (or deleted: resurrected on their NodeIds), unique within the batch,
        ints >= 0 or strs. ``vectors``: (n, dim), or a :class:`~hnsw_numba.Qi8Batch` that a
        Qi8 store keeps as given (see :func:`~hnsw_numba.core.validate.prepare_qi8`).
        ``progress``: a tqdm bar (``tqdm.auto``: a widget in Jupyter); default when the batch
        should take over ~2 s and stderr is a terminal or a notebook runs us; a first
        compilation shows as a step of its own; a :class:`~hnsw_numba.core.progress.Progress`
        is advanced and left open. ``grow``: a full index and store grow (to twice their
        capacity, or what the batch needs) instead of raising CapacityError; growth takes
        the exclusive lock.

        On any input error nothing changes. Work proceeds in rounds; Ctrl-C stops after
        the current round, leaving the items inserted so far searchable and the rest
        tombstoned (inserting those keys again resurrects them). A large batch into a
        float32 store walks a float16 copy of the rows while it links (:mod:`~hnsw_numba.core.half_walk`).
        """
        encoded, n = self.encode(store, vectors, False)
        return self._insert(store, keys, encoded, n, num_threads, progress, grow)

    def encode(self, store: Any, vectors: Any, single: bool = False) -> tuple[Any, int]:
        """``(store.encode(...), n)`` of vectors checked as inserts check them (a batch whole); changes nothing."""
        if self.metric.store_kind == "qi8" and isinstance(vectors, (Qi8, Qi8Batch)):
            batch = prepare_qi8(self.metric, self.dim, vectors, single)
            self.check_store(store)
            return store.encode(batch), len(batch)
        v = prepare_vectors(self.metric, self.dim, vectors, single)
        self.check_store(store)
        return store.encode(v), v.shape[0]

    def _insert(self, store: Any, keys: Any, encoded: Any, n: int, num_threads: int | None, progress: Any, grow: bool) -> np.ndarray:
        self._check_writable()
        check_flag("grow", grow)
        key_list, int_keys, _ = key_batch(keys, n, unique=KeyExistsError)
        check_new_keys(key_list, int_keys)
        threads = resolve_threads(num_threads, n)
        return mutation.insert_prepared(self._state, store, key_list, int_keys, encoded, n, threads, progress, bool(grow))

    def set(self, store: Any, key: Hashable, vector: Any, *, grow: bool = False) -> int:
        """Insert or update ``key`` (upsert). Returns its NodeId.

        A live key gets the new vector and its neighbourhood is repaired; a deleted key is
        resurrected on the same NodeId; a new key is inserted (``grow`` as for :meth:`insert`).
        """
        self._check_writable()
        k = normalize_key(key)
        check_new_keys([k], None)
        encoded, _ = self.encode(store, vector, True)
        while True:
            nid = mutation.update_key(self._state, store, k, encoded)
            if nid >= 0:
                return nid
            try:
                return int(self._insert(store, [k], encoded, 1, 1, None, grow)[0])
            except KeyExistsError:  # another call inserts it meanwhile: update it once that is done
                nid = mutation.update_inserted(self._state, store, k, encoded)
                if nid >= 0:
                    return nid
            # deleted again after that insert (or it failed): resurrect it ourselves

    def delete(self, key: Hashable) -> int:
        """Tombstone a live key: it is never returned again. Returns its NodeId."""
        self._check_writable()
        return mutation.delete_key(self._state, normalize_key(key), key)

    def delete_batch(self, keys: Any) -> np.ndarray:
        """Tombstone many live keys at once: all of them, or none. Returns their NodeIds (int32).

        Every key is checked first: KeyNotFoundError names the first absent (or deleted)
        key, InvalidParameterError a key given twice; then nothing has changed. Runs
        concurrently with searches and other mutations (a search sees each key live or
        deleted).
        """
        self._check_writable()
        key_list, int_keys, _ = key_batch(keys, unique=InvalidParameterError)
        return mutation.delete_keys(self._state, key_list, int_keys)

    def get_vectors(self, store: Any, keys: Any) -> np.ndarray:
        """The stored vectors of live keys as float32: ``(dim,)`` for one key, ``(n, dim)`` for a sequence.

        The vectors as the store holds them: float16 / bfloat16 widened, Qi8 dequantized,
        unit length for cosine (normalised on insert). KeyNotFoundError names the first
        absent or deleted key. Excludes nothing (a concurrent ``set`` is seen before or after,
        never half done; a concurrent ``compact`` makes it read again).
        """
        single = isinstance(keys, (str, int, np.integer))
        key_list, int_keys, _ = key_batch([keys] if single else keys)
        self.check_store(store)
        out = self._state.read_stable(lambda: read_rows(self._state, store, mutation.live_node_ids(self._state, key_list, int_keys)))
        return out[0] if single else out

    def set_ef(self, ef: int) -> None:
        """Set the default beam width of searches (``config.ef_search``), as hnswlib's ``set_ef``.

        Takes the exclusive lock (waits for running mutations); searches never wait.
        """
        ef = check_ef(ef, ef)  # None stays None: the config refuses it, naming it
        state = self._state
        with state.lock.exclusive():
            state.install(config=dataclasses.replace(state.config, ef_search=ef))

    # ------------------------------------------------------------------ deleted NodeIds, again
    def undelete(self, key: Hashable, store: Any = None) -> int:
        """Bring a deleted key back with its vector (hnswlib's ``unmark_deleted``); with ``store`` its links are
        repaired too (after ``repair``: needed). Returns its NodeId. See :func:`hnsw_numba.core.revive.undelete`."""
        self._check_writable()
        return revive.undelete(self._state, normalize_key(key), store)

    def rename_deleted(self, old_keys: Any, new_keys: Any) -> np.ndarray:
        """Give the NodeIds of deleted keys to new keys, which stay deleted until inserted (hnswlib's
        ``replace_deleted``); returns the NodeIds (int32). See :func:`hnsw_numba.core.revive.rename_deleted`."""
        self._check_writable()
        return revive.rename_deleted(self._state, old_keys, new_keys)

    def resize(self, new_max_nodes: int) -> None:
        """Grow (or shrink to the NodeIds in use) the capacity; with searches running, grow the store first."""
        self._check_writable()
        mutation.resize(self._state, new_max_nodes)

    # ------------------------------------------------------------------ search
    @property
    def search_one(self) -> Any:
        """The single-query path itself, ``search_one(store, query, k, ef)``, for wrappers (``hn.Index``)."""
        return self._single.search

    def search(self, store: Any, query: Any, k: int, filter: Any = None, *, ef: int | None = None, exact: bool = False,
               plan: str = "auto", explain: bool = False) -> Any:
        """The ``k`` nearest live items to ``query``, best first.

        Parameters
        ----------
        store, query : VectorStore, array_like (dim,)
            The index's vectors; the query (float32 or convertible; a ``Qi8`` is dequantized).
        k : int
            Number of results; fewer come back if fewer live items exist, or the walk cannot reach them (``stats()`` counts such nodes, ``repair()`` links them).
        filter : optional
            A boolean mask over NodeIds, keys (an integer array or any collection), a
            predicate on keys, or a compiled :class:`~hnsw_numba.Filter` (reuse it across calls).
        ef, exact : int, bool
            Beam width (default ``config.ef_search``; ``max(ef, k)`` is used); brute force.
        plan, explain : {"auto", "graph", "exact", "post", "acorn", "descend"}, bool
            The planner's choice, a walk (the planner's, the post-filter, ACORN's, the planner's with short queries taking the filtered
            descent; a forced walk's query meeting few allowed items walks again ACORN's way, wider) or exact search over the allowed
            rows (:mod:`~hnsw_numba.core.planner`); ``explain``: return ``(hits, SearchPlan)``.

        Returns
        -------
        Hits
            Up to ``k`` ``Hit(key, distance, node_id)``, best first.
        """
        if filter is None and exact is False and plan == "auto" and explain is False:  # any other flag value: checked there
            return self._single.search(store, query, k, ef)
        if type(filter) is Filter and filter.kept is not None and exact is False and explain is False and (hits := self._filter_search.kept(store, query, k, filter, ef, plan)) is not None:
            return hits  # the call kept on the Filter, current and not overlapped
        return keys_settled(self._state, lambda: self._filter_search.search(store, query, k, filter, ef, exact, plan, explain))

    _filter_search = property(lambda self: self._filtered or made_once(self, "_filtered", f"{__package__}.filtered", "FilteredSearch", self._state), doc="Made by the first filtered call.")
    last_plan = property(lambda self: self._filtered.last_plan if self._filtered else None, doc="The ``SearchPlan`` of the latest filtered or planned search.")
    search_row = property(lambda self: self._single.search_row, doc="The single-query path answering in (1, k) arrays (see ``SingleQuery.search_row``).")

    def search_batch(self, store: Any, queries: Any, k: int, filter: Any = None, *, ef: int | None = None, num_threads: int | None = None,
                     exact: bool = False, plan: str = "auto") -> tuple[np.ndarray, np.ndarray]:
        """k-NN of every row of ``queries`` (n, dim), in parallel. ``filter``, ``plan``: as for
        :meth:`search`, or one filter per query (a 2-D boolean array ``(n, node_count)`` or a
        list of ``n`` filters), each query then answered as its own ``search`` call would be.

        Returns
        -------
        keys : ndarray (n, k)
            int64 (int keys; padding -1) or object (ints past int64: padding -1; str keys: padding None), best first.
        distances : ndarray float32 (n, k)
            Padding ``inf`` where fewer than k live (allowed) items exist.
        """
        keys, dists, _ = self.search_prepared(store, self.prepare_queries(queries), k, filter, ef=ef, num_threads=num_threads, exact=exact, plan=plan)
        return keys, dists

    def search_batch_ids(self, store: Any, queries: Any, k: int, filter: Any = None, *, ef: int | None = None, num_threads: int | None = None,
                         exact: bool = False, plan: str = "auto") -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`search_batch` but returns NodeIds (int32, padding -1)."""
        _, dists, ids = self.search_prepared(store, self.prepare_queries(queries), k, filter, ef=ef, num_threads=num_threads, exact=exact, plan=plan)
        return ids, dists

    def search_prepared(self, store: Any, queries: np.ndarray, k: int, filter: Any = None, *, ef: int | None = None,
                        num_threads: int | None = None, exact: bool = False, starts: np.ndarray = NO_STARTS, plan: str = "auto") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(keys, distances, NodeIds)`` of queries from :meth:`prepare_queries` (see :func:`~hnsw_numba.core.batch.search_prepared`)."""
        if filter is None and plan == "auto":
            return keys_settled(self._state, lambda: search_prepared(self._state, store, queries, k, None, ef, num_threads, exact, starts))
        return keys_settled(self._state, lambda: self._filter_search.batch(store, queries, k, filter, ef, num_threads, exact, plan, starts))

    def knn_graph(self, store: Any, k: int, *, ef: int | None = None, exclude_self: bool = True, num_threads: int | None = None, progress: bool | None = None) -> Any:
        """k-NN graph of every live item as a ``scipy.sparse.csr_matrix`` (node_count x node_count).

        Row/column ``i`` is NodeId ``i`` (key ``self.key(i)``), values are distances, rows
        best first, deleted rows empty; see :func:`hnsw_numba.core.knn.knn_graph`.
        """
        return knn.knn_graph(self, store, k, ef=ef, exclude_self=exclude_self, num_threads=num_threads, progress=progress)

    # ------------------------------------------------------------------ health
    def stats(self) -> dict[str, Any]:
        """Live / deleted counts, level and degree histograms, live nodes no level-0 walk from the entry point reaches (``unreachable_live``), nodes a descent can land on without a level-0 path to it (``landings_cut_off``), bytes."""
        return health.index_stats(self._state)

    def repair(self, store: Any, *, num_threads: int | None = None) -> int:
        """Replace links to deleted nodes by nearby live nodes, link every live node no level-0
        path reaches and give every node a descent can land on (level 1 and above) a level-0
        path to the entry point; returns lists rewritten (``stats()["unreachable_live"]`` is then 0).

        Run it after many deletions to keep recall from decaying (takes the exclusive lock)."""
        self._check_writable()
        threads = check_threads(num_threads)  # checked also when nothing needs repair
        with self._state.lock.exclusive():  # rows bound under it: a growth it waited on replaces them
            return health.repair_links(self._state, store, self.check_store(store), threads)

    def compact(self, store: Any, *, num_threads: int | None = None, reorder: bool = False) -> np.ndarray:
        """Drop deleted nodes: rebuild the live ones into dense NodeIds, in place.

        The store's rows are compacted and the graph is rebuilt over them (all cores), so
        the index then matches a fresh build; ``resize`` can reclaim the memory. Deleted
        keys are forgotten. ``reorder=True`` then renumbers every node in breadth-first
        order over the graph (same edges, same unfiltered and exact answers; ACORN's seeds follow
        NodeIds; searches run faster as neighbours sit together in memory, see docs/performance.md),
        deleted nodes or not. Takes the exclusive lock; searches that overlap it run again.

        Returns
        -------
        ndarray int32 (old node count,)
            New NodeId of every old NodeId, -1 for dropped ones. Keys are unchanged.
        """
        self._check_writable()
        self.check_store(store)
        return health.compact(self._state, store, check_threads(num_threads), check_flag("reorder", reorder))  # threads checked even with nothing to drop

    def materialize(self, store: Any) -> tuple["Hnsw", Any]:
        """A writable in-memory copy ``(index, store)`` of a read-only (mapped) index."""
        return _mat.materialize(self, store)

    def check_integrity(self) -> None:
        """Verify the graph and key-map invariants; raise IntegrityError naming the first broken one."""
        health.check_integrity(self._state)
