"""hnswlib's Python API over hnsw_numba: ``import hnsw_numba.hnswlib as hnswlib``.

``Index(space, dim)`` and ``BFIndex(space, dim)`` have hnswlib 0.8's methods, properties,
defaults and results (labels ``uint64``, distances ``float32``: squared L2, ``1 - dot``,
``1 - cos``), and write and read hnswlib's own index files, so code written for hnswlib
runs unchanged and its files go both ways. Underneath is one native :class:`~hnsw_numba.Hnsw`
and :class:`~hnsw_numba.InMemoryVectorStore` (``index.native``): hnswlib's internal ids are
NodeIds, its labels the keys, its deleted marks tombstones.

Where it differs from hnswlib:

* any mix of calls is safe from any number of threads (searches run while items are
  added or deleted; mutations of one ``Index`` run one at a time, each on all cores);
* ``filter=`` is evaluated once per label per call, not once per visited node (the graph
  walk then runs without the GIL); an exception it raises reaches the caller, as hnswlib's
  does, except on a deleted label, which it then excludes;
* bad input raises before anything changes (hnswlib adds part of a batch that overflows
  ``max_elements``, accepts NaN, and reads past the vector for a query of the wrong
  length); errors are this library's typed errors and ``RuntimeError`` as hnswlib's are
  (:mod:`hnsw_numba.hnswlib_errors`);
* ``replace_deleted`` never gives a label to two elements, and ``load_index`` refuses a
  file where hnswlib did (``LegacyFormatError [duplicate-label]``), as it refuses corrupt,
  hostile or wrong-``dim`` files instead of crashing or misreading them.
"""

from __future__ import annotations

import io
import threading
from typing import Any, Callable

import numpy as np

from .core.config import MAX_EF, HnswConfig
from .core.errors import HnswError
from .core.index import Hnsw
from .core.limits import capacity_for
from .core.materialize import materialize
from .core.parallel import available_cores, run_parallel
from .core.rowwrites import read_rows
from .core.store import InMemoryVectorStore
from .hnswlib_bf import BFIndex
from .hnswlib_errors import CapacityError, HnswlibError, IndexFileNotFoundError, InvalidParameterError, KeyExistsError, KeyNotFoundError, as_runtime
from .hnswlib_input import SpaceSettings, as_flag, as_labels, check_space, input_rows, labels_of, native_keys, node_ids, one_label, read_state, thread_count
from .io.hnswlib import load_hnswlib
from .io.hnswlib_write import hnswlib_file_size, save_hnswlib

__all__ = ["Index", "BFIndex"]

_F32, _U64, _U64T = np.dtype(np.float32), np.dtype(np.uint64), np.uint64
_FEWER = "Cannot return the results in a contiguous 2D array. Probably ef or M is too small"
_NOT_INITED = "Index is not initialized: call init_index() or load_index() first"


class Index(SpaceSettings):
    """An HNSW index with hnswlib 0.8's Python API.

    ``Index(space, dim)`` with space ``'l2'``, ``'ip'`` or ``'cosine'``; ``Index(index)``
    copies another ``Index``; ``Index(params)`` rebuilds one from ``__getstate__()[0]`` (or hnswlib's).
    Then ``init_index`` (or ``load_index``), ``add_items``, ``knn_query`` as in hnswlib.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        source = kwargs.pop("index", None) if "index" in kwargs else None
        params = kwargs.pop("params", None) if "params" in kwargs else None
        if not kwargs and len(args) == 1 and isinstance(args[0], (Index, dict)) and source is None and params is None:
            source, params = (args[0], None) if isinstance(args[0], Index) else (None, args[0])
            args = ()
        if source is not None or params is not None:
            if args or kwargs or (source is not None and params is not None):
                raise InvalidParameterError("Index() takes (space, dim), (index) or (params)")
            if source is not None and not isinstance(source, Index):
                raise InvalidParameterError(f"index must be an Index, got {type(source).__name__}")
            self.__setstate__(source.__getstate__() if source is not None else params)
            return
        self._setup(*args, **kwargs)

    def _setup(self, space: str, dim: int) -> None:
        self._space, self._metric, self._dim = check_space(space, dim)
        self._pair: tuple[Hnsw, InMemoryVectorStore] | None = None
        self._fast: tuple[Callable, InMemoryVectorStore] | None = None  # (pair[0].search_row, pair[1])
        self._ef = 10
        self._num_threads = available_cores()
        self._max_elements = 0
        self._cur_l = 0
        self._seed = 100
        self._allow_replace = False
        self._lock = threading.Lock()  # one mutation at a time; searches never take it

    # ------------------------------------------------------------------ set-up
    def init_index(self, max_elements: int, M: int = 16, ef_construction: int = 200, random_seed: int = 100,
                   allow_replace_deleted: bool = False) -> None:
        """Allocate an empty index for ``max_elements`` items (hnswlib caps M at 10000)."""
        if self._pair is not None:
            raise HnswlibError("The index is already initiated.")
        for name, v in (("max_elements", max_elements), ("M", M), ("ef_construction", ef_construction), ("random_seed", random_seed)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise InvalidParameterError(f"{name} must be a non-negative int, got {v!r}")
        allow_replace_deleted = as_flag("allow_replace_deleted", allow_replace_deleted)
        try:
            cap = max(int(max_elements), 1)
            config = HnswConfig(dim=self._dim, max_nodes=cap, m=min(int(M), 10_000), ef_construction=max(int(ef_construction), 1),
                                ef_search=max(self._ef, 1), seed=int(random_seed) % 2**63)
            pair = (Hnsw(self._metric, config), InMemoryVectorStore(self._dim, cap))
        except HnswError as exc:
            raise as_runtime(exc) from None
        self._attach(pair)
        self._max_elements, self._cur_l = int(max_elements), 0
        self._seed, self._allow_replace = int(random_seed), allow_replace_deleted

    def _attach(self, pair: tuple[Hnsw, InMemoryVectorStore]) -> None:
        # knn_query's one-row path reads _fast alone: one attribute, always a matching pair
        self._pair, self._fast = pair, (pair[0].search_row, pair[1])

    def _native(self) -> tuple[Hnsw, InMemoryVectorStore]:
        pair = self._pair
        if pair is None:
            raise HnswlibError(_NOT_INITED)
        return pair

    @property
    def native(self) -> tuple[Hnsw, InMemoryVectorStore]:
        """The native ``(Hnsw, InMemoryVectorStore)`` underneath (shared, not a copy)."""
        return self._native()

    def to_native(self) -> tuple[Hnsw, InMemoryVectorStore]:
        """The native ``(Hnsw, InMemoryVectorStore)``: str keys, Zarr saves, filters, ..."""
        return self._native()

    # ------------------------------------------------------------------ mutation
    def add_items(self, data: Any, ids: Any = None, num_threads: int = -1, replace_deleted: bool = False) -> None:
        """Insert (or update) rows of ``data`` under labels ``ids`` (default: consecutive).

        An existing label is updated in place (a deleted one is undeleted with the new
        vector); with ``replace_deleted`` new labels take the places of deleted items first.
        A label repeated in the batch keeps its last row. Nothing changes if anything is
        wrong. Excludes other mutations of this index; searches run on.
        """
        index, store = self._native()
        replace_deleted = as_flag("replace_deleted", replace_deleted)
        x = input_rows(data, self._dim)
        rows = x.shape[0]
        labels = as_labels(ids, rows) if ids is not None else None
        with self._lock:
            index, store = self._native()  # the pair under the lock: a load_index meanwhile replaced it
            if labels is None:
                labels = np.arange(self._cur_l, self._cur_l + rows, dtype=np.uint64)
            if rows == 0:
                return
            if replace_deleted and not self._allow_replace:
                raise HnswlibError("Replacement of deleted elements is disabled in constructor")
            if np.unique(labels).shape[0] != rows:  # hnswlib adds them in turn: the last row wins
                _, first_rev = np.unique(labels[::-1], return_index=True)
                keep = np.sort(rows - 1 - first_rev)
                labels, x = labels[keep], x[keep]
            threads = thread_count(num_threads, self._num_threads, labels.shape[0])
            try:
                index.encode(store, x)  # every row as the inserts check it, before anything changes
                self._add(index, store, labels, x, threads, replace_deleted)
            except HnswError as exc:
                raise as_runtime(exc) from None
            self._cur_l += rows

    def _add(self, index: Hnsw, store: InMemoryVectorStore, labels: np.ndarray, x: np.ndarray, threads: int, replace: bool) -> None:
        tomb = index.graph_arrays.tombstones
        nids = node_ids(index, labels)
        found = nids >= 0
        dead = np.zeros(labels.shape[0], bool)
        dead[found] = tomb[nids[found]] != 0
        if dead.any() and self._allow_replace and not replace:
            raise HnswlibError("Can't use addPoint to update deleted elements if replacement of deleted elements is enabled.")
        new = np.flatnonzero(~found)
        vacant = np.empty(0, np.int64)
        if replace and new.shape[0]:
            vacant = np.flatnonzero(tomb[: index.node_count])
            vacant = vacant[~np.isin(vacant, nids[dead])][: new.shape[0]]
        if index.node_count + new.shape[0] - vacant.shape[0] > self._max_elements:
            raise CapacityError(
                f"The number of elements exceeds the specified limit ({index.node_count} + "
                f"{new.shape[0] - vacant.shape[0]} > max_elements {self._max_elements}; call resize_index)"
            )
        keys = native_keys(labels)
        if vacant.shape[0]:
            old = index.key_map.node_keys[vacant]
            index.rename_deleted(old if old.dtype == np.int64 else old.tolist(), keys[new[: vacant.shape[0]]])
        fresh = new[vacant.shape[0] :]
        if fresh.shape[0]:
            index.insert_batch(store, keys[fresh], x[fresh], num_threads=threads, grow=True)  # within max_elements (checked above)
        # Updates and resurrections one at a time, as hnswlib's updatePoint: each vector is
        # written just before its neighbourhood is relinked. A batch writes all vectors first,
        # and relinking among many moved nodes whose links are still the old ones measured
        # recall 0.94 instead of 0.98 after replacing half of a 20,000-item index.
        todo = iter(np.flatnonzero(found).tolist() + new[: vacant.shape[0]].tolist())
        take = threading.Lock()

        def work() -> None:  # Hnsw.set is safe from many threads; its kernel releases the GIL
            while True:
                with take:
                    i = next(todo, None)
                if i is None:
                    return
                index.set(store, int(labels[i]), x[i])

        run_parallel(work, threads)

    def mark_deleted(self, label: int) -> None:
        """Tombstone ``label``: never returned again (its vector stays for routing)."""
        key = one_label(label)
        with self._lock:
            index, _ = self._native()
            nid = index.key_map.get(key)
            if nid < 0:
                raise KeyNotFoundError(f"Label not found: {key}")
            if index.is_deleted(nid):
                raise KeyExistsError(f"The requested to delete element is already deleted: label {key}")
            index.delete(key)

    def unmark_deleted(self, label: int) -> None:
        """Undo ``mark_deleted``: the label is returned again, with the vector it had (its links repaired)."""
        key = one_label(label)
        with self._lock:
            index, store = self._native()
            if index.key_map.get(key) < 0:
                raise KeyNotFoundError(f"Label not found: {key}")
            if not index.is_deleted(index.key_map.get(key)):
                raise KeyExistsError(f"The requested to undelete element is not deleted: label {key}")
            try:
                index.undelete(key, store)
            except HnswError as exc:
                raise as_runtime(exc) from None

    def resize_index(self, new_size: int) -> None:
        """Change ``max_elements`` (not below the current element count)."""
        self._native()
        if isinstance(new_size, bool) or not isinstance(new_size, (int, np.integer)) or new_size < 0:
            raise InvalidParameterError(f"new_size must be a non-negative int, got {new_size!r}")
        with self._lock:
            index, store = self._native()
            if new_size < index.node_count:
                raise CapacityError("Cannot resize, max element is less than the current number of elements")
            cap = max(int(new_size), 1)
            try:
                if cap >= store.max_nodes:  # the store never has fewer rows than the index
                    store.resize(cap)
                    index.resize(cap)
                else:
                    index.resize(cap)
                    store.resize(cap)
            except HnswError as exc:
                raise as_runtime(exc) from None
            self._max_elements = int(new_size)

    # ------------------------------------------------------------------ search
    def knn_query(self, data: Any, k: int = 1, num_threads: int = -1, filter: Callable[[int], bool] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest live items of each row: ``(labels uint64 (n, k), distances float32 (n, k))``.

        Raises ``RuntimeError`` (:class:`HnswlibError`) as hnswlib does when fewer than
        ``k`` items qualify. ``filter`` is a predicate on labels. Excludes nothing.
        """
        fast = self._fast
        # anything but a plain int num_threads takes the batch path, which checks it
        if filter is None and fast is not None and type(data) is np.ndarray and data.dtype is _F32 and type(k) is int and k > 0 and type(num_threads) is int:
            # one query: straight to the native single-query path, which writes the (1, k)
            # uint64 labels and float32 distances itself (one compiled call, no conversion)
            nd = data.ndim
            if nd == 1 or (nd == 2 and data.shape[0] == 1):
                try:
                    row = fast[0](fast[1], data if nd == 1 else data[0], k, min(self._ef, MAX_EF) or 1, _U64T)
                except HnswError as exc:
                    raise as_runtime(exc) from None
                if row is not None:  # None: labels past int64, which the batch path handles
                    if row[2] < k:
                        raise HnswlibError(_FEWER)
                    return row[0], row[1]
        return self._knn_batch(data, k, num_threads, filter)

    def _knn_batch(self, data: Any, k: Any, num_threads: int, flt: Any) -> tuple[np.ndarray, np.ndarray]:
        index, store = self._native()
        q = input_rows(data, self._dim)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
            raise InvalidParameterError(f"k must be a non-negative int, got {k!r}")
        if k == 0 or q.shape[0] == 0:
            return np.empty((q.shape[0], int(k)), _U64), np.empty((q.shape[0], int(k)), _F32)
        if flt is not None and not callable(flt):
            raise InvalidParameterError(f"filter must be a callable on labels, got {type(flt).__name__}")
        threads = thread_count(num_threads, self._num_threads, q.shape[0])
        try:
            keys, dists = index.search_batch(store, q, int(k), flt, ef=max(min(self._ef, MAX_EF), int(k)), num_threads=threads)
        except HnswError as exc:
            raise as_runtime(exc) from None
        if keys.dtype == np.int64:
            if (keys < 0).any():
                raise HnswlibError(_FEWER)
            return keys.view(np.uint64), dists
        if any(key is None or key == -1 for key in keys.ravel().tolist()):  # padding: None (str keys) or -1 (labels past int64)
            raise HnswlibError(_FEWER)
        return labels_of(keys), dists

    # ------------------------------------------------------------------ items
    def get_items(self, ids: Any = None, return_type: str = "numpy") -> np.ndarray | list:
        """The stored vectors of ``ids`` (cosine: normalised, as hnswlib stores them)."""
        if return_type not in ("numpy", "list"):
            raise InvalidParameterError('return_type should be "numpy" or "list"')
        index, store = self._native()
        if ids is None:
            return [] if return_type == "list" else np.array([], _F32)
        if not isinstance(ids, (list, tuple)) and np.ndim(ids) == 0:  # a list goes to as_labels whole (ragged: its error)
            raise InvalidParameterError("get_items accepts a list of indices and returns a list of vectors")
        # as_labels reads a list itself: np.asarray would round a list mixing labels past
        # int64 with smaller ones through float64 (2**63 + 1 read as 2**63)
        labels = np.ravel(as_labels(ids if isinstance(ids, (list, tuple, np.ndarray)) else np.asarray(ids), None))
        if labels.shape[0] == 0:  # hnswlib's empty answer is 1-D, as for ids=None
            return self.get_items(None, return_type)
        nids = node_ids(index, labels)
        ok = nids >= 0
        ok[ok] = index.graph_arrays.tombstones[nids[ok]] == 0
        if not ok.all():
            raise KeyNotFoundError(f"Label not found: {int(labels[np.argmin(ok)])}")
        out = read_rows(index.state, store, nids.astype(np.int32))[:, : self._dim]  # never a row set() is half way through
        return out.tolist() if return_type == "list" else out

    def get_ids_list(self) -> list[int]:
        """Every label, deleted ones included (as hnswlib), in internal-id order."""
        index, _ = self._native()
        keys = index.key_map.node_keys[: index.node_count]
        return keys.tolist() if keys.dtype == np.int64 else labels_of(keys).tolist()

    def get_current_count(self) -> int:
        """Elements held, deleted ones included (hnswlib's ``cur_element_count``)."""
        return self._native()[0].node_count

    def get_max_elements(self) -> int:
        """The capacity (``init_index`` / ``resize_index`` / ``load_index``)."""
        self._native()
        return self._max_elements

    def index_file_size(self) -> int:
        """Bytes ``save_index`` would write."""
        return hnswlib_file_size(self._native()[0])

    # ------------------------------------------------------------------ files
    def save_index(self, path_to_index: str) -> None:
        """Write hnswlib's file format (atomically: the old file or the whole new one)."""
        with self._lock:
            index, store = self._native()
            try:
                save_hnswlib(path_to_index, index, store, max_elements=max(self._max_elements, index.node_count))
            except HnswError as exc:
                raise as_runtime(exc) from None

    def load_index(self, path_to_index: str, max_elements: int = 0, allow_replace_deleted: bool = False) -> None:
        """Read a file written by hnswlib's (or this) ``save_index``; replaces this index.

        ``max_elements`` below the file's element count keeps the file's capacity. The
        file is checked completely first (a wrong ``dim`` is refused); ``ef`` is reset to 10.
        """
        if isinstance(max_elements, bool) or not isinstance(max_elements, (int, np.integer)) or max_elements < 0:
            raise InvalidParameterError(f"max_elements must be a non-negative int, got {max_elements!r}")
        allow_replace_deleted = as_flag("allow_replace_deleted", allow_replace_deleted)
        try:
            pair, cap = self._read(self._metric, self._dim, path_to_index, int(max_elements))
        except FileNotFoundError as exc:
            raise IndexFileNotFoundError(exc.errno, "Cannot open file", exc.filename) from None
        with self._lock:
            self._attach(pair)
            self._max_elements, self._cur_l = cap, pair[0].node_count
            self._ef, self._allow_replace = 10, allow_replace_deleted

    @staticmethod
    def _read(metric: Any, dim: int, source: Any, max_elements: int) -> tuple[tuple[Hnsw, InMemoryVectorStore], int]:
        try:
            ro, ro_store = load_hnswlib(metric, dim, source, mapped=False)  # a copy: read, never mapped (SIGBUS)
            n = ro.node_count
            cap = max_elements if max_elements >= n else max(ro_store.source_capacity, n)
            room = cap if max_elements >= n else capacity_for(cap, n)  # a file's own max_elements: room grows on demand
            return materialize(ro, ro_store, max_nodes=max(room, 1)), cap
        except HnswError as exc:
            raise as_runtime(exc) from None

    # ------------------------------------------------------------------ properties
    @property
    def ef(self) -> int:
        """Search beam width (``max(ef, k)`` is used, an ef past ``MAX_EF`` = 1,000,000 searches at
        that: every node of a smaller index); 10 until set."""
        return self._ef

    @ef.setter
    def ef(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise InvalidParameterError(f"ef must be a non-negative int, got {value!r}")
        self._ef = int(value)

    def set_ef(self, ef: int) -> None:
        """Set the search beam width ``ef``."""
        self.ef = ef

    @property
    def max_elements(self) -> int:
        return self._max_elements if self._pair is not None else 0

    @property
    def element_count(self) -> int:
        return self._pair[0].node_count if self._pair is not None else 0

    @property
    def M(self) -> int:
        return self._pair[0].config.m if self._pair is not None else 0

    @property
    def ef_construction(self) -> int:
        return self._pair[0].config.effective_ef_construction if self._pair is not None else 0

    # ------------------------------------------------------------------ pickling
    def __getstate__(self) -> tuple[dict]:
        """hnswlib's shape, a 1-tuple of a dict: the settings and, once initialised, the index in
        hnswlib's file format. ``Index(state[0])`` rebuilds the index, as hnswlib's does."""
        state = {"ser_version": 1, "space": self._space, "dim": self._dim, "ef": self._ef, "num_threads": self._num_threads,
                 "seed": self._seed, "allow_replace_deleted": self._allow_replace, "cur_l": self._cur_l,
                 "max_elements": self._max_elements, "hnswlib_file": None}
        if self._pair is not None:
            buf = io.BytesIO()
            with self._lock:
                try:
                    save_hnswlib(buf, *self._pair, max_elements=max(self._max_elements, self._pair[0].node_count))
                except HnswError as exc:  # e.g. a str key added through native: as save_index raises it
                    raise as_runtime(exc) from None
            state["hnswlib_file"] = buf.getvalue()
        return (state,)

    def __setstate__(self, state: tuple[dict] | dict) -> None:
        """Restore :meth:`__getstate__`'s state, its dict or hnswlib's ``__getstate__()[0]``, checked whole
        first (InvalidParameterError; a file that does not load raises as ``load_index`` does)."""
        state = read_state(state)
        _, metric, dim = check_space(state["space"], state["dim"])
        blob = state["hnswlib_file"]
        pair = None if blob is None else self._read(metric, dim, blob, state["max_elements"])[0]  # before anything changes
        self._setup(state["space"], dim)
        if pair is not None:
            self._attach(pair)
        self._ef, self._num_threads, self._seed = state["ef"], state["num_threads"], state["seed"]
        # numbered adds go on from the element count, as hnswlib's restored copy does
        self._allow_replace, self._cur_l = state["allow_replace_deleted"], pair[0].node_count if pair is not None else 0
        self._max_elements = max(state["max_elements"], pair[0].node_count if pair is not None else 0)

    def __repr__(self) -> str:
        return f"<hnsw_numba.hnswlib.Index(space='{self._space}', dim={self._dim})>"
