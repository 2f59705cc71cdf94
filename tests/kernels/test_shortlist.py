"""The BLAS shortlist's selection (approximate distances, a bound from group minima, the rows
within it re-scored) against the block scan it must reproduce and a float64 oracle."""

from __future__ import annotations

import numpy as np
import pytest

from hnsw_numba.kernels.heap import GROUP_K
from hnsw_numba.kernels.layout import IP_CODE, L2_CODE, PREP_NONE, F32Rows
from hnsw_numba.kernels.search import ONE_OK
from hnsw_numba.kernels.shortlist import exact_one_kernel, shortlist_many_kernel

NO_DOTS = np.empty(0, np.float32)
NO_KEYS = np.empty(0, np.int64)


def case(kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(rows, queries, tombstones over NodeIds 0 .. 4n, k) of one shape of data."""
    n, dim, k = {"small": (13, 5, 10), "few live": (200, 8, 10)}.get(kind, (700, 24, 10))
    x = rng.standard_normal((n, dim)).astype(np.float32)
    q = rng.standard_normal((6, dim)).astype(np.float32)
    if kind == "far from the origin":  # L2 through norms cancels
        x += 40.0
        q += 40.0
    if kind == "ties":  # 60 rows at one point, the first query on it: every distance of the top-k equal
        x[rng.choice(n, 60, replace=False)] = x[0]
        q[0] = x[0]
    tomb = np.zeros(4 * n, np.uint8)
    if kind == "nearest dead":  # each query's nearest rows dead: most group minima are
        d = ((q[:, None, :].astype(np.float64) - x[None]) ** 2).sum(-1)
        tomb[np.argsort(d, axis=1)[:, : 3 * k].ravel() * 2] = 1
    if kind == "few live":  # fewer live rows than k
        tomb[: 2 * n] = 1
        tomb[np.arange(0, 2 * n, 2)[rng.choice(n, k - 3, replace=False)]] = 0
    return x, q, tomb, k


@pytest.mark.parametrize("metric", [L2_CODE, IP_CODE])
@pytest.mark.parametrize("kind", ["plain", "small", "far from the origin", "ties", "nearest dead", "few live"])
def test_shortlist_answers_as_the_scan(metric, kind) -> None:
    rng = np.random.default_rng(11)
    x, queries, tomb, k = case(kind, rng)
    if metric == IP_CODE:  # unit rows, as the cosine metric keeps them
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    n, dim = x.shape
    ids = np.arange(0, 2 * n, 2, dtype=np.int32)  # row c is NodeId 2c
    sq = (x.astype(np.float64) ** 2).sum(1)
    xmax = float(np.sqrt(sq.max()))
    dots = queries @ x.T
    out_ids, out_d = np.empty((len(queries), k), np.int32), np.empty((len(queries), k), np.float32)
    shortlist_many_kernel(F32Rows(x), metric, queries, ids, tomb, dots, sq, xmax, k, out_ids, out_d)
    live = tomb[ids] == 0
    for i, q in enumerate(queries):
        status, scan = exact_one_kernel(F32Rows(x), metric, q, dim, PREP_NONE, ids, tomb, NO_DOTS, sq, xmax, k, NO_KEYS)
        assert status == ONE_OK
        found = int((out_ids[i] >= 0).sum())
        assert found == len(scan) == min(k, int(live.sum()))
        assert np.array_equal(out_d[i, :found], np.array([d for _, d, _ in scan], np.float32))  # bit for bit
        assert sorted(out_ids[i, :found].tolist()) == sorted(nid for _, _, nid in scan) or len(set(out_d[i].tolist())) < found
        assert (out_ids[i, found:] == -1).all() and np.isinf(out_d[i, found:]).all()
        assert (tomb[out_ids[i, :found]] == 0).all()
        exact = ((x.astype(np.float64) - q) ** 2).sum(1) if metric == L2_CODE else 1.0 - x.astype(np.float64) @ q
        np.testing.assert_allclose(out_d[i, :found], np.sort(exact[live])[:found], rtol=1e-4, atol=1e-4)


def test_shortlist_bound_needs_k_live_group_minima() -> None:
    """With fewer than GROUP_K k rows every row is a group; the groups of dead rows give no
    bound and the nearest live rows are still found (here all rows lie on one line)."""
    k = 3
    x = np.arange(2 * k, dtype=np.float32)[:, None] * np.ones((1, 4), np.float32)
    assert x.shape[0] < GROUP_K * k
    q = np.zeros((1, 4), np.float32)
    ids = np.arange(2 * k, dtype=np.int32)
    tomb = np.zeros(2 * k, np.uint8)
    tomb[[0, 2]] = 1
    sq = (x.astype(np.float64) ** 2).sum(1)
    out_ids, out_d = np.empty((1, k), np.int32), np.empty((1, k), np.float32)
    shortlist_many_kernel(F32Rows(x), L2_CODE, q, ids, tomb, q @ x.T, sq, float(np.sqrt(sq.max())), k, out_ids, out_d)
    assert out_ids[0].tolist() == [1, 3, 4] and out_d[0].tolist() == [4.0, 36.0, 64.0]
