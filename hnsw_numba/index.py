"""``hn.Index``: one object that holds an index and its vectors, and grows by itself.

A thin composition of :class:`~hnsw_numba.Hnsw` and a built-in store (``.native`` gives both): the same engine, locks and
files, without two objects, two capacities and explicit resizes. Capacity doubles when an add needs room (amortised O(1) per item).
Everything else follows ``Hnsw``: keys are ints >= 0 or strs; a removed key is never returned and adding it again resurrects it on
its NodeId; bad input raises a typed error and changes nothing. Every call may run from many threads at once: searches, ``get``,
``keys``, ``in`` and ``knn_graph`` take no lock and exclude nothing (one that a compaction overlaps runs again; ``len`` reads
without a lock too); adds, sets and removes exclude only growth, compaction, saves and pickling, which exclude every change. :func:`open` reads a saved index
(metric, dtype and parameters from the file); an ``Index`` pickles through its arrays (``pickle``, ``copy.deepcopy``, loky workers).
"""

from __future__ import annotations

import threading
from typing import Any, Hashable, Iterator

import numpy as np

from .core.config import MAX_EF, HnswConfig, check_int
from .core.errors import DimensionMismatchError, InvalidKeyError, InvalidParameterError, KeyExistsError
from .core.hits import Hits
from .core.index import Hnsw
from .core.keymap import check_new_keys, key_batch, numbered_keys
from .core.names import DTYPES, METRICS, dtype_name, dtype_short, metric_name
from .core.parallel import check_threads, resolve_threads
from .core.pickling import restore_pair, snapshot_with_store
from .core.progress import Progress, insert_seconds, want_progress
from .core.quantize import Qi8Batch
from .core.store import InMemoryVectorStore
from .core.store_base import real_array
from .core.store_qi8 import InMemoryQi8VectorStore
from .core.validate import batch_rows, float32_vectors, is_one_vector
from .sources import insert_rows, key_reader, open_rows, release_pages

__all__ = ["Index", "open", "DEFAULT_CAPACITY", "BATCH_BYTES"]

#: Capacity of a new index when none is given (it doubles as items arrive).
DEFAULT_CAPACITY = 1024
#: ``add_from`` reads batches of about this many bytes of float32 by default.
BATCH_BYTES = 32 << 20

def _is_key(key: Any) -> bool:
    return isinstance(key, (str, int, np.integer))


class Index:
    """An HNSW index and its vectors in one object, growing as items are added.

    Parameters
    ----------
    dim : int
        Vector dimension.
    metric : {"cosine", "l2", "ip"}
        ``1 - cos``, squared Euclidean, ``1 - dot`` (hnswlib's spaces).
    dtype : {"f32", "f16", "bf16", "qi8", "f32+f16"}
        How vectors are stored: float32, float16, bfloat16, per-vector quantized int8, or
        float32 with a float16 copy that the graph walks read (faster searches and adds,
        float32 distances, 1.5x the vectors' memory).
    m : int
        Links per node (``2 * m`` on level 0).
    ef_construction : int
        Beam width while adding.
    ef : int
        Default beam width of searches (``index.ef = ...`` changes it).
    capacity : int, optional
        Items to make room for up front (default 1,024; it doubles when full).
    seed : int, optional
        Seed of the level generator: the same adds on one thread give the same graph.

    Examples
    --------
    >>> import numpy as np, hnsw_numba as hn
    >>> x = np.random.default_rng(0).standard_normal((1000, 32)).astype(np.float32)
    >>> index = hn.Index(32, metric="l2", seed=0)
    >>> index.add(np.arange(1000), x)  # doctest: +ELLIPSIS
    array([  0,   1, ...
    >>> index.search(x[7], k=1)[0].key
    7
    """

    def __init__(self, dim: int, metric: str = "cosine", dtype: str = "f32", m: int = 16, ef_construction: int = 200,
                 ef: int = 50, capacity: int | None = None, seed: int | None = None) -> None:
        name, short = metric_name(metric), dtype_name(dtype)
        check_int("ef", ef, 1, MAX_EF)  # by the name the caller passes (the config's is ef_search)
        cap = DEFAULT_CAPACITY if capacity is None else capacity
        check_int("capacity", cap, 1, 2**31 - 2)
        config = HnswConfig(dim=dim, max_nodes=int(cap), m=m, ef_construction=ef_construction, ef_search=ef, seed=seed)
        plain, quantized = METRICS[name]
        if short == "qi8":
            store: Any = InMemoryQi8VectorStore(config.dim, config.max_nodes)
            index = Hnsw(quantized(), config)
        else:
            store = InMemoryVectorStore(config.dim, config.max_nodes, dtype=DTYPES[short], walk_copy=short == "f32+f16")
            index = Hnsw(plain(), config)
        self._bind(index, store)

    @classmethod
    def from_native(cls, index: Hnsw, store: Any) -> "Index":
        """Wrap an existing ``Hnsw`` and its store (built-in store types), without copying."""
        if not isinstance(index, Hnsw):
            raise InvalidParameterError(f"index must be an Hnsw, got {type(index).__name__}")
        if not isinstance(store, (InMemoryVectorStore, InMemoryQi8VectorStore)):
            raise InvalidParameterError(f"store must be an InMemoryVectorStore or InMemoryQi8VectorStore, got {type(store).__name__}")
        index.check_store(store)
        self = cls.__new__(cls)
        self._bind(index, store)
        return self

    def _bind(self, index: Hnsw, store: Any) -> None:
        self._index, self._store = index, store
        # the hot path calls the bound methods directly (a search is a few microseconds)
        self._search_fast = index.search_one  # (store, query, k, ef): no filter, not exact
        self._search_many = index.search_batch
        self._numbering = threading.Lock()  # adds that number their items, one at a time
        self._ceiling, self._scanned, self._scanned_epoch = 0, 0, -1  # numbered adds: past every int key of NodeIds < _scanned

    # ------------------------------------------------------------------ pickling
    def __getstate__(self) -> dict[str, Any]:
        """The index and its store as arrays, copied at one moment: excludes mutations, growth, compaction and saves (searches go on)."""
        graph, rows = snapshot_with_store(self._index.state, self._store)
        return {"index": graph, "store": (type(self._store), rows)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._bind(*restore_pair(state))  # checked whole (IndexFormatError) before anything is bound

    # ------------------------------------------------------------------ description
    @property
    def native(self) -> tuple[Hnsw, Any]:
        """``(Hnsw, store)`` underneath, for the low-level API (share them, do not resize them apart)."""
        return self._index, self._store

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return self._index.dim

    @property
    def metric(self) -> str:
        """``"cosine"``, ``"l2"`` or ``"ip"``."""
        return self._index.metric.name.removesuffix("_qi8")

    @property
    def dtype(self) -> str:
        """``"f32"``, ``"f16"``, ``"bf16"``, ``"qi8"`` or ``"f32+f16"`` (float32 with a float16 walk copy)."""
        return dtype_short(self._store)

    @property
    def m(self) -> int:
        """Links per node on the upper levels (``2 * m`` on level 0)."""
        return self._index.config.m

    @property
    def ef_construction(self) -> int:
        """Beam width while adding."""
        return self._index.config.ef_construction

    @property
    def ef(self) -> int:
        """Default beam width of searches; assign to change it (saved with the index)."""
        return self._index.config.ef_search

    @ef.setter
    def ef(self, value: int) -> None:
        """Takes the exclusive lock (waits for running adds); searches never wait."""
        self._index.set_ef(value)

    @property
    def capacity(self) -> int:
        """Items that fit before the next growth."""
        return min(self._index.max_nodes, self._store.max_nodes)

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def __repr__(self) -> str:
        return (f"Index(dim={self.dim}, metric={self.metric!r}, dtype={self.dtype!r}, len={len(self)}, "
                f"capacity={self.capacity}, m={self.m}, ef_construction={self.ef_construction}, ef={self.ef})")

    def keys(self) -> Iterator[Hashable]:
        """The live keys, in the order they were first added (after ``compact(reorder=True)``: its order)."""
        return self._index.keys()

    # ------------------------------------------------------------------ changes
    def add(self, keys: Any, vectors: Any = None, *, num_threads: int | None = None, progress: bool | None = None) -> Any:
        """Add one item or many; ``add(vectors)`` numbers them.

        Parameters
        ----------
        keys : int, str or sequence of them
            New keys (int keys >= 0); a removed key is resurrected on its NodeId. Omitted
            (``add(vectors)``), items are numbered past the NodeIds handed out and the
            int keys given so far: ``0, 1, 2, ...`` for an index whose items were all
            numbered this way.
        vectors : array_like (dim,) or (n, dim), Qi8 or Qi8Batch
            One vector per key; a ``qi8`` index stores a ``Qi8`` / ``Qi8Batch`` as given.
        num_threads : int, optional
            Threads for a batch (default: all cores).
        progress : bool, optional
            tqdm bar (a widget in Jupyter); default: for batches expected to take > ~2 s.

        Returns
        -------
        key or ndarray
            The key(s) added (int64 array when numbered; uint64 or ints past int64).

        Runs alongside searches and other adds; numbered adds take turns. Growth takes
        the exclusive lock.
        """
        if vectors is None:
            keys, vectors = None, keys
        if keys is not None:
            return self._add(keys, vectors, num_threads, progress)
        with self._numbering:
            start = self._next_number()
            if is_one_vector(vectors):
                return self._add(start, vectors, num_threads, progress)
            n = batch_rows(vectors)  # typed errors for what is no batch (None, a str, ragged lists)
            return self._add(numbered_keys(start, n), vectors, num_threads, progress)

    def _next_number(self) -> int:
        """The first number of a numbered add (under ``_numbering``): past every NodeId and int key, and those
        compactions dropped (saved and pickled with the index), reading only the keys added since the last call."""
        count, epoch = self._index.node_count, self._index.state.epoch
        if epoch != self._scanned_epoch:  # compacted since (through .native too): NodeIds changed, read every key again
            self._scanned, self._scanned_epoch = 0, epoch
        if self._scanned < count:
            self._ceiling = max(self._ceiling, self._index.key_map.int_ceiling(self._scanned, count))
            self._scanned = count
        return max(count, self._ceiling, self._index.state.dropped_ceiling)

    def _add(self, keys: Any, vectors: Any, num_threads: int | None, progress: Any) -> Any:
        if is_one_vector(vectors):
            if progress is not None:
                want_progress(progress)  # one item shows no bar, but a bad value raises all the same
            if not _is_key(keys):
                if np.ndim(keys) != 1 or len(keys) != 1:
                    raise InvalidKeyError(f"expected one key for one vector, got {keys!r}")
                keys = keys[0]
            self._index.insert(self._store, keys, vectors, grow=True)
            return keys
        if _is_key(keys) or isinstance(keys, Iterator):  # an iterator is spent by the insert: the caller gets its keys
            keys = [keys] if _is_key(keys) else list(keys)
        self._index.insert_batch(self._store, keys, vectors, num_threads=num_threads, progress=progress, grow=True)
        return keys

    def set(self, keys: Any, vectors: Any) -> None:
        """Add or replace items (upsert): a live key moves to its new vector, others are added.

        A batch is validated whole before anything changes (keys, vectors, the store's range). Excludes
        nothing (growth takes the exclusive lock): adds, sets and removes of the same keys may run from other
        threads, and each key then ends with one of the writes, this one's or another's; a batch is not atomic.
        A search meanwhile answers a key with the distance to its old vector or its new one, never a mix."""
        if is_one_vector(vectors):
            if not _is_key(keys):
                if np.ndim(keys) != 1 or len(keys) != 1:
                    raise InvalidKeyError(f"expected one key for one vector, got {keys!r}")
                keys = keys[0]
            self._index.set(self._store, keys, vectors, grow=True)
            return
        # the whole batch checked before any change: codes as inserts check them, floats by the store (range of float16 ...)
        if isinstance(vectors, Qi8Batch):
            encoded, n = self._index.encode(self._store, vectors)  # as stored: re-quantized rows (one warning) are not checked again
            rows: Any = Qi8Batch(*encoded) if isinstance(encoded, tuple) else vectors  # a float store decodes them
        else:
            # checked prepared (a cosine row at unit length, as the store takes it); written from the
            # caller's values, prepared once more by the writes as add() prepares them (twice differs by an ulp)
            raw = float32_vectors(self.dim, vectors, False, self._index.metric.normalize)
            self._store.encode(self._index.prepare_queries(raw))
            rows, n = raw, raw.shape[0]
        key_list, int_keys, _ = key_batch([keys] if _is_key(keys) else keys, n, unique=InvalidParameterError)
        check_new_keys(key_list, int_keys)
        listed = key_list if key_list is not None else int_keys.tolist()
        live = np.fromiter((k in self._index for k in listed), dtype=bool, count=n)
        new = np.flatnonzero(~live)
        one_by_one = np.flatnonzero(live).tolist()
        if new.shape[0]:
            part = rows[new] if not isinstance(rows, Qi8Batch) else Qi8Batch(rows.data[new], rows.scale[new], rows.zero_point[new])
            try:
                self._index.insert_batch(self._store, [listed[i] for i in new.tolist()], part, grow=True)
            except KeyExistsError:  # another thread added one since (nothing changed): Hnsw.set settles that race key by key
                one_by_one = sorted(one_by_one + new.tolist())
        for i in one_by_one:
            self._index.set(self._store, listed[i], rows[i], grow=True)

    def compact(self, *, reorder: bool = False, num_threads: int | None = None) -> np.ndarray:
        """Forget removed items and rebuild the graph over the live ones (``Hnsw.compact``).

        ``reorder=True`` then renumbers the items breadth-first over the graph: the same unfiltered and exact answers, faster
        searches on a large index built in input order (1.3–1.45× at 1,000,000 × 128, docs/performance.md);
        worth it once the adds are done. NodeIds (``Hit.node_id``, the rows of :meth:`knn_graph`) and the order
        of :meth:`keys` change; numbered adds go on past the numbers handed out. Excludes every other call
        (searches that overlap it run again). Returns the new NodeId of each old one (-1: removed).
        """
        with self._numbering:  # NodeIds change: the next numbered add reads every key again (the removed ones' numbers: state.dropped_ceiling)
            return self._index.compact(self._store, num_threads=num_threads, reorder=reorder)

    def remove(self, keys: Any) -> None:
        """Remove one key or many (all or none: KeyNotFoundError names the first absent key).

        Removed keys are never returned again; adding one again resurrects it on its NodeId.
        Excludes nothing: a concurrent search sees each key live or removed.
        """
        if _is_key(keys):
            self._index.delete(keys)
        else:
            self._index.delete_batch(keys)

    # ------------------------------------------------------------------ reads
    def search(self, queries: Any, k: int = 10, *, ef: int | None = None, filter: Any = None, num_threads: int | None = None,
               exact: bool = False, plan: str = "auto") -> Any:
        """The ``k`` nearest items of one query or of each row of a batch.

        Parameters
        ----------
        queries : array_like (dim,) or (n, dim), Qi8 or Qi8Batch
        k : int
            Neighbours per query.
        ef : int, optional
            Beam width (default :attr:`ef`); ``max(ef, k)`` is used.
        filter, plan : optional
            What ``Hnsw.search`` / ``search_batch`` accept: a boolean mask over NodeIds, keys,
            a predicate on keys or an ``hn.Filter`` (one per query for a batch too); the plan
            "auto", "graph", "post", "acorn", "descend" or "exact" (:attr:`last_plan` tells which ran and why).
        num_threads, exact : int, bool
            Threads for a batch; brute force instead of the graph (the oracle for recall checks).

        Returns
        -------
        Hits or (ndarray, ndarray)
            One query: ``Hits`` (``Hit(key, distance, node_id)``, best first). A batch:
            ``(keys, distances)`` of shape (n, k), padded with key -1 (None for str keys)
            and distance inf where fewer than k items exist.
        """
        if filter is None and exact is False and plan == "auto" and num_threads is None and type(queries) is np.ndarray and queries.ndim == 1:
            return self._search_fast(self._store, queries, k, ef)
        if is_one_vector(queries):
            check_threads(num_threads)  # one query runs on the calling thread: checked as for a batch
            return self._index.search(self._store, queries, k, filter, ef=ef, exact=exact, plan=plan)
        return self._search_many(self._store, queries, k, filter, ef=ef, num_threads=num_threads, exact=exact, plan=plan)

    last_plan = property(lambda self: self._index.last_plan, doc="The plan of the latest filtered or planned search (``Hnsw.last_plan``).")

    def get(self, keys: Any) -> np.ndarray:
        """Stored vectors as float32: ``(dim,)`` for one key, ``(n, dim)`` for many.

        As stored: rounded to the dtype, unit length for cosine. KeyNotFoundError names
        the first key that is absent or removed.
        """
        return self._index.get_vectors(self._store, keys)

    def knn_graph(self, k: int, *, ef: int | None = None, exclude_self: bool = True, num_threads: int | None = None,
                  progress: bool | None = None) -> Any:
        """The k-NN graph of every item as a ``scipy.sparse.csr_matrix`` (see ``Hnsw.knn_graph``).

        Row and column ``i`` are NodeId ``i``: the i-th item added when every key was
        numbered by :meth:`add` and nothing was compacted.
        """
        return self._index.knn_graph(self._store, k, ef=ef, exclude_self=exclude_self, num_threads=num_threads, progress=progress)

    def tune_ef(self, queries: Any, k: int = 10, target_recall: float = 0.95, **options: Any) -> int:
        """The smallest ef whose recall@k on a sample of ``queries`` reaches ``target_recall``.

        ``hn.tune_ef`` on this index (``options``: ``truth``, ``efs``, ``sample``, ``max_ef``,
        ``seed``, ``num_threads``); assign the result to :attr:`ef` to search with it.
        """
        from .evaluation import tune_ef  # its file readers load with it, not with hn.Index
        return tune_ef(self._index, self._store, queries, k, target_recall, **options)

    # ------------------------------------------------------------------ files
    def save(self, path: Any, **options: Any) -> None:
        """Save to a Zarr group (crash-safe on local paths); ``options`` as for ``hn.save``.
        Takes the exclusive lock while it copies (adds wait; searches go on).
        """
        from .io.persist import save  # Zarr loads on first save or open, not at import
        save(path, self._index, self._store, **options)

    def add_from(self, source: Any, batch_size: int | None = None, keys: Any = None, *, num_threads: int | None = None,
                 progress: bool | None = None) -> int:
        """Add every row of a file or array too large to hold twice, in batches.

        Parameters
        ----------
        source : path, array or iterable of arrays
            A file path (``.npy``, ``.fvecs``/``.bvecs``, HDF5, Zarr, Parquet; read with
            ``hn.open_vectors``, ``"file.hdf5:train"`` names a dataset); anything with
            ``shape`` and row slices (a NumPy array or memory map, a Zarr or h5py array);
            a dask array (each batch computed in turn); or an iterable of 2-D batches.
        batch_size : int, optional
            Rows per batch (default: about 32 MB of float32).
        keys : array_like, optional
            One key per row (read batch by batch; keys past an iterable source's rows raise once they are added); default: numbered as :meth:`add` does.
        num_threads : int, optional
            Threads for the inserts.
        progress : bool, optional
            One bar over every row (default: when the whole is expected to take > ~2 s).

        Returns
        -------
        int
            Rows added.

        Notes
        -----
        Excludes numbered adds while it runs (its rows are numbered as one add); searches and keyed adds go on.
        One batch is in memory at a time; pages of a memory-mapped source are released once their batch is added,
        so memory grows by the index alone. Not atomic: an error (a NaN row, a used key) stops after the batches before it, which stay added.
        """
        rows, total, close, mapped = open_rows(source, self.dim)
        try:
            dim = self.dim
            size = batch_size if batch_size is not None else max(1024, BATCH_BYTES // (4 * dim))
            check_int("batch_size", size, 1, 2**31 - 2)
            key_rows = None if keys is None else key_reader(keys, total)
            threads = resolve_threads(num_threads, 1 << 20)
            show = want_progress(progress, float("inf") if total is None else insert_seconds(total, dim, self.ef_construction, threads))
            added, state = 0, self._index.state
            walks = state.half_walks.hold(self._store, total, None if total is None else state.graph.node_count + total)  # as one add of all (core.half_walk)
            with self._numbering, walks, Progress(total or 0, "add_from", show, unit="vec", start=False) as bar:
                start = self._next_number()  # as add(vectors): past every NodeId and int key handed out
                for batch in rows(int(size)):
                    batch = batch if hasattr(batch, "shape") else real_array(batch)  # rows as lists; a str or ragged rows: InvalidVectorError
                    if np.ndim(batch) != 2 or np.shape(batch)[1] != dim:  # a scalar (no len(), shape ()) too
                        raise DimensionMismatchError(f"rows {added}..: expected batches of shape (n, {dim}), got {np.shape(batch)}")
                    n = np.shape(batch)[0]
                    part = numbered_keys(start + added, n) if key_rows is None else key_rows(added, added + n)
                    insert_rows(self._index, self._store, part, batch, added, num_threads=threads, progress=bar, grow=True)
                    if mapped is not None:
                        release_pages(mapped, added, added + n)
                    added += n
            return added if key_rows is None else key_rows.all_used(added)
        finally:
            close()

def open(path: Any, *, mmap: bool = False, verify: bool = True) -> Index:
    """Open an index saved by :meth:`Index.save` or ``hn.save``: metric, dtype and parameters come from the file.

    Parameters
    ----------
    path : path, URL or zarr store
    mmap : bool
        Map the vectors copy-on-write instead of reading them (a local directory).
    verify : bool
        With ``mmap``, also verify the vectors' checksum.
    """
    from .io.persist import load
    index, store = load(path, mmap=mmap, verify=verify)
    return Index.from_native(index, store)
