"""The brute-force oracle every test checks against: plain NumPy in float64, no cleverness.

``distances`` follows the index's conventions (squared L2; ``1 - dot`` for inner product;
``1 - cos`` for cosine, on vectors normalised as :meth:`Metric.prepare` does), so its
values compare directly with what a search returns.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import hnsw_numba as hn


def as_metric(metric: Any) -> hn.Metric:
    """A metric object from an object or a name (``"l2"``, ``"cosine"``, ``"ip"``)."""
    return metric if isinstance(metric, hn.Metric) else {"l2": hn.L2(), "cosine": hn.Cosine(), "ip": hn.InnerProduct()}[metric]


def distances(metric: Any, queries: np.ndarray, data: np.ndarray) -> np.ndarray:
    """float64 distances (n_queries, n_data), in blocks so memory stays small."""
    m = as_metric(metric)
    q = np.atleast_2d(np.asarray(queries))
    out = np.empty((q.shape[0], np.asarray(data).shape[0]), np.float64)
    for s in range(0, q.shape[0], 256):
        out[s : s + 256] = m.distance_numpy(q[s : s + 256, None, :], np.asarray(data)[None, :, :])
    return out


def exact_knn(metric: Any, data: np.ndarray, queries: np.ndarray, k: int, *, allowed: np.ndarray | None = None,
              exclude_self: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(rows int64, distances float64)`` of the ``k`` nearest rows of ``data``, ties by row.

    ``allowed``: row numbers that may be returned (default all). ``exclude_self``: query
    ``i`` is row ``allowed[i]`` (or ``i``) of the data and is not its own neighbour.
    """
    rows = np.arange(np.asarray(data).shape[0]) if allowed is None else np.asarray(allowed)
    d = distances(metric, queries, np.asarray(data)[rows])
    if exclude_self:
        d[np.arange(d.shape[0]), np.arange(d.shape[0])] = np.inf
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    return rows[order], np.take_along_axis(d, order, 1)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of each row's true neighbours found (rows aligned; padding never matches)."""
    k = np.asarray(truth).shape[1]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(np.asarray(found).tolist(), np.asarray(truth).tolist())]))
