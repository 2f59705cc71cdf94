"""The names ``hn.Index`` takes for metrics and storage types, and what they stand for."""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import InvalidParameterError
from .metrics import L2, Cosine, CosineQi8, InnerProduct, InnerProductQi8, L2Qi8, Metric

__all__ = ["METRICS", "DTYPES", "metric_name", "dtype_name", "dtype_short"]

#: Metric name -> (the float stores' metric, the Qi8 store's).
METRICS: dict[str, tuple[type[Metric], type[Metric]]] = {
    "cosine": (Cosine, CosineQi8),
    "l2": (L2, L2Qi8),
    "ip": (InnerProduct, InnerProductQi8),
}
_METRIC_ALIASES = {"cos": "cosine", "l2sq": "l2", "inner_product": "ip", "dot": "ip"}
#: Storage name -> the store's dtype name ("qi8": the quantized store; "f32+f16": float32
#: with a float16 copy for the graph walks).
DTYPES = {"f32": "float32", "f16": "float16", "bf16": "bfloat16", "qi8": "qi8", "f32+f16": "float32"}
_DTYPE_ALIASES = {"float32": "f32", "float16": "f16", "bfloat16": "bf16", "i8": "qi8", "int8": "qi8", "float32+float16": "f32+f16"}
_NAMES = "'f32', 'f16', 'bf16', 'qi8', 'f32+f16'"


def metric_name(metric: Any) -> str:
    """``"cosine"``, ``"l2"`` or ``"ip"`` for a name or alias (``"cos"``, ``"l2sq"``, ``"dot"``, ...)."""
    name = _METRIC_ALIASES.get(metric, metric) if isinstance(metric, str) else None
    if name not in METRICS:
        raise InvalidParameterError(f"metric must be one of 'cosine', 'l2', 'ip', got {metric!r}")
    return name


def dtype_name(dtype: Any) -> str:
    """``"f32"``, ``"f16"``, ``"bf16"``, ``"qi8"`` or ``"f32+f16"`` for a name, alias or NumPy dtype."""
    if not isinstance(dtype, str):
        try:
            dtype = np.dtype(dtype).name
        except TypeError:
            raise InvalidParameterError(f"dtype must be one of {_NAMES}, got {dtype!r}") from None
    name = _DTYPE_ALIASES.get(dtype, dtype)
    if name not in DTYPES:
        raise InvalidParameterError(f"dtype must be one of {_NAMES}, got {dtype!r}")
    return name


def dtype_short(store: Any) -> str:
    """The storage name of a built-in store."""
    if store.kind == "qi8":
        return "qi8"
    return "f32+f16" if getattr(store, "walk_copy", False) else _DTYPE_ALIASES[store.dtype.name]
