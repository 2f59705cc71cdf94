"""A kept Filter's walk single-query call, bound once.

A walk through a Filter the caller keeps pays, on the general path, for the same checks on
every call: the flags, the plan's lookup, the binding, whether the Filter's block and sketch
are current and whether the exact scan would split over the cores (clustered 100,000 x 128,
half the items allowed, k = 10: 2.0-3.1 us a call at ef 10 and 64, 4-5 % of the query at
ef 64). So the general path records on the Filter the walk it ran (:class:`KeptWalk`: the
kernel's compiled entry point and arguments, the store with its rows and version, the
compiled filter, the graph's and the key map's arrays, k, ef and the plan), and a later call
with the same store, k, ef and plan checks those by identity and makes the one compiled call.

The kept call passes no block and asks the kernel to return a query its probe sends to exact
search unanswered (``PLAN_DEFER``): the general path answers that one, from the Filter's
block, its sketch or a scan split over the cores, as it chooses. A query that leaves the
planned walk for another walk is answered by it, as on the general path. Anything else
returns None and the caller takes the general path: another store, k, ef or plan, a query
that is not a float32 vector, a filter compiled again or priced again, new arrays in the store
or the index, a store written since (its ``version``), a query the kernel rejects, a row
rewritten in place or a compaction meanwhile.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ..kernels.filtered import PLAN_DEFER, USED_EXACT
from .config import MAX_EF
from .hits import Hits
from .kept_exact import kept_current, kept_hits

__all__ = ["KeptWalk", "remember_walk", "search_kept_walk"]

_F32 = np.dtype(np.float32)


class KeptWalk(NamedTuple):
    """What a kept Filter's walk of one query ran on (:func:`remember_walk`), valid while all of it is current."""

    store: Any
    rows: tuple  # the store's walk rows when it ran
    version: Any  # the store's version then (None: it has none)
    compiled: Any  # the CompiledFilter
    graph: Any  # its GraphArrays (the index's then)
    key_array: np.ndarray  # the key map's node_keys
    key: tuple  # (k, ef, plan) as the Filter's plans hold it
    chosen: Any  # the SearchPlan
    entry: Any  # knn_filter_one_kernel's compiled entry point
    block: tuple  # an empty block of the vectors' class
    code: int  # the metric's
    dim: int
    prep: int  # what the kernel does to a raw query (normalise, check)
    node_keys: np.ndarray  # NO_KEYS: str keys, looked up after the call
    plan: int  # the kernels' plan argument, with PLAN_DEFER


def remember_walk(f: Any, store: Any, rows: tuple, c: Any, key_array: np.ndarray, key: tuple, chosen: Any, entry: Any, block: tuple, code: int,
                  dim: int, prep: int, node_keys: np.ndarray) -> None:
    """Record on Filter ``f`` the walk that just answered one query (``chosen``, planned for
    ``key`` = ``(k, ef, plan)``) over the store's walk ``rows``, for :func:`search_kept_walk`."""
    f.kept = KeptWalk(store, rows, getattr(store, "version", None), c, c.graph, key_array, key, chosen, entry, block, code, dim, prep, node_keys,
                      chosen.code | PLAN_DEFER)


def search_kept_walk(state: Any, f: Any, store: Any, query: Any, k: Any, ef: Any, plan: str) -> tuple[Hits, Any] | None:
    """``(hits, SearchPlan)``: the answer to ``search(store, query, k, filter=f, ef=ef,
    plan=plan)`` by the walk kept on ``f``, or None where the general path has to answer (see
    the module's docstring)."""
    kept = f.kept
    if type(query) is not np.ndarray or query.dtype is not _F32 or query.ndim != 1:
        return None
    store0, rows0, version, c0, graph, key_array, key, chosen, entry, block, code, dim, prep, node_keys, plan_code = kept
    if ef is None:
        ef = state.config.ef_search
    # the key as the general path makes it (ef raised to k): k in range, as the key's is
    if store is not store0 or type(k) is not int or type(ef) is not int or not 0 < ef <= MAX_EF or (k, max(ef, k), plan) != key:
        return None
    keys = state.keys  # the seqlocks as keys_settled and the general path read them: before the checks and the rows
    r0 = keys.renames
    epoch = state.epoch
    rw = state.row_writes
    s0 = rw.count
    if not kept_current(state, f, store, key, chosen, c0, graph, key_array, version, rows0):
        return None
    visited, sf, si = state.visited.single()
    # the kernels' fences order the count before the rows and the rows before the count below
    status, found, used, local = entry(graph, rows0, block, code, query, dim, k, chosen.ef, visited, sf, si, node_keys, prep, c0.mask, c0.ids, c0.seeds,
                                       plan_code)
    if status or used == USED_EXACT or rw.count != s0 or s0 & 1:
        return None
    hits = kept_hits(state, found, node_keys, epoch, keys, r0)
    return None if hits is None else (hits, chosen.left(1, 1, local, used) if used else chosen)
