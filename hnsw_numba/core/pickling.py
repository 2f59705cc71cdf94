"""An index as plain data and back: what ``Hnsw.__getstate__`` / ``__setstate__`` exchange.

An index holds locks, a thread-local visited pool and a compiled-entry binding, none of
which can be pickled. Its state *is* a few arrays, though: the graph's arrays up to the
NodeIds in use, the NodeId -> key array, the configuration, the metric's name, the level
generator's state and ``dropped_ceiling``. :func:`snapshot` copies them under the exclusive lock (a consistent
picture while mutations run elsewhere); :func:`restore` rebuilds a fresh
:class:`~hnsw_numba.core.state.IndexState` of the same capacity with new locks and pools,
so the copy continues exactly as the original would (same levels drawn for the same
inserts). A read-only index (a memory-mapped hnswlib file) refuses: pickle
``index.materialize(store)`` instead.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from ..kernels.layout import H_LOCK, H_UPPER_USED, HEADER_SIZE
from .config import stored_config
from .errors import HnswError, IndexFormatError, ReadOnlyIndexError
from .graph import Graph
from .graph_checks import check_live_rows_written, check_loaded_graph, stored_dropped_ceiling, stored_layout, stored_renamed
from .keymap import KeyMap, stored_key_problem
from .metrics import metric_from_name
from .state import IndexState
from .store_base import ColumnStore

__all__ = ["snapshot", "snapshot_with_store", "restore", "check_restored_pair", "restore_pair", "PICKLE_VERSION"]

#: Version of the pickled form (checked on restore).
PICKLE_VERSION = 1
_NODE_ARRAYS = ("levels", "links0", "upper_start", "tombstones")


def snapshot(state: IndexState) -> dict[str, Any]:
    """The index's state as plain data (copies); takes the exclusive lock while copying."""
    return snapshot_with_store(state, None)[0]


def snapshot_with_store(state: IndexState, store: Any) -> tuple[dict[str, Any], Any]:
    """:func:`snapshot` and a copy of ``store.__getstate__()`` (arrays copied into memory),
    taken under one exclusive lock: both are of one moment, with no write, growth or
    compaction between them (pickled apart, a compaction in between pairs the old NodeIds
    with moved rows). ``store`` None: ``(snapshot, None)``."""
    if state.read_only:
        raise ReadOnlyIndexError("a read-only (memory-mapped) index cannot be pickled; pickle index.materialize(store)")
    with state.lock.exclusive():
        rows = None if store is None else store.__getstate__()
        if not isinstance(store, ColumnStore):  # a ColumnStore's state holds copies already (under its row lock)
            rows = _owned(rows)
        a = state.graph.arrays
        n = state.graph.node_count
        header = a.header.copy()
        header[H_LOCK] = 0
        out: dict[str, Any] = {
            "version": PICKLE_VERSION,
            "metric": state.metric.name,
            "config": state.config.to_dict(),
            "header": header,
            "upper_links": a.upper_links[: int(header[H_UPPER_USED])].copy(),
            "keys": np.array(state.keys.node_keys[:n]),
            "rng": state.rng.bit_generator.state,
            "dropped_ceiling": state.dropped_ceiling,
            "renamed": sorted(state.keys.renamed),
        }
        for name in _NODE_ARRAYS:
            out[name] = getattr(a, name)[:n].copy()
    return out, rows


def _owned(value: Any) -> Any:
    """``value`` with every array copied into memory of its own (a mapped one too)."""
    if isinstance(value, np.ndarray):
        return np.array(value)
    if isinstance(value, dict):
        return {k: _owned(v) for k, v in value.items()}
    return copy.deepcopy(value)


def restore(data: Any) -> IndexState:
    """A new :class:`IndexState` from what :func:`snapshot` returned.

    A pickle carries no checksum, so what it holds is checked as a Zarr load checks a file,
    before any kernel walks it: array dtypes and shapes against the header and
    configuration, the graph (:func:`validate_graph`, then ``check_graph_kernel``) and the
    keys. Anything else raises IndexFormatError (a ValueError) naming it.
    """
    where = "pickled index"
    if not isinstance(data, dict) or data.get("version") != PICKLE_VERSION:
        version = data.get("version") if isinstance(data, dict) else None
        raise IndexFormatError(f"cannot unpickle an index of pickle version {version!r} (expected {PICKLE_VERSION})")
    config = stored_config(data.get("config"), where)
    try:
        metric = metric_from_name(data["metric"])
    except (HnswError, KeyError, TypeError) as exc:
        raise IndexFormatError(f"{where}: invalid metric: {exc}") from None
    header = _array(data, "header", np.int64, (HEADER_SIZE,))
    n, used, specs = stored_layout(header, config.m, config.max_nodes, where)
    arrays = {name: _array(data, name, dtype, shape) for name, dtype, shape in specs}
    keys = np.asarray(data.get("keys"))
    if keys.shape != (n,) or (keys.dtype != np.int64 and not (keys.dtype == object and all(type(k) in (int, str) for k in keys.tolist()))):
        raise IndexFormatError(f"{where}: keys must be {n} ints or strs, got {keys.dtype}{list(keys.shape)}")
    problem = stored_key_problem(keys)
    if problem:
        raise IndexFormatError(f"{where}: keys: {problem}")
    dropped = stored_dropped_ceiling(data.get("dropped_ceiling", 0), where)
    g = Graph.for_load(config.max_nodes, config.m, used)
    a = g.arrays
    for name, arr in arrays.items():
        getattr(a, name)[: arr.shape[0]] = arr
    a.header[:] = header
    a.header[H_LOCK] = 0
    check_loaded_graph(a, n, config.m, used, where)
    state = IndexState.from_arrays(metric, config, a, KeyMap.from_node_keys(keys, n, g.capacity))
    state.keys.renamed = stored_renamed(data.get("renamed"), a.tombstones, n, where)
    try:
        state.rng.bit_generator.state = data["rng"]
    except (KeyError, IndexError, TypeError, ValueError, ArithmeticError) as exc:  # NumPy: OverflowError for ints past uint64 / C long
        raise IndexFormatError(f"{where}: invalid level generator state: {exc}") from None
    state.dropped_ceiling = dropped
    return state


def _array(data: dict[str, Any], name: str, dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
    """``data[name]`` if it is an array of ``dtype`` and ``shape``; IndexFormatError otherwise."""
    arr = data.get(name)
    if not isinstance(arr, np.ndarray) or arr.dtype != np.dtype(dtype) or arr.shape != shape:
        got = f"{arr.dtype}{list(arr.shape)}" if isinstance(arr, np.ndarray) else type(arr).__name__
        raise IndexFormatError(f"pickled index: {name} must be {np.dtype(dtype)}{list(shape)}, got {got}")
    return arr


def check_restored_pair(index: Any, store: Any) -> None:
    """An unpickled index and store belong together: kind, dim and rows (``check_store``),
    every live node's row written and, in a cosine index, unit rows (what a Zarr load of
    both halves checks). IndexFormatError otherwise."""
    where = "pickled index"
    try:
        index.check_store(store)
    except HnswError as exc:
        raise IndexFormatError(f"{where}: the store does not fit the index: {exc}") from None
    n = index.node_count
    check_live_rows_written(index.graph_arrays.tombstones, store.written, n, where)
    bad = store.unsearchable_row(n, unit=index.metric.normalize) if index.metric.normalize else -1
    if bad >= 0:
        raise IndexFormatError(f"{where}: vector {bad} has a norm other than 0 or 1 in a cosine index")


def restore_pair(state: Any) -> tuple[Any, Any]:
    """The ``(Hnsw, store)`` of an ``hn.Index``'s pickled state: ``{"index": arrays, "store":
    (store class, its rows)}`` (or, from a pickle of the objects, the two bound as they are),
    checked as :func:`check_restored_pair` checks them. IndexFormatError for anything else."""
    from .index import Hnsw  # the index module loads this one on first use

    where = "pickled hn.Index"
    if not isinstance(state, dict) or "index" not in state or "store" not in state:
        raise IndexFormatError(f"{where}: expected a dict holding 'index' and 'store'")
    index, store = state["index"], state["store"]
    if isinstance(store, tuple):  # arrays
        if len(store) != 2 or not isinstance(store[0], type) or not issubclass(store[0], ColumnStore):
            raise IndexFormatError(f"{where}: the store must be (a built-in store class, its rows)")
        data, (kind, rows) = index, store
        index, store = Hnsw.__new__(Hnsw), kind.__new__(kind)
        index.__setstate__(data)
        try:
            store.__setstate__(rows)
        except HnswError:
            raise
        except Exception as exc:  # e.g. the abstract ColumnStore itself
            raise IndexFormatError(f"{where}: the store's rows do not restore a {kind.__name__}: {type(exc).__name__}: {exc}") from None
    elif not isinstance(index, Hnsw) or not isinstance(store, ColumnStore):
        raise IndexFormatError(f"{where}: expected an Hnsw and a built-in store, got {type(index).__name__} and {type(store).__name__}")
    check_restored_pair(index, store)
    return index, store
