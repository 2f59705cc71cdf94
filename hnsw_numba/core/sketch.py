"""A Filter's int8 sketch of its allowed rows: the codes and per-row terms that
:mod:`~hnsw_numba.kernels.sketch` estimates distances and bounds their errors from. Made from
the Filter's block (:class:`Sketch`), or, for a filter whose block would exceed
``BLOCK_BYTES``, from the store's rows gathered by NodeId (:class:`WideSketch`)."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ..kernels.sketch import T_ERR, T_LO, T_NORM, T_SCALE, T_SQ, T_SU, TERMS
from .filters import as_float32

__all__ = ["Sketch", "WideSketch", "build_sketch", "build_wide_sketch", "sketch_bytes", "SKETCH_CHUNK"]

#: Rows widened to float64 at once while a sketch is built (bounds its scratch memory).
SKETCH_CHUNK = 4096


class Sketch(NamedTuple):
    """A block's sketch (see :func:`build_sketch`)."""

    block: tuple  # the block it was made from (rows of the store's class)
    codes: np.ndarray  # uint8[n, dim]
    terms: np.ndarray  # float64[TERMS, n] (kernels.sketch.T_*)


class WideSketch(NamedTuple):
    """The sketch of a filter's allowed rows read from the store (see :func:`build_wide_sketch`)."""

    block: tuple  # the store's (exact) rows it was made from: the rows re-scored
    key: tuple  # (store, version, compiled filter) it was made for
    codes: np.ndarray  # uint8[len(ids), dim]
    terms: np.ndarray  # float64[TERMS, len(ids)]


def sketch_bytes(n: int, dim: int) -> int:
    """Bytes of the codes and terms of a sketch of ``n`` rows of ``dim``."""
    return n * (dim + 8 * TERMS)


def build_sketch(block: tuple) -> Sketch:
    """uint8 codes of every row of ``block`` over its own range, ``x ~ lo + s u`` with ``s =
    (max - min) / 255``, and the terms of the bound, from the float32 form of the rows
    (``as_float32``) in float64."""
    codes, terms = _codes(block, block[0].shape[0], lambda r0, r1: type(block)(*(a[r0:r1] for a in block)))
    return Sketch(block, codes, terms)


def build_wide_sketch(rows: tuple, ids: np.ndarray, key: tuple) -> WideSketch:
    """:func:`build_sketch` of rows ``ids`` of the store's ``rows``, gathered a chunk at a time."""
    codes, terms = _codes(rows, ids.shape[0], lambda r0, r1: type(rows)(*(np.asarray(a[ids[r0:r1]]) for a in rows)))
    return WideSketch(rows, key, codes, terms)


def _codes(rows: tuple, n: int, chunk: Any) -> tuple[np.ndarray, np.ndarray]:
    """Codes and terms of ``n`` rows, ``chunk(r0, r1)`` giving rows ``r0 .. r1 - 1``."""
    dim = rows[0].shape[1]
    codes = np.empty((n, dim), np.uint8)
    terms = np.empty((TERMS, n), np.float64)
    for r0 in range(0, n, SKETCH_CHUNK):
        r1 = min(n, r0 + SKETCH_CHUNK)
        x = as_float32(chunk(r0, r1)).astype(np.float64)
        lo = x.min(axis=1).astype(np.float32).astype(np.float64)  # float32 values: exact in the float64 products below
        s = ((x.max(axis=1) - lo) / 255.0).astype(np.float32).astype(np.float64)
        safe = np.where(s > 0.0, s, 1.0)
        u = np.clip(np.rint((x - lo[:, None]) / safe[:, None]), 0.0, 255.0)
        u[s == 0.0] = 0.0
        e = x - (lo[:, None] + s[:, None] * u)
        # the residual's float64 rounding (each element within 2^-52 of |lo| + 255 s + |x|),
        # added to its norm: the bound holds for the exact residual
        xn = np.sqrt(np.einsum("ij,ij->i", x, x))
        en = np.sqrt(np.einsum("ij,ij->i", e, e)) * (1.0 + 2.0**-40) + 2.0**-50 * (xn + np.sqrt(dim) * (np.abs(lo) + 255.0 * s))
        codes[r0:r1] = u.astype(np.uint8)
        terms[T_LO, r0:r1] = lo
        terms[T_SCALE, r0:r1] = s
        terms[T_ERR, r0:r1] = en
        terms[T_SU, r0:r1] = s * np.sqrt(np.einsum("ij,ij->i", u, u)) * (1.0 + 2.0**-40)
        terms[T_NORM, r0:r1] = xn * (1.0 + 2.0**-40)
        terms[T_SQ, r0:r1] = np.einsum("ij,ij->i", x, x)
    return codes, terms
