"""Dask integration: query fan-out over a saved index, and sharded indexes built, searched
and joined on a Dask cluster.

- :mod:`~hnsw_numba.dask.fanout`: every worker opens one saved index (``hn.save``) and
  searches its share of the query chunks (:func:`search`, :func:`knn_graph`).
- :mod:`~hnsw_numba.dask.sharded` and :mod:`~hnsw_numba.dask.write`: an index split into
  shards, each a normal saved index, under one manifest (:mod:`~hnsw_numba.dask.manifest`):
  :func:`build`, :class:`ShardedIndex` (search, self-join, append, delete, set).

:func:`search` and :func:`knn_graph` take either kind of target; :data:`CLUSTER_CONFIG`
(:mod:`~hnsw_numba.dask.config`) is the Dask configuration a sharded index's cluster runs best with. dask and distributed
are optional: ``pip install 'hnsw_numba[dask]'``.
"""

from __future__ import annotations

from typing import Any

from . import fanout
from .config import CLUSTER_CONFIG, QUIET_MONITORING
from .fanout import cached_targets, clear_cache, load_counts, open_cached, preload, saved_info, to_csr
from .manifest import SHARDED_FORMAT_VERSION, Manifest, ShardEntry, is_sharded, read_manifest
from .sharded import ShardedIndex, build, check_join
from .sharded import build as build_sharded
from .tasks import merge_topk

__all__ = [
    "search", "knn_graph", "to_csr", "preload", "load_counts", "cached_targets", "clear_cache", "open_cached", "saved_info",
    "build", "ShardedIndex", "Manifest", "ShardEntry", "read_manifest", "is_sharded", "merge_topk",
    "SHARDED_FORMAT_VERSION", "CLUSTER_CONFIG", "QUIET_MONITORING",
]


def search(target: Any, queries: Any, k: int, *, ef: int | None = None, metric: Any = None, num_threads: int = 1, mmap: bool = False):
    """k-NN of every row of a dask array against a saved or a sharded index; lazy ``(keys, distances)``.

    A sharded ``target`` (written by :func:`build`) is searched shard by shard on the
    workers serving them (:meth:`ShardedIndex.search`; ``num_threads`` must then be 1);
    any other target is a single saved index searched by :func:`hnsw_numba.dask.fanout.search`.
    ``metric``, when given, is checked against the saved one.
    """
    if is_sharded(target):
        index = ShardedIndex(target, mmap=mmap)
        if metric is not None:
            fanout.check_metric(index.manifest.metric, metric)
        if num_threads != 1:
            from ..core.errors import InvalidParameterError

            raise InvalidParameterError("a sharded search runs one thread per task (num_threads=1)")
        return index.search(queries, k, ef=ef)
    return fanout.search(target, queries, k, ef=ef, metric=metric, num_threads=num_threads, mmap=mmap)


def knn_graph(data: Any, k: int, *, target: Any, metric: Any = "l2", build: bool = True, ef: int | None = None,
              exclude_self: bool = True, m: int = 16, ef_construction: int = 200, num_threads: int = 1,
              mmap: bool = False, progress: bool | None = None, n_shards: int | None = None,
              shard_size: int | None = None, chunk_rows: int = 8192):
    """Distributed k-NN graph of a dask array against itself: ``(indices, distances)``, row ``i`` = row ``i``.

    With ``n_shards`` or ``shard_size`` (or ``build=False`` over a sharded ``target``) the
    index is a sharded one built on the workers (:func:`build`, keys = row numbers) and
    joined by :meth:`ShardedIndex.knn_graph`, so no process ever holds the whole data;
    otherwise the index is built in this process and the join fanned out
    (:func:`hnsw_numba.dask.fanout.knn_graph`). Parameters as there; ``chunk_rows`` is the
    row block of the sharded join.
    """
    from ..core.errors import InvalidParameterError
    from ..core.validate import check_flag

    build = check_flag("build", build)  # np.False_ and False take one path
    sharded = n_shards is not None or shard_size is not None or (not build and is_sharded(target))
    if not sharded:
        return fanout.knn_graph(data, k, target=target, metric=metric, build=build, ef=ef, exclude_self=exclude_self,
                                m=m, ef_construction=ef_construction, num_threads=num_threads, mmap=mmap, progress=progress)
    check_join(k, ef, exclude_self, chunk_rows)  # before the build replaces what is at target
    check_flag("mmap", mmap)
    if build:
        index = build_sharded(data, target, metric=metric, n_shards=n_shards, shard_size=shard_size, m=m,
                                   ef_construction=ef_construction, num_threads=num_threads, progress=progress)
    else:
        index = ShardedIndex(target, mmap=mmap)
        fanout.check_metric(index.manifest.metric, metric)  # as the fan-out path: distances of the metric asked for
        shape = getattr(data, "shape", None)
        if shape is None or len(shape) != 2 or shape[1] != index.manifest.dim:
            from ..core.errors import DimensionMismatchError

            raise DimensionMismatchError(f"expected data of shape (n, {index.manifest.dim}), got {shape}")
    man = index.manifest
    n = getattr(data, "shape", (man.count,))[0]
    spans = [(s.key_min, s.key_max, s.count, s.nodes) for s in man.shards]
    start = 0
    for lo, hi, count, nodes in spans:
        if count != nodes or (count and (lo != start or hi != start + count - 1)):
            raise InvalidParameterError("the sharded index's keys are not the row numbers 0 .. n-1 without deletions; "
                                        "use ShardedIndex.knn_graph, which returns each row's key")
        start += count
    if start != n:
        raise InvalidParameterError(f"the sharded index holds {start} rows, data has {n}")
    _, indices, distances = index.knn_graph(k, ef=ef, exclude_self=exclude_self, chunk_rows=chunk_rows)
    return indices, distances
