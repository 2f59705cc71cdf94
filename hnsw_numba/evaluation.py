"""Measuring an index: recall, exact neighbours, choosing ef, timing, ann-benchmarks files.

* :func:`recall` -- the mean fraction of the true neighbours a search found;
* :func:`exact_neighbors` -- brute-force ground truth in bounded memory on all cores (see
  :mod:`hnsw_numba.exact`);
* :func:`tune_ef` -- the smallest ``ef`` that reaches a target recall on a sample of queries;
* :func:`best_of` -- the least disturbed wall time of a few calls;
* :func:`load_ann_benchmarks` -- an ann-benchmarks HDF5 file (train, test, neighbors, metric).

``hnsw-numba bench`` and the repository's benchmarks are built on these.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np

from .core.config import MAX_EF, check_int
from .core.errors import DimensionMismatchError, InvalidParameterError, RecallTargetError, VectorFileError
from .core.hits import Hits
from .core.store_base import float32_array
from .core.validate import check_k, refuse_masked
from .exact import exact_neighbors
from .io.vectors import open_vectors

__all__ = ["recall", "exact_neighbors", "tune_ef", "best_of", "load_ann_benchmarks", "AnnDataset"]

DEFAULT_MAX_EF = 4096
_ROW = (list, tuple, np.ndarray, Hits)  # what holds one query's keys


# ============================================================================ recall
def recall(found: Any, truth: Any, k: int | None = None) -> float:
    """Mean fraction of the true ``k`` nearest neighbours found, over the queries.

    Parameters
    ----------
    found : array_like (n, >=0) or sequence of sequences
        Keys returned per query, best first: ``search_batch``'s keys (int64 padded with -1,
        or object padded with None), lists of keys (rows may differ in length, also in a 1-D
        object array), or :class:`~hnsw_numba.Hits`. One query's results may be one row.
    truth : array_like (n, >=k) or sequence of sequences
        The true neighbours per query, best first (e.g. :func:`exact_neighbors`' indices,
        or an ann-benchmarks ``neighbors`` dataset), rows aligned with ``found``.
    k : int, optional
        How many of each list count (default: the width of ``truth``, or of each of its
        rows when they differ). Only the first ``k`` of ``found`` are looked at, so this
        is recall@k.

    Returns
    -------
    float
        In [0, 1]. Padding (-1 for integer keys, None) is no neighbour: a query whose
        truth lists fewer than ``k`` neighbours is scored out of those it lists, and a
        query with none counts as 1. A key listed twice in ``found`` counts once.

    Raises
    ------
    InvalidParameterError
        A search's ``(keys, distances)`` pair given for the keys, or an unhashable key.
    DimensionMismatchError
        Rows that do not align (one per query), or a row that holds rows.

    Examples
    --------
    >>> import numpy as np, hnsw_numba as hn
    >>> hn.recall(np.array([[1, 2, 3], [4, 5, -1]]), np.array([[3, 2, 9], [4, 6, 7]]))
    0.5
    >>> hn.recall([["a", "b"]], [["b", "c"]])
    0.5
    """
    if k is not None and (isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1):
        raise InvalidParameterError(f"k must be a positive int, got {k!r}")
    for name, x in (("found", found), ("truth", truth)):
        if _is_pair(x):
            raise InvalidParameterError(f"recall got a (keys, distances) pair as {name}: pass the keys ({name}[0])")
    if _is_single(truth):  # one query's results
        if _rows(found) is not None and len(found) > 0 and not _is_single(found):
            raise DimensionMismatchError("found holds rows (one per query) but truth is one query's row")
        found, truth = [found], [truth]
    f, t = _rows(found), _rows(truth)
    if f is None or t is None:
        raise InvalidParameterError("found and truth must be 2-D arrays or sequences of rows (one per query)")
    if len(f) != len(t):
        raise DimensionMismatchError(f"found has {len(f)} rows, truth {len(t)}: one row per query in both")
    if len(t) == 0:
        raise InvalidParameterError("recall of no queries")
    if (isinstance(f, np.ndarray) and isinstance(t, np.ndarray) and f.dtype.kind in "iu" and t.dtype.kind in "iu"
            and (k is None or k <= t.shape[1])  # k past the truth's width: scored out of those it lists, below
            and _fits_int64(f) and _fits_int64(t)):  # uint64 labels past int64 (hnswlib's): none of them is padding
        width = t.shape[1] if k is None else int(k)
        return _recall_int(f[:, :width].astype(np.int64, copy=False), t[:, :width].astype(np.int64, copy=False))
    total = 0.0
    for i, (frow, trow) in enumerate(zip(f, t)):
        tkeys = _keys(trow, "truth", i)
        width = len(tkeys) if k is None else int(k)
        want = _key_set(tkeys[:width], "truth", i)
        got = _key_set(_keys(frow, "found", i)[:width], "found", i)
        total += len(want & got) / len(want) if want else 1.0
    return total / len(t)


def _is_pair(x: Any) -> bool:
    """Whether ``x`` is a search's ``(keys, distances)`` (or ``(indices, distances)``) tuple."""
    return (isinstance(x, tuple) and len(x) == 2 and all(isinstance(a, np.ndarray) and a.ndim > 0 for a in x)
            and x[0].shape == x[1].shape and x[1].dtype.kind == "f" and x[0].dtype.kind != "f")


def _key_set(keys: list, what: str, i: int) -> set:
    """The keys of one row that are not padding; a typed error naming an item that is no key."""
    try:
        return {x for x in keys if not _padding(x)}
    except TypeError as exc:
        if any(isinstance(x, _ROW) and not isinstance(x, tuple) for x in keys):
            raise DimensionMismatchError(f"{what} row {i} holds rows, not keys: one row of keys per query") from None
        raise InvalidParameterError(f"{what} row {i} holds an unhashable key: {exc}") from None


def _fits_int64(a: np.ndarray) -> bool:
    return a.dtype != np.uint64 or a.size == 0 or int(a.max()) <= np.iinfo(np.int64).max


def _rows(x: Any) -> Any:
    """``x`` as a 2-D array or a list of rows; None if it is neither."""
    if isinstance(x, np.ndarray):
        x = np.asarray(x)  # a subclass (np.matrix) indexes and sorts rows as 2-D slices
        if x.ndim == 1 and x.dtype == object and not _is_single(x):  # ragged rows, one object each
            return list(x)
        return x if x.ndim == 2 else None
    if isinstance(x, (list, tuple)):
        return list(x)
    return None


def _is_single(truth: Any) -> bool:
    """Whether ``truth`` is one query's list of keys (not a list of rows)."""
    if isinstance(truth, np.ndarray):
        return truth.ndim == 1 and not (truth.dtype == object and truth.size > 0 and all(isinstance(x, _ROW) for x in truth))
    return isinstance(truth, (list, tuple)) and len(truth) > 0 and not any(isinstance(x, _ROW) for x in truth)


def _keys(row: Any, what: str, i: int) -> list:
    if isinstance(row, Hits):
        return row.keys
    if not isinstance(row, _ROW):
        raise DimensionMismatchError(f"{what} row {i} is not a row of keys ({type(row).__name__}): give one row per query")
    return row.tolist() if isinstance(row, np.ndarray) else list(row)


def _padding(x: Any) -> bool:
    # -1.0 too: ground truth read from a file as floats (read_vectors' default float32) pads with it
    return x is None or (isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool) and x == -1)


def _recall_int(f: np.ndarray, t: np.ndarray) -> float:
    """recall for int64 rows, vectorised: each row deduplicated, then (row, key) pairs matched."""
    n = t.shape[0]

    def unique_valid(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = np.sort(a, axis=1)
        keep = s != -1
        keep[:, 1:] &= s[:, 1:] != s[:, :-1]
        rows = np.broadcast_to(np.arange(n)[:, None], s.shape)
        return rows[keep], s[keep]

    rt, vt = unique_valid(t)
    rf, vf = unique_valid(f)
    r, v = np.concatenate([rt, rf]), np.concatenate([vt, vf])
    order = np.lexsort((v, r))
    r, v = r[order], v[order]
    pair = (r[1:] == r[:-1]) & (v[1:] == v[:-1])  # one from each side: both are deduplicated
    hits = np.bincount(r[1:][pair], minlength=n)
    want = np.bincount(rt, minlength=n)
    per = np.where(want > 0, hits / np.maximum(want, 1), 1.0)
    return float(per.mean())


# ============================================================================ tune_ef
def tune_ef(index: Any, store: Any, queries: Any, k: int, target_recall: float = 0.95, *, truth: Any = None,
            efs: Sequence[int] | None = None, sample: int | None = 1000, max_ef: int = DEFAULT_MAX_EF, seed: int = 0,
            num_threads: int | None = None) -> int:
    """The smallest ``ef`` whose recall@k on a sample of ``queries`` reaches ``target_recall``.

    Parameters
    ----------
    index, store : Hnsw, VectorStore
        The index to tune and its vectors.
    queries : array_like (n, dim)
        Representative queries; ``sample`` of them (chosen with ``seed``) are used.
    k : int
        Neighbours per query: at most ``MAX_EF``, without ``truth`` ``MAX_EF - 1``.
    target_recall : float
        In (0, 1].
    truth : array_like (n, >=k), optional
        The true neighbours' keys of every query (rows aligned with ``queries``); by
        default computed by brute force over the index (``search_batch(exact=True)``). Hits
        count by key, as :func:`recall` counts; where the k-th true distance ties the next
        (exact duplicates: the brute force lists the lowest keys), a hit at the k-th distance
        (up to ``TIE_EPS`` float32 roundings, relative) counts too.
    efs : sequence of int, optional
        Candidates, tried in increasing order whatever their order here: the smallest that
        reaches the target is returned. By default ef = k, 2k, 4k, ... up to ``max_ef``
        until one reaches the target, then a binary search between it and the last that did not.
    sample : int or None
        Queries used (None: all).
    max_ef : int
        The largest ef tried by default (raised to ``k`` if smaller).
    seed : int
        Seeds the choice of the sampled queries.
    num_threads : int, optional
        Threads of the searches (default: all cores).

    Returns
    -------
    int
        An ef that reaches the target while ``ef - 1`` does not (``k`` if ``k`` already
        does: the index searches with ``max(ef, k)``); recall grows with ef almost always
        monotonically, so this is the smallest in practice. With ``efs``, the smallest of
        them that reaches it.

    Raises
    ------
    RecallTargetError
        No ef tried reaches the target; ``best_ef`` and ``best_recall`` tell how close
        the best came.

    Notes
    -----
    Runs searches only (``search_batch``), so it may run beside other searches; while
    the index is mutated its answer describes no particular state.

    Examples
    --------
    >>> ef = hn.tune_ef(index, store, queries, k=10, target_recall=0.95)  # doctest: +SKIP
    >>> keys, dists = index.search_batch(store, queries, 10, ef=ef)  # doctest: +SKIP
    """
    if not callable(getattr(index, "search_batch", None)) or hasattr(index, "native"):
        raise InvalidParameterError(f"index must be an Hnsw (for an hn.Index: index.tune_ef(...)), got {type(index).__name__}")
    k = check_k(k, 1 if truth is None else 0)  # the brute force's column past k must fit too
    if (isinstance(target_recall, (bool, np.bool_)) or not isinstance(target_recall, (int, float, np.integer, np.floating))
            or not 0 < target_recall <= 1):
        raise InvalidParameterError(f"target_recall must be in (0, 1], got {target_recall!r}")
    q = float32_array(refuse_masked(queries, "queries"))  # as search reads them: text, complex and ragged rows raise InvalidVectorError
    if q.ndim != 2 or q.shape[0] == 0:
        raise DimensionMismatchError(f"queries must be a non-empty 2-D array (n, dim), got shape {q.shape}")
    if truth is not None:
        try:
            truth = np.asarray(truth)
        except (TypeError, ValueError) as exc:  # ragged rows
            raise DimensionMismatchError(f"truth must have one row of at least k={k} keys per query: {exc}") from None
        if truth.ndim != 2 or truth.shape[0] != q.shape[0] or truth.shape[1] < k:
            raise DimensionMismatchError(f"truth must have one row of at least k={k} keys per query, got shape "
                                         f"{truth.shape} for {q.shape[0]} queries")
    if sample is not None:
        check_int("sample", sample, 1, 2**63 - 1)
    check_int("max_ef", max_ef, 1, MAX_EF)
    check_int("seed", seed, 0, 2**63 - 1)
    if efs is not None:
        if isinstance(efs, (str, bytes)) or not hasattr(efs, "__iter__"):
            raise InvalidParameterError(f"efs must be a sequence of ints, got {efs!r}")
        efs = list(efs)  # read once: an iterator would be empty when the efs are tried
        for e in efs:
            check_int("efs", e, 1, MAX_EF)
    if sample is not None and q.shape[0] > sample:
        pick = np.sort(np.random.default_rng(seed).choice(q.shape[0], int(sample), replace=False))
        q = q[pick]
        truth = None if truth is None else truth[pick]
    tied = bound = None
    if truth is None:
        # a column past k shows where the k-th true distance ties the next (exact duplicates): only
        # there may the walk list other tied keys than the brute force's (the lowest) and count by distance
        ids, true_d = index.search_batch(store, q, k + 1, exact=True, num_threads=num_threads)
        truth = ids[:, :k]
        bound = true_d[:, k - 1].astype(np.float64)
        bound += _tie_slack(bound, getattr(getattr(index, "metric", None), "name", "l2"))
        tied = np.isfinite(true_d[:, k]) & (true_d[:, k] <= bound)
    measured: dict[int, float] = {}

    def reaches(ef: int) -> bool:
        if ef not in measured:
            keys, dists = index.search_batch(store, q, k, ef=ef, num_threads=num_threads)
            if tied is None or not tied.any():
                measured[ef] = recall(keys, truth, k)
            else:
                near = (np.isfinite(dists[tied]) & (dists[tied] <= bound[tied, None])).sum(axis=1) / k
                per = [max(recall(f, t, k), r) for f, t, r in zip(keys[tied], truth[tied], near)]
                rest = recall(keys[~tied], truth[~tied], k) * int((~tied).sum()) if not tied.all() else 0.0
                measured[ef] = (rest + sum(per)) / q.shape[0]
        return measured[ef] >= target_recall

    def unreachable() -> RecallTargetError:
        best = max(measured.values())
        best_ef = min(e for e, r in measured.items() if r == best)
        return RecallTargetError(f"no ef up to {max(measured)} reaches recall@{k} {target_recall} on {q.shape[0]} queries; "
                                 f"best {best:.4f} at ef {best_ef}", best_ef, best)

    if efs is not None:
        tries = sorted({int(e) for e in efs})
        if not tries:
            raise InvalidParameterError(f"efs must be positive ints, got {efs!r}")
        for ef in tries:
            if reaches(ef):
                return ef
        raise unreachable()
    cap = max(int(max_ef), int(k))
    ef, miss = int(k), None
    while not reaches(ef):
        if ef >= cap:
            raise unreachable()
        miss, ef = ef, min(2 * ef, cap)
    if miss is None:
        return ef
    while ef - miss > 1:  # invariant: ef reaches the target, miss does not
        mid = (miss + ef) // 2
        if reaches(mid):
            ef = mid
        else:
            miss = mid
    return ef


#: Float32 epsilons a tie may differ by: the walk's L2 kernel sums a row's terms in another order than the
#: brute force's, so one row's two distances differ by up to ~3 eps relative (dimensions 3 to 960; dot products agree).
TIE_EPS = 8


def _tie_slack(kth: np.ndarray, metric: str) -> np.ndarray:
    """How far past the k-th true distance a tied distance may round: ``TIE_EPS`` float32
    epsilons of the summed magnitude (the distance for L2; ``1 - distance``, the dot
    product, for cosine and ip), relative and so free of the data's scale."""
    size = np.abs(kth) if metric.startswith("l2") else np.abs(kth) + np.abs(1.0 - kth)
    return TIE_EPS * float(np.finfo(np.float32).eps) * np.where(np.isfinite(size), size, 0.0)


# ============================================================================ timing
def best_of(fn: Callable[[], Any], repeat: int = 3) -> float:
    """The smallest wall time in seconds of ``repeat`` calls of ``fn()``.

    The minimum is the run least disturbed by other work on the machine.

    Examples
    --------
    >>> secs = hn.evaluation.best_of(lambda: index.search_batch(store, queries, 10), 5)  # doctest: +SKIP
    """
    if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
        raise InvalidParameterError(f"repeat must be a positive int, got {repeat!r}")
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


# ============================================================================ ann-benchmarks files
class AnnDataset(NamedTuple):
    """An ann-benchmarks data set: float32 ``train`` and ``test`` vectors, true ``neighbors``."""

    name: str
    train: np.ndarray
    test: np.ndarray
    neighbors: np.ndarray | None  # int64 (n_test, k): row numbers of train, best first
    metric: str  # "l2", "cosine" or "ip"


def load_ann_benchmarks(path: str | os.PathLike, *, limit: int | None = None, n_queries: int | None = None) -> AnnDataset:
    """Read an ann-benchmarks HDF5 file (datasets ``train``, ``test``, ``neighbors``; attribute ``distance``).

    Parameters
    ----------
    path : str or path-like
        The file (h5py needed: ``pip install 'hnsw_numba[hdf5]'``), or an fsspec URL.
    limit : int, optional
        Read only the first ``limit`` train rows (a positive int); the file's ``neighbors``
        then no longer apply, so ``neighbors`` is None (compute them with
        :func:`exact_neighbors`); a limit at or past the file's rows keeps them when the file
        has them.
    n_queries : int, optional
        Read only the first ``n_queries`` test rows (a positive int).

    Raises
    ------
    VectorFileError
        The file is not an ann-benchmarks file, or a ``neighbors`` entry is not a row
        number of ``train`` (0 to ``len(train) - 1``, or -1: no neighbour, as
        :func:`exact_neighbors` pads; kept as -1).
    InvalidParameterError
        ``limit`` or ``n_queries`` is not a positive int.

    Examples
    --------
    >>> ds = hn.evaluation.load_ann_benchmarks("glove-100-angular.hdf5")  # doctest: +SKIP
    >>> ds.metric, ds.train.shape, ds.neighbors.shape  # doctest: +SKIP
    ('cosine', (1183514, 100), (10000, 100))
    """
    for name, value in (("limit", limit), ("n_queries", n_queries)):
        if value is not None:
            check_int(name, value, 1, 2**63 - 1)
    where = os.fspath(path)
    with open_vectors(where, dataset="train") as src:
        if src.metric_hint is None:
            declared = getattr(getattr(src.data, "file", None), "attrs", {}).get("distance")  # the HDF5 file's
            if declared is None:
                raise VectorFileError(f"{where}: no 'distance' attribute (angular, euclidean or dot): not an ann-benchmarks file")
            name = declared.decode(errors="replace") if isinstance(declared, bytes) else str(declared)
            raise VectorFileError(f"{where}: distance {name!r} is not supported (angular, euclidean or dot)")
        metric = src.metric_hint
        full = src.n
        train = src.read(0, full if limit is None else min(full, int(limit)))
    with open_vectors(where, dataset="test") as src:
        test = src.read(0, src.n if n_queries is None else min(src.n, int(n_queries)))
    if test.shape[1] != train.shape[1]:
        raise VectorFileError(f"{where}: test has dimension {test.shape[1]}, train {train.shape[1]}")
    neighbors = None
    if train.shape[0] == full:
        try:
            with open_vectors(where, dataset="neighbors") as src:
                if src.n < test.shape[0]:
                    raise VectorFileError(f"{where}: neighbors has {src.n} rows for {test.shape[0]} test queries")
                neighbors = _neighbor_rows(src.read(0, test.shape[0], dtype=None), full, src.where)
        except VectorFileError:
            if limit is None:
                raise
            neighbors = None  # a limit at or past the file's rows: computed as for any other limit
    name = Path(where.rstrip("/")).stem
    return AnnDataset(name, train, test, neighbors, metric)


def _neighbor_rows(raw: np.ndarray, n_train: int, where: str) -> np.ndarray:
    """``raw`` (NaN and inf already refused) as int64 row numbers of train, -1 kept as padding;
    VectorFileError naming the first row that holds anything else (a recall against a row
    number train does not have, or a fraction, would be silently wrong)."""
    ok = (raw >= -1) & (raw < n_train)
    if raw.dtype.kind not in "iu":
        ok &= raw == np.floor(raw)
    rows = ok.all(axis=1)
    if not rows.all():
        i = int(np.argmin(rows))
        value = raw[i][~ok[i]][0]
        raise VectorFileError(f"{where}: row {i} holds {value}, not a row number of train (0..{n_train - 1}, "
                              "or -1 for no neighbour)")
    return raw.astype(np.int64)
