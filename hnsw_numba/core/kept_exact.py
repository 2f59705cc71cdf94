"""A kept Filter's exact single-query call, bound once.

A query through a Filter the caller keeps, which the planner answers exactly, reads the
Filter's block with the scan or its int8 sketch: a few microseconds of kernel for a thin
filter, where the general path's checks (flags, the plan's lookup, the binding, the block's
and the sketch's currency) cost as much again (20 allowed rows of 384 dimensions: 6.1 µs a
call against 2.4 µs for the kernel; docs/design.md, "A kept Filter's exact call"). So the
general path records on the Filter what it ran (:class:`KeptExact`: the kernel's compiled entry
point and arguments, the store with its rows and version, the compiled filter, the graph's and
the key map's arrays, k, ef and the plan), and a later call with the same store, k, ef and plan
checks those by identity and makes the one compiled call.

Anything else returns None and the caller takes the general path, which handles it: another
store, k, ef or plan, a query that is not a float32 vector, a filter compiled again (the index
grew, its keys were renamed) or priced again (items deleted or resurrected since), new arrays
in the store or the index, a store written since (its ``version``), a query the kernel
rejects, a row rewritten in place or a compaction meanwhile.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .config import MAX_EF
from .filters import compiled_holds
from .hits import Hits
from .single import NO_KEYS, with_keys
from .store_base import same_rows

__all__ = ["KeptExact", "remember", "search_kept", "kept_current", "kept_hits", "NO_DOTS", "NO_SQ"]

_F32 = np.dtype(np.float32)
#: The scan's arguments without BLAS dot products (the exact call's, kept or not)
NO_DOTS = np.empty(0, np.float32)
NO_SQ = np.empty(0, np.float64)
_new_hits = object.__new__


class KeptExact(NamedTuple):
    """What a kept Filter's exact single query ran on (:func:`remember`), valid while all of it is current."""

    store: Any
    rows: tuple  # the store's rows() when it ran
    version: int  # the store's version the block or the sketch was made from
    compiled: Any  # the CompiledFilter
    graph: Any  # the GraphArrays (the compiled filter's too)
    key_array: np.ndarray  # the key map's node_keys
    k: int
    ef: int
    plan: str  # the plan= asked: "auto" or "exact"
    chosen: Any  # the SearchPlan it reports
    entry: Any  # exact_one_kernel's (codes None) or sketch_one_kernel's compiled entry point
    block: tuple  # the block, or the sketch's rows
    code: int  # the metric's
    dim: int
    prep: int  # what the kernel does to a raw query (normalise, check)
    ids: np.ndarray
    tomb: np.ndarray
    node_keys: np.ndarray  # NO_KEYS: str keys, looked up after the call
    codes: Any  # the sketch's (None: the scan)
    terms: Any
    gather: bool  # a sketch of the store's rows (WideSketch)


def remember(f: Any, store: Any, rows: tuple, version: int, c: Any, graph: Any, key_array: np.ndarray, k: int, chosen: Any, entry: Any,
             block: tuple, code: int, dim: int, prep: int, node_keys: np.ndarray, sketch: Any = None, gather: bool = False) -> None:
    """Record on Filter ``f`` the exact call that just answered one query with ``k`` (the scan
    of ``block``, or with ``sketch`` its codes and terms), for :func:`search_kept`.

    ``chosen`` is an exact plan, the planner's ("auto") or forced (``plan="exact"``); the call
    is recorded only when the filter ``c`` was compiled for the ``graph`` it read tombstones from."""
    if c.graph is not graph:
        return
    codes, terms = (None, None) if sketch is None else (sketch.codes, sketch.terms)
    f.kept = KeptExact(store, rows, version, c, graph, key_array, k, chosen.ef, "exact" if chosen.forced else "auto", chosen, entry, block, code, dim, prep,
                       c.ids, graph.tombstones, node_keys, codes, terms, gather)


def search_kept(state: Any, f: Any, store: Any, query: Any, k: Any, ef: Any, plan: str) -> tuple[Hits, Any] | None:
    """``(hits, SearchPlan)``: the answer to ``search(store, query, k, filter=f, ef=ef,
    plan=plan)`` by the call kept on ``f``, or None where the general path has to answer (see
    the module's docstring)."""
    kept = f.kept
    if kept is None or type(query) is not np.ndarray or query.dtype is not _F32 or query.ndim != 1:
        return None
    store0, rows0, version, c0, graph, key_array, k0, ef0, plan0, chosen, entry, block, code, dim, prep, ids, tomb, node_keys, codes, terms, gather = kept
    if ef is None:
        ef = state.config.ef_search
    if store is not store0 or type(k) is not int or k != k0 or type(ef) is not int or not 0 < ef <= MAX_EF or max(ef, k) != ef0 or plan != plan0:
        return None
    keys = state.keys  # the seqlocks as keys_settled and the general path read them: before the checks and the rows
    r0 = keys.renames
    epoch = state.epoch
    rw = state.row_writes
    s0 = rw.count
    if not kept_current(state, f, store, (k, ef0, plan), chosen, c0, graph, key_array, version, rows0):
        return None
    # the kernels' fences order the count before the rows and the rows before the count below
    if codes is None:
        status, found = entry(block, code, query, dim, prep, ids, tomb, NO_DOTS, NO_SQ, 0.0, k, node_keys)
    else:
        status, found = entry(block, code, query, dim, prep, ids, tomb, codes, terms, k, node_keys, 0, ids.shape[0], gather)
    if status or rw.count != s0 or s0 & 1:
        return None
    hits = kept_hits(state, found, node_keys, epoch, keys, r0)
    return None if hits is None else (hits, chosen)


def kept_current(state: Any, f: Any, store: Any, key: tuple, chosen: Any, c: Any, graph: Any, key_array: np.ndarray, version: Any, rows: tuple) -> bool:
    """Whether a call kept on Filter ``f`` still holds: the filter compiled as ``c`` and priced as
    ``chosen`` for ``key`` = ``(k, ef, plan)``, the index's graph and key map arrays, the store's
    ``version`` and rows (read in this order, after the caller's seqlocks)."""
    # Filter.current()'s tests without its compiling or counting again (the general path does that)
    if (f.compiled is not c or not compiled_holds(c, state) or f.seen_tombs != state.tomb_writes or f.plans.get(key) is not chosen
            or graph is not state.graph.arrays or key_array is not state.keys.node_keys):
        return False
    if getattr(store, "version", None) != version:
        return False
    now = store.rows()
    return now is rows or same_rows(now, rows)


def kept_hits(state: Any, found: list, node_keys: np.ndarray, epoch: int, keys: Any, renames: int) -> Hits | None:
    """The Hits of a kept call's ``found`` (str keys looked up: ``node_keys`` is ``NO_KEYS``),
    or None where a compaction overlapped the call since ``epoch``, or a rename of ``keys``
    since they counted ``renames`` (as :func:`~.renamed.keys_settled`: the general path answers)."""
    if node_keys is NO_KEYS:  # str keys: the kernel returned NodeIds in their place
        try:
            found = with_keys(found, state)
        except IndexError:  # a compaction and a resize down since the kernel
            return None
    if epoch & 1 or state.epoch != epoch or renames & 1 or keys.renames != renames or state.keys is not keys:
        return None
    hits = _new_hits(Hits)
    hits.raw = found
    return hits
