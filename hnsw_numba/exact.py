"""Exact k nearest neighbours by brute force, in bounded memory, on all cores.

The data are read in blocks of rows (an array, a memory map, an h5py or Zarr array, a
:class:`~hnsw_numba.VectorSource` or a file path), so a data set larger than memory needs
no chunking by hand. For each block and each slice of queries one matrix product (NumPy's
BLAS, all of its threads) scores every pair; the ``k`` best of each query are picked with
``argpartition`` on several threads (NumPy releases the GIL there), their distances are
computed again directly from the vectors, and they are merged into a running top-k.

Distances are the index's: squared L2, ``1 - cos`` (vectors normalised as
:meth:`Metric.prepare` does), ``1 - dot``.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

import numpy as np

from .core.errors import DimensionMismatchError, InvalidParameterError, InvalidVectorError, VectorFileError
from .core.metrics import L2_CODE, Metric, metric_from_name
from .core.parallel import resolve_threads, run_parallel
from .io.vectors import VectorSource, open_vectors

__all__ = ["exact_neighbors", "as_metric"]

_BLOCK_BYTES = 1 << 26  # data rows read per block: about 64 MiB of them
_SCORE_ELEMENTS = 1 << 24  # query x row scores per matrix product (64 MiB in float32)
_GATHER_BYTES = 1 << 25  # candidate rows gathered at once per thread to recompute distances
_PIECE = 16  # query rows per unit of threaded selection work (at most)


def as_metric(metric: Any) -> Metric:
    """A :class:`Metric` from a name (``"l2"``, ``"cosine"``, ``"ip"``, ...) or a Metric instance."""
    if isinstance(metric, Metric):
        return metric
    if isinstance(metric, str):
        return metric_from_name(metric)
    raise InvalidParameterError(f"metric must be a name such as 'l2' or a Metric such as hn.L2(), got {metric!r}")


def exact_neighbors(data: Any, queries: Any, k: int, metric: Any = "l2", *, dtype: Any = np.float32, chunk: int | None = None,
                    query_chunk: int | None = None, num_threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The exact ``k`` nearest rows of ``data`` to every query, best first.

    Parameters
    ----------
    data : array_like (n, dim), VectorSource, or str / path-like
        The vectors searched. Read ``chunk`` rows at a time: a memory map, h5py dataset,
        Zarr array, :class:`~hnsw_numba.VectorSource` or file (anything
        :func:`~hnsw_numba.open_vectors` reads) may be larger than memory.
    queries : array_like (nq, dim) or (dim,)
        Held in memory.
    k : int
        Neighbours per query; fewer than ``k`` rows pad with index -1 and distance inf.
    metric : str or Metric
        ``"l2"`` (squared Euclidean), ``"cosine"`` (``1 - cos``), ``"ip"`` (``1 - dot``),
        or a metric object (a ``*Qi8`` one compares the float vectors).
    dtype : float32 or float64
        Arithmetic and distance type. float32 matches what the index computes; float64 is
        the reference for ground truth (near-ties ordered exactly).
    chunk : int, optional
        Data rows per block (default: about 64 MiB of them).
    query_chunk : int, optional
        Queries per matrix product (default: a score block of at most 2**24 entries).
    num_threads : int, optional
        Threads picking the top k (default all cores); the matrix products use NumPy's
        BLAS threads.

    Returns
    -------
    indices : ndarray int64 (nq, k)
        Row numbers into ``data``; ties go to the lower row number.
    distances : ndarray (nq, k) of ``dtype``
        Computed directly from the vectors (not from the matrix product).

    Notes
    -----
    Memory: two data blocks, one score block and the running top-k (``nq * k`` indices
    and distances), whatever the size of ``data``. A row of ``data`` or ``queries``
    holding NaN or inf raises (``VectorFileError`` for a file, else ``InvalidVectorError``).

    Examples
    --------
    >>> import numpy as np, hnsw_numba as hn
    >>> data = np.array([[0, 0], [1, 0], [0, 2]], np.float32)
    >>> idx, dist = hn.exact_neighbors(data, np.array([[0.9, 0.1]]), 2, dtype=np.float64)
    >>> idx.tolist(), dist.round(2).tolist()
    ([[1, 0]], [[0.02, 0.82]])
    """
    met = as_metric(metric)
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise InvalidParameterError(f"dtype must be float32 or float64, got {dt}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InvalidParameterError(f"k must be a positive int, got {k!r}")
    k = int(k)
    resolve_threads(num_threads, 1)  # a bad num_threads fails before any work
    src, owned = _source(data)
    try:
        q = _queries(queries, src.dim, dt, met)
        rows = _positive("chunk", chunk, max(256, _BLOCK_BYTES // (src.dim * dt.itemsize)))
        qc = _positive("query_chunk", query_chunk, max(1, _SCORE_ELEMENTS // min(rows, src.n)))
        best_i = np.full((q.shape[0], k), -1, np.int64)
        best_d = np.full((q.shape[0], k), np.inf, dt)
        for start in range(0, src.n, rows):
            x = _block(src, start, min(start + rows, src.n), dt, met, owned)
            x_sq = np.einsum("ij,ij->i", x, x) if met.code == L2_CODE else None
            for q0 in range(0, q.shape[0], qc):
                qs = q[q0 : q0 + qc]
                scores = qs @ x.T  # BLAS, all its threads
                _select(scores, qs, x, x_sq, start, met, best_i[q0 : q0 + qc], best_d[q0 : q0 + qc], num_threads)
    finally:
        if owned:
            src.close()
    return best_i, best_d


def _positive(name: str, value: Any, default: int) -> int:
    if value is None:
        return int(default)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InvalidParameterError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _source(data: Any) -> tuple[VectorSource, bool]:
    """``(source, whether this call opened it)``."""
    if isinstance(data, VectorSource):
        return data, False
    if isinstance(data, (str, os.PathLike)):
        return open_vectors(data), True
    if not hasattr(data, "shape") or not hasattr(data, "dtype"):
        data = np.asarray(data)
    if len(data.shape) != 2:
        raise DimensionMismatchError(f"data must be 2-D (n, dim), got shape {tuple(data.shape)}")
    try:
        return VectorSource(data, "data"), False
    except VectorFileError as exc:
        raise InvalidParameterError(str(exc)) from None


def _queries(queries: Any, dim: int, dt: np.dtype, met: Metric) -> np.ndarray:
    q = np.asarray(queries)
    if q.ndim == 1:
        q = q[None, :]
    if q.ndim != 2 or q.shape[1] != dim:
        raise DimensionMismatchError(f"queries must be (nq, {dim}) like the data, got shape {np.shape(queries)}")
    if q.dtype.kind not in "fiu":
        raise InvalidVectorError(f"queries must be numbers, got dtype {q.dtype}")
    q = np.ascontiguousarray(q, dtype=dt)
    bad = ~np.isfinite(q).all(axis=1)
    if bad.any():
        raise InvalidVectorError(f"queries: row {int(np.argmax(bad))} contains NaN or inf")
    return _prepare(q, met)


def _block(src: VectorSource, a: int, b: int, dt: np.dtype, met: Metric, owned: bool) -> np.ndarray:
    try:
        x = src.read(a, b, dtype=dt)
    except VectorFileError as exc:
        if owned or src.where != "data":
            raise
        raise InvalidVectorError(str(exc)) from None
    return _prepare(x, met)


def _prepare(x: np.ndarray, met: Metric) -> np.ndarray:
    """Unit rows for cosine, as :meth:`Metric.prepare` does (its recipe, in float64 too)."""
    if not met.normalize:
        return x
    if x.dtype == np.float32:
        return met.prepare(x)
    peak = np.abs(x).max(axis=1, keepdims=True)
    y = np.divide(x, peak, out=np.zeros_like(x), where=peak > 0)
    norms = np.sqrt(np.einsum("ij,ij->i", y, y))[:, None]
    return np.divide(y, norms, out=y, where=norms > 0)


def _select(scores: np.ndarray, qs: np.ndarray, x: np.ndarray, x_sq: np.ndarray | None, start: int, met: Metric,
            best_i: np.ndarray, best_d: np.ndarray, num_threads: int | None) -> None:
    """Merge the top k of each row of ``scores`` (queries ``qs`` x block ``x``) into ``best_*``."""
    k = best_i.shape[1]
    kk = min(k, x.shape[0])
    threads = resolve_threads(num_threads, qs.shape[0])
    piece = max(1, min(_PIECE, -(-qs.shape[0] // threads)))  # every thread gets work, even for few queries
    pieces = -(-qs.shape[0] // piece)
    counter = itertools.count()

    def work() -> None:
        while (p := next(counter)) < pieces:
            r = slice(p * piece, min((p + 1) * piece, qs.shape[0]))
            s = scores[r]
            if x_sq is not None:  # |x|^2 - 2 q.x orders rows as |q - x|^2 does
                s *= -2
                s += x_sq
            else:
                np.negative(s, out=s)
            if kk < x.shape[0]:
                cand = np.argpartition(s, kk - 1, axis=1)[:, :kk]
            else:
                cand = np.broadcast_to(np.arange(kk), (s.shape[0], kk))
            d = _distances(qs[r], x, cand, met)
            ids = np.concatenate([best_i[r], cand + start], axis=1)
            ds = np.concatenate([best_d[r], d], axis=1)
            order = np.lexsort((ids, ds), axis=1)[:, :k]
            best_i[r] = np.take_along_axis(ids, order, axis=1)
            best_d[r] = np.take_along_axis(ds, order, axis=1)

    run_parallel(work, min(threads, pieces))


def _distances(q: np.ndarray, x: np.ndarray, cand: np.ndarray, met: Metric) -> np.ndarray:
    """Distances from each query to its candidate rows, computed from the vectors."""
    out = np.empty(cand.shape, x.dtype)
    step = max(1, _GATHER_BYTES // max(1, cand.shape[1] * x.shape[1] * x.itemsize))
    for a in range(0, cand.shape[0], step):
        rows = x[cand[a : a + step]]  # (r, kk, dim)
        qa = q[a : a + step, None, :]
        if met.code == L2_CODE:
            diff = rows - qa
            out[a : a + step] = np.einsum("ijk,ijk->ij", diff, diff)
        else:
            out[a : a + step] = 1 - np.matmul(rows, qa.transpose(0, 2, 1))[:, :, 0]
    return out
