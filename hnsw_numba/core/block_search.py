"""Exact search of one query over a kept Filter's block: the scan, BLAS dot products with a
re-scored shortlist (:mod:`~hnsw_numba.kernels.shortlist`), or the block's int8 sketch with
per-row error bounds (:mod:`~hnsw_numba.kernels.sketch`); for a filter too large for a block,
an int8 sketch of its rows re-scored from the store's rows. All return the scan's top-k and
distances (the block's scan; the gathering scan's L2 sums may differ from it in the last bit,
docs/design.md "A Filter's copy of its allowed rows"); :mod:`.filtered` picks one by the number
of allowed rows. From ``SKETCH_SPLIT_ROWS``
rows a sketch is read in one part per core (each part's k best merged)."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ..kernels.layout import PREP_NONE
from ..kernels.search import ONE_OK
from ..kernels.shortlist import exact_one_kernel, prepared_query
from ..kernels.sketch import sketch_one_kernel
from .errors import CapacityError
from .filters import Filter
from .parallel import resolve_threads, run_parallel
from .hits import Hits
from .kept_exact import NO_DOTS, NO_SQ, remember
from .single import NO_KEYS, check_query_status, with_keys
from .sketch import Sketch, WideSketch, build_sketch, build_wide_sketch, sketch_bytes
from .store_base import same_rows

__all__ = ["exact_one", "sketch_for", "kept_sketch", "sketch_batch", "NO_KEYS", "entry_point", "found_hits", "SKETCH_SPLIT_ROWS", "SKETCH_BYTES", "SKETCH_AFTER"]

#: At most this many bytes of codes and terms in a sketch made without a block (a Filter
#: whose float32 block would exceed ``BLOCK_BYTES``): 88 MB for 500,000 rows of 128.
SKETCH_BYTES = 256 << 20
#: From this many rows a sketch is read in one part per core (a part handed to another thread
#: costs 17-40 µs: docs/design.md, "The exact plan through an int8 sketch").
SKETCH_SPLIT_ROWS = 100_000
#: A sketch without a block is made by the exact search that meets the same store version and
#: compilation this many times (making it costs ~25-40 gathering scans of its rows: a store
#: written between every few queries keeps the scan, at most about twice its cost overall).
SKETCH_AFTER = 32


def sketch_for(f: Filter, store: Any, rows: tuple, c: Any, wide: bool = False, uses: int = 1) -> Sketch | WideSketch | None:
    """:meth:`Filter.block_for`'s block with its int8 sketch (:func:`~.sketch.build_sketch`);
    without a block (and with ``wide``) the sketch of the allowed rows of ``store`` (its
    ``rows``) when the store has a ``version`` and it fits ``SKETCH_BYTES``, from the
    ``SKETCH_AFTER``-th exact search (``uses``: how many this call answers); else None. Kept
    on the Filter and made again with the block (with the store's version and the
    compilation)."""
    block = f.block_for(store, rows, c)
    s = f.sketch
    if block is None:
        if not wide:
            return None
        version = getattr(store, "version", None)
        if type(version) is not int:
            return None
        if (type(s) is WideSketch or type(s) is _Pending) and _current(s, store, rows, c):
            if type(s) is WideSketch:
                return s
            if s.count + uses < SKETCH_AFTER:
                f.sketch = s._replace(count=s.count + uses)
                return None
        elif sketch_bytes(c.ids.shape[0], rows[0].shape[1]) > SKETCH_BYTES:
            return None
        elif SKETCH_AFTER > uses:
            f.sketch = _Pending(rows, (store, version, c), uses)
            return None
        s = f.sketch = build_wide_sketch(rows, c.ids, (store, version, c))  # the version read before the rows
        return s
    if type(s) is not Sketch or s.block is not block:
        s = f.sketch = build_sketch(block)
    return s


def kept_sketch(f: Filter, store: Any, rows: tuple, c: Any, block: tuple) -> Sketch | WideSketch | None:
    """The sketch ``f`` keeps for ``block`` (its block, or an empty one: none), if current."""
    s = f.sketch
    if type(s) is Sketch:
        return s if s.block is block else None
    return s if type(s) is WideSketch and block[0].shape[0] == 0 and _current(s, store, rows, c) else None


class _Pending(NamedTuple):
    """Exact searches that met a store version and compilation without a sketch (``SKETCH_AFTER``)."""

    block: tuple
    key: tuple
    count: int


def _current(s: Any, store: Any, rows: tuple, c: Any) -> bool:
    store0, version, c0 = s.key
    return store0 is store and c0 is c and version == getattr(store, "version", None) and same_rows(s.block, rows)


def exact_one(fs: Any, bound: Any, query: np.ndarray, prep: int, k: int, c: Any, block: tuple, dense: Any, keep: tuple | None = None) -> Hits:
    """Exact search of one query over a Filter's block (``fs``: the FilteredSearch, ``bound``
    its binding): the scan; with ``dense`` (a DenseRows) BLAS dot products and the shortlist
    re-scored with the scan's kernel; with a :class:`~.sketch.Sketch` of ``block`` its estimates
    and the rows their bounds leave open re-scored. ``keep``: ``(Filter, store, SearchPlan)``
    whose call (the scan, or a sketch read in one part) is recorded on the Filter
    (:func:`~.kept_exact.remember`)."""
    if type(dense) is Sketch or type(dense) is WideSketch:
        return _sketch_one(fs, bound, query, prep, k, c, dense, keep)
    state = fs.state
    if dense is None:
        dots, sq, xmax = NO_DOTS, NO_SQ, 0.0
    else:
        prepare = bound.exact.get(prepared_query)
        if prepare is None:
            prepare = bound.exact[prepared_query] = entry_point(prepared_query, (np.zeros((bound.dim, 2), np.float32)[:, 0], bound.dim, PREP_NONE))
        status, q = prepare(query, bound.dim, prep)
        if status == ONE_OK:
            query, prep = q, PREP_NONE
            dots, sq, xmax = dense.x @ q, dense.sq, dense.xmax
        else:  # the kernel reports it
            dots, sq, xmax = NO_DOTS, NO_SQ, 0.0
    entry = bound.exact.get(type(block))
    if entry is None:
        strided = np.zeros((bound.dim, 2), np.float32)[:, 0]  # the signature serves any query layout
        entry = bound.exact[type(block)] = entry_point(exact_one_kernel, (block, bound.code, strided, bound.dim, PREP_NONE, c.ids, bound.graph.tombstones,
                                                                          NO_DOTS, NO_SQ, 0.0, k, bound.node_keys))
    status, found = entry(block, bound.code, query, bound.dim, prep, c.ids, bound.graph.tombstones, dots, sq, xmax, k, bound.node_keys)
    node_keys = bound.node_keys
    if keep is not None and dense is None and not status:
        _keep(keep, bound, c, k, entry, block, None)
    if status:
        check_query_status(status, state, query)
        with state.lock.shared():  # the key map grew since the binding: bind again and retry once
            b = fs.bind(bound.store)
            status, found = exact_one_kernel(block, b.code, query, b.dim, prep, c.ids, b.graph.tombstones, dots, sq, xmax, k, b.node_keys)
            node_keys = b.node_keys
        if status:
            raise CapacityError(f"the index has {state.node_count} nodes but its key map covers fewer")
    return found_hits(found, node_keys, state)


def _sketch_one(fs: Any, bound: Any, query: np.ndarray, prep: int, k: int, c: Any, sketch: Sketch | WideSketch, keep: tuple | None) -> Hits:
    """:func:`exact_one` through ``sketch`` (:func:`~hnsw_numba.kernels.sketch.sketch_one_kernel`),
    from ``SKETCH_SPLIT_ROWS`` rows in one part per core, the parts' k best merged."""
    state = fs.state
    rows, gather = sketch.block, type(sketch) is WideSketch
    key = (type(rows), gather)
    entry = bound.exact.get(key)
    ids, tomb, codes, terms, node_keys = c.ids, bound.graph.tombstones, sketch.codes, sketch.terms, bound.node_keys
    n = ids.shape[0]
    if entry is None:
        entry = bound.exact[key] = _sketch_entry(sketch, bound.code, bound.dim, ids, tomb, k, node_keys)
    parts = resolve_threads(None, n, SKETCH_SPLIT_ROWS // 2) if n >= SKETCH_SPLIT_ROWS else 1
    if parts == 1:
        status, found = entry(rows, bound.code, query, bound.dim, prep, ids, tomb, codes, terms, k, node_keys, 0, n, gather)
        if keep is not None and not status:
            _keep(keep, bound, c, k, entry, rows, sketch)
    else:
        status, found = _split(entry, parts, (rows, bound.code, query, bound.dim, prep, ids, tomb, codes, terms, k, node_keys), n, k, gather)
    if status:
        check_query_status(status, state, query)
        with state.lock.shared():  # the key map grew since the binding: bind again and retry once
            b = fs.bind(bound.store)
            status, found = sketch_one_kernel(rows, b.code, query, b.dim, prep, ids, b.graph.tombstones, codes, terms, k, b.node_keys, 0, n, gather)
            node_keys = b.node_keys
        if status:
            raise CapacityError(f"the index has {state.node_count} nodes but its key map covers fewer")
    return found_hits(found, node_keys, state)


def sketch_batch(sketch: Sketch | WideSketch, code: int, queries: np.ndarray, todo: np.ndarray, k: int, c: Any, out_ids: np.ndarray,
                 out_d: np.ndarray, threads: int) -> np.ndarray:
    """Exact answers of prepared ``queries[todo]`` through ``sketch`` (a kept sketch of the
    filter ``c``'s rows), one query per thread at a time, into those rows of ``out_ids`` /
    ``out_d`` (NodeIds, padded with -1 / inf). Returns the queries left unanswered (a status
    other than ``ONE_OK``: the caller scans them)."""
    rows, gather = sketch.block, type(sketch) is WideSketch
    ids, tomb, n = c.ids, c.graph.tombstones, c.ids.shape[0]
    dim = queries.shape[1]
    entry = _sketch_entry(sketch, code, dim, ids, tomb, k, NO_KEYS)
    failed: list = []
    taken = iter(todo.tolist())  # next() on a list iterator is atomic under the GIL

    def work() -> None:
        for i in taken:
            status, found = entry(rows, code, queries[i], dim, PREP_NONE, ids, tomb, sketch.codes, sketch.terms, k, NO_KEYS, 0, n, gather)
            if status:
                failed.append(i)
                continue
            m = len(found)
            out_ids[i, m:] = -1
            out_d[i, m:] = np.inf
            for j, (nid, dist, _) in enumerate(found):  # NO_KEYS: the key slot holds the NodeId
                out_ids[i, j] = nid
                out_d[i, j] = dist

    run_parallel(work, max(1, min(threads, todo.shape[0])))
    return np.array(sorted(failed), np.int64)


def _sketch_entry(sketch: Sketch | WideSketch, code: int, dim: int, ids: np.ndarray, tomb: np.ndarray, k: int, node_keys: np.ndarray) -> Any:
    """The compiled entry point of ``sketch_one_kernel`` for ``sketch`` and a query of any layout."""
    strided = np.zeros((dim, 2), np.float32)[:, 0]  # the signature serves any query layout
    return entry_point(sketch_one_kernel, (sketch.block, code, strided, dim, PREP_NONE, ids, tomb, sketch.codes, sketch.terms, k, node_keys, 0, 0,
                                           type(sketch) is WideSketch))


def _split(entry: Any, parts: int, args: tuple, n: int, k: int, gather: bool) -> tuple[int, list]:
    """``entry(*args, lo, hi, gather)`` over ``parts`` slices of the ``n`` rows side by side:
    the first failing status, or ``ONE_OK`` and the k best of the parts' k best (each part's
    distances are the scan's, so the k best of them are the whole scan's)."""
    cuts = np.linspace(0, n, parts + 1).astype(np.int64).tolist()
    out: list = [None] * parts
    taken = iter(range(parts))  # next() on a range iterator is atomic under the GIL

    def work() -> None:
        for i in taken:
            out[i] = entry(*args, cuts[i], cuts[i + 1], gather)

    run_parallel(work, parts)
    for status, found in out:
        if status:
            return status, found
    return ONE_OK, sorted((hit for _, found in out for hit in found), key=_distance)[:k]


def _distance(hit: tuple) -> float:
    return hit[1]


def _keep(keep: tuple, bound: Any, c: Any, k: int, entry: Any, rows: tuple, sketch: Sketch | WideSketch | None) -> None:
    """:func:`~.kept_exact.remember` the call of ``entry`` over ``rows`` (a Filter's block, or
    a store-row sketch's rows) with the version of the store they were made from."""
    f, store, chosen = keep
    if type(sketch) is WideSketch:
        if sketch.key[0] is not store:
            return
        version = sketch.key[1]
    else:
        made = f.block  # (store, rows, version, compiled, block)
        if made is None or made[4] is not rows or made[0] is not store:
            return
        version = made[2]
    remember(f, store, bound.rows, version, c, bound.graph, bound.key_array, k, chosen, entry, rows, bound.code, bound.dim, bound.prep, bound.node_keys,
             sketch, type(sketch) is WideSketch)


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
        found = with_keys(found, state)
    hits = object.__new__(Hits)
    hits.raw = found
    return hits
