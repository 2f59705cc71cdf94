"""Distance metrics.

A metric object is a small immutable description: the kernels only ever see its integer
``code`` (a runtime branch outside the dimension loop, so one compiled specialisation
serves every metric of a store type). Cosine is inner product on unit vectors: vectors
and queries are normalised at the edge, exactly as hnswlib's ``'cosine'`` space does, so
distances are ``1 - cos``.

The ``*Qi8`` metrics read an :class:`~hnsw_numba.InMemoryQi8VectorStore` (stored value
``scale * (code - zero_point)``). Queries may be given two ways:

* float32 (the usual case): compared *asymmetrically* with the codes -- the codes are widened
  to float32 inside the distance loop and the query is not rounded at all, so the only error
  is the stored vectors' own quantization (at most ``scale / 2`` per component);
* a :class:`~hnsw_numba.Qi8` / :class:`~hnsw_numba.Qi8Batch`: searched with the float32
  values it stands for (``dequantize()``), i.e. exactly as the float32 query those values
  form -- the same kernel, no second compiled specialisation.

Between two stored rows (inserts' neighbour selection) the inner-product metrics use an exact
int16 x int16 -> int32 dot of the centred codes; see :mod:`hnsw_numba.kernels.distances`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..kernels.layout import IP_CODE, L2_CODE
from .store_base import float32_array

__all__ = [
    "Metric",
    "L2",
    "Cosine",
    "InnerProduct",
    "L2Qi8",
    "CosineQi8",
    "InnerProductQi8",
    "metric_from_name",
    "L2_CODE",
    "IP_CODE",
]



@dataclass(frozen=True)
class Metric:
    """Base class. Subclasses fix ``name``, ``code``, ``normalize`` and ``store_kind``."""

    name: ClassVar[str] = ""
    code: ClassVar[int] = L2_CODE
    normalize: ClassVar[bool] = False
    #: ``"float"`` (f32/f16/bf16 stores) or ``"qi8"``.
    store_kind: ClassVar[str] = "float"

    def prepare(self, x: np.ndarray) -> np.ndarray:
        """Return float32 vectors ready for the kernels (unit length for cosine).

        Normalisation divides by the largest magnitude first, then by the norm of the
        result, so every non-zero finite vector comes out unit length and a zero vector
        stays zero (distance 1 to everything). hnswlib's ``x * (1 / (sqrt(sum(x*x)) +
        1e-30))`` agrees to rounding for ordinary vectors but breaks at the extremes: the
        float32 sum of squares underflows for tiny vectors (length up to 1e30 after
        "normalising", negative distances) and overflows for huge ones (a zero vector).
        Rows of a wider float type that float32 would round to zeros or inf (float64 1e-50,
        1e50) are scaled in that type first, keeping their direction
        (:func:`~hnsw_numba.core.store_base.float32_array` with ``unit``).
        """
        if not self.normalize:
            return np.asarray(x, dtype=np.float32)
        x = np.ascontiguousarray(float32_array(x, unit=True))  # einsum's sums follow the layout: one order for every input
        peak = np.abs(x).max(axis=-1, keepdims=True)
        # in [-1, 1]: no under/overflow; a NaN peak divides (NaN stays NaN for the callers'
        # checks: skipped, the row came out a zero vector)
        y = np.divide(x, peak, out=np.zeros_like(x), where=~(peak <= 0))
        norms = np.sqrt(np.einsum("...i,...i->...", y, y, dtype=np.float32))[..., None]
        return np.divide(y, norms, out=y, where=norms > 0).astype(np.float32, copy=False)

    def distance_numpy(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Reference distances in float64 between ``a`` (..., d) and ``b`` (..., d)."""
        a = self.prepare(a).astype(np.float64)
        b = self.prepare(b).astype(np.float64)
        if self.code == L2_CODE:
            return ((a - b) ** 2).sum(-1)
        return 1.0 - (a * b).sum(-1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


@dataclass(frozen=True, repr=False)
class L2(Metric):
    """Squared Euclidean distance (hnswlib ``'l2'``)."""

    name: ClassVar[str] = "l2"
    code: ClassVar[int] = L2_CODE


@dataclass(frozen=True, repr=False)
class InnerProduct(Metric):
    """``1 - dot(a, b)`` (hnswlib ``'ip'``); may be negative for unnormalised data."""

    name: ClassVar[str] = "ip"
    code: ClassVar[int] = IP_CODE


@dataclass(frozen=True, repr=False)
class Cosine(Metric):
    """``1 - cos(a, b)`` (hnswlib ``'cosine'``): inner product on normalised vectors."""

    name: ClassVar[str] = "cosine"
    code: ClassVar[int] = IP_CODE
    normalize: ClassVar[bool] = True


@dataclass(frozen=True, repr=False)
class L2Qi8(L2):
    """Squared L2 over a per-vector quantized int8 store."""

    name: ClassVar[str] = "l2_qi8"
    store_kind: ClassVar[str] = "qi8"


@dataclass(frozen=True, repr=False)
class InnerProductQi8(InnerProduct):
    """``1 - dot`` over a per-vector quantized int8 store."""

    name: ClassVar[str] = "ip_qi8"
    store_kind: ClassVar[str] = "qi8"


@dataclass(frozen=True, repr=False)
class CosineQi8(Cosine):
    """``1 - cos`` over a per-vector quantized int8 store (vectors normalised before quantizing)."""

    name: ClassVar[str] = "cosine_qi8"
    store_kind: ClassVar[str] = "qi8"


_BY_NAME = {
    cls.name: cls for cls in (L2, InnerProduct, Cosine, L2Qi8, InnerProductQi8, CosineQi8)
}


def metric_from_name(name: str) -> Metric:
    """Return the metric registered under ``name`` (``"l2"``, ``"ip"``, ``"cosine"``, ...)."""
    try:
        return _BY_NAME[name]()
    except KeyError:
        from .errors import InvalidParameterError

        raise InvalidParameterError(
            f"unknown metric {name!r}; expected one of {sorted(_BY_NAME)}"
        ) from None
