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

from ..kernels.layout import H_LOCK, H_UPPER_USED
from .config import HnswConfig
from .errors import ReadOnlyIndexError
from .graph import Graph
from .keymap import KeyMap
from .metrics import metric_from_name
from .state import IndexState

__all__ = ["snapshot", "snapshot_with_store", "restore", "PICKLE_VERSION"]

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
        rows = None if store is None else _owned(store.__getstate__())
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


def restore(data: dict[str, Any]) -> IndexState:
    """A new :class:`IndexState` from what :func:`snapshot` returned."""
    if data.get("version") != PICKLE_VERSION:
        raise ValueError(f"cannot unpickle an index of pickle version {data.get('version')!r} (expected {PICKLE_VERSION})")
    config = HnswConfig.from_dict(data["config"])
    g = Graph.empty(config.max_nodes, config.m)
    upper = np.asarray(data["upper_links"])
    if upper.shape[0] > g.arrays.upper_links.shape[0]:
        g.grow_upper(upper.shape[0])
    a = g.arrays
    n = int(np.asarray(data["levels"]).shape[0])
    for name in _NODE_ARRAYS:
        getattr(a, name)[:n] = data[name]
    a.upper_links[: upper.shape[0]] = upper
    a.header[:] = data["header"]
    keys = KeyMap.from_node_keys(np.asarray(data["keys"]), n, g.capacity)
    state = IndexState.from_arrays(metric_from_name(data["metric"]), config, a, keys)
    state.rng.bit_generator.state = data["rng"]
    state.dropped_ceiling = int(data.get("dropped_ceiling", 0))  # absent from older pickles: none recorded
    return state
