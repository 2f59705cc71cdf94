"""A writable in-memory copy of any index and its store (e.g. a read-only mapped hnswlib file)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ..kernels.layout import COUNT_MASK, H_DELETED, H_ENTRY, H_MAX_LEVEL, H_NODES, H_UPPER_USED, F32Rows, exact_rows
from .config import MAX_NODES, check_int
from .errors import CapacityError, InvalidParameterError
from .graph import Graph
from .keymap import KeyMap
from .limits import capacity_for, check_allocation
from .store import UNIT_TOLERANCE, InMemoryVectorStore

__all__ = ["materialize"]


def materialize(index: Any, store: Any, *, max_nodes: int | None = None) -> tuple[Any, InMemoryVectorStore]:
    """A writable in-memory copy ``(index, store)`` of a (read-only) index and its store.

    Parameters
    ----------
    index : Hnsw
    store : VectorStore
        E.g. the result of :func:`~hnsw_numba.io.hnswlib.load_hnswlib`; the copy's
        capacity defaults to the store's ``source_capacity`` when it has one.
    max_nodes : int, optional
        Capacity of the copy; default: hnswlib's ``max_elements_`` for a file, up to
        :func:`~hnsw_numba.core.limits.capacity_for` of its node count (the node count if
        that much memory is not available), else the index's.

    Notes
    -----
    Link lists are cleaned on the way: the delete mark leaves the count word, stale ids
    past each count are zeroed and the upper-level blocks are packed. A cosine index's rows
    that are unit only to a coarser type's rounding (a file written from bfloat16 or Qi8
    rows) are normalised in float32, so the copy saves; the others are copied bit for bit.
    A file's declared capacity beyond the copy's stays on its store as ``source_capacity``,
    which :func:`~hnsw_numba.io.hnswlib_write.save_hnswlib` writes back as ``max_elements``.
    """
    rows = exact_rows(index.check_store(store))
    if not isinstance(rows, F32Rows):
        raise InvalidParameterError(f"materialize supports float32 stores, got {type(rows).__name__}")
    data = rows.data[:, : index.dim]  # (an hnswlib store's kernel rows are wider, see above)
    n = index.node_count
    m, a = index.config.m, index.graph_arrays

    def nbytes(cap: int) -> int:
        return Graph.bytes_for(cap, m) + used * 4 + cap * index.dim * 4

    with index.lock.shared():
        lv = a.levels[:n].astype(np.int64)
        nodes = np.flatnonzero(lv > 0)
        blocks = lv[nodes] * (m + 1)
        used = int(blocks.sum())
        declared = getattr(store, "source_capacity", None)
        if max_nodes is None:  # e.g. an hnswlib file's max_elements: not beyond capacity_for
            max_nodes = min(max(capacity_for(declared, n) if isinstance(declared, int) else index.max_nodes, n, 1), MAX_NODES)
            try:  # hnswlib's capacity is only spare room: not worth failing for
                check_allocation(nbytes(max_nodes), "")
            except CapacityError:
                max_nodes = max(n, 1)
        check_int("max_nodes", max_nodes, max(n, 1), MAX_NODES)
        check_allocation(nbytes(max_nodes), f"a copy of {max_nodes:,} nodes")
        g = Graph.empty(max_nodes, m)
        if used > g.arrays.upper_links.shape[0]:
            g.grow_upper(used)
        b = g.arrays
        b.levels[:n] = a.levels[:n]
        b.tombstones[:n] = a.tombstones[:n]
        links0 = b.links0[:n]
        links0[:] = a.links0[:n]
        links0[:, 0] &= COUNT_MASK
        links0[:, 1:][np.arange(1, 2 * m + 1)[None, :] > links0[:, :1]] = 0
        new_start = np.cumsum(blocks) - blocks
        b.upper_start[nodes] = new_start
        src = np.repeat(a.upper_start[nodes] - new_start, blocks) + np.arange(used)
        up = b.upper_links[:used].reshape(-1, m + 1)
        up.reshape(-1)[:] = a.upper_links[src]
        up[:, 0] &= COUNT_MASK
        up[:, 1:][np.arange(1, m + 1)[None, :] > up[:, :1]] = 0
        b.header[H_ENTRY] = a.header[H_ENTRY]
        b.header[H_MAX_LEVEL] = a.header[H_MAX_LEVEL]
        b.header[H_NODES] = n
        b.header[H_DELETED] = int(np.count_nonzero(a.tombstones[:n]))
        b.header[H_UPPER_USED] = used
        keymap = KeyMap.from_node_keys(np.asarray(index.key_map.node_keys[:n]), n, g.capacity)
        keymap.renamed = set(getattr(index.key_map, "renamed", ()))  # undelete refuses them in the copy too
        new_store = InMemoryVectorStore(index.dim, max_nodes)
        new_store.write(np.arange(n, dtype=np.int32), data[:n])
        if index.metric.normalize:  # rows widened from bfloat16 or Qi8 keep their rounding (norm 0.998): unit in float32's
            norms = np.sqrt(np.einsum("ij,ij->i", data[:n], data[:n], dtype=np.float64))
            off = np.flatnonzero((norms > 0) & (np.abs(norms - 1) > UNIT_TOLERANCE["float32"]))  # the others stay bit for bit
            new_store.write(off.astype(np.int32), (data[off] / norms[off, None]).astype(np.float32))
    config = dataclasses.replace(index.config, max_nodes=max_nodes)
    copy = type(index).from_parts(index.metric, config, b, keymap)
    copy.state.dropped_ceiling = index.state.dropped_ceiling
    if isinstance(declared, int) and declared > max_nodes:
        new_store.source_capacity = declared  # what save_hnswlib writes back as max_elements (the room grows on demand)
    return copy, new_store
