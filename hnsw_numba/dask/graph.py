"""Graph pieces of a sharded index's Dask graphs: placement annotations, search groups, merge
trees, build tasks.

Nothing here runs a task: these helpers build the task dictionaries and layers that
:class:`hnsw_numba.dask.ShardedIndex` assembles, and the dask array class whose own
optimisation keeps the layers' worker annotations.
"""

from __future__ import annotations

from typing import Any

from .manifest import new_shard_name, shard_url
from .tasks import build_shard, merge_ranked

__all__ = ["OnWorker", "annotations", "search_groups", "merge_tree", "build_tasks", "keep_annotations", "placed_array"]


class OnWorker:
    """Worker-restriction annotation: the worker serving the shard (or group) named by ``key[pos]``."""

    def __init__(self, placement: dict[int, str], pos: int):
        self.placement, self.pos = placement, pos

    def __call__(self, key: tuple) -> list[str]:
        return [self.placement[key[self.pos]]]


def annotations(placement: dict[int, str] | None, pos: int) -> dict | None:
    """Loose worker restriction of a layer whose key element ``pos`` names a placed shard or group.

    Loose (``allow_other_workers``): when the worker dies, Dask reruns the task elsewhere.
    """
    if placement is None:
        return None
    return {"workers": OnWorker(placement, pos), "allow_other_workers": True}


def search_groups(placement: dict[int, str] | None, n_shards: int) -> tuple[list[list[int]], dict[int, str] | None]:
    """Shard positions searched by one task, and the worker of each group.

    A group is every shard one worker serves (ascending positions): one task per query
    chunk and worker searches them all and merges their lists where they are open, so a
    chunk costs one task per worker instead of one per shard and only one list per worker
    crosses the network. Without placement (no distributed client) each shard is a group
    of its own, which the local schedulers run in parallel.

    Parameters
    ----------
    placement : dict or None
        Shard position -> worker address (:meth:`ShardedIndex.placement`).
    n_shards : int

    Returns
    -------
    groups : list of list of int
    where : dict or None
        Group position -> worker address.
    """
    if placement is None:
        return [[i] for i in range(n_shards)], None
    by_worker: dict[str, list[int]] = {}
    for i in range(n_shards):
        by_worker.setdefault(placement[i], []).append(i)
    workers = sorted(by_worker)
    return [by_worker[w] for w in workers], dict(enumerate(workers))


def merge_tree(dsk: dict, name: str, tag: tuple, leaves: list, k: int, split_every: int) -> Any:
    """Merge ``leaves`` (task keys of ranked lists) by a tree of :func:`merge_ranked`; the root's key.

    ``split_every`` lists per merge task. The merged order breaks distance ties by shard
    position, so any tree gives the same answer as one flat merge.
    """
    level = 0
    while len(leaves) > 1:
        groups = [leaves[g : g + split_every] for g in range(0, len(leaves), split_every)]
        leaves = []
        for g, group in enumerate(groups):
            key = (name, *tag, level, g)
            dsk[key] = (merge_ranked, group, k)
            leaves.append(key)
        level += 1
    return leaves[0]


def build_tasks(target: str, n: int, source: Any, keys: Any, first_key: int, ranges: list, first_pos: int,
                metric: str, dtype: str, config: dict, num_threads: int, fsync: bool) -> tuple[list, list[str]]:
    """One :func:`~hnsw_numba.dask.tasks.build_shard` task per row range ``[lo, hi)`` of ``source``
    (a dask array or a file the workers read), saving under fresh names from position
    ``first_pos``; returns the tasks and the names."""
    import dask

    names, tasks = [], []
    for p, (lo, hi) in enumerate(ranges):
        name = new_shard_name(first_pos + p)
        rows = source[lo:hi] if not isinstance(source, tuple) else source
        kk = first_key + lo if keys is None else keys[lo:hi]
        task = dask.delayed(build_shard, pure=True)(
            rows, 0 if not isinstance(source, tuple) else lo, hi - lo if not isinstance(source, tuple) else hi,
            kk, shard_url(target, name), metric, dtype, config, num_threads, fsync, lo,
            dask_key_name=f"hnsw-build-shard-{name}")
        names.append(name)
        tasks.append(task)
    return tasks, names


def keep_annotations(dsk: Any, keys: Any) -> Any:
    """Graph optimisation of :class:`PlacedArray`: culling only, layers kept.

    Dask's array optimisation fuses tasks into one flat graph and so drops the worker
    annotations of every layer; the sharded graphs have no linear chains to fuse anyway.
    """
    from dask.core import flatten
    from dask.highlevelgraph import HighLevelGraph

    if not isinstance(dsk, HighLevelGraph):
        return dsk
    return dsk.cull(set(flatten(keys)))


def placed_array(graph: Any, name: str, chunks: tuple, dtype: Any) -> Any:
    """A dask array over ``graph`` whose own compute or persist keeps the tasks' placement.

    Arrays derived from it (slices, arithmetic, ``to_zarr``) go through Dask's usual
    optimisation, which drops worker annotations: their searches still run, on any worker.
    """
    return _placed_class()(graph, name, chunks, dtype=dtype)


_PLACED: list = []


def _placed_class() -> type:
    """``PlacedArray``: made on first use, so that importing this module needs no dask."""
    if not _PLACED:
        import dask.array as da

        class PlacedArray(da.Array):
            """A dask array optimised by :func:`keep_annotations` (see :func:`placed_array`)."""

            __dask_optimize__ = staticmethod(keep_annotations)

        PlacedArray.__module__ = __name__
        _PLACED.append(PlacedArray)
    return _PLACED[0]


def __getattr__(name: str) -> Any:
    if name == "PlacedArray":  # pickle finds the class by name
        return _placed_class()
    raise AttributeError(name)
