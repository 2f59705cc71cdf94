"""hnswlib's ``BFIndex``: exact search with its Python API and file format.

``BFIndex`` keeps its vectors in an :class:`~hnsw_numba.InMemoryVectorStore` and searches
them with the library's brute-force kernel (the exact search behind ``Hnsw.search(...,
exact=True)``), all cores, without the GIL. Its files are hnswlib's brute-force format:
``[u64 max_elements][u64 bytes per element][u64 count]`` then ``max_elements`` records of
``[float32 vector][u64 label]`` (records past ``count`` are zero).

Differences from hnswlib: for ``'cosine'`` queries are normalised too (hnswlib's
``BFIndex`` normalises only the stored vectors, so its cosine distances are off by the
query's norm; the order is the same), fewer than ``k`` results raise as ``Index`` does, and
``load_index`` rebuilds the label look-up (hnswlib's leaves it empty, so a loaded index
cannot update or delete).
"""

from __future__ import annotations

import struct
import threading
from typing import Any, Callable

import numpy as np

from .core.errors import HnswError, persist_error
from .core.parallel import available_cores, run_parallel
from .core.rwlock import RWLock
from .core.store import InMemoryVectorStore
from .core.store_base import check_limit
from .hnswlib_errors import (
    CapacityError,
    HnswlibError,
    IndexFileNotFoundError,
    InvalidParameterError,
    InvalidVectorError,
    LegacyFormatError,
    as_runtime,
)
from .hnswlib_input import SpaceSettings, as_labels, check_space, input_rows, one_label, thread_count
from .io.atomic import write_atomically
from .io.localfiles import open_regular
from .kernels.bruteforce import bruteforce_kernel

__all__ = ["BFIndex"]

_FEWER = "Cannot return the results in a contiguous 2D array. Probably ef or M is too small"
_BF_HEADER = struct.Struct("<QQQ")


# ---------------------------------------------------------------------------- BFIndex
class BFIndex(SpaceSettings):
    """Exact k-NN with hnswlib's ``BFIndex`` API (``init_index``, ``add_items``, ``delete_vector``, ...).

    Thread safety: mutations (``init_index``, ``add_items``, ``delete_vector``, ``load_index``) take a lock
    exclusive, ``knn_query`` and ``save_index`` take it shared and hold it for the whole scan,
    so any mix from any threads is safe and consistent: every returned ``(label, distance)``
    is the distance to the vector the label holds between two mutations (a label added
    again is never read half old, half new), and a saved file is one such state. Each
    operation takes the store under the lock, as ``load_index`` replaces it.

    As hnswlib's, it does not pickle or copy (``pickle``, ``copy.copy``, ``copy.deepcopy``
    raise InvalidParameterError, a TypeError): save it, or add its vectors to a new one.
    """

    def __init__(self, space: str, dim: int) -> None:
        self._space, self._metric, self._dim = check_space(space, dim)
        self._store: InMemoryVectorStore | None = None
        self._labels = np.zeros(0, np.uint64)
        self._where: dict[int, int] = {}  # label -> row
        self._count = 0
        self._cur_l = 0
        self._num_threads = available_cores()
        self._rw = RWLock()
        self._mutate = threading.Lock()

    def init_index(self, max_elements: int) -> None:
        """Allocate room for ``max_elements`` vectors (a mutation: of two calls from two threads, one raises)."""
        if isinstance(max_elements, bool) or not isinstance(max_elements, (int, np.integer)) or max_elements < 0:
            raise InvalidParameterError(f"max_elements must be a non-negative int, got {max_elements!r}")
        with self._mutate, self._rw.exclusive():
            if self._store is not None:
                raise HnswlibError("The index is already initiated.")
            self._store, self._labels = self._room(int(max_elements))
            self._cap, self._where, self._count = int(max_elements), {}, 0

    def _room(self, cap: int) -> tuple[InMemoryVectorStore, np.ndarray]:
        """A new store and label array for ``cap`` vectors (the caller installs them)."""
        try:
            return InMemoryVectorStore(self._dim, max(cap, 1)), np.zeros(max(cap, 1), np.uint64)
        except HnswError as exc:
            raise as_runtime(exc) from None

    def _ready(self) -> InMemoryVectorStore:
        if self._store is None:
            raise HnswlibError("Index is not initialized: call init_index() or load_index() first")
        return self._store

    def add_items(self, data: Any, ids: Any = None) -> None:
        """Add rows of ``data`` under ``ids`` (default consecutive); an existing label is overwritten."""
        x = input_rows(data, self._dim)
        labels = as_labels(ids, x.shape[0]) if ids is not None else None
        try:
            # outside the lock: every store of this index (a load replaces it) has the same dim and dtype
            enc = self._ready().encode(self._metric.prepare(x))  # cosine: stored normalised, as hnswlib
        except HnswError as exc:
            raise as_runtime(exc) from None
        with self._mutate, self._rw.exclusive():
            store = self._ready()
            if labels is None:
                labels = np.arange(self._cur_l, self._cur_l + x.shape[0], dtype=np.uint64)
            rows, nxt = np.empty(labels.shape[0], np.int32), self._count
            planned: dict[int, int] = {}
            for i, label in enumerate(labels.tolist()):
                r = planned.get(label, self._where.get(label, -1))
                if r < 0:
                    r, nxt = nxt, nxt + 1
                planned[label] = rows[i] = r
            if nxt > self._cap:
                raise CapacityError(f"The number of elements exceeds the specified limit ({nxt} > {self._cap})")
            # a repeated label: the last of its vectors wins, as in hnswlib
            last = rows.shape[0] - 1 - np.unique(rows[::-1], return_index=True)[1]
            store.write(rows[last], enc[last])
            self._labels[rows] = labels
            self._where.update(planned)
            self._count, self._cur_l = nxt, self._cur_l + x.shape[0]

    def delete_vector(self, label: int) -> None:
        """Remove ``label`` (the last vector moves into its place); an unknown label is ignored."""
        self._ready()
        key = one_label(label)
        with self._mutate, self._rw.exclusive():
            store = self._ready()
            r = self._where.pop(key, None)
            if r is None:
                return
            last = self._count - 1
            if r != last:
                data = store.rows().data
                data[r] = data[last]
                self._labels[r] = self._labels[last]
                self._where[int(self._labels[r])] = r
            self._count = last

    def knn_query(self, data: Any, k: int = 1, num_threads: int = -1, filter: Callable[[int], bool] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Exact ``k`` nearest of each row: ``(labels uint64 (n, k), distances float32 (n, k))``."""
        self._ready()
        q = np.ascontiguousarray(self._metric.prepare(input_rows(data, self._dim)), np.float32)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
            raise InvalidParameterError(f"k must be a non-negative int, got {k!r}")
        n, k = q.shape[0], int(k)
        if filter is not None and not callable(filter):
            raise InvalidParameterError(f"filter must be a callable on labels, got {type(filter).__name__}")
        if not np.isfinite(q).all():
            raise InvalidVectorError("a query contains NaN or inf")
        try:
            check_limit(q)  # as add_items refuses such rows: their distances overflow to inf
        except HnswError as exc:
            raise as_runtime(exc) from None
        threads = thread_count(num_threads, self._num_threads, n)
        with self._rw.shared():
            store = self._ready()
            labels = self._labels[: self._count].copy()
            cand = np.arange(self._count, dtype=np.int32)
            if filter is not None:
                cand = cand[np.fromiter((bool(filter(v)) for v in labels.tolist()), bool, labels.shape[0])]
            if k > cand.shape[0] and n:
                raise HnswlibError(_FEWER)
            out_ids, out_d = np.full((n, k), -1, np.int32), np.full((n, k), np.inf, np.float32)
            counter, rows, code = np.zeros(1, np.int64), store.rows(), self._metric.code
            if n and k:
                run_parallel(lambda: bruteforce_kernel(rows, code, q, cand, k, counter, 1, out_ids, out_d), threads)
        return labels[out_ids] if n and k else np.empty((n, k), np.uint64), out_d

    # ------------------------------------------------------------------ files
    def save_index(self, path_to_index: str) -> None:
        """Write hnswlib's brute-force format (atomically)."""
        self._ready()
        with self._rw.shared():
            store = self._ready()
            n, dim, cap = self._count, self._dim, self._cap
            recs = np.zeros((n, dim + 2), np.uint32)
            recs[:, :dim] = store.rows().data[:n].view(np.uint32)
            recs[:, dim:] = self._labels[:n].astype("<u8").view(np.uint32).reshape(n, 2)

            def write(f: Any) -> None:
                f.write(_BF_HEADER.pack(cap, 4 * dim + 8, n))
                f.write(recs.astype("<u4", copy=False).tobytes())
                f.write(bytes((cap - n) * (4 * dim + 8)))

            write_atomically(path_to_index, write)

    def load_index(self, path_to_index: str, max_elements: int = 0) -> None:
        """Read a file of ``save_index`` (hnswlib's or this); capacity at least ``max_elements``."""
        try:
            with open_regular(path_to_index, LegacyFormatError) as f:  # a FIFO or device: refused, never blocks
                raw = f.read()
        except FileNotFoundError as exc:
            raise IndexFileNotFoundError(exc.errno, "Cannot open file", exc.filename) from None
        except OSError as exc:
            raise persist_error(exc, f"cannot read {path_to_index}") from None
        if len(raw) < _BF_HEADER.size:
            raise LegacyFormatError(f"{path_to_index}: {len(raw)} bytes, the header alone needs {_BF_HEADER.size}")
        cap, size, n = _BF_HEADER.unpack_from(raw)
        if size != 4 * self._dim + 8 or n > cap or len(raw) != _BF_HEADER.size + cap * size:
            raise LegacyFormatError(f"{path_to_index}: not a {self._dim}-dimensional brute-force index "
                                    f"(max_elements {cap}, {size} bytes per element, count {n}, {len(raw)} bytes)")
        recs = np.frombuffer(raw, "<u4", n * size // 4, _BF_HEADER.size).reshape(n, size // 4)
        vectors = recs[:, : self._dim].view(np.float32)
        labels = recs[:, self._dim :].copy().view("<u8").reshape(n).astype(np.uint64)
        where = {label: i for i, label in enumerate(labels.tolist())}
        if len(where) < n:  # one label on two records: a delete would leave the other behind
            dup = np.unique(labels, return_counts=True)
            raise LegacyFormatError(f"{path_to_index}: label {int(dup[0][np.argmax(dup[1] > 1)])} is on more than one record")
        cap = max(int(cap), int(max_elements) if isinstance(max_elements, (int, np.integer)) else 0)
        # the new contents are built and checked first: a refused file leaves the index as it was
        store, room = self._room(cap)
        try:
            store.write(np.arange(n, dtype=np.int32), np.ascontiguousarray(vectors))
        except HnswError as exc:
            raise as_runtime(exc) from None
        room[:n] = labels
        with self._mutate, self._rw.exclusive():
            self._store, self._labels, self._where = store, room, where
            self._cap, self._count, self._cur_l = cap, int(n), int(n)

    # ------------------------------------------------------------------ properties
    def get_max_elements(self) -> int:
        self._ready()
        return self._cap

    def get_current_count(self) -> int:
        self._ready()
        return self._count

    def __repr__(self) -> str:
        return f"<hnsw_numba.hnswlib.BFIndex(space='{self._space}', dim={self._dim})>"

    def __reduce_ex__(self, protocol: Any) -> Any:
        # a shallow copy would share the store, labels, label dict and locks (two indexes
        # writing one row); a deep one or a pickle cannot take the locks
        raise InvalidParameterError("cannot pickle 'hnsw_numba.hnswlib.BFIndex' object (nor copy it): "
                                    "save_index and load_index, or add its vectors to a new BFIndex")
