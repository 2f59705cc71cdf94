"""Exact k nearest neighbours by brute force, in bounded memory, on all cores.

The data are read in blocks of rows (an array, a memory map, an h5py or Zarr array, a
:class:`~hnsw_numba.VectorSource` or a file path), so a data set larger than memory needs
no chunking by hand. For each block and each slice of queries one matrix product (NumPy's
BLAS, all of its threads) scores every pair; those scores only *shortlist*: every row whose
score may reach the query's top k is kept (``partition`` and a comparison on several
threads, NumPy releases the GIL there), its distance is computed again directly from the
vectors, and the shortlist is merged into a running top-k.

Distances are the index's: squared L2, ``1 - cos`` (vectors normalised as
:meth:`Metric.prepare` does), ``1 - dot``.

Why the shortlist cannot miss a true neighbour (the argument of
:mod:`hnsw_numba.kernels.shortlist`): let ``a_c`` be row ``c``'s score, ``D_c`` its exact
distance (less a constant of the query), ``E`` a bound on ``|a_c - D_c|`` for every row of
the block and ``T`` the k-th smallest score. The k rows at or below ``T`` have ``D <= T + E``,
so a row with ``a_c > T + 2E`` has k rows strictly nearer: every row with ``a_c <= T + 2E``
is kept. The final order is that of the recomputed distances (rows whose exact distances
differ by less than their rounding may trade places).

The scores: L2 as ``|x|^2 - 2 x.q`` cancels catastrophically for data far from the origin
(at 1000 +- 0.1 the float32 rounding of ``|x|^2`` exceeds every distance), so each block
and the queries are first moved by the block's mean (L2 is translation invariant) and the
score is one product over ``[x - m, |x - m|^2]`` and ``[-2 (q - m), 1]``. With ``u`` the unit
roundoff, ``g = n u / (1 - n u)`` at ``n = dim + 8`` (Higham, *Accuracy and Stability of
Numerical Algorithms*, 2nd ed., section 3.1: any order, with or without fused multiply-adds),
``X`` the largest centred row norm and ``Q`` the centred query's norm, the product is within
``g X (X + 2Q)`` of its exact value, the rounding of ``|x - m|^2`` adds ``g X^2`` and the
rounding of ``x - m`` and ``q - m`` at most ``2.0001 u (X + Q)^2``: ``E = 2 g X (X + 2Q) +
4 u (X + Q)^2``. The inner product's score ``-x.q`` is within ``g X Q``: ``E = 2 g X Q``. A
floor of ``4 (dim + 8)`` smallest normal numbers covers underflow. On ordinary data the
shortlist is k rows and a handful.

The merge, in bounded memory whatever the ties: many exact duplicates share the k-th score, so
a query's shortlist may hold the whole block. Each thread merges at most ``_MERGE_PAIRS``
(query, row) pairs at once: a longer shortlist is taken in ranges of rows, in increasing
order, so every row held (earlier blocks, earlier ranges) has a lower number than the rows of
the range merged next. A row then enters only at a distance strictly below the k-th held (at
an equal one the held row, lower, keeps its place), and the result is that of one merge of
the whole shortlist: the exact top-k, ties to the lower row. No bound on the scores skips a
duplicate: identical rows have identical scores and distances, so each one's lower bound lies
below the k-th distance held; their distances are recomputed, in bounded pieces.
"""

from __future__ import annotations

import itertools
import math
import os
from typing import Any

import numpy as np

from .core.errors import DimensionMismatchError, InvalidParameterError, InvalidVectorError, VectorFileError
from .core.limits import check_allocation
from .core.metrics import L2_CODE, Metric, metric_from_name
from .core.parallel import resolve_threads, run_parallel
from .core.store_base import float32_array, value_limit, within_limit
from .core.validate import refuse_masked
from .io.source import check_stored_rows
from .io.vectors import VectorSource, open_vectors

__all__ = ["exact_neighbors", "as_metric"]

_BLOCK_BYTES = 1 << 26  # data rows read per block: about 64 MiB of them
_SCORE_ELEMENTS = 1 << 24  # query x row scores per matrix product (64 MiB in float32)
_GATHER_BYTES = 1 << 25  # candidate rows gathered at once per thread to recompute distances
_PIECE = 16  # query rows per unit of threaded selection work (at most)
_MERGE_PAIRS = 1 << 16  # shortlisted (query, row) pairs merged at once per thread: bounds memory under ties


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
    Memory: up to three data blocks (the third, for L2, is the block moved to its mean), one
    score block, at most one more across the threads while each picks its k-th scores (and a
    quarter of one as the shortlist's mask), the running top-k (``nq * k`` indices and
    distances) and, per thread, a merge of at most 2**16 (query, row) pairs (a few MiB and the
    rows' vectors, at most 32 MiB), whatever the size of ``data`` and however many rows tie.
    A row of ``data`` or ``queries`` holding NaN or inf raises (``VectorFileError`` for a
    file, else ``InvalidVectorError``); for L2 and inner product, as the index does, so does a
    component beyond ``sqrt(FLT_MAX / (4 dim))`` (``InvalidVectorError``), past which float32
    distances overflow, and a NumPy masked array with a masked entry (``InvalidVectorError``).

    The matrix product only shortlists: every row whose score is within twice a rigorous
    bound on the scores' rounding error of the query's k-th best score is re-scored from the
    vectors (see the module docstring), so the answer is the exact top-k at any offset of the data, up to
    the order of rows whose distances differ by less than their rounding.

    Examples
    --------
    >>> import numpy as np, hnsw_numba as hn
    >>> data = np.array([[0, 0], [1, 0], [0, 2]], np.float32)
    >>> idx, dist = hn.exact_neighbors(data, np.array([[0.9, 0.1]]), 2, dtype=np.float64)
    >>> idx.tolist(), dist.round(2).tolist()
    ([[1, 0]], [[0.02, 0.82]])
    """
    met = as_metric(metric)
    try:
        dt = np.dtype(dtype)
    except (TypeError, ValueError):
        raise InvalidParameterError(f"dtype must be float32 or float64, got {dtype!r}") from None
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise InvalidParameterError(f"dtype must be float32 or float64, got {dt}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InvalidParameterError(f"k must be a positive int, got {k!r}")
    k = int(k)
    resolve_threads(num_threads, 1)  # a bad num_threads fails before any work
    src, owned = _source(data)
    try:
        q, q_peak = _queries(queries, src.dim, dt, met)
        rows = _positive("chunk", chunk, max(256, _BLOCK_BYTES // (src.dim * dt.itemsize)))
        qc = _positive("query_chunk", query_chunk, max(1, _SCORE_ELEMENTS // min(rows, src.n)))
        check_allocation(q.shape[0] * k * (8 + dt.itemsize), f"results for {q.shape[0]:,} queries x k={k:,}")  # before it is allocated
        best_i = np.full((q.shape[0], k), -1, np.int64)
        best_d = np.full((q.shape[0], k), np.inf, dt)
        for start in range(0, src.n, rows):
            x, x_peak = _block(src, start, min(start + rows, src.n), dt, met, owned)
            xs, qs, margin = _scoring(x, q, met, max(x_peak, q_peak))
            for q0 in range(0, q.shape[0], qc):
                scores = qs[q0 : q0 + qc] @ xs.T  # BLAS, all its threads
                part = slice(q0, q0 + qc)
                _select(scores, margin[part], q[part], x, start, met, best_i[part], best_d[part], num_threads)
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
    data = refuse_masked(data, "data")  # its rows are read as they are stored, the masked ones too
    check_stored_rows(data, "data")  # an h5py dataset: open (its shape read raises otherwise), rows in its own file
    if not hasattr(data, "shape") or not hasattr(data, "dtype"):
        data = _array("data", data)
    try:  # an HDF5 dataset with a null dataspace has shape None
        shape = tuple(data.shape)
    except TypeError:
        raise DimensionMismatchError(f"data must be 2-D (n, dim), got shape {data.shape!r}") from None
    if len(shape) != 2:
        raise DimensionMismatchError(f"data must be 2-D (n, dim), got shape {shape}")
    try:
        return VectorSource(data, "data"), False
    except VectorFileError as exc:
        if type(data).__module__.startswith("h5py"):  # a file's dataset: the file's error, as for its path
            raise
        raise InvalidParameterError(str(exc)) from None


def _array(where: str, values: Any) -> np.ndarray:
    """``values`` as an array, unconverted; NumPy's ValueError for ragged rows becomes :class:`InvalidVectorError`,
    as does a masked array with a masked entry (:func:`~hnsw_numba.core.validate.refuse_masked`)."""
    values = refuse_masked(values, where)
    try:
        return np.asarray(values)
    except (TypeError, ValueError) as exc:
        raise InvalidVectorError(f"{where}: cannot read rows of numbers: {exc}") from None


def _queries(queries: Any, dim: int, dt: np.dtype, met: Metric) -> tuple[np.ndarray, float]:
    """The queries as ``dt`` prepared for ``met``, and their largest magnitude (see :func:`_peak`)."""
    q = _array("queries", queries)
    if q.ndim == 1:
        q = q[None, :]
    if q.ndim != 2 or q.shape[1] != dim:
        raise DimensionMismatchError(f"queries must be (nq, {dim}) like the data, got shape {np.shape(queries)}")
    if q.dtype.kind not in "fiu":
        raise InvalidVectorError(f"queries must be numbers, got dtype {q.dtype}")
    if met.normalize and q.dtype.kind == "f" and q.dtype.itemsize > dt.itemsize:
        q = float32_array(q, unit=True)  # scaled in its own type: float64 rows of 1e-50 keep their direction
    with np.errstate(over="ignore"):  # a float64 past float32's range: named below
        cast = np.ascontiguousarray(q, dtype=dt)
    bad = ~np.isfinite(cast).all(axis=1)
    if bad.any():
        row = int(np.argmax(bad))
        what = "contains NaN or inf" if not np.isfinite(q[row]).all() else f"has a value beyond {np.dtype(dt).name}'s range"
        raise InvalidVectorError(f"queries: row {row} {what}")
    q = cast
    return _prepare(q, met), _peak(q, met, "queries", 0)


def _block(src: VectorSource, a: int, b: int, dt: np.dtype, met: Metric, owned: bool) -> tuple[np.ndarray, float]:
    """Rows ``a:b`` prepared for ``met``, and their largest magnitude (see :func:`_peak`)."""
    try:
        wide = met.normalize and src.dtype.kind == "f" and src.dtype.itemsize > dt.itemsize
        x = float32_array(src.read(a, b, dtype=None), unit=True) if wide else src.read(a, b, dtype=dt)
    except VectorFileError as exc:
        if owned or src.where != "data":
            raise
        raise InvalidVectorError(str(exc)) from None
    return _prepare(x, met), _peak(x, met, src.where, a)


def _peak(v: np.ndarray, met: Metric, where: str, first: int) -> float:
    """The largest magnitude in the finite rows ``v`` (0 for cosine, whose vectors are
    normalised); InvalidVectorError for a component the index refuses (its
    :func:`~hnsw_numba.core.store_base.value_limit`: past it float32 distances overflow)."""
    if met.normalize or v.size == 0:
        return 0.0
    peak = max(float(v.max()), -float(v.min()))
    if peak > value_limit(v.shape[1]):
        row = first + int(np.argmin(within_limit(v)))
        raise InvalidVectorError(f"{where}: row {row} has a component beyond +-{value_limit(v.shape[1]):.3g}: "
                                 "its distances would overflow float32 (scale the vectors down)")
    return peak


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


def _scoring(x: np.ndarray, q: np.ndarray, met: Metric, peak: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(xs, qs, margin)``: ``qs @ xs.T`` scores every query against every row of the block
    ``x`` (smaller is nearer; for L2 less ``|q - m|^2``, the same for every row), each score
    within ``margin`` (one per query: ``E`` of the module docstring) of the exact one."""
    dt = x.dtype
    u = float(np.finfo(dt).eps) / 2
    dim = x.shape[1]
    nu = (dim + 8) * u
    g = nu / (1 - nu)
    floor = 4 * (dim + 8) * float(np.finfo(dt).tiny)
    if met.code != L2_CODE:
        x_norm = math.sqrt(float(np.einsum("ij,ij->i", x, x).max())) * (1 + g)  # the float32 sums err by at most g
        q_norm = np.sqrt(np.einsum("ij,ij->i", q, q, dtype=np.float64))
        return x, -q, 2 * g * x_norm * q_norm + floor
    m = x.mean(axis=0, dtype=np.float64).astype(dt)
    xs = np.empty((x.shape[0], dim + 1), dt)
    xc = np.subtract(x, m, out=xs[:, :dim])
    qc = q - m
    if peak > value_limit(dim) / 4:  # a centred value may reach 2 * peak: a quarter (exact) keeps the scores finite
        xc *= 0.25
        qc *= 0.25
    xs[:, dim] = np.einsum("ij,ij->i", xc, xc)
    x_norm = math.sqrt(float(xs[:, dim].max())) * (1 + g)
    q_norm = np.sqrt(np.einsum("ij,ij->i", qc, qc, dtype=np.float64))
    qs = np.empty((q.shape[0], dim + 1), dt)
    np.multiply(qc, -2, out=qs[:, :dim])
    qs[:, dim] = 1
    return xs, qs, 2 * g * x_norm * (x_norm + 2 * q_norm) + 4 * u * (x_norm + q_norm) ** 2 + floor


def _select(scores: np.ndarray, margin: np.ndarray, qs: np.ndarray, x: np.ndarray, start: int, met: Metric,
            best_i: np.ndarray, best_d: np.ndarray, num_threads: int | None) -> None:
    """Merge the top k of each query ``qs`` (row of ``scores``) over the block ``x`` into ``best_*``:
    every row scored within ``2 * margin`` of the k-th best, with distances from the vectors,
    at most ``_MERGE_PAIRS`` (query, row) pairs at a time whatever the ties."""
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
            kth = np.partition(s, kk - 1, axis=1)[:, kk - 1].astype(np.float64)
            # rounded up to the score type: no row within the bound is lost to rounding
            bound = np.nextafter((kth + 2 * margin[r]).astype(s.dtype), np.inf)
            keep = s <= bound[:, None]
            # a long shortlist (ties) is merged in column ranges, in increasing order, so that the
            # rows held always have lower numbers than the rows merged next (see _merge)
            widest = np.count_nonzero(keep)  # bounds every query's count; counted per query (slower) when large
            if widest * s.shape[0] > _MERGE_PAIRS:
                widest = int(np.count_nonzero(keep, axis=1).max())
            cols = s.shape[1] if widest * s.shape[0] <= _MERGE_PAIRS else max(1, _MERGE_PAIRS // s.shape[0])
            for c0 in range(0, s.shape[1], cols):
                _merge(keep[:, c0 : c0 + cols], c0, qs[r], x, start, met, best_i[r], best_d[r])

    run_parallel(work, min(threads, pieces))


def _merge(keep: np.ndarray, c0: int, q: np.ndarray, x: np.ndarray, start: int, met: Metric,
           best_i: np.ndarray, best_d: np.ndarray) -> None:
    """Merge the rows ``x[c0 + j]`` for which ``keep[i, j]`` holds into the top k of query ``q[i]``
    (``best_*`` views, updated in place); every row held has a lower number than ``start + c0``."""
    # row-major, each query's rows together; flatnonzero is many times faster than a 2-D nonzero
    rows, cols = np.divmod(np.flatnonzero(keep), keep.shape[1])
    cols += c0
    d = _distances(q, x, rows, cols, met)
    # a row enters only strictly below the k-th distance held: at an equal one the held row is lower
    enter = d < best_d[rows, -1]
    if not enter.any():
        return
    rows, cols, d = rows[enter], cols[enter], d[enter]
    k = best_i.shape[1]
    counts = np.bincount(rows, minlength=keep.shape[0])
    slot = np.arange(rows.size) - np.repeat(np.cumsum(counts) - counts, counts) + k
    ids = np.full((keep.shape[0], k + int(counts.max())), -1, np.int64)
    ds = np.full(ids.shape, np.inf, best_d.dtype)
    ids[:, :k], ds[:, :k] = best_i, best_d
    ids[rows, slot], ds[rows, slot] = cols + start, d
    order = np.lexsort((ids, ds), axis=1)[:, :k]
    best_i[:] = np.take_along_axis(ids, order, axis=1)
    best_d[:] = np.take_along_axis(ds, order, axis=1)


def _distances(q: np.ndarray, x: np.ndarray, rows: np.ndarray, cols: np.ndarray, met: Metric) -> np.ndarray:
    """Distances from query ``q[rows[j]]`` to row ``x[cols[j]]`` for every ``j``, computed from the vectors."""
    out = np.empty(rows.size, x.dtype)
    step = max(1, _GATHER_BYTES // (2 * x.shape[1] * x.itemsize))
    for a in range(0, rows.size, step):
        xr = np.take(x, cols[a : a + step], axis=0)  # take gathers rows several times faster than indexing
        qr = np.take(q, rows[a : a + step], axis=0)
        if met.code == L2_CODE:
            np.subtract(xr, qr, out=xr)
            out[a : a + step] = np.einsum("ij,ij->i", xr, xr)
        else:
            out[a : a + step] = 1 - np.einsum("ij,ij->i", xr, qr)
    return out
