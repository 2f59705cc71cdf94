"""``knn_join`` counts its whole output against the memory limit; ``neighbors_to_csr`` builds
only valid matrices."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("scipy.sparse")

import hnsw_numba as hn  # noqa: E402
from hnsw_numba.core import knn  # noqa: E402

from conftest import build, clustered  # noqa: E402


@pytest.mark.parametrize("text", [False, True], ids=["int", "str"])
def test_knn_join_counts_its_whole_output(monkeypatch, text: bool) -> None:
    """Every search of the join fits the limit, the whole output does not: CapacityError
    naming every query, before the first search."""
    r = np.random.default_rng(21)
    data, queries = clustered(r, 400, 8), clustered(r, 2000, 8)
    idx, store = build(hn.L2(), data, m=8, efc=60, keys=[f"k{i}" for i in range(400)] if text else None)
    n, k = queries.shape[0], 20
    want_keys, want_dists = idx.search_batch(store, queries, k, num_threads=1)
    monkeypatch.setattr(knn, "JOIN_PIECE_BYTES", 37 * k * 24, raising=False)  # searches of 37 queries at a time
    keys, dists = hn.knn_join(idx, store, queries, k, num_threads=1)
    np.testing.assert_array_equal(keys, want_keys)
    np.testing.assert_array_equal(dists, want_dists)
    assert keys.dtype == want_keys.dtype
    monkeypatch.setattr(knn, "JOIN_PIECE_BYTES", 256 << 20, raising=False)
    # one search of all 2,000 queries needs n * k * 24 bytes: the join's output (12 per
    # entry) on top of a search's arrays needs more
    monkeypatch.setenv("HNSW_NUMBA_MAX_BYTES", str(n * k * 30))
    searched = []
    search = idx.search_prepared
    monkeypatch.setattr(idx, "search_prepared", lambda *a, **kw: searched.append(1) or search(*a, **kw))
    with pytest.raises(hn.CapacityError, match="results for 2,000 queries x k=20 would need"):
        hn.knn_join(idx, store, queries, k, num_threads=1)
    assert not searched


@pytest.mark.parametrize("ids, rows", [
    ([[1, 3], [0, 1]], [0, 1]),    # past the 3 columns
    ([[1, -5], [0, 1]], [0, 1]),   # only -1 pads
    ([[1, 2], [0, 1]], [1, 1]),    # a row twice
    ([[1, 2], [0, 1]], [0, 3]),    # a row past the 3 rows
])
def test_neighbors_to_csr_refuses_what_is_not_a_matrix(ids, rows) -> None:
    with pytest.raises(hn.InvalidParameterError):
        knn.neighbors_to_csr(np.array(rows), np.array(ids, np.int64), np.ones((2, 2), np.float32), (3, 3))
    with pytest.raises(hn.DimensionMismatchError):
        knn.neighbors_to_csr(np.arange(2), np.zeros((2, 2), np.int64), np.ones((2, 3), np.float32), (3, 3))
