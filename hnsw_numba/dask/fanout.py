"""Dask fan-out: search an index saved with :func:`hnsw_numba.save` from every worker.

The index never travels through the scheduler: tasks carry only its *target* (a local
path or an fsspec URL such as ``s3://bucket/words.zarr`` that every worker can read) and
each worker process opens it once, on its first task, and keeps it in a per-process cache
keyed by the target (:func:`load_counts` reports the loads, :func:`clear_cache` drops
them). A target is re-opened when a new save replaces it: every task first reads which
save the target holds (its root ``zarr.json``, or a one-file save's size and times).

dask and distributed are optional: ``pip install 'hnsw_numba[dask]'``.

Each task searches with ``num_threads=1`` by default: Dask already runs one task per
worker thread, so scale with workers (or threads per worker), not threads per task.
"""

from __future__ import annotations

import math
import os
import threading
from collections import Counter
from typing import Any

import numpy as np

from ..core.config import HnswConfig, check_int
from ..core.errors import DimensionMismatchError, InvalidParameterError, InvalidVectorError, MetricMismatchError
from ..core.index import Hnsw
from ..core.knn import drop_self, graph_ef, neighbors_to_csr
from ..core.validate import check_ef, check_flag, check_k
from ..core.metrics import Metric, metric_from_name
from .manifest import remote_fs

__all__ = ["search", "knn_graph", "to_csr", "preload", "load_counts", "cached_targets", "clear_cache", "open_cached", "saved_info", "check_metric",
           "in_data_rows"]

_lock = threading.Lock()
_cache: dict[str, tuple[Any, tuple[Hnsw, Any], set]] = {}  # target -> (version, (index, store), checks it passed)
_loads: Counter = Counter()


# ============================================================================ worker side
def _target_text(target: Any) -> str:
    """The target as a string: only paths and URLs can be opened by another process."""
    if isinstance(target, os.PathLike):
        target = os.fspath(target)
    if not isinstance(target, str) or not target:
        raise InvalidParameterError(
            f"target must be a path or fsspec URL of an index saved with hnsw_numba.save, got {target!r} "
            "(a zarr store object cannot be shared with other processes)"
        )
    return target


def _local(target: str) -> str | None:
    """The local path of ``target`` (a path, a ``file://`` or ``local://`` URL), None for a remote URL."""
    for prefix in ("file://", "local://"):  # fsspec's two names of the local file system
        if target.startswith(prefix):
            return target[len(prefix):]
    return None if "://" in target else target


def _removed(target: str, loading: str) -> bool:
    """Whether ``target`` no longer exists (a sharded write removes the shards it replaced).

    A remote ``target`` is asked only when it lies beside ``loading`` (another shard of the
    same index): one existence query per such cached shard, and only when a shard is loaded.
    """
    path = _local(target)
    if path is not None:
        return not os.path.exists(path)
    if target.rsplit("/", 1)[0] != loading.rsplit("/", 1)[0]:
        return False
    try:
        fs, root = remote_fs(target)
        return not fs.exists(f"{root}/zarr.json")
    except Exception:  # unreachable store: keep it
        return False


# what a file system's ``info`` reports that changes with each write of a file (local, memory,
# S3, GCS, Azure, HTTP name them differently); the size is compared as well
_FILE_STAMPS = ("size", "mtime", "created", "ETag", "etag", "LastModified", "last_modified", "generation",
                "md5Hash", "VersionId", "version_id", "updated")


def _version(target: str) -> Any:
    """Identity of the save at ``target``: for a local directory its inode (a new save swaps in
    a new directory) and its root ``zarr.json``, whose ``save_id`` is new with every save (files
    copied over a save's keep its directory and times); a ``.zip``'s inode, time and size. A
    remote target is asked the same through fsspec. None when the target cannot be read (the
    load then reports why)."""
    link = target.rsplit("::", 1)[-1]  # a chained URL's last link holds the files (caches and archives wrap it)
    path = _local(link)
    if path is None:
        return _remote_version(link)
    try:
        st = os.stat(path)
        if not os.path.isdir(path):
            return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
        with open(os.path.join(path, "zarr.json"), "rb") as f:
            return (st.st_dev, st.st_ino, f.read(1 << 16))
    except OSError:
        return None


def _remote_version(url: str) -> Any:
    """:func:`_version` of an fsspec URL: the bytes of its root ``zarr.json`` (one small read),
    or for a one-file save (``zip::s3://.../index.zip``) the file's size and stamps (one
    ``info``). A save over the URL writes a new ``save_id``, so a cache hit never outlives it."""
    try:
        fs, root = remote_fs(url)
        root = root.rstrip("/")
        try:
            return ("zarr.json", fs.cat_file(f"{root}/zarr.json"))
        except (FileNotFoundError, NotADirectoryError):  # no directory there: a one-file save
            info = fs.info(root)
            return ("file",) + tuple((k, str(info[k])) for k in _FILE_STAMPS if k in info)
    except Exception:  # unreachable or missing store: the load raises its own typed error
        return None


def open_cached(target: Any, metric: str, *, mmap: bool = False, check: Any = None) -> tuple[Hnsw, Any]:
    """``(index, store)`` of ``target``, loaded once per process (thread-safe).

    Parameters
    ----------
    target : str or PathLike
        Where :func:`hnsw_numba.save` wrote the index.
    metric : str
        The saved metric's name (``"l2"``, ``"cosine"``, ...).
    mmap : bool
        Map the vectors of a local target instead of reading them (shared page cache
        between the worker processes of a machine).
    check : object, optional
        Hashable, with ``files()`` and ``loaded(index, store)``: run around every load of
        ``target`` (the first, and each after its files change) and on a cached copy the
        first time an equal check asks for it, so a copy is never returned unchecked. What
        either raises refuses the copy (a refused load is not cached).
    """
    text = _target_text(target)
    wanted = metric_from_name(metric)  # checked on a cache hit as well as by the load
    version = _version(text)
    with _lock:  # one load even when a worker's threads start tasks together
        hit = _cache.get(text)
        if hit is not None and hit[0] == version and hit[1][0].metric.name != wanted.name:
            raise MetricMismatchError(f"{text} was saved with metric {hit[1][0].metric.name!r}; loading with {metric!r}")
        if hit is None or hit[0] != version:
            _cache.pop(text, None)  # let the old copy go before the new one is read
            for gone in [t for t in _cache if _removed(t, text)]:  # shards a write replaced (new names) and removed
                del _cache[gone]
                _loads.pop(gone, None)  # forgotten with it: one count per shard ever loaded grew without bound
            from ..io.persist import load

            if check is not None:  # before the load: a missing or replaced target is refused unread
                check.files()
            copy = load(text, wanted, mmap=mmap)
            if check is not None:
                check.loaded(*copy)
            hit = (version, copy, set() if check is None else {check})
            _cache[text] = hit
            _loads[text] += 1
        elif check is not None and check not in hit[2]:  # the same save: its files are the cached copy's
            check.files()
            check.loaded(*hit[1])
            hit[2].add(check)
        return hit[1]


def preload(target: Any, metric: str | None = None, *, mmap: bool = False) -> None:
    """Open ``target`` in this process's cache now: ``client.run(preload, target)`` warms
    every worker before the first task (returns nothing, so nothing is sent back)."""
    open_cached(target, metric if metric is not None else saved_info(target)["metric"], mmap=mmap)


def load_counts() -> dict[str, int]:
    """How many times this process loaded each target (``client.run(load_counts)``)."""
    with _lock:
        return dict(_loads)


def cached_targets() -> list[str]:
    """The targets this process holds open (``client.run(cached_targets)``)."""
    with _lock:
        return sorted(_cache)


def clear_cache() -> None:
    """Forget every cached index of this process (``client.run(clear_cache)`` on a cluster)."""
    with _lock:
        _cache.clear()
        _loads.clear()


def _search_block(block: np.ndarray, target: str, metric: str, k: int, ef: int | None, num_threads: int, mmap: bool):
    index, store = open_cached(target, metric, mmap=mmap)
    return index.search_batch(store, block, k, ef=ef, num_threads=num_threads)


def _graph_block(block: np.ndarray, rows: np.ndarray, target: str, metric: str, k: int, ef: int, exclude_self: bool, num_threads: int, mmap: bool,
                 n_rows: int):
    index, store = open_cached(target, metric, mmap=mmap)
    k_search = k + 1 if exclude_self else k
    q = index.prepare_queries(block)
    nids = index.key_map.get_many(None, rows.astype(np.int64))
    # the neighbours' keys are row numbers only in the index of the data with keys 0 .. n-1
    # (n live keys, each row's own among them): another index gives keys past the rows
    if len(index) != n_rows:
        raise InvalidParameterError(f"the index at {target} holds {len(index):,} items, data has {n_rows:,} rows "
                                    "(knn_graph needs the index of data with keys 0 .. n-1)")
    if nids.shape[0] and nids.min() < 0:
        row = int(rows[np.argmax(nids < 0)])
        raise InvalidParameterError(f"the index at {target} has no key {row} for data row {row} "
                                    "(knn_graph needs the index of data with keys 0 .. n-1)")
    # start each row's search at its own node (key = row number), as knn.knn_graph does
    starts = nids.astype(np.int32)
    keys, dists, _ = index.search_prepared(store, q, k_search, ef=ef, num_threads=num_threads, starts=starts)
    return drop_self(keys, dists, rows.astype(np.int64), k, exclude_self)


# ============================================================================ client side
def saved_info(target: Any) -> dict:
    """Metric name, key kind (``"int64"``/``"text"``), configuration and ``node_count`` (NodeIds
    handed out, deleted ones included) of a saved index.

    Reads only the metadata (no arrays).
    """
    from ..io.persist import read_info

    info = read_info(_target_text(target))
    return {"metric": info["metric"], "keys": info["keys"], "config": info["config"], "node_count": info["node_count"]}


def check_metric(saved: str, metric: Any) -> str:
    """The saved metric's name; MetricMismatchError if ``metric`` (a Metric or name) is another."""
    if metric is None:
        return saved
    name = metric.name if isinstance(metric, Metric) else metric_from_name(metric).name
    if name != saved:
        raise MetricMismatchError(f"the index was saved with metric {saved!r}, not {name!r}")
    return name


def in_data_rows(exc: InvalidVectorError, at: int, n: int) -> InvalidVectorError:
    """``exc`` of a batch of data rows ``[at, at + n)``: its "vector i" counts from the batch's
    first row, so the message says which data row that is."""
    return InvalidVectorError(f"rows [{at}, {at + n}) of the data (vector i is data row {at} + i): {exc}")


def _check_threads(num_threads: Any) -> int:
    if isinstance(num_threads, bool) or not isinstance(num_threads, (int, np.integer)) or num_threads < 1:
        raise InvalidParameterError(f"num_threads must be a positive int, got {num_threads!r}")
    return int(num_threads)


def _rows_of(x: Any, dim: int, what: str):
    """``x`` as a dask array (n, dim) with one chunk across the columns."""
    import dask.array as da

    if not isinstance(x, da.Array):
        raise InvalidParameterError(f"{what} must be a dask.array.Array, got {type(x).__name__}")
    if x.ndim != 2 or x.shape[1] != dim:
        raise DimensionMismatchError(f"expected {what} of shape (n, {dim}), got {x.shape}")
    return x.rechunk({1: -1}) if x.numblocks[1] != 1 else x


def search(target: Any, queries: Any, k: int, *, ef: int | None = None, metric: Any = None, num_threads: int = 1, mmap: bool = False):
    """k-NN of every row of a dask array against a saved index, one task per row chunk.

    Parameters
    ----------
    target : str or PathLike
        Index saved with :func:`hnsw_numba.save`: a path every worker can read (shared
        file system) or an fsspec URL (``s3://...``, ``gs://...``; needs fsspec and the
        file system's package on the workers).
    queries : dask.array.Array (n, dim)
        Chunked by rows (column chunks are merged).
    k : int
    ef : int, optional
        Beam width (default: the saved ``ef_search``; ``max(ef, k)`` is used).
    metric : Metric or str, optional
        Checked against the saved metric (which is read from the metadata otherwise).
    num_threads : int
        Threads per task (default 1: Dask runs a task per worker thread).
    mmap : bool
        Workers map the vectors of a local target instead of reading them.

    Returns
    -------
    keys : dask.array.Array (n, k)
        Best first, padded as the saved index's ``search_batch`` pads: int64 (padding -1)
        or object (ints past int64: padding -1; str keys: padding None).
    distances : dask.array.Array float32 (n, k)
        Padding inf. Both come from one task per chunk: compute them together
        (``dask.compute(keys, distances)``) to search once.
    """
    import dask.array as da

    info = saved_info(target)
    name = check_metric(info["metric"], metric)
    k = check_k(k)
    ef = check_ef(ef, None)
    num_threads = _check_threads(num_threads)
    mmap = check_flag("mmap", mmap)
    q = _rows_of(queries, info["config"].dim, "queries")
    key_dtype = np.dtype(np.int64) if info["keys"] == "int64" else np.dtype(object)
    return da.apply_gufunc(
        _search_block, "(d)->(k),(k)", q,
        target=_target_text(target), metric=name, k=k, ef=ef, num_threads=num_threads, mmap=mmap,
        output_dtypes=(key_dtype, np.float32), output_sizes={"k": k},
    )


def knn_graph(data: Any, k: int, *, target: Any, metric: Any = "l2", build: bool = True, ef: int | None = None, exclude_self: bool = True, m: int = 16, ef_construction: int = 200, num_threads: int = 1, mmap: bool = False, progress: bool | None = None):
    """Distributed k-NN graph of a dask array against itself.

    The index is built here (HNSW construction needs the whole graph in one process;
    ``data`` is read one chunk at a time, all cores), saved to ``target``, and the
    self-join is fanned out: one task per row chunk of ``data``, on the workers.

    Parameters
    ----------
    data : dask.array.Array (n, dim)
        Row ``i`` becomes key ``i``.
    k : int
        Neighbours per row.
    target : str or PathLike
        Where the index is saved (readable by every worker: shared path or fsspec URL).
    metric : Metric or str
        ``"l2"`` (squared), ``"cosine"``, ``"ip"``.
    build : bool
        False: ``target`` already holds the index of ``data`` with keys ``0 .. n-1`` (another
        index raises InvalidParameterError: here when it holds fewer items, else from the tasks).
    ef : int, optional
        Beam width (default ``max(k + 1, 16)``, as :func:`hnsw_numba.core.knn.knn_graph`).
    exclude_self : bool
        As for :func:`hnsw_numba.core.knn.knn_graph`.
    m, ef_construction : int
        Build parameters.
    num_threads : int
        Threads per task.
    mmap : bool
        Workers map the vectors of a local target.
    progress : bool, optional
        Progress bar while building.

    Returns
    -------
    indices : dask.array.Array int64 (n, k)
        Row numbers of the neighbours, best first (padding -1).
    distances : dask.array.Array float32 (n, k)
        The metric's distances. :func:`to_csr` turns both into a ``csr_matrix``.
    """
    import dask.array as da

    k = check_k(k, extra=1)
    exclude_self = check_flag("exclude_self", exclude_self)
    ef = graph_ef(ef, k + 1 if exclude_self else k)
    num_threads = _check_threads(num_threads)
    mmap = check_flag("mmap", mmap)
    text = _target_text(target)
    if not isinstance(data, da.Array) or data.ndim != 2:
        raise InvalidParameterError(f"data must be a 2-D dask.array.Array, got {data!r}")
    if any(math.isnan(c) for c in data.shape):  # rows are keys: their number must be known
        raise InvalidParameterError("data has unknown chunk sizes: call compute_chunk_sizes() first")
    if check_flag("build", build):
        _build_and_save(data, text, metric, m, ef_construction, progress)
    info = saved_info(text)
    held = info["node_count"]
    if isinstance(held, int) and held < data.shape[0]:  # each task checks the rest: n live keys, its rows' among them
        raise InvalidParameterError(f"the index at {text} holds {held:,} items, data has {data.shape[0]:,} rows "
                                    "(knn_graph needs the index of data with keys 0 .. n-1)")
    if info["keys"] != "int64":
        raise InvalidParameterError(f"{text} holds text keys: knn_graph needs the index of data with keys 0 .. n-1 "
                                    "(row i = key i)")
    name = check_metric(info["metric"], metric)
    x = _rows_of(data, info["config"].dim, "data")
    rows = da.arange(x.shape[0], chunks=(x.chunks[0],), dtype=np.int64)
    return da.apply_gufunc(
        _graph_block, "(d),()->(k),(k)", x, rows,
        target=text, metric=name, k=k, ef=ef, exclude_self=exclude_self, num_threads=num_threads, mmap=mmap,
        n_rows=int(x.shape[0]), output_dtypes=(np.int64, np.float32), output_sizes={"k": k},
    )


def _build_and_save(data: Any, target: str, metric: Any, m: int, ef_construction: int, progress: bool | None) -> None:
    from ..io.persist import save
    from ..core.reorder import renumber_read_mostly
    from ..core.store import InMemoryVectorStore

    met = metric if isinstance(metric, Metric) else metric_from_name(metric)
    n, dim = data.shape
    index = Hnsw(met, HnswConfig(dim=dim, max_nodes=max(n, 1), m=m, ef_construction=ef_construction))
    store = InMemoryVectorStore(dim, max(n, 1))
    x = data.rechunk({1: -1})
    start = 0
    for i in range(x.numblocks[0]):  # one chunk in memory at a time
        part = np.asarray(x.blocks[i].compute())
        try:
            index.insert_batch(store, np.arange(start, start + part.shape[0]), part, progress=progress)
        except InvalidVectorError as exc:  # its row numbers count from the chunk's first row
            raise in_data_rows(exc, start, part.shape[0]) from None
        start += part.shape[0]
    renumber_read_mostly(index, store)  # saved to be queried
    save(target, index, store)
    with _lock:  # this process's copy of what was there answers for another index now
        _cache.pop(target, None)


def to_csr(indices: Any, distances: Any, n_cols: int | None = None) -> Any:
    """Compute ``(indices, distances)`` of :func:`knn_graph` into a ``scipy.sparse.csr_matrix``.

    Row ``i`` holds row ``i``'s neighbours best first (``-1`` padding dropped); the shape
    is ``(n, n_cols)`` with ``n_cols`` defaulting to ``n``.

    Raises
    ------
    DimensionMismatchError
        ``indices`` and ``distances`` are not 2-D of one shape.
    InvalidParameterError
        ``n_cols`` is not an int >= 0, or an index is not an int in ``[0, n_cols)`` nor the
        padding -1 (checked before the matrix is built).
    """
    import dask

    if n_cols is not None:
        check_int("n_cols", n_cols, 0, np.iinfo(np.int64).max)
    ids, dists = (np.asarray(a) for a in dask.compute(indices, distances))
    if ids.ndim != 2:
        raise DimensionMismatchError(f"indices must be 2-D (n, k), got shape {ids.shape}")
    n = ids.shape[0]
    return neighbors_to_csr(np.arange(n), ids, dists, (n, n if n_cols is None else int(n_cols)))
