"""``ShardedIndex``: search and self-join an index split into shards, on a Dask cluster.

Placement
---------
Each shard is served by one worker process, chosen here (largest shards first, each to
the worker holding the fewest bytes; a shard keeps its worker while that worker lives).
The graph pins the shard's *open* task and its search tasks to that worker with a
loose worker restriction (``allow_other_workers=True``): while the worker lives the
scheduler sends them nowhere else (work stealing aside, see below), so a worker
process opens only the shards it serves and an index of S bytes needs about S / workers of RAM per worker. When the worker dies, Dask reruns the
open task and the searches on another worker (the restriction is loose), which opens
the shard there. Search tasks also *depend* on the open task's result, a
:class:`~hnsw_numba.dask.tasks.ShardHandle` whose size is the shard's, so Dask's data
locality and its work-stealing cost model keep them with the shard as well. Work stealing
can still move a queued task of a loose restriction to an idle worker (which then opens
that shard too: same answers, more memory); clusters sized to S / workers of RAM per
worker run with ``distributed.scheduler.work-stealing: False``.

Every query chunk is searched against every shard (the top ``k`` of each shard at
``ef``). One task per query chunk and worker searches all the shards that worker serves
and merges their lists there; the per-worker lists are merged by a tree of merge tasks
on the workers (``split_every`` lists per merge), never on the client. Equal distances
rank by shard position, so the answer is that of searching every shard in one process
and merging the lists in shard order, whatever the placement.
"""

from __future__ import annotations

from operator import getitem
from typing import Any

import numpy as np

from ..core.config import MAX_EF
from ..core.errors import DimensionMismatchError, InvalidParameterError
from ..core.knn import graph_ef
from ..core.metrics import Metric, metric_from_name
from .manifest import Manifest, read_manifest, shard_url, target_text
from .graph import annotations, merge_tree, placed_array, search_groups
from .tasks import ShardHandle, finish_join, open_shard, search_group, search_group_rows, shard_rows
from .compute import current_client
from .write import append, build_shards, check_count, mutate

__all__ = ["ShardedIndex", "build", "check_join"]


def _ef(ef: Any) -> int | None:
    return None if ef is None else check_count("ef", ef, 1, MAX_EF)


def check_join(k: Any, ef: Any, exclude_self: Any, chunk_rows: Any, split_every: Any = 4) -> tuple[int, int, int, int, int]:
    """Checked parameters of :meth:`ShardedIndex.knn_graph`: ``(k, k_search, ef, chunk_rows,
    split_every)``, ``k_search`` counting the row's own match (InvalidParameterError)."""
    k = check_count("k", k, 1, MAX_EF - 1)
    if not isinstance(exclude_self, (bool, np.bool_)):
        raise InvalidParameterError(f"exclude_self must be a bool, got {exclude_self!r}")
    k_search = k + 1 if exclude_self else k
    return (k, k_search, graph_ef(ef, k_search), check_count("chunk_rows", chunk_rows, 1, 1 << 30),
            check_count("split_every", split_every, 2, 1 << 16))


class ShardedIndex:
    """A sharded index saved by :func:`hnsw_numba.dask.build` at a path or fsspec URL.

    Parameters
    ----------
    target : str or PathLike
        The index's root (every worker must reach it: shared file system or object store).
    mmap : bool
        Workers map the vectors of local shards instead of reading them.

    Notes
    -----
    Searches only read. :meth:`delete`, :meth:`set` and :meth:`append` write new shard
    directories and then replace the manifest: they exclude other writers of the same
    target, and searches started from an older manifest may fail once its replaced
    shards are removed (open a new ``ShardedIndex`` or call :meth:`refresh`).
    """

    def __init__(self, target: Any, *, mmap: bool = False):
        if not isinstance(mmap, (bool, np.bool_)):
            raise InvalidParameterError(f"mmap must be a bool, got {mmap!r}")
        self.target = target_text(target)
        self.mmap = bool(mmap)
        self.manifest: Manifest = read_manifest(self.target)
        self._placement: dict[str, str] = {}  # shard name -> worker address

    # ------------------------------------------------------------------ description
    @property
    def metric(self) -> Metric:
        return metric_from_name(self.manifest.metric)

    @property
    def n_shards(self) -> int:
        return self.manifest.n_shards

    @property
    def dim(self) -> int:
        return self.manifest.dim

    def __len__(self) -> int:
        return self.manifest.count

    def __repr__(self) -> str:
        m = self.manifest
        return f"ShardedIndex({self.target!r}, metric={m.metric}, dim={m.dim}, shards={m.n_shards}, live={m.count})"

    def shard_url(self, i: int) -> str:
        """Path or URL of shard ``i`` (``hnsw_numba.load`` opens it on its own)."""
        return shard_url(self.target, self.manifest.shards[check_count("shard", i, 0, self.n_shards - 1)].name)

    def refresh(self) -> None:
        """Re-read the manifest (after another process wrote the index)."""
        self.manifest = read_manifest(self.target)

    def load_shard(self, i: int) -> tuple[Any, Any]:
        """``(index, store)`` of shard ``i`` in this process, checked against the manifest."""
        m = self.manifest
        return open_shard(self.shard_url(i), m.metric, m.shards[i], m.config, m.dtype, self.mmap)

    # ------------------------------------------------------------------ placement
    def placement(self, client: Any = None) -> dict[int, str] | None:
        """Worker address serving each shard position (None without a distributed client, or
        while the cluster has no workers).

        Sticky: a shard keeps its worker while that worker is alive; the others go,
        largest first, to the worker holding the fewest bytes. Without workers (an adaptive
        cluster scaled to zero) nothing is placed: the scheduler runs the tasks on the
        workers that arrive, as it does any graph's.
        """
        client = client if client is not None else current_client()
        if client is None:
            return None
        workers = sorted(client.nthreads())
        if not workers:
            return None
        shards = self.manifest.shards
        names = {s.name for s in shards}
        self._placement = {n: w for n, w in self._placement.items() if n in names and w in workers}
        load = dict.fromkeys(workers, 0)
        for s in shards:
            if s.name in self._placement:
                load[self._placement[s.name]] += s.nbytes
        for s in sorted((s for s in shards if s.name not in self._placement), key=lambda s: -s.nbytes):
            w = min(workers, key=lambda w: (load[w], workers.index(w)))
            self._placement[s.name] = w
            load[w] += s.nbytes
        return {i: self._placement[s.name] for i, s in enumerate(shards)}

    # ------------------------------------------------------------------ graphs
    def _layers(self, base: Any = None) -> tuple[dict, dict, str, dict[int, str] | None]:
        """Layers and dependencies with the open-shard layer added (plus ``base``'s graph)."""
        from dask.base import tokenize
        from dask.highlevelgraph import MaterializedLayer

        m = self.manifest
        placement = self.placement()
        layers = dict(base.dask.layers) if base is not None else {}
        deps = {k: set(v) for k, v in base.dask.dependencies.items()} if base is not None else {}
        name = "hnsw-open-shard-" + tokenize(self.target, m.generation, [(s.name, s.checksum) for s in m.shards], self.mmap)
        dsk = {(name, i): (ShardHandle, shard_url(self.target, s.name), m.metric, s, m.config, m.dtype, self.mmap)
               for i, s in enumerate(m.shards)}
        layers[name] = MaterializedLayer(dsk, annotations=annotations(placement, 1))
        deps[name] = set()
        return layers, deps, name, placement

    def search(self, queries: Any, k: int, *, ef: int | None = None, split_every: int = 4) -> tuple[Any, Any]:
        """k-NN of every row of a dask array over all shards; lazy ``(keys, distances)``.

        Parameters
        ----------
        queries : dask.array.Array (n, dim)
            Chunked by rows (column chunks are merged). Read it on the workers
            (``da.from_zarr``, ...) rather than from a client-side array.
        k : int
        ef : int, optional
            Beam width in every shard (default: the index's ``ef_search``; ``max(ef, k)``).
        split_every : int
            Per-shard lists merged per merge task (the fan-in of the tree, >= 2).

        Returns
        -------
        keys : dask.array.Array int64 (n, k)
            Best first; padding -1 where fewer than k live keys exist.
        distances : dask.array.Array float32 (n, k)
            Padding inf. Compute both together (``dask.compute(keys, distances)``).
        """
        import dask.array as da
        from dask.base import tokenize
        from dask.highlevelgraph import HighLevelGraph, MaterializedLayer

        k = check_count("k", k, 1, MAX_EF)
        ef = _ef(ef)
        split_every = check_count("split_every", split_every, 2, 1 << 16)
        q = self._rows_of(queries, "queries")
        layers, deps, open_name, placement = self._layers(q)
        groups, where = search_groups(placement, self.n_shards)
        token = tokenize(open_name, q.name, k, ef, split_every, groups)
        s_name, m_name = "hnsw-search-shard-" + token, "hnsw-merge-" + token
        q_layer = q.__dask_layers__()[0]
        search, merge, finals = {}, {}, []
        for j in range(q.numblocks[0]):
            leaves = []
            for g, group in enumerate(groups):
                search[(s_name, j, g)] = (search_group, [(open_name, i) for i in group], group, (q.name, j, 0), k, ef)
                leaves.append((s_name, j, g))
            finals.append(merge_tree(merge, m_name, (j,), leaves, k, split_every))
        layers[s_name] = MaterializedLayer(search, annotations=annotations(where, 2))
        deps[s_name] = {open_name, q_layer}
        layers[m_name] = MaterializedLayer(merge)
        deps[m_name] = {s_name}
        out = []
        for part, dtype in ((0, np.int64), (1, np.float32)):
            name = f"hnsw-sharded-{'keys' if part == 0 else 'distances'}-{token}"
            layers[name] = MaterializedLayer({(name, j, 0): (getitem, f, part) for j, f in enumerate(finals)})
            deps[name] = {m_name, s_name}
            out.append(name)
        graph = HighLevelGraph(layers, deps)
        chunks = (q.chunks[0], (k,))
        return tuple(placed_array(graph, name, chunks, dtype) for name, dtype in zip(out, (np.int64, np.float32)))

    def knn_graph(self, k: int, *, ef: int | None = None, exclude_self: bool = True, chunk_rows: int = 8192, split_every: int = 4) -> tuple[Any, Any, Any]:
        """The k-NN self-join of every live key; lazy ``(row_keys, neighbour_keys, distances)``.

        The rows are each shard's live keys in ascending order, shard after shard (so
        ascending overall: shards own ascending key ranges). Each block of ``chunk_rows``
        stored vectors is read where its shard is open and searched against every shard
        with ``k + 1`` results; the lists are merged by a tree and the row's own key is
        dropped (``exclude_self``) or put first at distance 0.

        Parameters
        ----------
        k : int
            Neighbours per row.
        ef : int, optional
            Beam width in every shard (default ``max(k + 1, 16)``, as
            :func:`hnsw_numba.core.knn.knn_graph`; these searches start from the top).
        exclude_self : bool
        chunk_rows : int
            Rows per block (and per output chunk).
        split_every : int
            Fan-in of the merge tree.

        Returns
        -------
        row_keys : dask.array.Array int64 (n,)
        neighbour_keys : dask.array.Array int64 (n, k)
            Best first, padding -1.
        distances : dask.array.Array float32 (n, k)
            The metric's distances, padding inf.
        """
        import dask.array as da
        from dask.base import tokenize
        from dask.highlevelgraph import HighLevelGraph, MaterializedLayer

        k, k_search, ef, chunk_rows, split_every = check_join(k, ef, exclude_self, chunk_rows, split_every)
        layers, deps, open_name, placement = self._layers()
        groups, where = search_groups(placement, self.n_shards)
        token = tokenize(open_name, k, ef, bool(exclude_self), chunk_rows, split_every, groups)
        r_name, s_name, m_name, f_name = (f"hnsw-join-{p}-{token}" for p in ("rows", "search", "merge", "finish"))
        rows, search, merge, finish, sizes = {}, {}, {}, {}, []
        for i, s in enumerate(self.manifest.shards):
            for b, start in enumerate(range(0, s.count, chunk_rows)):
                stop = min(start + chunk_rows, s.count)
                rows[(r_name, i, b)] = (shard_rows, (open_name, i), start, stop)
                leaves = []
                for g, group in enumerate(groups):
                    search[(s_name, i, b, g)] = (search_group_rows, [(open_name, j) for j in group], group, (r_name, i, b), k_search, ef)
                    leaves.append((s_name, i, b, g))
                top = merge_tree(merge, m_name, (i, b), leaves, k_search, split_every)
                finish[(f_name, len(sizes))] = (finish_join, top, (r_name, i, b), k, bool(exclude_self))
                sizes.append(stop - start)
        layers[r_name] = MaterializedLayer(rows, annotations=annotations(placement, 1))
        layers[s_name] = MaterializedLayer(search, annotations=annotations(where, 3))
        layers[m_name], layers[f_name] = MaterializedLayer(merge), MaterializedLayer(finish)
        deps.update({r_name: {open_name}, s_name: {open_name, r_name}, m_name: {s_name}, f_name: {m_name, s_name, r_name}})
        out = []
        for part, what in enumerate(("rowkeys", "keys", "distances")):
            name = f"hnsw-join-{what}-{token}"
            tail = () if part == 0 else (0,)
            layers[name] = MaterializedLayer({(name, c, *tail): (getitem, (f_name, c), part) for c in range(len(sizes))})
            deps[name] = {f_name}
            out.append(name)
        graph = HighLevelGraph(layers, deps)
        n_chunks = (tuple(sizes),) if sizes else ((0,),)
        if not sizes:  # an index without live keys: empty arrays
            return (da.zeros(0, np.int64), da.zeros((0, k), np.int64), da.zeros((0, k), np.float32))
        return (placed_array(graph, out[0], n_chunks, np.int64),
                placed_array(graph, out[1], (tuple(sizes), (k,)), np.int64),
                placed_array(graph, out[2], (tuple(sizes), (k,)), np.float32))

    def _rows_of(self, x: Any, what: str) -> Any:
        import dask.array as da

        if not isinstance(x, da.Array):
            raise InvalidParameterError(f"{what} must be a dask.array.Array, got {type(x).__name__}")
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise DimensionMismatchError(f"expected {what} of shape (n, {self.dim}), got {x.shape}")
        return x.rechunk({1: -1}) if x.numblocks[1] != 1 else x

    # ------------------------------------------------------------------ writes
    def delete(self, keys: Any, *, num_threads: int = 1) -> None:
        """Delete keys (KeyNotFoundError if any is not live: then nothing changes)."""
        mutate(self, "delete", keys, None, num_threads)

    def set(self, keys: Any, vectors: Any, *, num_threads: int = 1) -> None:
        """Insert or update keys (upsert); each goes to the shard owning its key range."""
        mutate(self, "set", keys, vectors, num_threads)

    def append(self, data: Any, *, keys: Any = None, n_shards: int | None = None, shard_size: int | None = None, dataset: str | None = None, num_threads: int = 1, progress: bool | None = None) -> None:
        """Add rows as new shards (built on the workers, as :func:`hnsw_numba.dask.build`).

        Keys default to consecutive ints after the largest stored key; given keys must be
        strictly increasing and above every stored key.
        """
        append(self, data, keys=keys, n_shards=n_shards, shard_size=shard_size, dataset=dataset,
               num_threads=num_threads, progress=progress)


def build(data: Any, target: Any, *, metric: Any, n_shards: int | None = None, shard_size: int | None = None,
          keys: Any = None, dtype: Any = "float32", m: int = 16, ef_construction: int = 200, ef_search: int = 50,
          seed: int | None = 0, dataset: str | None = None, num_threads: int = 1, progress: bool | None = None,
          fsync: bool = True) -> "ShardedIndex":
    """Build a sharded index on the Dask cluster, one task per shard, and save it at ``target``.

    Parameters
    ----------
    data : dask.array.Array (n, dim) or str
        A dask array, or a ``.npy`` / HDF5 / Zarr path (or Zarr URL) that the workers read;
        the rows never pass through this process.
    target : str or PathLike
        Root of the sharded index (local path or fsspec URL reachable from every worker).
        A sharded index already there is replaced atomically; anything else is refused.
    metric : Metric or str
        ``"l2"``, ``"cosine"``, ``"ip"`` or a ``*_qi8`` variant.
    n_shards, shard_size : int, optional
        Number of shards, or rows per shard (default 1,000,000 rows per shard). Shard
        ``i`` takes the ``i``-th block of rows.
    keys : int array (n,), optional
        Keys of the rows (numpy or dask), strictly increasing; default the row numbers.
    dtype : str
        Stored vector type of float stores: ``"float32"``, ``"float16"``, ``"bfloat16"``, or
        ``"float32+float16"`` (float32 with a float16 copy that the walks read).
    m, ef_construction, ef_search, seed : int
        As :class:`hnsw_numba.HnswConfig`; every shard uses the same (a fixed seed makes
        a build, and a task Dask reruns after a worker died, reproducible).
    dataset : str, optional
        Array inside an HDF5 file or Zarr group.
    num_threads : int
        Threads per build task (default 1: Dask runs one task per worker thread).
    progress : bool, optional
        Show :func:`distributed.progress` (the dashboard shows the tasks either way).
    fsync : bool
        Flush files before the manifest swap.

    Returns
    -------
    ShardedIndex
    """
    return ShardedIndex(build_shards(data, target, metric=metric, n_shards=n_shards, shard_size=shard_size, keys=keys,
                                     dtype=dtype, m=m, ef_construction=ef_construction, ef_search=ef_search, seed=seed,
                                     dataset=dataset, num_threads=num_threads, progress=progress, fsync=fsync))
