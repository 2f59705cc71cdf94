"""Vector stores: where the vectors live, keyed by NodeId, apart from the graph.

A store hands the kernels a ``*Rows`` NamedTuple (see :mod:`hnsw_numba.kernels.layout`) through
``rows()``; anything that satisfies :class:`VectorStore` can be searched, including a
``np.memmap`` wrapped with :meth:`InMemoryVectorStore.from_array`.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol, runtime_checkable

import ml_dtypes
import numpy as np

from .config import MAX_DIM, MAX_NODES, _check_int
from .errors import (
    CapacityError,
    DimensionMismatchError,
    InvalidParameterError,
    InvalidVectorError,
)
from .limits import check_allocation
from ..kernels.layout import BF16Rows, F16Rows, F32Rows

__all__ = ["VectorStore", "InMemoryVectorStore", "FLOAT_DTYPES"]

#: Accepted dtypes of float stores, by name.
FLOAT_DTYPES = {
    "float32": np.dtype(np.float32),
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
}


@runtime_checkable
class VectorStore(Protocol):
    """What the index needs from a vector store.

    Attributes
    ----------
    dim : int
        Vector dimension.
    max_nodes : int
        Rows available; NodeIds ``0 .. max_nodes - 1`` can be written.
    kind : str
        ``"float"`` (read by ``L2``/``Cosine``/``InnerProduct``) or ``"qi8"`` (read by the
        ``*Qi8`` metrics).

    Methods
    -------
    rows()
        The kernels' view: ``F32Rows(data)``, ``F16Rows(bits)``, ``BF16Rows(bits)`` or
        ``Qi8Rows(codes, scale, zero)``, each a C-contiguous array indexed by NodeId
        (a ``np.memmap`` opened in mode ``"r+"`` or ``"c"`` qualifies).
    encode(vectors)
        Validate float32 vectors (n, dim) and convert them to the storage form,
        raising :class:`InvalidVectorError` without changing anything.
    write(node_ids, encoded)
        Store encoded vectors at ``node_ids`` (int32[n]).
    vector(node_id)
        The stored vector in the store's dtype, or ``None`` if nothing was written.
    resize(max_nodes)
        Grow to ``max_nodes`` rows.

    The built-in stores also report their memory (``nbytes``, ``bytes_per_vector``,
    ``memory_report()``); the index does not need it.
    """

    dim: int
    max_nodes: int
    kind: str

    def rows(self) -> NamedTuple: ...

    def encode(self, vectors: np.ndarray) -> Any: ...

    def write(self, node_ids: np.ndarray, encoded: Any) -> None: ...

    def vector(self, node_id: int) -> np.ndarray | None: ...

    def resize(self, max_nodes: int) -> None: ...


def resolve_float_dtype(dtype: Any) -> np.dtype:
    """Map ``np.float32`` / ``"float16"`` / ``ml_dtypes.bfloat16`` ... to a supported dtype."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    for name, known in FLOAT_DTYPES.items():
        if dt == known or dtype == name:
            return known
    raise InvalidParameterError(
        f"unsupported store dtype {dtype!r}; expected one of {sorted(FLOAT_DTYPES)}"
    )


class InMemoryVectorStore:
    """Vectors in one NumPy array: float32, float16 or bfloat16 (kept as uint16 bits).

    Parameters
    ----------
    dim : int
        Vector dimension.
    max_nodes : int
        Number of rows (NodeIds) allocated.
    dtype : numpy dtype or str
        ``np.float32`` (default), ``np.float16`` or ``ml_dtypes.bfloat16``; the strings
        ``"float32"``, ``"float16"``, ``"bfloat16"`` work too. Vectors are converted on
        write (round to nearest even); distances are computed in float32.
    """

    kind = "float"
    _rows: NamedTuple | None = None  # rows() of the current arrays, made on first use

    def __init__(self, dim: int, max_nodes: int, dtype: Any = np.float32):
        _check_int("dim", dim, 1, MAX_DIM)
        _check_int("max_nodes", max_nodes, 1, MAX_NODES)
        self.dtype = resolve_float_dtype(dtype)
        self.dim = int(dim)
        storage = np.float32 if self.dtype == np.float32 else np.uint16
        check_allocation(int(max_nodes) * self.dim * np.dtype(storage).itemsize, f"a store of {max_nodes:,} x {dim} vectors")
        self._data = np.zeros((max(int(max_nodes), 1), self.dim), storage)
        self._written = np.zeros(self._data.shape[0], np.uint8)

    @classmethod
    def from_array(cls, data: np.ndarray, dtype: Any = np.float32) -> "InMemoryVectorStore":
        """Wrap an existing C-contiguous (n, dim) array without copying (e.g. ``np.memmap``).

        For float16 / bfloat16 pass the uint16 bit pattern (``arr.view(np.uint16)``). Every
        row counts as written.
        """
        self = cls.__new__(cls)
        self.dtype = resolve_float_dtype(dtype)
        storage = np.float32 if self.dtype == np.float32 else np.uint16
        arr = np.asarray(data)  # a memmap becomes a plain ndarray view (one Numba type)
        if arr.ndim != 2 or arr.dtype != storage or not arr.flags.c_contiguous:
            raise InvalidParameterError(
                f"expected a C-contiguous 2-D {np.dtype(storage)} array, got "
                f"{arr.dtype}{list(arr.shape)}"
            )
        if not arr.flags.writeable:
            raise InvalidParameterError("the array must be writeable (open a memmap with mode 'r+' or 'c')")
        self.dim = int(arr.shape[1])
        self._data = arr
        self._written = np.ones(arr.shape[0], np.uint8)
        return self

    # -- protocol ------------------------------------------------------------------
    @property
    def max_nodes(self) -> int:
        return int(self._data.shape[0])

    def rows(self) -> NamedTuple:
        # the same tuple while the array is the same: the single-query path compares
        # it by identity to know its cached validation still holds
        cached = self._rows
        if cached is not None and cached[0] is self._data:
            return cached
        if self.dtype == np.float32:
            rows = F32Rows(self._data)
        elif self.dtype == np.float16:
            rows = F16Rows(self._data)
        else:
            rows = BF16Rows(self._data)
        self._rows = rows
        return rows

    def encode(self, vectors: np.ndarray) -> np.ndarray:
        """Validate vectors (n, dim) and convert them to the storage form.

        Any real input converts to float32 first, then (f16 / bf16) rounds to nearest even;
        the result is the uint16 bit pattern for the half-width types. NaN / inf, or values
        that overflow the store's type (|x| > 65504 for float16), raise
        :class:`InvalidVectorError`.
        """
        v = np.asarray(vectors, dtype=np.float32)
        if v.ndim != 2 or v.shape[1] != self.dim:
            raise DimensionMismatchError(f"expected vectors of shape (n, {self.dim}), got {v.shape}")
        finite = np.isfinite(v).all(axis=1)
        if not finite.all():
            raise InvalidVectorError(f"vector {int(np.argmin(finite))} contains NaN or inf")
        if self.dtype == np.float32:
            return v
        with np.errstate(over="ignore"):
            conv = v.astype(self.dtype)
        fits = np.isfinite(conv.astype(np.float32)).all(axis=1)
        if not fits.all():
            raise InvalidVectorError(
                f"vector {int(np.argmin(fits))} has values outside the range of {self.dtype.name} "
                f"(max {float(ml_dtypes.finfo(self.dtype).max):g})"  # np.finfo does not know bfloat16
            )
        return conv.view(np.uint16)

    def write(self, node_ids: np.ndarray, encoded: np.ndarray) -> None:
        """Store encoded rows at ``node_ids``; everything is validated before anything is written."""
        enc = np.asarray(encoded)
        if enc.dtype != self._data.dtype or enc.ndim != 2 or enc.shape[1] != self.dim:
            raise InvalidVectorError(
                f"encoded rows must be {self._data.dtype}[n, {self.dim}] (from encode()), got {enc.dtype}{list(enc.shape)}"
            )
        ids = np.asarray(node_ids, dtype=np.int64)
        if ids.shape != (enc.shape[0],):
            raise DimensionMismatchError(f"{ids.shape} node ids for {enc.shape[0]} encoded rows")
        if ids.size and (ids.min() < 0 or ids.max() >= self.max_nodes):
            raise CapacityError(f"store has {self.max_nodes} rows; NodeId {int(ids.max())} does not fit")
        self._data[ids] = enc
        self._written[ids] = 1

    def vector(self, node_id: int) -> np.ndarray | None:
        i = int(node_id)
        if not 0 <= i < self.max_nodes or not self._written[i]:
            return None
        row = self._data[i].copy()
        return row if self.dtype == np.float32 else row.view(self.dtype)

    def resize(self, max_nodes: int) -> None:
        _check_int("max_nodes", max_nodes, 1, MAX_NODES)
        check_allocation(int(max_nodes) * self._data.shape[1] * self._data.itemsize, f"a store of {max_nodes:,} vectors")
        if max_nodes < self.max_nodes and self._written[max_nodes:].any():
            raise CapacityError("cannot shrink the store below its written rows")
        data = np.zeros((max_nodes, self.dim), self._data.dtype)
        n = min(max_nodes, self.max_nodes)
        data[:n] = self._data[:n]
        written = np.zeros(max_nodes, np.uint8)
        written[:n] = self._written[:n]
        self._data, self._written = data, written

    # -- reporting -----------------------------------------------------------------
    @property
    def nbytes(self) -> int:
        """Bytes held by the vectors (plus the 1-byte written-row mask)."""
        return int(self._data.nbytes + self._written.nbytes)

    @property
    def bytes_per_vector(self) -> int:
        """Bytes of one stored vector: 4 * dim for float32, 2 * dim for float16 / bfloat16."""
        return int(self._data.itemsize * self.dim)

    def memory_report(self) -> dict[str, int]:
        """Bytes by part (``vectors``, ``written``), ``total`` and ``per_vector``."""
        return {"vectors": int(self._data.nbytes), "written": int(self._written.nbytes), "total": self.nbytes,
                "per_vector": self.bytes_per_vector}

    def __repr__(self) -> str:
        return f"InMemoryVectorStore(dim={self.dim}, max_nodes={self.max_nodes}, dtype={self.dtype.name})"
