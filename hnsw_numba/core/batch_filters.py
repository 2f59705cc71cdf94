"""One filter per query of a batch: the forms ``search_batch`` takes, and their checks before any query runs."""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import InvalidParameterError
from .filters import Filter, check_source
from .keymap import describe_key, normalize_key
from .validate import refuse_masked

__all__ = ["per_query_filters", "check_filters"]


def _whole(x: Any) -> bool:
    """Whether ``x`` is a whole filter (not a key): an array, a collection, a predicate, a Filter."""
    return isinstance(x, (Filter, np.ndarray, set, frozenset, list, tuple, range, dict)) or callable(x)


def per_query_filters(flt: Any, n_queries: int) -> list | None:
    """One filter per query, if ``flt`` gives them, else None (one filter for all queries).

    Per-query forms: a 2-D boolean array ``(n_queries, n)`` (row i is query i's mask), or a
    list / tuple of ``n_queries`` filters (masks, key collections, predicates, Filters).
    A list of keys (ints or strs) stays one filter for the whole batch; a list holding filters
    and something neither a filter nor a key (None) raises InvalidParameterError naming its position.
    """
    if isinstance(flt, np.ndarray):
        flt = refuse_masked(flt, "filter", InvalidParameterError)
        if flt.dtype == np.bool_ and flt.ndim == 2:
            if flt.shape[0] != n_queries:
                raise InvalidParameterError(f"a 2-D boolean filter needs one row per query: {n_queries} rows, got {flt.shape[0]}")
            return list(flt)
        return None
    if not isinstance(flt, (list, tuple)) or all(issubclass(t, (int, str, np.integer)) for t in set(map(type, flt))):
        return None  # keys only: one pass over their types in C (a call per key took 33 ms at 100,000 keys)
    whole = [_whole(x) for x in flt]
    if any(whole):
        for i, (x, one) in enumerate(zip(flt, whole)):
            if not one and not isinstance(x, (int, str, np.integer)):  # a key list's error names its keys
                raise InvalidParameterError(f"filter[{i}] is {describe_key(x)[:40]}: one filter per query takes a mask, a collection "
                                            "of keys, a predicate or a Filter at each position")
        if all(whole):
            if len(flt) != n_queries:
                raise InvalidParameterError(f"a sequence of filters needs one per query: {n_queries}, got {len(flt)}")
            return list(flt)
    return None


def check_filters(flts: list, state: Any) -> None:
    """Check every filter of a batch's per-query list as its compilation will, before any query
    runs: a Filter is made current, a mask's shape and a collection's keys are checked; a
    predicate runs in its query's turn (once: it is its own check)."""
    g = state.graph
    for x in flts:
        if isinstance(x, Filter):
            x.current(state)
        elif not callable(x):
            x = refuse_masked(x, "filter", InvalidParameterError)
            src = check_source(x, g.node_count, g.arrays.links0.shape[0])
            if isinstance(x, np.ndarray) and x.dtype.kind in "biu":
                continue
            # other keys' types, as the compilation reads them: a pass over their types in C,
            # and for plain ints only the extremes' size (one call a key was 18 % of a batch
            # of 100 queries with 1,000 keys each)
            types = set(map(type, src))
            if types <= {int}:
                if types:
                    normalize_key(min(src))
                    normalize_key(max(src))
            elif not types <= {str}:
                for key in src:
                    normalize_key(key)
