"""Filters: turn a user's filter into an allow-mask over NodeIds, and choose how to search.

A filter is evaluated once per search call, in Python; the graph walk then reads the mask
(allowed nodes enter the results, every node still routes). When few items are allowed,
the walk would visit most of the graph to find them, so the search is answered by exact
search over the allowed items instead (:func:`plan_search`).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import numpy as np

from .errors import InvalidParameterError
from .keymap import normalize_key

__all__ = ["filter_to_mask", "plan_search", "SearchPlan", "NO_MASK", "FILTER_EXACT_MIN", "FILTER_EXACT_FRACTION"]

#: An empty mask: every node is allowed.
NO_MASK = np.empty(0, np.uint8)
#: A filtered search whose allowed live items number at most
#: ``max(FILTER_EXACT_MIN, FILTER_EXACT_FRACTION * live)`` is answered exactly.
FILTER_EXACT_MIN = 1024
FILTER_EXACT_FRACTION = 0.01


def filter_to_mask(flt: Any, keymap: Any, node_count: int, capacity: int, tombstones: np.ndarray) -> np.ndarray:
    """Return uint8[capacity], 1 where the node may be returned.

    ``flt`` is a boolean array over NodeIds (length ``node_count`` or ``capacity``), a
    collection of keys (unknown keys are ignored), or a predicate called once per live key.
    """
    mask = np.zeros(capacity, np.uint8)
    if isinstance(flt, np.ndarray) and flt.dtype == np.bool_:
        if flt.ndim != 1 or not node_count <= flt.shape[0] <= capacity:
            raise InvalidParameterError(
                f"a boolean filter must be 1-D over NodeIds with length between {node_count} "
                f"and {capacity}, got shape {flt.shape}"
            )
        mask[: flt.shape[0]] = flt
        return mask
    if callable(flt):
        pred: Callable[[Any], Any] = flt
        live = np.flatnonzero(tombstones[:node_count] == 0)
        keys = keymap.keys_for(live)
        keep = np.fromiter((bool(pred(k)) for k in keys.tolist()), dtype=bool, count=live.shape[0])
        mask[live[keep]] = 1
        return mask
    if isinstance(flt, (str, bytes)) or not hasattr(flt, "__iter__"):
        raise InvalidParameterError(
            "filter must be a boolean NodeId mask, a collection of keys or a predicate on keys, "
            f"got {type(flt).__name__}"
        )
    if isinstance(flt, np.ndarray):
        flt = flt.tolist()
    ids = keymap.get_many(normalize_key(k) for k in flt)
    ids = ids[ids >= 0]
    mask[ids] = 1
    return mask


class SearchPlan(NamedTuple):
    """How one batch search runs: a graph walk over ``mask`` or exact search over ``candidates``."""

    mask: np.ndarray  # uint8 allow-mask over NodeIds, NO_MASK for all
    candidates: np.ndarray | None  # int32 NodeIds for exact search, None for the graph walk


def plan_search(flt: Any, exact: bool, keymap: Any, graph: Any) -> SearchPlan:
    """Choose the graph walk or exact search for a filter (or none) and ``exact``."""
    count = graph.node_count
    tomb = graph.arrays.tombstones
    if flt is not None:
        mask = filter_to_mask(flt, keymap, count, graph.capacity, tomb)
        allowed = np.flatnonzero(mask[:count] & (tomb[:count] == 0))
        limit = max(FILTER_EXACT_MIN, FILTER_EXACT_FRACTION * (count - graph.deleted_count))
        if exact or allowed.shape[0] <= limit:
            return SearchPlan(mask, allowed.astype(np.int32))
        return SearchPlan(mask, None)
    if exact:
        return SearchPlan(NO_MASK, np.flatnonzero(tomb[:count] == 0).astype(np.int32))
    return SearchPlan(NO_MASK, None)
