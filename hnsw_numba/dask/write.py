"""Writing a sharded index: build, append, delete and set, each ending in one manifest swap.

Every write builds or rewrites shards under fresh directory names (one Dask task per
shard, on the workers), then replaces the manifest, then removes the directories the
new manifest no longer names. A failure or a crash before the manifest swap leaves the
previous index untouched (and no index where there was none); the write then removes
the directories it made, and what a crash leaves is removed by the next write. Removing
directories is best effort: a failure there never hides the write's outcome (its error,
or its commit) and leaves them for the next write. Writes to a local target take turns
(:func:`~hnsw_numba.dask.locks.writing`: an exclusive ``flock`` on the ``shards`` directory), each
starting from the manifest the one before committed; on a remote target the threads of one
process take turns (a lock per target) and one process writes at a time.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..core.config import MAX_NODES, HnswConfig
from ..core.errors import DimensionMismatchError, HnswWarning, InvalidKeyError, InvalidParameterError, InvalidVectorError, persist_errors
from ..core.keymap import normalize_keys, refuse_unordered
from ..core.metrics import Metric, metric_from_name
from ..core.store import resolve_float_dtype
from ..core.store_base import float32_array
from ..core.validate import check_flag, refuse_masked
from ..io.vectors import is_hdf5, is_url, open_vectors
from .manifest import (
    WALK_COPY, Manifest, bare_skeleton, collect_garbage, is_remote, is_sharded, new_shard_name, prepare_target, read_manifest,
    shard_url, target_text, write_manifest,
)
from .compute import run_tasks
from .graph import build_tasks
from .locks import making, writing
from .tasks import mutate_shard

__all__ = ["build_shards", "append", "mutate", "resolve_source", "plan_rows", "check_count", "DEFAULT_SHARD_SIZE"]

#: Rows per shard when neither ``n_shards`` nor ``shard_size`` is given: a shard of a
#: million 384-d float32 rows holds ~1.7 GB and builds in about an hour on one core.
DEFAULT_SHARD_SIZE = 1_000_000


def check_count(name: str, value: Any, low: int, high: int) -> int:
    """``value`` as an int in ``[low, high]`` (InvalidParameterError otherwise)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        raise InvalidParameterError(f"{name} must be an int in [{low}, {high}], got {value!r}")
    return int(value)


def resolve_source(data: Any, dataset: str | None) -> tuple[int, int, Any]:
    """``(n, dim, source)`` of the rows to index: a dask array, or a path read on the workers.

    A path is anything :func:`hnsw_numba.io.vectors.open_vectors` reads (``.npy``, read
    memory-mapped; TEXMEX; HDF5, where ``dataset`` names the array, default ``"train"``;
    Zarr, local or an fsspec URL, ``dataset`` naming the array inside a group; Parquet).
    Only the metadata is read here.
    """
    try:
        import dask.array as da
    except ImportError:  # pragma: no cover - dask is this module's requirement
        raise ImportError("pip install 'hnsw_numba[dask]'") from None
    if isinstance(data, da.Array):
        if data.ndim != 2:
            raise DimensionMismatchError(f"data must be 2-D, got shape {data.shape}")
        if any(math.isnan(c) for c in data.shape):
            raise InvalidParameterError("data has unknown chunk sizes: call compute_chunk_sizes() first")
        if isinstance(da.utils.meta_from_array(data), np.ma.MaskedArray):  # blocks of masked arrays: checked where they are read
            data = data.map_blocks(refuse_masked, "data", meta=np.empty((0, 0), data.dtype))
        return int(data.shape[0]), int(data.shape[1]), data.rechunk({1: -1})
    if isinstance(data, os.PathLike):
        data = os.fspath(data)
    if not isinstance(data, str):
        raise InvalidParameterError(f"data must be a dask array or a .npy / HDF5 / Zarr path, got {type(data).__name__}")
    if dataset is None and not is_url(data) and os.path.isfile(data) and is_hdf5(data):
        dataset = "train"  # ann-benchmarks files: the rows to index
    with open_vectors(data, dataset=dataset) as src:
        return src.n, src.dim, ("file", data, dataset)


def plan_rows(n: int, n_shards: int | None, shard_size: int | None) -> list[tuple[int, int]]:
    """Row ranges of the shards: ``n_shards`` near-equal blocks (``ceil(n / shard_size)`` of them)."""
    if n_shards is not None and shard_size is not None:
        raise InvalidParameterError("give n_shards or shard_size, not both")
    if n_shards is None:
        size = check_count("shard_size", shard_size if shard_size is not None else DEFAULT_SHARD_SIZE, 1, MAX_NODES)
        n_shards = max(1, -(-n // size))
    n_shards = check_count("n_shards", n_shards, 1, max(n, 1))
    edges = [n * i // n_shards for i in range(n_shards + 1)]
    return list(zip(edges[:-1], edges[1:]))


def _check_progress(progress: Any) -> None:
    """``progress=`` is True, False or None (no bar): anything else fails before any file is written."""
    if progress is not None and not isinstance(progress, (bool, np.bool_)):
        raise InvalidParameterError(f"progress must be True, False or None, got {progress!r}")


def _key_array(keys: Any) -> np.ndarray:
    """``keys`` as a NumPy array, unconverted; a list or tuple's keys read as ``Index`` reads
    them (a bool is no key; NumPy's conversion makes [True, 5] ints and [np.int64(7),
    np.uint64(8)] floats); ragged nesting, a set and a masked array with a masked entry raise
    :class:`InvalidKeyError`."""
    refuse_unordered(keys)
    keys = refuse_masked(keys, "keys", InvalidKeyError)
    if isinstance(keys, (list, tuple)):
        key_list, int_keys = normalize_keys(keys, len(keys))
        if int_keys is not None:
            return int_keys
        keys = key_list
    try:
        return np.asarray(keys)
    except (TypeError, ValueError) as exc:  # NumPy refuses ragged nesting
        raise InvalidKeyError(f"keys must be ints (a sharded index holds int64 keys): {exc}") from None


def _int64_keys(k: np.ndarray) -> np.ndarray:
    """Int keys ``k`` as int64, each in ``[0, 2**63 - 1]``; :class:`InvalidKeyError` names the first
    key outside it as the caller gave it (checked before the cast, which wraps a uint64 past
    int64 to a negative key)."""
    k = refuse_masked(k, "keys", InvalidKeyError)  # a block of a masked dask array
    if k.shape[0] and ((k.dtype.kind == "u" and k.max() > np.iinfo(np.int64).max) or (k.dtype.kind == "i" and k.min() < 0)):
        bad = k[np.argmax(k > np.iinfo(np.int64).max)] if k.dtype.kind == "u" else k[np.argmin(k)]
        raise InvalidKeyError(f"key {int(bad)} is not an int64 key >= 0 (a sharded index holds keys 0 .. 2**63 - 1)")
    return k.astype(np.int64)


def _keys_for(keys: Any, n: int, first: int) -> Any:
    """Keys as a numpy or dask int64 array of length n, or None (consecutive from ``first``)."""
    if keys is None:
        if first + n > 2**63:
            raise InvalidParameterError(f"the {n:,} keys numbered from {first} pass 2**63 - 1, the largest key a sharded index holds: pass keys")
        return None
    import dask.array as da

    if isinstance(keys, da.Array):
        if keys.ndim != 1 or keys.shape[0] != n or keys.dtype.kind not in "iu":
            raise InvalidParameterError(f"keys must be a 1-D int dask array of length {n}")
        return keys.map_blocks(_int64_keys, dtype=np.int64)  # checked block by block in the build's tasks
    k = _key_array(keys)
    if k.ndim != 1 or k.shape[0] != n or (k.shape[0] and k.dtype.kind not in "iu"):
        raise InvalidParameterError(f"keys must be a 1-D int array of length {n} (sharded indexes hold int64 keys)")
    return _int64_keys(k)


def _discard(target: str, keep: set[str]) -> None:
    """Remove the shard directories of a failed write; a failure here is dropped so that
    the write's own error propagates (the next write removes what stays)."""
    try:
        collect_garbage(target, keep)
    except Exception:
        pass


def _commit(target: str, manifest: Manifest, old: Manifest | None, fsync: bool) -> None:
    """Replace the manifest by ``manifest``, then remove the shard directories it does not name.

    The manifest swap is the commit: a failed swap raises (and, locally, where the previous
    manifest is then known to be in place, removes the new shards); a failed removal after
    it warns (:class:`~hnsw_numba.HnswWarning`) and leaves the directories to the next write.
    """
    try:
        write_manifest(target, manifest, fsync=fsync)
    except BaseException:
        # A failed remote PUT may still have landed: its new shards stay for the next write.
        if not is_remote(target):
            _discard(target, {s.name for s in old.shards} if old is not None else set())
        raise
    try:
        collect_garbage(target, {s.name for s in manifest.shards})
    except Exception as exc:
        warnings.warn(f"{target}: the write is committed, but removing the shard directories it replaced "
                      f"failed ({exc}); the next write removes them", HnswWarning, stacklevel=4)


def _checked_order(entries: list, after: int | None) -> list[int]:
    """Key bounds of new shards (their first keys), checking they ascend past ``after``."""
    bounds, top = [], after
    for e in entries:
        if e.nodes == 0:
            raise InvalidParameterError("a shard without rows cannot be added")
        if top is not None and e.key_min <= top:
            raise InvalidParameterError(f"keys must ascend across shards (and past the stored keys): "
                                        f"shard {e.name} starts at {e.key_min} after key {top}")
        bounds.append(e.key_min)
        top = e.key_max
    return bounds


def build_shards(data: Any, target: Any, *, metric: Any, n_shards: int | None = None, shard_size: int | None = None,
                 keys: Any = None, dtype: Any = "float32", m: int = 16, ef_construction: int = 200, ef_search: int = 50,
                 seed: int | None = 0, dataset: str | None = None, num_threads: int = 1, progress: bool | None = None,
                 fsync: bool = True) -> str:
    """Build and commit a sharded index at ``target`` (see :func:`hnsw_numba.dask.build`); returns the target."""
    text = target_text(target)
    met = metric if isinstance(metric, Metric) else metric_from_name(metric)
    if met.store_kind == "qi8":
        dtype_name = "int8"
    else:  # "float32+float16": float32 vectors with a float16 walk copy in every shard
        dtype_name = WALK_COPY if dtype == WALK_COPY else resolve_float_dtype(dtype).name
    num_threads = check_count("num_threads", num_threads, 1, 1024)
    _check_progress(progress)
    fsync = check_flag("fsync", fsync)
    n, dim, source = resolve_source(data, dataset)
    if n == 0:
        raise InvalidParameterError("data has no rows")
    config = HnswConfig(dim=dim, max_nodes=1, m=m, ef_construction=ef_construction, ef_search=ef_search, seed=seed).to_dict()
    del config["max_nodes"]
    ranges = plan_rows(n, n_shards, shard_size)
    keys = _keys_for(keys, n, 0)
    with writing(text, lambda: _prepare(text)) as made:
        try:
            _build(text, n, source, keys, ranges, met, dtype_name, config, num_threads, progress, fsync)
        except BaseException:
            _unmake(text, made)  # under the lock: a writer waiting for it makes the target anew
            raise
    return text


def _prepare(text: str) -> list[Path]:
    """:func:`prepare_target`; returns the local directories it made, innermost first (the
    target and its missing parents, or ``shards`` in an empty target)."""
    with persist_errors(f"cannot write a sharded index at {text}"):  # a relative path in a removed working directory
        made, p = [], Path(os.path.abspath(text))
    while not is_remote(text) and not os.path.lexists(p) and p != p.parent:
        made.append(p)
        p = p.parent
    with contextlib.suppress(OSError):  # unreadable: prepare_target raises
        made = made or ([p / "shards"] if not is_remote(text) and p.is_dir() and not any(p.iterdir()) else [])
    try:
        prepare_target(text)
    except BaseException:  # refused after its folders were made (inside a saved index): they go
        _remove_made(text, made)
        raise
    return made


def _unmake(text: str, made: list[Path]) -> None:
    """Remove what :func:`_prepare` made once a failed build left only that: no index where
    there was none, an empty directory where there was one."""
    with making():  # no writer of this process makes or opens the target meanwhile
        _remove_made(text, made)


def _remove_made(text: str, made: list[Path]) -> None:
    if made and bare_skeleton(text):
        shutil.rmtree(made[0], ignore_errors=True)
        for parent in made[1:]:
            try:
                os.rmdir(parent)  # only while empty: another process may have put something there
            except OSError:
                break


def _build(text: str, n: int, source: Any, keys: Any, ranges: list, met: Metric, dtype_name: str, config: dict,
           num_threads: int, progress: bool | None, fsync: bool) -> None:
    old = read_manifest(text) if is_sharded(text) else None
    tasks, names = build_tasks(text, n, source, keys, 0, ranges, 0, met.name, dtype_name, config, num_threads, fsync)
    keep = {s.name for s in old.shards} if old is not None else set()
    try:
        entries = run_tasks(tasks, progress)
        bounds = _checked_order(entries, None)[1:]
        manifest = Manifest(met.name, met.store_kind, dtype_name, config, tuple(entries), tuple(bounds),
                            old.generation + 1 if old is not None else 1)
        manifest = Manifest.from_attrs(manifest.to_attrs(), text)
    except BaseException:
        _discard(text, keep)
        raise
    _commit(text, manifest, old, fsync)


def append(index: Any, data: Any, *, keys: Any, n_shards: int | None, shard_size: int | None,
           dataset: str | None, num_threads: int, progress: bool | None, fsync: bool = True) -> None:
    """Add rows as new shards of ``index`` (see :meth:`ShardedIndex.append`)."""
    fsync = check_flag("fsync", fsync)
    with writing(index.target):
        _append(index, data, keys, n_shards, shard_size, dataset, num_threads, progress, fsync)


def _append(index: Any, data: Any, keys: Any, n_shards: int | None, shard_size: int | None,
            dataset: str | None, num_threads: int, progress: bool | None, fsync: bool) -> None:
    index.refresh()
    old = index.manifest
    num_threads = check_count("num_threads", num_threads, 1, 1024)
    _check_progress(progress)
    n, dim, source = resolve_source(data, dataset)
    if dim != old.dim:
        raise DimensionMismatchError(f"data has dim {dim}, the index has dim {old.dim}")
    if n == 0:
        return
    ranges = plan_rows(n, n_shards, shard_size)
    first = old.next_key
    keys = _keys_for(keys, n, first)
    tasks, _ = build_tasks(index.target, n, source, keys, first, ranges, old.n_shards, old.metric, old.dtype,
                            old.config, num_threads, fsync)
    try:
        entries = run_tasks(tasks, progress)
        tops = [s.key_max for s in old.shards if s.key_max is not None]
        bounds = _checked_order(entries, max(tops) if tops else None)
        manifest = old.with_shards(list(old.shards) + entries, list(old.bounds) + bounds)
    except BaseException:
        _discard(index.target, {s.name for s in old.shards})
        raise
    _commit(index.target, manifest, old, fsync)
    index.manifest = manifest


def mutate(index: Any, op: str, keys: Any, vectors: Any, num_threads: int, fsync: bool = True) -> None:
    """Delete or upsert ``keys`` in the shards owning them; one manifest swap for all."""
    fsync = check_flag("fsync", fsync)
    with writing(index.target):
        _mutate(index, op, keys, vectors, num_threads, fsync)


def _mutate(index: Any, op: str, keys: Any, vectors: Any, num_threads: int, fsync: bool) -> None:
    import dask

    index.refresh()
    old = index.manifest
    num_threads = check_count("num_threads", num_threads, 1, 1024)
    k = _key_array(keys)
    if k.ndim == 0:
        k = k[None]
    if k.ndim != 1 or (k.shape[0] and k.dtype.kind not in "iu"):
        raise InvalidParameterError("keys must be ints (a sharded index holds int64 keys)")
    k = _int64_keys(k)  # before any shard task
    uniq, counts = np.unique(k, return_counts=True)
    if uniq.shape[0] != k.shape[0]:  # a bad batch, as for Hnsw.delete_batch and Index.set: not a key in the index
        raise InvalidParameterError(f"key {int(uniq[counts > 1][0])} appears twice in the batch")
    v = None
    if op == "set":
        v = float32_array(refuse_masked(vectors, "vectors"))  # refuses text, complex and ragged rows, as Index.set does
        if v.ndim == 1 and k.shape[0] == 1:
            v = v[None]
        if v.shape != (k.shape[0], old.dim):
            raise DimensionMismatchError(f"expected vectors of shape ({k.shape[0]}, {old.dim}), got {v.shape}")
        if not np.isfinite(v).all():
            raise InvalidVectorError("vectors contain NaN or inf")
    if k.shape[0] == 0:
        return
    owners = old.owner_of(k)
    shards = list(old.shards)
    tasks, positions = [], []
    for p in np.unique(owners).tolist():
        sel = owners == p
        e = old.shards[p]
        dst = shard_url(index.target, new_shard_name(p))
        args = (k[sel], None, None) if op == "delete" else (None, k[sel], v[sel])
        tasks.append(dask.delayed(mutate_shard, pure=True)(
            shard_url(index.target, e.name), dst, old.metric, e, old.config, old.dtype, *args, num_threads, fsync,
            dask_key_name=f"hnsw-{op}-shard-{dst.rsplit('/', 1)[-1]}"))
        positions.append(p)
    try:
        for p, e in zip(positions, run_tasks(tasks, None)):
            shards[p] = e
        manifest = old.with_shards(shards, list(old.bounds))
    except BaseException:
        _discard(index.target, {s.name for s in old.shards})
        raise
    _commit(index.target, manifest, old, fsync)
    index.manifest = manifest
