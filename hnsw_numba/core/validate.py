"""Argument checks shared by the index and the layers above it.

Every public method validates all of its input with these before anything changes; each
raises a typed error (:mod:`hnsw_numba.core.errors`) naming what was wrong.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any

import numpy as np

from ..kernels.layout import H_NODES, BF16Rows, F16Rows, F32Rows, Qi8Rows, WalkRows
from .config import MAX_EF
from .errors import (
    CapacityError,
    DimensionMismatchError,
    HnswWarning,
    InvalidKeyError,
    InvalidParameterError,
    InvalidVectorError,
    MetricMismatchError,
    nonfinite_error,
)
from .metrics import Metric
from .quantize import Qi8, Qi8Batch, quantize_rows
from .store_base import check_limit, finite_rows, float32_array, real_array

__all__ = ["refuse_masked", "check_k", "check_ef", "check_flag", "check_node_id", "is_one_vector", "batch_rows", "float32_vectors", "prepare_vectors", "prepare_qi8", "check_store", "rows_cover", "ROWS_FOR_KIND"]

#: The row classes a store of each kind may hand the kernels.
ROWS_FOR_KIND = {"float": (F32Rows, F16Rows, BF16Rows, WalkRows), "qi8": (Qi8Rows,)}


def refuse_masked(values: Any, what: str, error: type[Exception] = InvalidVectorError) -> Any:
    """``values`` as given, or the data of a NumPy masked array none of whose entries is masked.

    NumPy's conversions read the values hidden under a mask, so a masked array with a masked
    entry (or a list or tuple of rows holding one) raises ``error`` naming ``what``:
    :class:`InvalidVectorError` for vectors and queries, :class:`InvalidKeyError` for keys,
    :class:`InvalidParameterError` for a filter. Anything else costs a type check (a list
    or tuple one more pass over its items, once ``numpy.ma`` is loaded).
    """
    ma = sys.modules.get("numpy.ma")  # not loaded: no masked array exists (loading it costs ~10 ms)
    if ma is None or type(values) is np.ndarray:
        return values
    if isinstance(values, (list, tuple)):
        for row in values:  # rows given one by one: np.asarray drops their masks
            if isinstance(row, ma.MaskedArray):
                refuse_masked(row, what, error)
        return values
    if not isinstance(values, ma.MaskedArray):
        return values
    hidden = ma.getmaskarray(values)
    if hidden.any():
        count = int(np.count_nonzero(hidden))
        first = tuple(int(i) for i in np.unravel_index(int(np.argmax(hidden)), hidden.shape))
        where = f"entry {first[0]}" if len(first) == 1 else f"row {first[0]}" if len(first) == 2 else f"index {first}"
        raise error(f"{what}: a masked array with {count:,} masked entr{'y' if count == 1 else 'ies'} (the first in "
                    f"{where}), whose hidden values would be used: fill them "
                    "(np.ma.filled) or leave them out (np.ma.compressed, np.ma.compress_rows)")
    return ma.getdata(values)


def check_k(k: Any, extra: int = 0) -> int:
    """``k`` as an int in ``[1, MAX_EF - extra]`` (``extra``: room for a self-match)."""
    high = MAX_EF - extra
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= high:
        raise InvalidParameterError(f"k must be an int in [1, {high}], got {k!r}")
    return int(k)


def check_ef(ef: Any, default: int) -> int:
    """``ef`` as an int in ``[1, MAX_EF]``; ``None`` gives ``default``."""
    if ef is None:
        return default
    if isinstance(ef, bool) or not isinstance(ef, (int, np.integer)) or not 1 <= ef <= MAX_EF:
        raise InvalidParameterError(f"ef must be an int in [1, {MAX_EF}], got {ef!r}")
    return int(ef)


def check_flag(name: str, value: Any) -> bool:
    """A bool parameter (NumPy bools accepted)."""
    if not isinstance(value, (bool, np.bool_)):
        raise InvalidParameterError(f"{name} must be a bool, got {value!r}")
    return bool(value)


def float32_vectors(dim: int, vectors: Any, single: bool, unit: bool = False) -> np.ndarray:
    """``vectors`` as float32 of shape ``(n, dim)`` (``(1, dim)`` if ``single``), unchecked
    values: anything real converts (a ``Qi8`` / ``Qi8Batch`` is dequantized), without a copy
    when already float32; a wrong shape raises :class:`DimensionMismatchError`. ``unit`` (a
    metric that normalises): wider float rows are scaled in their type first (:func:`float32_array`)."""
    if callable(getattr(vectors, "dequantize", None)):
        vectors = vectors.dequantize()
    v = float32_array(refuse_masked(vectors, "vectors"), unit)  # no copy when already float32
    if single:
        if v.ndim == 2 and v.shape[0] == 1:
            v = v[0]
        if v.ndim != 1 or v.shape[0] != dim:
            raise DimensionMismatchError(f"expected a vector of shape ({dim},), got {v.shape}")
        return v[None, :]
    if v.ndim != 2 or v.shape[1] != dim:
        raise DimensionMismatchError(f"expected vectors of shape (n, {dim}), got {v.shape}")
    return v


def prepare_vectors(metric: Metric, dim: int, vectors: Any, single: bool) -> np.ndarray:
    """Validated float32 vectors ready for the kernels, shape ``(n, dim)`` (``(1, dim)`` if ``single``).

    Anything real converts (a ``Qi8`` / ``Qi8Batch`` is dequantized: searched with the
    float32 values it encodes); NaN / inf raise :class:`InvalidVectorError`, a wrong shape
    :class:`DimensionMismatchError`. Cosine vectors come back unit length.
    """
    v = float32_vectors(dim, vectors, single, metric.normalize)
    finite = finite_rows(v)
    if not finite.all():
        raise nonfinite_error(int(np.argmin(finite)))
    if not metric.normalize:  # cosine rows come out unit length
        check_limit(v)
    return np.ascontiguousarray(metric.prepare(v), dtype=np.float32)


def is_one_vector(vectors: Any) -> bool:
    """Whether ``vectors`` is one vector (1-D, or a ``Qi8``) rather than a batch.

    Raises :class:`InvalidVectorError` for ragged nested lists (neither).
    """
    if isinstance(vectors, (Qi8, Qi8Batch)):
        return isinstance(vectors, Qi8)
    try:
        return np.ndim(vectors) == 1
    except ValueError as exc:  # NumPy refuses ragged nesting
        raise InvalidVectorError(f"cannot read vectors as float32: {exc}") from None


def batch_rows(vectors: Any) -> int:
    """Rows of a batch of vectors: a ``Qi8Batch``, or an ``(n, dim)`` array of numbers.

    Raises :class:`InvalidVectorError` for what is no array of numbers (None, a str, a
    generator, ragged lists) and :class:`DimensionMismatchError` for another shape.
    """
    if isinstance(vectors, Qi8Batch):
        return len(vectors)
    shape = real_array(refuse_masked(vectors, "vectors")).shape
    if len(shape) != 2:
        raise DimensionMismatchError(f"expected vectors of shape (n, dim), got {shape}")
    return shape[0]


def check_node_id(node_id: Any) -> int:
    """``node_id`` as an int; as for keys, only ints and NumPy integers are, not bools or floats.

    Raises :class:`InvalidKeyError` otherwise (a ``TypeError`` and a ``ValueError``).
    """
    if isinstance(node_id, (bool, np.bool_)) or not isinstance(node_id, (int, np.integer)):
        raise InvalidKeyError(f"NodeIds must be ints, got {type(node_id).__name__} ({node_id!r})")
    return int(node_id)


def prepare_qi8(metric: Metric, dim: int, vectors: Qi8 | Qi8Batch, single: bool) -> Qi8Batch:
    """A ``Qi8`` / ``Qi8Batch`` to store as it is in a Qi8 store, as a :class:`Qi8Batch`.

    The codes, scales and zero points reach the store bit for bit (the store validates them
    again). Cosine compares unit vectors, so for the cosine metric the vectors the codes
    stand for must be unit length to within their quantization error
    (``sqrt(dim) * scale / 2``; a zero vector passes): quantize normalised vectors and they
    are stored as given. Rows that are not are normalised and re-quantized with
    :func:`~hnsw_numba.quantize_qi8`'s scheme, with an :class:`HnswWarning` naming the first.

    Raises
    ------
    DimensionMismatchError
        A ``Qi8Batch`` where one vector is expected (or the reverse), or codes of another
        dimension.
    """
    if single:
        if isinstance(vectors, Qi8Batch) and len(vectors) == 1:
            vectors = vectors[0]
        if not isinstance(vectors, Qi8) or vectors.data.shape != (dim,):
            raise DimensionMismatchError(f"expected one Qi8 vector of dim {dim}, got {_qi8_shape(vectors)}")
        batch = Qi8Batch(vectors.data[None, :], np.asarray([vectors.scale], np.float32), np.asarray([vectors.zero_point]))
    else:
        if not isinstance(vectors, Qi8Batch) or vectors.data.shape[1] != dim:
            raise DimensionMismatchError(f"expected a Qi8Batch of dim {dim}, got {_qi8_shape(vectors)}")
        batch = vectors
    if not len(batch):
        return batch
    with np.errstate(over="ignore", invalid="ignore"):
        values = batch.dequantize()
    if not metric.normalize:
        check_limit(values)
        return batch
    norms = np.sqrt(np.einsum("ij,ij->i", values, values, dtype=np.float64))
    tolerance = np.sqrt(dim) * batch.scale.astype(np.float64) / 2 + 1e-6
    off = (norms > 0) & (np.abs(norms - 1) > tolerance)
    if not off.any():
        return batch
    first = int(np.argmax(off))
    warnings.warn(
        f"{int(off.sum())} Qi8 vector(s) are not unit length (row {first}: norm {norms[first]:.4g}); cosine stores "
        "them normalised and re-quantized (quantize normalised vectors to store codes as given)",
        HnswWarning, stacklevel=4,
    )
    codes, scale, zero = batch.data.copy(), batch.scale.copy(), batch.zero_point.copy()
    codes[off], scale[off], zero[off] = quantize_rows(metric.prepare(values[off]))
    return Qi8Batch(codes, scale, zero)


def _qi8_shape(vectors: Any) -> str:
    return f"{type(vectors).__name__} with data of shape {getattr(vectors.data, 'shape', '?')}"


def check_store(metric: Metric, dim: int, node_count: int, store: Any, entry: int = -1) -> tuple:
    """The store's ``rows()`` after checking it can serve an index of this metric and size.

    Raises :class:`MetricMismatchError` (wrong kind of store), :class:`DimensionMismatchError`,
    :class:`InvalidParameterError` (arrays the kernels cannot take, or a store with a
    ``written`` mask that holds no row for the graph's ``entry`` point: another index's
    store, or a new one, whose rows would be searched as zeros) or :class:`CapacityError`
    (fewer rows than NodeIds).
    """
    if getattr(store, "kind", None) != metric.store_kind:
        raise MetricMismatchError(
            f"{metric!r} reads '{metric.store_kind}' stores, but "
            f"{type(store).__name__} is a '{getattr(store, 'kind', '?')}' store"
        )
    if getattr(store, "dim", None) != dim:
        raise DimensionMismatchError(f"store has dim {getattr(store, 'dim', None)}, index has dim {dim}")
    rows = store.rows()
    if not isinstance(rows, ROWS_FOR_KIND[metric.store_kind]):
        raise MetricMismatchError(f"store.rows() returned {type(rows).__name__}, not a row type of {metric!r}")
    for arr in rows:
        if not isinstance(arr, np.ndarray) or not arr.flags.c_contiguous:
            raise InvalidParameterError("store.rows() arrays must be C-contiguous NumPy arrays")
    if rows[0].ndim != 2 or rows[0].shape[1] < dim:
        raise InvalidParameterError(f"store.rows()[0] must be 2-D with at least {dim} columns, got shape {rows[0].shape}")
    if isinstance(rows, WalkRows) and (rows.data.shape != rows.bits.shape or rows.data.dtype != np.float32 or rows.bits.dtype != np.uint16):
        raise InvalidParameterError("WalkRows needs float32 data and uint16 bits of one shape")
    if any(arr.shape[0] != rows[0].shape[0] for arr in rows[1:]):
        raise InvalidParameterError(f"store.rows() arrays must have one row per NodeId each, got {[arr.shape[0] for arr in rows]} rows")
    if rows[0].shape[0] < node_count:
        raise CapacityError(f"store has {rows[0].shape[0]} rows but the index has {node_count} nodes")
    written = getattr(store, "written", None)
    if 0 <= entry < node_count and isinstance(written, np.ndarray) and written.shape[0] > entry and not written[entry]:
        raise InvalidParameterError(f"the store holds no vector for the entry point (NodeId {entry}): not this index's store")
    return rows


def rows_cover(graph: Any, rows: tuple) -> int:
    """The node count of the graph arrays ``graph``, read after their reader read ``rows``.

    A lock-free search reads the graph's arrays, then the store's rows (:func:`check_store`,
    against the count then), then this count, which bounds every NodeId its walk meets:
    arrays still the graph's gain only nodes the store's rows hold, and replaced ones gain
    none. Nodes added between the first count and the rows lie past it, and a compaction
    and a shrink of the store meanwhile leave them past the rows' end. Raises
    :class:`CapacityError` for a count past the rows (a search that a compaction overlapped
    runs again).
    """
    count = int(graph.header[H_NODES])
    if count > rows[0].shape[0]:
        raise CapacityError(f"store has {rows[0].shape[0]} rows but the index has {count} nodes")
    return count
