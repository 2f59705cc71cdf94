"""Input checks and label conversions shared by :mod:`hnsw_numba.hnswlib` and its ``BFIndex``.

They follow hnswlib 0.8's Python binding: data is cast to float32 (one vector or rows),
labels to uint64 (floats truncated, numeric strings parsed), threads follow its ``num_threads`` rule.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from .core.config import MAX_DIM
from .core.index import Hnsw
from .core.metrics import Metric, metric_from_name
from .core.errors import HnswError
from .core.parallel import available_cores
from .core.store_base import float32_array
from .io.hnswlib_write import HnswlibWriteError as WriteError, hnswlib_labels
from .hnswlib_errors import DimensionMismatchError, InvalidKeyError, InvalidParameterError, InvalidVectorError, LabelRangeError, as_runtime

__all__ = ["check_space", "as_flag", "input_rows", "as_labels", "one_label", "labels_of", "thread_count", "native_keys", "node_ids", "SpaceSettings",
           "read_state", "hnswlib_params_file"]

I64_MAX = 2**63 - 1


def check_space(space: Any, dim: Any) -> tuple[str, Metric, int]:
    """``(space, metric, dim)`` for hnswlib's ``'l2'``, ``'ip'``, ``'cosine'``."""
    if not isinstance(space, str) or space not in ("l2", "ip", "cosine"):  # an array compares element-wise
        raise InvalidParameterError(f"Space name must be one of l2, ip, or cosine. Got {space!r}")
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or not 1 <= dim <= MAX_DIM:
        raise InvalidParameterError(f"dim must be an int in [1, {MAX_DIM}], got {dim!r}")
    return space, metric_from_name(space), int(dim)


def input_rows(data: Any, dim: int) -> np.ndarray:
    """``data`` (1-D: one vector, or 2-D) as C-contiguous float32 rows of length ``dim``."""
    try:
        with np.errstate(over="ignore"):
            x = np.asarray(data, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidVectorError(f"cannot read the data as float32: {exc}") from None
    if x.dtype.kind == "f" and not np.isfinite(x).all() and np.asarray(data).dtype.itemsize > 4:
        try:  # a finite value past float32's range (float64, int, Decimal, text) is inf now: named as such
            wide = np.asarray(data, dtype=np.float64)
        except (TypeError, ValueError, OverflowError):  # past float64's too: reported as inf below
            wide = None
        try:
            if wide is not None:
                float32_array(wide)
        except HnswError as exc:
            raise as_runtime(exc) from None
    if x.ndim == 1:
        x = x[None, :]
    elif x.ndim != 2:
        raise DimensionMismatchError(f"Input vector data wrong shape. Number of dimensions {x.ndim}. Data must be a 1D or 2D array.")
    if x.shape[1] != dim:
        raise DimensionMismatchError(f"Wrong dimensionality of the vectors: {x.shape[1]} components, the index has dim {dim}")
    return np.ascontiguousarray(x)


def as_labels(ids: Any, rows: int | None) -> np.ndarray:
    """hnswlib labels (uint64) from ``ids``: one per row (a scalar for one row); any 1-D for ``rows=None``.

    Floats are truncated and numeric strings parsed as ``int()`` does (``"10"`` is 10), as
    hnswlib's conversion through NumPy does; negative values, values of ``2**64`` or more
    and non-numbers (``"1.5"``, ``"a"``, ragged lists) raise :class:`InvalidKeyError` (out of
    range: :class:`LabelRangeError`, an ``OverflowError`` as well, as hnswlib raises).
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
    if a.dtype.kind in "US":  # parsed one by one below, as NumPy's cast of strings to uint64 does
        a = a.astype(object)
    if a.dtype.kind in "ub":
        return a.astype(np.uint64)
    if a.dtype.kind in "if":
        bad = ~np.isfinite(a) | (a < 0) | (a >= 2.0**64) if a.dtype.kind == "f" else a < 0
        if bad.any():
            raise LabelRangeError(f"label {a[np.argmax(bad)]!r} is outside hnswlib's uint64 labels")
        return a.astype(np.uint64)
    if a.dtype == object:
        out = np.empty(a.shape[0], np.uint64)
        for i, v in enumerate(a.tolist()):
            if isinstance(v, (str, bytes)):
                try:
                    v = int(v)
                except ValueError:
                    raise InvalidKeyError(f"label {v!r} is not an integer in [0, 2**64)") from None
            if isinstance(v, (bool, str, bytes)) or not hasattr(v, "__index__"):
                raise InvalidKeyError(f"label {v!r} is not an integer in [0, 2**64)")
            if not 0 <= int(v) < 2**64:
                raise LabelRangeError(f"label {v!r} is not an integer in [0, 2**64)")
            out[i] = int(v)
        return out
    raise InvalidKeyError(f"labels must be integers, got dtype {a.dtype}")


def one_label(label: Any) -> int:
    """The one label of ``mark_deleted``, ``unmark_deleted``, ``delete_vector``: an int in ``[0, 2**64)``.

    A str or a float is refused, as hnswlib's binding refuses them there (with ``TypeError``,
    which :class:`InvalidKeyError` is), though ``add_items`` converts them.
    """
    if isinstance(label, (str, bytes, float, np.floating)) or not hasattr(label, "__index__"):
        raise InvalidKeyError(f"label {label!r} is not an int; mark_deleted, unmark_deleted and delete_vector take an int")
    return int(as_labels([label], 1)[0])


def labels_of(keys: np.ndarray) -> np.ndarray:
    """The uint64 hnswlib labels of native keys (an object array of Python ints, same shape).

    A key added through ``Index.native`` that no label can be (a str, an int of ``2**64`` or
    more) raises :class:`InvalidKeyError` rather than reaching hnswlib code as a label.
    """
    try:
        return hnswlib_labels(keys.reshape(-1)).reshape(keys.shape)  # the writer's rule, as save_index applies it
    except WriteError as exc:
        raise InvalidKeyError(f"native {exc}: it cannot be an hnswlib label; keys like it are for the native index only") from None


def as_flag(name: str, value: Any) -> bool:
    """A bool argument as hnswlib's binding reads it: what has a truth of its own (``__bool__``:
    numbers, NumPy bools and one-element arrays, ``Fraction``, ``Decimal``, None) by it; a
    str such as ``"False"`` or a list (true by their length) and a larger array refused with
    ``TypeError``."""
    if value is None or hasattr(type(value), "__bool__"):
        try:
            return bool(value)
        except (TypeError, ValueError):  # an array of several elements
            pass
    raise InvalidParameterError(f"{name} must be a bool, got {value!r}")


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


_STATE_INTS = ("ef", "num_threads", "seed", "cur_l", "max_elements")
_HEADER = struct.Struct("<QQQQQQiIQQQdQ")  # hnswlib's saveIndex header, field for field
_HEADER_FIELDS = ("offset_level0", "max_elements", "cur_element_count", "size_data_per_element", "label_offset", "offset_data",
                  "max_level", "enterpoint_node", "max_M", "max_M0", "M", "mult", "ef_construction")


def hnswlib_params_file(params: dict) -> bytes:
    """The index file hnswlib's ``save_index`` writes for the index in hnswlib's ``__getstate__()[0]``.

    Only assembled here (header, level-0 block, each element's upper links); ``load_hnswlib``
    checks it as any file. Missing or mistyped fields raise :class:`InvalidParameterError`.
    """
    try:
        n, per = int(params["cur_element_count"]), int(params["size_links_per_element"])
        levels = np.asarray(params["element_levels"], dtype=np.int64)[:n]
        links = np.asarray(params["link_lists"], dtype=np.int8).reshape(-1)
        if levels.shape[0] != n or (levels < 0).any() or int(levels.sum()) * per != links.shape[0]:
            raise ValueError("element_levels and link_lists do not agree")
        out = [_HEADER.pack(*(params[f] for f in _HEADER_FIELDS)), np.asarray(params["data_level0"], dtype=np.int8).tobytes()]
        start = 0
        for size in (levels * per).tolist():
            out += [struct.pack("<I", size), links[start : start + size].tobytes()]
            start += size
    except (KeyError, TypeError, ValueError, OverflowError, IndexError, struct.error) as exc:
        raise InvalidParameterError(f"not an index state of hnswlib (__getstate__()[0]): {exc!r}") from None
    return b"".join(out)


def _as_bool(value: Any, name: str) -> bool:
    """A flag of hnswlib's state as its binding reads one: a bool, NumPy's bool, a number
    (its truth) or None (False); anything else raises :class:`InvalidParameterError`."""
    if value is None or isinstance(value, (bool, int, float, np.bool_, np.integer, np.floating)):
        return bool(value)
    raise InvalidParameterError(f"not an index state of hnswlib: {name} must be a bool, got {value!r}")


def read_state(state: Any) -> dict:
    """``Index.__getstate__()`` (or its dict, or hnswlib's) as the dict ``Index.__setstate__`` restores, checked.

    Raises :class:`InvalidParameterError` for anything else; the file in it is checked when loaded.
    """
    if isinstance(state, tuple) and len(state) == 1:  # hnswlib's pickled state is a 1-tuple of the dict
        state = state[0]
    if isinstance(state, dict) and type(state.get("ser_version")) is int and state.get("ser_version") == 1 and "index_inited" in state \
            and "hnswlib_file" not in state:
        inited = _as_bool(state["index_inited"], "index_inited")
        state = {"ser_version": 1, "space": state.get("space"), "dim": state.get("dim"), "ef": state.get("ef"),
                 "num_threads": state.get("num_threads"), "seed": state.get("seed"),
                 "allow_replace_deleted": _as_bool(state.get("allow_replace_deleted", False), "allow_replace_deleted") if inited else False,
                 "cur_l": state.get("cur_element_count") if inited else 0, "max_elements": state.get("max_elements") if inited else 0,
                 "hnswlib_file": hnswlib_params_file(state) if inited else None}
    if not isinstance(state, dict) or type(state.get("ser_version")) is not int or state.get("ser_version") != 1:
        raise InvalidParameterError("not a state of hnsw_numba.hnswlib.Index or hnswlib.Index (ser_version 1)")
    if any(k not in state for k in (*_STATE_INTS, "space", "dim", "allow_replace_deleted", "hnswlib_file")) or any(
            type(state[k]) is not int or (k in ("ef", "cur_l", "max_elements") and state[k] < 0) for k in _STATE_INTS):
        raise InvalidParameterError(f"a state of hnsw_numba.hnswlib.Index holds the ints {', '.join(_STATE_INTS)}, space, dim, ...")
    if type(state["allow_replace_deleted"]) is not bool or not isinstance(state["hnswlib_file"], (bytes, type(None))):
        raise InvalidParameterError("allow_replace_deleted must be a bool and hnswlib_file the file's bytes or None")
    return state
