"""The per-vector quantized int8 store (read by the ``*Qi8`` metrics)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .config import MAX_DIM, MAX_NODES, _check_int
from .errors import CapacityError, DimensionMismatchError, InvalidParameterError, InvalidVectorError
from .limits import check_allocation
from .quantize import Qi8, _quantize
from .rows import Qi8Rows

__all__ = ["InMemoryQi8VectorStore"]


class InMemoryQi8VectorStore:
    """Vectors as int8 codes with a float32 scale and an int8 zero point each.

    A quarter of float32's bytes plus 8 bytes per vector. Float vectors are quantized on
    write with :func:`hnsw_numba.quantize_qi8` (cosine metrics normalise first); queries are
    float32 and compared against the codes asymmetrically (no query rounding error).

    Parameters
    ----------
    dim : int
        Vector dimension.
    max_nodes : int
        Number of rows (NodeIds) allocated.
    """

    kind = "qi8"
    dtype = np.dtype(np.int8)

    def __init__(self, dim: int, max_nodes: int):
        _check_int("dim", dim, 1, MAX_DIM)
        _check_int("max_nodes", max_nodes, 1, MAX_NODES)
        check_allocation(int(max_nodes) * (int(dim) + 9), f"a Qi8 store of {max_nodes:,} x {dim} vectors")
        self.dim = int(dim)
        n = int(max_nodes)
        self._codes = np.zeros((n, self.dim), np.int8)
        self._scale = np.ones(n, np.float32)
        self._zero = np.zeros(n, np.float32)  # the int8 zero point, as float32 for the kernels
        self._written = np.zeros(n, np.uint8)

    @classmethod
    def from_arrays(cls, codes: np.ndarray, scale: np.ndarray, zero_point: np.ndarray) -> "InMemoryQi8VectorStore":
        """Wrap existing arrays (codes int8[n, dim] C-contiguous, scale float32[n], zero point int8/float32[n])."""
        self = cls.__new__(cls)
        codes = np.asarray(codes)
        if codes.ndim != 2 or codes.dtype != np.int8 or not codes.flags.c_contiguous or not codes.flags.writeable:
            raise InvalidParameterError("codes must be a writeable C-contiguous int8[n, dim] array")
        n = codes.shape[0]
        scale = np.ascontiguousarray(scale, np.float32)
        zero = np.ascontiguousarray(zero_point, np.float32)
        if scale.shape != (n,) or zero.shape != (n,):
            raise DimensionMismatchError(f"scale and zero_point must have shape ({n},)")
        self.dim = int(codes.shape[1])
        self._codes, self._scale, self._zero = codes, scale, zero
        self._written = np.ones(n, np.uint8)
        return self

    # -- protocol ------------------------------------------------------------------
    @property
    def max_nodes(self) -> int:
        return int(self._codes.shape[0])

    def rows(self) -> NamedTuple:
        return Qi8Rows(self._codes, self._scale, self._zero)

    def encode(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        v = np.asarray(vectors, dtype=np.float32)
        if v.ndim != 2 or v.shape[1] != self.dim:
            raise DimensionMismatchError(f"expected vectors of shape (n, {self.dim}), got {v.shape}")
        if not np.isfinite(v).all():
            raise InvalidVectorError("vectors contain NaN or inf")
        codes, scale, zero = _quantize(v)
        return codes, scale, zero.astype(np.float32)

    def write(self, node_ids: np.ndarray, encoded: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
        ids = np.asarray(node_ids, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.max_nodes):
            raise CapacityError(f"store has {self.max_nodes} rows; NodeId {int(ids.max())} does not fit")
        codes, scale, zero = encoded
        self._codes[ids] = codes
        self._scale[ids] = scale
        self._zero[ids] = zero
        self._written[ids] = 1

    def vector(self, node_id: int) -> Qi8 | None:
        """The stored :class:`Qi8` (``.dequantize()`` gives float32), or None."""
        i = int(node_id)
        if not 0 <= i < self.max_nodes or not self._written[i]:
            return None
        return Qi8(self._codes[i].copy(), float(self._scale[i]), int(self._zero[i]))

    def resize(self, max_nodes: int) -> None:
        _check_int("max_nodes", max_nodes, 1, MAX_NODES)
        check_allocation(int(max_nodes) * (self.dim + 9), f"a Qi8 store of {max_nodes:,} vectors")
        if max_nodes < self.max_nodes and self._written[max_nodes:].any():
            raise CapacityError("cannot shrink the store below its written rows")
        n = min(max_nodes, self.max_nodes)

        def grown(arr: np.ndarray, fill: float) -> np.ndarray:
            out = np.full((max_nodes,) + arr.shape[1:], fill, arr.dtype)
            out[:n] = arr[:n]
            return out

        self._codes, self._scale = grown(self._codes, 0), grown(self._scale, 1)
        self._zero, self._written = grown(self._zero, 0), grown(self._written, 0)

    # -- reporting -----------------------------------------------------------------
    @property
    def nbytes(self) -> int:
        return int(self._codes.nbytes + self._scale.nbytes + self._zero.nbytes + self._written.nbytes)

    @property
    def bytes_per_vector(self) -> int:
        """Codes plus the per-vector scale and zero point (4 + 4 bytes as held in memory)."""
        return self.dim + 8

    def __repr__(self) -> str:
        return f"InMemoryQi8VectorStore(dim={self.dim}, max_nodes={self.max_nodes})"
