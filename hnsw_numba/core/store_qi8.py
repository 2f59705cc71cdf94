"""The per-vector quantized int8 store (read by the ``*Qi8`` metrics)."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .config import MAX_DIM, MAX_NODES, check_int
from .errors import DimensionMismatchError, InvalidParameterError, InvalidVectorError, nonfinite_error
from . import hugepages
from .limits import check_allocation
from .quantize import Qi8, Qi8Batch, check_codes, check_scales, quantize_rows
from .store_base import ColumnStore, finite_rows, float32_array, limit_error, value_limit
from .validate import refuse_masked
from ..kernels.layout import Qi8Rows

__all__ = ["InMemoryQi8VectorStore"]


class InMemoryQi8VectorStore(ColumnStore):
    """Vectors as int8 codes with a float32 scale and an int8 zero point each.

    A quarter of float32's bytes plus 5 bytes per vector (4 for the scale, 1 for the zero
    point; see :attr:`nbytes` and :meth:`memory_report`). Float vectors are quantized on
    write with :func:`hnsw_numba.quantize_qi8` (cosine metrics normalise first); a
    :class:`~hnsw_numba.Qi8Batch` given to :meth:`encode` is stored as it is. Queries are
    float32 and compared against the codes asymmetrically (no query rounding error); a
    ``Qi8`` query is searched with the float32 values it stands for.

    Parameters
    ----------
    dim : int
        Vector dimension.
    max_nodes : int
        Number of rows (NodeIds) allocated.
    """

    kind = "qi8"
    COLUMNS = (("codes", 0), ("scale", 1), ("zero_point", 0))
    _rows: NamedTuple | None = None  # rows() of the current arrays, made on first use
    dtype = np.dtype(np.int8)

    def __init__(self, dim: int, max_nodes: int):
        check_int("dim", dim, 1, MAX_DIM)
        check_int("max_nodes", max_nodes, 1, MAX_NODES)
        check_allocation(int(max_nodes) * (int(dim) + 6), f"a Qi8 store of {max_nodes:,} x {dim} vectors")
        self.dim = int(dim)
        n = int(max_nodes)
        self.codes = hugepages.zeros((n, self.dim), np.int8)  # the walks' rows
        self.scale = np.ones(n, np.float32)
        self.zero_point = np.zeros(n, np.int8)
        self.written = np.zeros(n, np.uint8)

    def pickle_template(self, attrs: dict[str, Any]) -> "InMemoryQi8VectorStore":
        return InMemoryQi8VectorStore(attrs["dim"], 1)

    @classmethod
    def from_arrays(cls, codes: np.ndarray, scale: np.ndarray, zero_point: np.ndarray) -> "InMemoryQi8VectorStore":
        """Wrap existing arrays without copying the codes (e.g. a ``np.memmap``).

        ``codes`` int8[n, dim] (C-contiguous, writeable), ``scale`` float32[n] (finite, > 0),
        ``zero_point`` int8[n] (or integral values in [-128, 127]). Every row counts as written.
        """
        self = cls.__new__(cls)
        codes = np.asarray(codes)
        if codes.ndim != 2 or codes.dtype != np.int8 or not codes.flags.c_contiguous or not codes.flags.writeable:
            raise InvalidParameterError("codes must be a writeable C-contiguous int8[n, dim] array")
        n = codes.shape[0]
        scale = np.asarray(scale)
        zero = np.asarray(zero_point)
        if scale.shape != (n,) or zero.shape != (n,):
            raise DimensionMismatchError(f"scale and zero_point must have shape ({n},)")
        check_scales(scale, zero)
        self.dim = int(codes.shape[1])
        self.codes = codes
        self.scale = np.ascontiguousarray(scale, np.float32)
        self.zero_point = np.ascontiguousarray(zero, np.int8)
        self.written = np.ones(n, np.uint8)
        return self

    # -- protocol ------------------------------------------------------------------
    def rows(self) -> NamedTuple:
        # one tuple per state of the arrays (see InMemoryVectorStore.rows)
        cached = self._rows
        if cached is not None and cached[0] is self.codes and cached[1] is self.scale and cached[2] is self.zero_point:
            return cached
        return self.publish_rows()

    def make_rows(self) -> NamedTuple:
        """``Qi8Rows`` of the current arrays."""
        return Qi8Rows(self.codes, self.scale, self.zero_point)

    def encode(self, vectors: np.ndarray | Qi8 | Qi8Batch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(codes int8[n, dim], scale float32[n], zero int8[n])`` of float vectors (n, dim).

        A :class:`Qi8Batch` (or one :class:`Qi8`) is taken as it is, without re-quantizing.
        Raises :class:`InvalidVectorError` / :class:`DimensionMismatchError`; changes nothing.
        """
        if isinstance(vectors, Qi8):
            vectors = Qi8Batch(vectors.data[None, :], np.asarray([vectors.scale]), np.asarray([vectors.zero_point]))
        if isinstance(vectors, Qi8Batch):
            self.split_encoded((vectors.data, vectors.scale, vectors.zero_point))
            return vectors.data, vectors.scale, vectors.zero_point
        v = float32_array(refuse_masked(vectors, "vectors"))
        if v.ndim != 2 or v.shape[1] != self.dim:
            raise DimensionMismatchError(f"expected vectors of shape (n, {self.dim}), got {v.shape}")
        finite = finite_rows(v)
        if not finite.all():
            raise nonfinite_error(int(np.argmin(finite)))
        return self.split_encoded(quantize_rows(v), v)  # the write's checks: what encode returns, a write takes

    def split_encoded(self, encoded: Any, given: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Validate an encoded batch (what :meth:`encode` returns): ``(codes, scale, zero_point)``.

        A row standing for a component past value_limit raises :class:`InvalidVectorError`
        (``given``: the float rows quantized, for the message of a row only quantization moves past it).
        """
        if not isinstance(encoded, tuple) or len(encoded) != 3:
            raise InvalidVectorError("encoded Qi8 rows must be a (codes, scale, zero_point) tuple")
        codes, scale, zero = (np.asarray(a) for a in encoded)
        check_codes(codes, 2)
        if codes.shape[1] != self.dim:
            raise DimensionMismatchError(f"expected codes of shape (n, {self.dim}), got {codes.shape}")
        n = codes.shape[0]
        if scale.shape != (n,) or zero.shape != (n,):
            raise DimensionMismatchError(f"scale and zero_point must have shape ({n},), got {scale.shape} and {zero.shape}")
        if scale.dtype.kind not in "fiu" or zero.dtype.kind not in "fiu":
            raise InvalidVectorError(f"scale and zero_point must be numeric, got {scale.dtype} and {zero.dtype}")
        check_scales(scale, zero)
        scale, zero = scale.astype(np.float32), zero.astype(np.int8)
        if n:  # the largest value a row stands for: scale * max |code - zero| (reductions, no temporary)
            z = zero.astype(np.int16)
            span = np.maximum(codes.max(axis=1).astype(np.int16) - z, z - codes.min(axis=1).astype(np.int16))
            over = scale.astype(np.float64) * span > value_limit(self.dim)
            if over.any():
                raise limit_error(int(np.argmax(over)), self.dim, given, "quantized to int8")
        return codes, scale, zero

    def decode_range(self, lo: int, hi: int) -> np.ndarray:
        """float32 ``(hi - lo, dim)`` values of rows ``lo .. hi - 1``."""
        return Qi8Batch(self.codes[lo:hi], self.scale[lo:hi], self.zero_point[lo:hi]).dequantize()

    def invalid_rows(self, lo: int, hi: int) -> np.ndarray:
        """Rows ``lo .. hi - 1`` whose scale is not finite and > 0."""
        scale = self.scale[lo:hi]
        return ~(np.isfinite(scale) & (scale > 0))

    def unit_tolerance(self, lo: int, hi: int) -> np.ndarray:
        """Per row: the quantization error of a unit vector's norm, ``sqrt(dim) * scale / 2``."""
        return np.sqrt(self.dim) * self.scale[lo:hi].astype(np.float64) / 2 + 1e-6

    def decode(self, node_ids: np.ndarray) -> np.ndarray:
        """float32 ``(n, dim)`` values of rows ``node_ids``: ``scale * (code - zero_point)``."""
        ids = np.asarray(node_ids, np.int64)
        return Qi8Batch(self.codes[ids], self.scale[ids], self.zero_point[ids]).dequantize()

    def vector(self, node_id: int) -> Qi8 | None:
        """The stored :class:`Qi8` (``.dequantize()`` gives float32), or None."""
        i = int(node_id)
        if not 0 <= i < self.max_nodes or not self.written[i]:
            return None
        return Qi8(self.codes[i].copy(), float(self.scale[i]), int(self.zero_point[i]))

    def __repr__(self) -> str:
        return f"InMemoryQi8VectorStore(dim={self.dim}, max_nodes={self.max_nodes})"
