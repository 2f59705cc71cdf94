"""The exact plan's BLAS path (dot products by NumPy's matmul over a Filter's float32 copy, the
shortlist re-scored with the scan's kernel) against the one-core scan and the brute-force oracle."""

from __future__ import annotations

import numpy as np
import pytest

import hnsw_numba as hn
import hnsw_numba.core.filtered as filtered
from naive import exact_knn

pytestmark = pytest.mark.usefixtures("rules_each_call")  # the rules change between searches of one Filter

METRICS = {
    ("l2", "float"): hn.L2, ("cosine", "float"): hn.Cosine, ("ip", "float"): hn.InnerProduct,
    ("l2", "qi8"): hn.L2Qi8, ("cosine", "qi8"): hn.CosineQi8, ("ip", "qi8"): hn.InnerProductQi8,
}


def data_with_near_duplicates(offset: float) -> tuple[np.ndarray, np.ndarray]:
    r = np.random.default_rng(3)
    x = r.standard_normal((300, 16)).astype(np.float32) + offset
    x[1:6] = x[0] + r.standard_normal((5, 16)).astype(np.float32) * 1e-4  # near duplicates of row 0
    x[6] = x[0]  # and an exact one
    q = r.standard_normal((6, 16)).astype(np.float32) + offset
    q[0] = x[0] + 1e-5
    return x, q


def both_paths(idx, store, f, queries, k):
    """(scan hits, BLAS hits) of every query through the kept Filter ``f``."""
    out = []
    for rows in (10**9, 1):
        filtered.BLAS_ROWS = rows
        out.append([idx.search(store, q, k, filter=f, plan="exact") for q in queries])
    return out


# float16 and bfloat16 blocks reach the same kernels through their exact float32 widening (checked
# below without compiling); leaving them out saves their kernels' compile in CI
@pytest.mark.parametrize("dtype", ["float32", "qi8"])
@pytest.mark.parametrize("metric", ["l2", "cosine", "ip"])
def test_blas_path_returns_the_scans_top_k_and_distances(monkeypatch, dtype, metric) -> None:
    monkeypatch.setattr(filtered, "BLAS_ROWS", filtered.BLAS_ROWS)
    monkeypatch.setattr(filtered, "BATCH_BLAS_ROWS", filtered.BATCH_BLAS_ROWS)
    for offset in (0.0, 30.0) if metric == "l2" else (0.0,):  # far from the origin, L2 through norms cancels
        x, queries = data_with_near_duplicates(offset)
        n, dim = x.shape
        m = METRICS[(metric, "qi8" if dtype == "qi8" else "float")]()
        idx = hn.Hnsw(m, hn.HnswConfig(dim=dim, max_nodes=n, m=8, ef_construction=32, seed=1))
        store = hn.InMemoryQi8VectorStore(dim, n) if dtype == "qi8" else hn.InMemoryVectorStore(dim, n, dtype=dtype)
        idx.insert_batch(store, np.arange(n), x, num_threads=1)
        idx.delete_batch([2, 10, 12])  # allowed but deleted: never returned
        f = hn.Filter(idx, lambda key: key % 2 == 0 or key < 7)
        scan, blas = both_paths(idx, store, f, queries, 8)
        allowed = np.array([key for key in range(n) if (key % 2 == 0 or key < 7) and key not in (2, 10, 12)])
        stored = idx.get_vectors(store, allowed)
        truth_d = exact_knn(m, stored, queries, 8)[1]
        for a, b, td in zip(scan, blas, truth_d):
            assert b.distances == a.distances  # bit for bit
            assert sorted(b.keys) == sorted(a.keys) or len(set(a.distances)) < len(a.distances)  # order only among ties
            assert not {2, 10, 12} & set(b.keys)
            np.testing.assert_allclose(b.distances, td, rtol=1e-4, atol=1e-5 if dtype == "float32" and not offset else 5e-3)  # rounded rows: not unit length
        batches = []
        for rows in (10**9, 1):  # a batch: one GEMM per tile, then the shortlists
            filtered.BLAS_ROWS = filtered.BATCH_BLAS_ROWS = rows
            batches.append(idx.search_batch(store, queries, 8, filter=f, plan="exact"))
        assert (batches[0][1] == batches[1][1]).all()
        if metric == "l2" and offset == 0.0:
            assert {0, 6} <= set(blas[0].keys[:7])


@pytest.mark.parametrize("scale", [1e-20, 1e-25])
def test_blas_path_keeps_rows_whose_distances_underflow(monkeypatch, scale) -> None:
    """Vectors of norm ~1e-20: every L2 distance below float32's smallest normal. The
    shortlist's bound is relative (Higham's) and fell below the rows' own distances: queries
    came back padded, or missed true neighbours, though every row was allowed and live."""
    monkeypatch.setattr(filtered, "BLAS_ROWS", filtered.BLAS_ROWS)
    monkeypatch.setattr(filtered, "BATCH_BLAS_ROWS", filtered.BATCH_BLAS_ROWS)
    r = np.random.default_rng(4)
    x = (r.standard_normal((300, 16)) * scale).astype(np.float32)
    queries = (r.standard_normal((5, 16)) * scale).astype(np.float32)
    idx = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=16, max_nodes=300, m=8, ef_construction=32, seed=1))
    store = hn.InMemoryVectorStore(16, 300)
    idx.insert_batch(store, np.arange(300), x, num_threads=1)
    f = hn.Filter(idx, lambda key: key != 5)
    scan, blas = both_paths(idx, store, f, queries, 10)
    batches = []
    for rows in (10**9, 1):
        filtered.BLAS_ROWS = filtered.BATCH_BLAS_ROWS = rows
        batches.append(idx.search_batch(store, queries, 10, filter=f, plan="exact"))
    for a, b, keys in zip(scan, blas, batches[1][0]):
        assert b.distances == a.distances and len(b) == 10
        assert (keys >= 0).all()
    assert (batches[0][1] == batches[1][1]).all()


def test_blas_path_follows_the_store_and_rejects_bad_queries(monkeypatch, small_data) -> None:
    """The float32 copy is made again with the block when the store changes; bad queries raise."""
    monkeypatch.setattr(filtered, "BLAS_ROWS", 1)
    data, queries = small_data
    data = data[:300].copy()
    idx = hn.Hnsw(hn.L2Qi8(), hn.HnswConfig(dim=data.shape[1], max_nodes=400, m=8, ef_construction=32, seed=2))
    store = hn.InMemoryQi8VectorStore(data.shape[1], 400)
    idx.insert_batch(store, np.arange(300), data, num_threads=1)
    f = hn.Filter(idx, np.arange(0, 300, 3))
    idx.search(store, queries[0], 3, filter=f, plan="exact")
    dense = f.dense
    assert dense is not None and dense.x.dtype == np.float32 and dense.x.shape == (100, data.shape[1])
    near = queries[0] + 0.001
    idx.set(store, 3, near)
    assert idx.search(store, queries[0], 1, filter=f, plan="exact").keys == [3]
    assert f.dense is not dense
    with pytest.raises(hn.InvalidVectorError):
        idx.search(store, np.full(data.shape[1], np.nan, np.float32), 3, filter=f, plan="exact")
    with pytest.raises(hn.DimensionMismatchError):
        idx.search(store, np.zeros(data.shape[1] + 1, np.float32), 3, filter=f, plan="exact")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_float32_copy_widens_half_types_exactly(dtype) -> None:
    """The BLAS path's float32 copy of a half-precision block holds exactly the stored values."""
    import ml_dtypes

    from hnsw_numba.core.filters import as_float32

    half = np.float16 if dtype == "float16" else ml_dtypes.bfloat16
    x = np.random.default_rng(5).standard_normal((40, 12)).astype(np.float32).astype(half)
    store = hn.InMemoryVectorStore.from_array(np.ascontiguousarray(x.view(np.uint16)), dtype=dtype)
    wide = as_float32(store.rows())
    assert wide.dtype == np.float32 and wide.flags.c_contiguous
    assert np.array_equal(wide.view(np.uint32), x.astype(np.float32).view(np.uint32))


def test_a_batch_takes_blas_from_batch_blas_elems(monkeypatch) -> None:
    """A batch of exact queries through a kept Filter takes the BLAS shortlist from
    BATCH_BLAS_ROWS allowed rows and BATCH_BLAS_ELEMS rows x dimensions (below BLAS_ROWS rows),
    the tiled scan below them: the same distances either way."""
    from hnsw_numba.core.filtered import FilteredSearch

    calls = []
    blas = FilteredSearch._blas_batch
    monkeypatch.setattr(FilteredSearch, "_blas_batch", lambda self, q, *a: calls.append(q.shape[0]) or blas(self, q, *a))
    x, queries = data_with_near_duplicates(0.0)
    n, dim = x.shape
    idx = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=dim, max_nodes=n, m=8, ef_construction=32, seed=1))
    store = hn.InMemoryVectorStore(dim, n)
    idx.insert_batch(store, np.arange(n), x, num_threads=1)
    out = {}
    for rows, least, elems in ((60, 60, 60 * dim), (60, 61, 0), (60, 1, 60 * dim + dim), (59, 1, 60 * dim)):
        monkeypatch.setattr(filtered, "BATCH_BLAS_ROWS", least)
        monkeypatch.setattr(filtered, "BATCH_BLAS_ELEMS", elems)
        f = hn.Filter(idx, np.arange(rows))
        calls.clear()
        out[rows, least, elems] = idx.search_batch(store, queries, 5, filter=f, plan="exact")
        took = rows >= least and rows * dim >= elems
        assert calls == ([len(queries)] if took else [])
        one = idx.search_batch(store, queries[:1], 5, filter=f, plan="exact")  # one query: never a GEMM
        assert calls == ([len(queries)] if took else []) and (one[1] == out[rows, least, elems][1][:1]).all()
    assert (out[60, 60, 60 * dim][1] == out[60, 61, 0][1]).all()  # BLAS and the scan: the same distances
