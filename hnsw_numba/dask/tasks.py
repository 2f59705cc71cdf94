"""What the tasks of a sharded index run on the workers: build, open, search, merge, mutate.

Every function here takes and returns plain arrays, tuples and small records, so Dask
can run it on any worker; nothing in here talks to the scheduler. A shard is opened at
most once per worker process (the cache of :func:`hnsw_numba.dask.fanout.open_cached`)
while its files stay as they are, and each load is checked against the manifest's entry:
its files' checksum before, its counts and configuration after.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.config import HnswConfig
from ..core.errors import DimensionMismatchError, IndexFormatError, InvalidParameterError, InvalidVectorError, KeyNotFoundError
from ..core.index import Hnsw
from ..core.knn import stored_vectors
from ..core.metrics import metric_from_name
from ..core.validate import check_k
from ..io.vectors import open_vectors
from .fanout import in_data_rows, open_cached
from .manifest import WALK_COPY, ShardEntry, is_remote, new_shard_name, remote_fs, shard_checksum

__all__ = [
    "ShardHandle", "open_shard", "check_shard", "search_shard", "search_group", "search_group_rows",
    "merge_topk", "merge_ranked",
    "shard_rows", "finish_join", "read_rows", "build_shard", "mutate_shard", "save_shard", "new_store", "running_keys",
]


# ============================================================================ opening
def check_shard(url: str, entry: ShardEntry, index: Hnsw, store: Any, config: dict, dtype: str) -> None:
    """IndexFormatError unless a loaded shard matches its manifest entry and the index's config."""
    if getattr(store, "kind", None) == "qi8":
        kind = "int8"
    else:
        kind = WALK_COPY if getattr(store, "walk_copy", False) else np.dtype(store.dtype).name
        if kind == "float32" and dtype == WALK_COPY:  # rows float16 merges open without the copy (store.UNRESOLVED)
            kind = WALK_COPY
    got = (index.node_count, len(index), index.dim, index.config.m, index.config.ef_construction, kind)
    want = (entry.nodes, entry.count, config["dim"], config["m"], config["ef_construction"], dtype)
    if got != want:
        raise IndexFormatError(f"{url}: shard has (nodes, live, dim, m, ef_construction, dtype) = {got}, "
                               f"the manifest says {want}")


@dataclass(frozen=True)
class _ShardCheck:
    """A shard's manifest entry, as :func:`open_cached` checks each copy it loads against it."""

    url: str
    entry: ShardEntry
    config: tuple  # (dim, m, ef_construction): what check_shard reads of the index's config
    dtype: str

    def files(self) -> None:
        found = shard_checksum(self.url)  # IndexFormatError when the shard is missing
        if found != self.entry.checksum:
            raise IndexFormatError(f"{self.url}: shard checksum {found:#010x} does not match the manifest's "
                                   f"{self.entry.checksum:#010x} (replaced, partial or corrupt shard)")

    def loaded(self, index: Hnsw, store: Any) -> None:
        config = dict(zip(("dim", "m", "ef_construction"), self.config))
        check_shard(self.url, self.entry, index, store, config, self.dtype)


def open_shard(url: str, metric: str, entry: ShardEntry, config: dict, dtype: str, mmap: bool = False) -> tuple[Hnsw, Any]:
    """``(index, store)`` of a shard, loaded once per process while its files stay as they are.

    Every load (the first, and each after the files change) and the first use of the cached
    copy under another entry compare the files' checksum, then the loaded counts and
    configuration, with ``entry``: IndexFormatError when they differ or the shard is missing.
    A search of a shard so checked reads only what tells whether its files changed.
    """
    check = _ShardCheck(url, entry, (int(config["dim"]), int(config["m"]), int(config["ef_construction"])), dtype)
    return open_cached(url, metric, mmap=mmap, check=check)


class ShardHandle:
    """A shard open in this worker process, as a piece of Dask data.

    Tasks that search a shard depend on its handle, so Dask's data locality sends them
    where the shard is open. Its size (``sys.getsizeof``) is the shard's in-memory size,
    which the dashboard shows per worker and which makes moving the handle look as costly
    as it is; pickled, it is only the shard's address, and unpickling it in another
    process opens the shard there.
    """

    __slots__ = ("url", "metric", "entry", "config", "dtype", "mmap", "index", "store", "_order")

    def __init__(self, url: str, metric: str, entry: ShardEntry, config: dict, dtype: str, mmap: bool = False):
        self.url, self.metric, self.entry, self.config, self.dtype, self.mmap = url, metric, entry, config, dtype, mmap
        self.index, self.store = open_shard(url, metric, entry, config, dtype, mmap)
        self._order = None

    def __reduce__(self):
        return (ShardHandle, (self.url, self.metric, self.entry, self.config, self.dtype, self.mmap))

    def __sizeof__(self) -> int:
        return int(self.entry.nbytes)

    def live_order(self) -> tuple[np.ndarray, np.ndarray]:
        """``(NodeIds, keys)`` of the live nodes, by ascending key (computed once)."""
        if self._order is None:
            n = self.index.node_count
            live = np.flatnonzero(self.index.graph_arrays.tombstones[:n] == 0)
            keys = np.asarray(self.index.key_map.node_keys[live], np.int64)
            order = np.argsort(keys, kind="stable")
            self._order = (live[order].astype(np.int32), keys[order])
        return self._order


# ============================================================================ search
def search_shard(handle: ShardHandle, queries: np.ndarray, k: int, ef: int | None) -> tuple[np.ndarray, np.ndarray]:
    """``(keys int64, distances float32)`` of the ``k`` best of one shard for each query row."""
    keys, dists = handle.index.search_batch(handle.store, queries, k, ef=ef, num_threads=1)
    return np.asarray(keys, np.int64), dists


def merge_topk(parts: list, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best of several ``(keys, distances)`` lists per row, best first.

    A stable sort over the parts in the order given: equal distances keep the earlier
    part's entry first, so merging in any tree whose groups are contiguous runs of the
    parts gives the same answer as one flat merge. Rows with fewer than ``k`` entries in
    all are padded as searches pad: key -1 (None where the keys hold str), distance inf.

    Raises
    ------
    InvalidParameterError
        ``k`` is not an int >= 1, ``parts`` is empty or a part is not a ``(keys, distances)`` pair.
    DimensionMismatchError
        A part's keys and distances are not 2-D of one shape, or the parts have different row counts.
    """
    k = check_k(k)
    if not isinstance(parts, (list, tuple)) or not parts:
        raise InvalidParameterError(f"parts must be a non-empty list of (keys, distances) pairs, got {parts!r:.80}")
    pairs = []
    for i, part in enumerate(parts):
        if not isinstance(part, (list, tuple)) or len(part) != 2:
            raise InvalidParameterError(f"part {i} must be a (keys, distances) pair, got {type(part).__name__}")
        keys, dists = np.asarray(part[0]), np.asarray(part[1])
        if keys.ndim != 2 or dists.shape != keys.shape or keys.shape[0] != np.shape(parts[0][0])[0]:
            raise DimensionMismatchError(f"part {i} has keys {keys.shape} and distances {dists.shape}; every part "
                                         f"must hold (n, k_i) of both, n = {np.shape(parts[0][0])[0]} rows")
        pairs.append((keys, dists))
    keys = np.concatenate([p[0] for p in pairs], axis=1)
    dists = np.concatenate([p[1] for p in pairs], axis=1)
    order = np.argsort(dists, axis=1, kind="stable")[:, :k]
    keys, dists = np.take_along_axis(keys, order, 1), np.take_along_axis(dists, order, 1)
    if keys.shape[1] < k:  # fewer entries than k in all: the columns a search pads
        pad = ((0, 0), (0, k - keys.shape[1]))
        text = keys.dtype == object and any(isinstance(v, str) for v in keys.ravel().tolist())
        keys = np.pad(keys, pad, constant_values=None if text else -1)  # as search_batch: None for str keys, -1 for ints
        dists = np.pad(dists, pad, constant_values=np.inf)
    return keys, dists


def search_group(handles: list, positions: list, queries: np.ndarray, k: int, ef: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``k`` best of several shards open in this worker, merged here.

    The queries are validated once for all the shards (they share metric and dim).

    Parameters
    ----------
    handles : list of ShardHandle
    positions : list of int
        Each handle's shard position in the manifest (the tie-break of equal distances).
    queries : ndarray (n, dim)
    k, ef : int

    Returns
    -------
    keys : ndarray int64 (n, k)
    distances : ndarray float32 (n, k)
    shards : ndarray int32 (n, k)
        Shard position of each entry; :func:`merge_ranked` merges such triples.
    """
    q = handles[0].index.prepare_queries(queries)
    parts = []
    for h, pos in zip(handles, positions):
        keys, dists, _ = h.index.search_prepared(h.store, q, k, ef=ef, num_threads=1)
        parts.append((np.asarray(keys, np.int64), dists, np.full(dists.shape, pos, np.int32)))
    return merge_ranked(parts, k)


def search_group_rows(handles: list, positions: list, rows: tuple[np.ndarray, np.ndarray], k: int, ef: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`search_group` of the vectors of a ``(keys, vectors)`` block of :func:`shard_rows`."""
    return search_group(handles, positions, rows[1], k, ef)


def merge_ranked(parts: list, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``k`` best of several ``(keys, distances, shard positions)`` lists per row.

    Ranked by distance, then shard position, then the order within the part: the same
    answer as one flat merge of every shard's list in shard order, whichever parts
    are merged together first.
    """
    if len(parts) == 1:
        return parts[0]
    keys, dists, shards = (np.concatenate([p[i] for p in parts], axis=1) for i in range(3))
    order = np.lexsort((shards, dists), axis=1)[:, :k]
    return tuple(np.take_along_axis(a, order, 1) for a in (keys, dists, shards))


def shard_rows(handle: ShardHandle, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """Live keys ``[start, stop)`` of a shard (by ascending key) and their stored vectors (float32)."""
    nids, keys = handle.live_order()
    nids, keys = nids[start:stop], keys[start:stop]
    vectors = stored_vectors(handle.store.rows(), nids)[:, : handle.index.dim]
    return keys, np.ascontiguousarray(vectors, np.float32)


def finish_join(merged: tuple, rows: tuple[np.ndarray, np.ndarray], k: int, exclude_self: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(row keys, neighbour keys (n, k), distances (n, k))`` of a self-join block.

    The row's own key is dropped (``exclude_self``) or placed first at distance 0, as
    :func:`hnsw_numba.core.knn.drop_self` does for NodeIds; padding is key -1, distance inf.
    """
    keys, dists = merged[0], merged[1]
    own = rows[0]
    keep = np.isfinite(dists) & (keys != own[:, None])
    others = k if exclude_self else k - 1
    order = np.argsort(~keep, axis=1, kind="stable")[:, :others]
    kept = np.take_along_axis(keep, order, 1)
    out_k = np.where(kept, np.take_along_axis(keys, order, 1), -1).astype(np.int64)
    out_d = np.where(kept, np.take_along_axis(dists, order, 1), np.inf).astype(np.float32)
    if not exclude_self:
        out_k = np.concatenate([own[:, None], out_k], axis=1)
        out_d = np.concatenate([np.zeros((own.shape[0], 1), np.float32), out_d], axis=1)
    return own, out_k, out_d


# ============================================================================ building
def read_rows(source: Any, lo: int, hi: int) -> np.ndarray:
    """Rows ``[lo, hi)`` of a source: an array, or ``("file", path, dataset)`` read on this worker.

    A file is anything :func:`hnsw_numba.io.vectors.open_vectors` reads; only these rows are
    read, in their stored type (the index checks and converts them).
    """
    if not isinstance(source, tuple):
        return np.asarray(source)
    _, path, dataset = source
    with open_vectors(path, dataset=dataset) as src:
        return src.read(lo, hi, dtype=None, check_finite=False)


def new_store(metric: Any, dim: int, capacity: int, dtype: str) -> Any:
    """An empty store of the kind ``metric`` reads."""
    if metric.store_kind == "qi8":
        from ..core.store_qi8 import InMemoryQi8VectorStore

        return InMemoryQi8VectorStore(dim, capacity)
    from ..core.store import InMemoryVectorStore

    if dtype == WALK_COPY:
        return InMemoryVectorStore(dim, capacity, "float32", walk_copy=True)
    return InMemoryVectorStore(dim, capacity, dtype)


def save_shard(url: str, index: Hnsw, store: Any, fsync: bool = True) -> ShardEntry:
    """Save a shard with :func:`hnsw_numba.save` and return its manifest entry.

    Every write names its shards afresh, so something at ``url`` is an earlier attempt of
    this task (Dask reruns the tasks of a worker that died, finished ones included): the
    shard is then saved under another fresh name of its position, which the entry carries.
    The earlier copy, named by no manifest, goes with the write's clean-up.
    """
    from ..io.persist import save

    if _exists(url):
        head, name = url.rsplit("/", 1)
        url = f"{head}/{new_shard_name(int(name.split('-', 1)[0]))}"
    save(url, index, store, fsync=fsync)
    n = index.node_count
    keys = np.asarray(index.key_map.node_keys[:n], np.int64)
    graph = sum(int(a.nbytes) for a in index.graph_arrays)
    nbytes = graph + int(store.nbytes) + int(index.key_map.nbytes())
    return ShardEntry(url.rsplit("/", 1)[-1], len(index), n, int(keys.min()) if n else None,
                      int(keys.max()) if n else None, shard_checksum(url), nbytes)


def _exists(url: str) -> bool:
    if not is_remote(url):
        return os.path.lexists(url)
    fs, path = remote_fs(url)
    return fs.exists(path)


def build_shard(rows: Any, lo: int, hi: int, keys: Any, url: str, metric: str, dtype: str, config: dict, num_threads: int, fsync: bool = True,
                at: int | None = None) -> ShardEntry:
    """Build one shard from rows ``[lo, hi)`` of a source and save it at ``url``; ``at``: the
    data row of ``rows[lo]`` for error messages (default ``lo``).

    ``keys`` is an int array of the rows' keys, or an int: the key of the first row (the
    others follow consecutively). Keys must be strictly increasing, so that shards own
    disjoint key ranges. A shard of ``READ_MOSTLY_REORDER`` rows or more is renumbered
    before it is saved (``compact(reorder=True)``: faster searches).
    """
    from ..core import reorder

    x = np.asarray(read_rows(rows, lo, hi))
    n = x.shape[0]
    at = lo if at is None else at  # messages name data rows: ``rows`` may be the shard's own block
    if n != hi - lo:
        raise InvalidParameterError(f"rows [{at}, {at + hi - lo}) of the data: the source holds {n} rows there")
    k = np.arange(keys, keys + n, dtype=np.int64) if isinstance(keys, (int, np.integer)) else np.asarray(keys, np.int64)
    if k.shape != (n,):
        raise InvalidParameterError(f"rows [{at}, {at + n}) of the data: keys of shape {k.shape} for {n} rows")
    if n > 1 and not (np.diff(k) > 0).all():
        i = int(np.argmax(np.diff(k) <= 0)) + 1
        raise InvalidParameterError(f"rows [{at}, {at + n}) of the data: keys must be strictly increasing (each shard "
                                    f"owns a key range), data row {at + i} has key {k[i]} after key {k[i - 1]}")
    met = metric_from_name(metric)
    index = Hnsw(met, HnswConfig(max_nodes=max(n, 1), **config))
    store = new_store(met, config["dim"], max(n, 1), dtype)
    if n:
        try:
            index.insert_batch(store, k, x, num_threads=num_threads, progress=False)
        except InvalidVectorError as exc:  # its row numbers count from the shard's first row
            raise in_data_rows(exc, at, n) from None
        reorder.renumber_read_mostly(index, store, num_threads)  # a shard is read-mostly
    return save_shard(url, index, store, fsync)


def mutate_shard(src: str, dst: str, metric: str, entry: ShardEntry, config: dict, dtype: str, delete: np.ndarray | None, set_keys: np.ndarray | None, set_vectors: np.ndarray | None, num_threads: int, fsync: bool = True) -> ShardEntry:
    """Load shard ``src``, delete or upsert keys, save the result as ``dst``.

    Everything is checked before the first change (a missing key raises KeyNotFoundError
    and nothing is saved); ``src`` itself is never written.
    """
    from ..io.persist import load

    met = metric_from_name(metric)
    if shard_checksum(src) != entry.checksum:
        raise IndexFormatError(f"{src}: shard checksum does not match the manifest")
    index, store = load(src, met)
    check_shard(src, entry, index, store, config, dtype)
    if delete is not None:
        missing = [int(k) for k in delete if int(k) not in index]
        if missing:
            raise KeyNotFoundError(f"keys {missing[:5]} are not in the index")
        for key in delete.tolist():
            index.delete(key)
    if set_keys is not None:
        live = np.array([int(k) in index for k in set_keys], bool)
        v = set_vectors
        fresh = np.flatnonzero(~live)
        nids = index.key_map.get_many(None, set_keys[fresh])
        new = int((nids < 0).sum())
        if index.node_count + new > index.max_nodes:
            index.resize(index.node_count + new)
        if index.node_count + new > store.max_nodes:
            store.resize(index.node_count + new)
        if fresh.shape[0]:
            index.insert_batch(store, set_keys[fresh], v[fresh], num_threads=num_threads, progress=False)
        for i in np.flatnonzero(live).tolist():
            index.set(store, int(set_keys[i]), v[i])
    return save_shard(dst, index, store, fsync)


def running_keys(keys: set, dask_worker: Any = None) -> list:
    """Which of ``keys`` occupy a thread of this worker (``client.run``; cancelled ones included)."""
    return [ts.key for ts in dask_worker.state.all_running_tasks if ts.key in keys]
