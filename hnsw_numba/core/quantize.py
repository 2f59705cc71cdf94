"""Per-vector quantized int8 (Qi8): value = scale * (code - zero_point).

Rounding scheme of :func:`quantize_qi8` (TFLite-style asymmetric quantization with zero
exactly representable): each vector's range ``[min(x, 0), max(x, 0)]`` is mapped onto the 256
codes ``[-128, 127]``::

    lo, hi     = min(min(x), 0), max(max(x), 0)
    scale      = max((hi - lo) / 255, 2**-126)  (1 for an all-zero vector)
    zero_point = clip(rint(-128 - lo / scale), -128, 127)
    code       = clip(rint(x / scale) + zero_point, -128, 127)

``rint`` rounds half to even. Each component is reproduced within ``scale / 2``; a zero stays
exactly zero. The scale is at least float32's smallest normal number, so it stays > 0 as the
float32 the kernels read (a vector within ~1e-36 of zero reads as zero). Distances against codes
accumulate in float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import DimensionMismatchError, InvalidVectorError
from .store_base import float32_array

__all__ = ["Qi8", "Qi8Batch", "quantize_qi8", "dequantize", "quantize_rows", "check_codes", "check_scales"]


def check_codes(data: np.ndarray, ndim: int) -> np.ndarray:
    """``data`` if it is an int8 array of ``ndim`` dimensions with at least one column."""
    if not isinstance(data, np.ndarray) or data.dtype != np.int8:
        raise InvalidVectorError(f"Qi8 data must be an int8 array, got {getattr(data, 'dtype', type(data).__name__)}")
    if data.ndim != ndim or data.shape[-1] < 1:
        raise DimensionMismatchError(f"Qi8 data must be {ndim}-D with at least one column, got shape {data.shape}")
    return data


_SCALE_MAX = float(np.finfo(np.float32).max) / 255
#: The smallest scale :func:`quantize_rows` gives: float32's smallest normal number
_SCALE_MIN = float(np.finfo(np.float32).tiny)


def check_scales(scale: np.ndarray, zero: np.ndarray) -> None:
    """Scale finite and > 0 *as the float32 the kernels use*; zero point an integer in [-128, 127]."""
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            s32 = np.asarray(scale).astype(np.float32)  # 1e300 -> inf, 1e-50 -> 0: both refused
            z = np.asarray(zero).astype(np.float64)
    except (TypeError, ValueError):
        raise InvalidVectorError("Qi8 scale and zero_point must be numbers") from None
    # scale * (code - zero) spans up to 255 steps: past FLT_MAX / 255 the values overflow
    if not np.all(np.isfinite(s32)) or np.any(s32 <= 0) or np.any(s32 > _SCALE_MAX):
        raise InvalidVectorError(f"Qi8 scale must be > 0 and at most {_SCALE_MAX:.4g} (as float32): the values it scales must be finite")
    if not np.all(np.isfinite(z)) or np.any((z < -128) | (z > 127)) or not np.all(z == np.round(z)):
        raise InvalidVectorError("Qi8 zero_point must be an integer in [-128, 127]")


@dataclass(frozen=True)
class Qi8:
    """One quantized vector: ``data`` int8[dim], ``scale`` > 0, ``zero_point`` in [-128, 127]."""

    data: np.ndarray
    scale: float
    zero_point: int

    def __post_init__(self) -> None:
        check_codes(self.data, 1)
        check_scales(np.asarray([self.scale]), np.asarray([self.zero_point]))

    def dequantize(self) -> np.ndarray:
        """The float32 vector the codes stand for."""
        return (np.float32(self.scale) * (self.data.astype(np.float32) - np.float32(self.zero_point))).astype(np.float32)


@dataclass(frozen=True)
class Qi8Batch:
    """Many quantized vectors: ``data`` int8[n, dim], ``scale`` float32[n], ``zero_point`` int8[n]."""

    data: np.ndarray
    scale: np.ndarray
    zero_point: np.ndarray

    def __post_init__(self) -> None:
        check_codes(self.data, 2)
        n = self.data.shape[0]
        scale = np.asarray(self.scale)
        zero = np.asarray(self.zero_point)
        if scale.shape != (n,) or zero.shape != (n,):
            raise DimensionMismatchError(f"scale and zero_point must have shape ({n},), got {scale.shape} and {zero.shape}")
        check_scales(scale, zero)
        object.__setattr__(self, "scale", scale.astype(np.float32))
        object.__setattr__(self, "zero_point", zero.astype(np.int8))

    def __len__(self) -> int:
        return int(self.data.shape[0])

    def __getitem__(self, i: int) -> Qi8:
        return Qi8(self.data[i], float(self.scale[i]), int(self.zero_point[i]))

    def dequantize(self) -> np.ndarray:
        """float32[n, dim] values."""
        return (self.scale[:, None] * (self.data.astype(np.float32) - self.zero_point.astype(np.float32)[:, None])).astype(np.float32)


def quantize_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(codes int8[n, dim], scale float32[n], zero_point int8[n])`` of float rows (the module's scheme)."""
    x = np.asarray(x, np.float32)
    if not np.isfinite(x).all():
        raise InvalidVectorError("cannot quantize NaN or inf")
    lo = np.minimum(x.min(axis=1), 0).astype(np.float64)
    hi = np.maximum(x.max(axis=1), 0).astype(np.float64)
    scale = (hi - lo) / 255.0
    scale = np.where(scale > 0, np.maximum(scale, _SCALE_MIN), 1.0)  # no float32 underflow to 0
    zero = np.clip(np.rint(-128.0 - lo / scale), -128, 127)
    codes = np.clip(np.rint(x / scale[:, None]) + zero[:, None], -128, 127).astype(np.int8)
    return codes, scale.astype(np.float32), zero.astype(np.int8)


def quantize_qi8(x: np.ndarray) -> Qi8 | Qi8Batch:
    """Quantize one vector (dim,) to :class:`Qi8` or a batch (n, dim) to :class:`Qi8Batch`."""
    arr = float32_array(x)
    if arr.ndim in (1, 2) and arr.shape[-1] == 0:
        raise DimensionMismatchError(f"expected vectors with at least one component, got shape {arr.shape}")
    if arr.ndim == 1:
        codes, scale, zero = quantize_rows(arr[None, :])
        return Qi8(codes[0], float(scale[0]), int(zero[0]))
    if arr.ndim != 2:
        raise DimensionMismatchError(f"expected a vector or a 2-D batch, got shape {arr.shape}")
    codes, scale, zero = quantize_rows(arr)
    return Qi8Batch(codes, scale, zero)


def dequantize(q: Qi8 | Qi8Batch) -> np.ndarray:
    """float32 values of a :class:`Qi8` (dim,) or :class:`Qi8Batch` (n, dim); anything else
    raises :class:`InvalidVectorError`."""
    if not isinstance(q, (Qi8, Qi8Batch)):
        raise InvalidVectorError(f"dequantize takes a Qi8 or Qi8Batch (from quantize_qi8), got {type(q).__name__}")
    return q.dequantize()
