"""Input checks and label conversions shared by :mod:`hnsw_numba.hnswlib` and its ``BFIndex``.

They follow hnswlib 0.8's Python binding: data is cast to float32 (one vector or rows),
labels to uint64 (floats truncated), threads follow its ``num_threads`` rule.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .core.config import MAX_DIM
from .core.index import Hnsw
from .core.metrics import Metric, metric_from_name
from .core.parallel import available_cores
from .hnswlib_errors import DimensionMismatchError, InvalidKeyError, InvalidParameterError, InvalidVectorError

__all__ = ["check_space", "input_rows", "as_labels", "thread_count", "native_keys", "node_ids", "SpaceSettings"]

I64_MAX = 2**63 - 1


def check_space(space: Any, dim: Any) -> tuple[str, Metric, int]:
    """``(space, metric, dim)`` for hnswlib's ``'l2'``, ``'ip'``, ``'cosine'``."""
    if space not in ("l2", "ip", "cosine"):
        raise InvalidParameterError(f"Space name must be one of l2, ip, or cosine. Got {space!r}")
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or not 1 <= dim <= MAX_DIM:
        raise InvalidParameterError(f"dim must be an int in [1, {MAX_DIM}], got {dim!r}")
    return space, metric_from_name(space), int(dim)


def input_rows(data: Any, dim: int) -> np.ndarray:
    """``data`` (1-D: one vector, or 2-D) as C-contiguous float32 rows of length ``dim``."""
    try:
        x = np.asarray(data, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidVectorError(f"cannot read the data as float32: {exc}") from None
    if x.ndim == 1:
        x = x[None, :]
    elif x.ndim != 2:
        raise DimensionMismatchError(f"Input vector data wrong shape. Number of dimensions {x.ndim}. Data must be a 1D or 2D array.")
    if x.shape[1] != dim:
        raise DimensionMismatchError(f"Wrong dimensionality of the vectors: {x.shape[1]} components, the index has dim {dim}")
    return np.ascontiguousarray(x)


def as_labels(ids: Any, rows: int | None) -> np.ndarray:
    """hnswlib labels (uint64) from ``ids``: one per row (a scalar for one row); any 1-D for ``rows=None``.

    Floats are truncated as hnswlib's conversion does; negative values, values of ``2**64``
    or more and non-numbers (ragged lists too) raise :class:`InvalidKeyError`.
    """
    try:
        a = np.asarray(ids)
    except (TypeError, ValueError) as exc:  # NumPy refuses ragged nesting
        raise InvalidKeyError(f"labels must be integers: {exc}") from None
    if a.dtype.kind == "f" and not isinstance(ids, np.ndarray):
        # NumPy reads a list mixing ints past int64 with smaller ones as float64, which rounds
        # them (2**63 + 1 and 2**63 + 2 both become 2**63): read such a list as Python ints
        exact = np.asarray(ids, dtype=object)
        if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in exact.reshape(-1).tolist()):
            a = exact
    if rows is not None:
        if not ((a.ndim == 1 and a.shape[0] == rows) or (a.ndim == 0 and rows == 1)):
            raise DimensionMismatchError(f"The input label shape {a.ndim} does not match the input data vector shape {rows}")
        a = a.reshape(-1)
    if a.dtype.kind in "ub":
        return a.astype(np.uint64)
    if a.dtype.kind in "if":
        bad = ~np.isfinite(a) | (a < 0) | (a >= 2.0**64) if a.dtype.kind == "f" else a < 0
        if bad.any():
            raise InvalidKeyError(f"label {a[np.argmax(bad)]!r} is outside hnswlib's uint64 labels")
        return a.astype(np.uint64)
    if a.dtype == object:
        out = np.empty(a.shape[0], np.uint64)
        for i, v in enumerate(a.tolist()):
            if isinstance(v, (bool, str, bytes)) or not hasattr(v, "__index__") or not 0 <= int(v) < 2**64:
                raise InvalidKeyError(f"label {v!r} is not an integer in [0, 2**64)")
            out[i] = int(v)
        return out
    raise InvalidKeyError(f"labels must be integers, got dtype {a.dtype}")


def thread_count(num_threads: Any, default: int, rows: int) -> int:
    """hnswlib's rule: ``num_threads`` (<= 0: the index default; <= 0 again: all cores), one
    thread for at most 4 rows per thread; capped at the cores (more only contend)."""
    if isinstance(num_threads, bool) or not isinstance(num_threads, (int, np.integer)):
        raise InvalidParameterError(f"num_threads must be an int, got {num_threads!r}")
    cores = available_cores()
    n = int(num_threads) if num_threads > 0 else int(default)
    if n <= 0:
        n = cores
    return 1 if rows <= 4 * n else min(n, cores)


class SpaceSettings:
    """The accessors ``Index`` and ``BFIndex`` share: ``space``, ``dim`` and the default threads.

    The subclass sets ``_space``, ``_dim`` and ``_num_threads`` in its constructor.
    """

    _space: str
    _dim: int
    _num_threads: int

    @property
    def space(self) -> str:
        """hnswlib's space name: ``'l2'``, ``'ip'`` or ``'cosine'``."""
        return self._space

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return self._dim

    @property
    def num_threads(self) -> int:
        """Default threads of ``add_items`` / ``knn_query`` (<= 0: all cores)."""
        return self._num_threads

    @num_threads.setter
    def num_threads(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise InvalidParameterError(f"num_threads must be an int, got {value!r}")
        self._num_threads = int(value)

    def set_num_threads(self, num_threads: int) -> None:
        """Set the default number of threads (<= 0: all cores)."""
        self.num_threads = num_threads


def native_keys(labels: np.ndarray) -> np.ndarray:
    """uint64 labels as the native index's keys: int64 when every one fits (the fast key map)."""
    if labels.shape[0] == 0 or int(labels.max()) <= I64_MAX:
        return labels.view(np.int64)
    return labels  # the key map takes these as Python ints


def node_ids(index: Hnsw, labels: np.ndarray) -> np.ndarray:
    """NodeIds (int64, -1 where absent) of uint64 labels."""
    keys = native_keys(labels)
    if keys.dtype == np.int64:
        return index.key_map.get_many(None, keys)
    return index.key_map.get_many(labels.tolist())
