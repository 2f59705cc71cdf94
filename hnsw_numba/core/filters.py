"""Turn a user's filter into an allow-mask over NodeIds (evaluated once, in Python)."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .errors import InvalidParameterError

__all__ = ["filter_to_mask"]


def filter_to_mask(flt: Any, keymap, node_count: int, capacity: int, tombstones: np.ndarray) -> np.ndarray:
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
    from .keymap import normalize_key

    ids = keymap.get_many(normalize_key(k) for k in flt)
    ids = ids[ids >= 0]
    mask[ids] = 1
    return mask
