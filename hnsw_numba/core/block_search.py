"""Exact search of one query over a kept Filter's block: the scan, BLAS dot products with a
re-scored shortlist (:mod:`~hnsw_numba.kernels.shortlist`), or the block's int8 sketch with
per-row error bounds (:mod:`~hnsw_numba.kernels.sketch`). All three return the scan's top-k
and distances; :mod:`.filtered` picks one by the number of allowed rows."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..kernels.layout import PREP_NONE
from ..kernels.search import ONE_OK
from ..kernels.shortlist import exact_one_kernel, prepared_query
from ..kernels.sketch import sketch_one_kernel
from .errors import CapacityError
from .filters import Filter
from .hits import Hits
from .single import check_query_status
from .sketch import Sketch, build_sketch

__all__ = ["exact_one", "sketch_for", "NO_KEYS", "entry_point", "found_hits"]

#: "no int keys": the kernel then returns NodeIds where the keys go
NO_KEYS = np.empty(0, np.int64)
_NO_DOTS = np.empty(0, np.float32)
_NO_SQ = np.empty(0, np.float64)


def sketch_for(f: Filter, store: Any, rows: tuple, c: Any) -> Sketch | None:
    """:meth:`Filter.block_for`'s block with its int8 sketch (:func:`~.sketch.build_sketch`);
    None when there is no block. Kept on the Filter and made again with the block."""
    block = f.block_for(store, rows, c)
    if block is None:
        return None
    s = f.sketch
    if s is None or s.block is not block:
        s = f.sketch = build_sketch(block)
    return s


def exact_one(fs: Any, bound: Any, query: np.ndarray, prep: int, k: int, c: Any, block: tuple, dense: Any) -> Hits:
    """Exact search of one query over a Filter's block (``fs``: the FilteredSearch, ``bound``
    its binding): the scan; with ``dense`` (a DenseRows) BLAS dot products and the shortlist
    re-scored with the scan's kernel; with a :class:`~.sketch.Sketch` of ``block`` its estimates
    and the rows their bounds leave open re-scored."""
    if type(dense) is Sketch:
        return _sketch_one(fs, bound, query, prep, k, c, block, dense)
    state = fs.state
    if dense is None:
        dots, sq, xmax = _NO_DOTS, _NO_SQ, 0.0
    else:
        prepare = bound.exact.get(prepared_query)
        if prepare is None:
            prepare = bound.exact[prepared_query] = entry_point(prepared_query, (np.zeros((bound.dim, 2), np.float32)[:, 0], bound.dim, PREP_NONE))
        status, q = prepare(query, bound.dim, prep)
        if status == ONE_OK:
            query, prep = q, PREP_NONE
            dots, sq, xmax = dense.x @ q, dense.sq, dense.xmax
        else:  # the kernel reports it
            dots, sq, xmax = _NO_DOTS, _NO_SQ, 0.0
    entry = bound.exact.get(type(block))
    if entry is None:
        strided = np.zeros((bound.dim, 2), np.float32)[:, 0]  # the signature serves any query layout
        entry = bound.exact[type(block)] = entry_point(exact_one_kernel, (block, bound.code, strided, bound.dim, PREP_NONE, c.ids, bound.graph.tombstones,
                                                                          _NO_DOTS, _NO_SQ, 0.0, k, bound.node_keys))
    status, found = entry(block, bound.code, query, bound.dim, prep, c.ids, bound.graph.tombstones, dots, sq, xmax, k, bound.node_keys)
    node_keys = bound.node_keys
    if status:
        check_query_status(status, state, query)
        with state.lock.shared():  # the key map grew since the binding: bind again and retry once
            b = fs.bind(bound.store)
            status, found = exact_one_kernel(block, b.code, query, b.dim, prep, c.ids, b.graph.tombstones, dots, sq, xmax, k, b.node_keys)
            node_keys = b.node_keys
        if status:
            raise CapacityError(f"the index has {state.node_count} nodes but its key map covers fewer")
    return found_hits(found, node_keys, state)


def _sketch_one(fs: Any, bound: Any, query: np.ndarray, prep: int, k: int, c: Any, block: tuple, sketch: Sketch) -> Hits:
    """:func:`exact_one` through ``sketch`` (:func:`~hnsw_numba.kernels.sketch.sketch_one_kernel`)."""
    state = fs.state
    key = (type(block), Sketch)
    entry = bound.exact.get(key)
    if entry is None:
        strided = np.zeros((bound.dim, 2), np.float32)[:, 0]  # the signature serves any query layout
        entry = bound.exact[key] = entry_point(sketch_one_kernel, (block, bound.code, strided, bound.dim, PREP_NONE, c.ids, bound.graph.tombstones,
                                                                   sketch.codes, sketch.terms, k, bound.node_keys))
    status, found = entry(block, bound.code, query, bound.dim, prep, c.ids, bound.graph.tombstones, sketch.codes, sketch.terms, k, bound.node_keys)
    node_keys = bound.node_keys
    if status:
        check_query_status(status, state, query)
        with state.lock.shared():  # the key map grew since the binding: bind again and retry once
            b = fs.bind(bound.store)
            status, found = sketch_one_kernel(block, b.code, query, b.dim, prep, c.ids, b.graph.tombstones, sketch.codes, sketch.terms, k, b.node_keys)
            node_keys = b.node_keys
        if status:
            raise CapacityError(f"the index has {state.node_count} nodes but its key map covers fewer")
    return found_hits(found, node_keys, state)


def entry_point(dispatcher: Any, args: tuple) -> Any:
    """The compiled entry point of ``dispatcher`` for ``args`` (compiled by one call with them):
    later calls with arguments of the same types skip the dispatcher's type resolution."""
    dispatcher(*args)
    sig = tuple(dispatcher.typeof_pyval(a) for a in args)
    return dispatcher.overloads[sig].entry_point if sig in dispatcher.overloads else dispatcher


def found_hits(found: list, node_keys: np.ndarray, state: Any) -> Hits:
    """Hits of a single-query kernel's ``[(key, distance, NodeId), ...]`` (str keys: looked up
    here, the kernel returned NodeIds in their place)."""
    if node_keys is NO_KEYS:
        key = state.keys.key
        found = [(key(i), d, i) for _, d, i in found]
    hits = object.__new__(Hits)
    hits.raw = found
    return hits
