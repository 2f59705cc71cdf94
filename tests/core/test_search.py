"""Search: recall against brute force, filters, padding, empty and deleted-heavy indexes."""

from __future__ import annotations

import numpy as np
import pytest

import hnsw_numba as hn
from conftest import build
from hnsw_numba.kernels.layout import H_DELETED
from naive import exact_knn, recall

METRICS = [hn.L2(), hn.Cosine(), hn.InnerProduct()]


@pytest.fixture(scope="module", params=METRICS, ids=lambda m: m.name)
def built(request, small_data):
    data, queries = small_data
    idx, store = build(request.param, data)
    return idx, store, queries


def test_recall_against_numpy_brute_force(built, small_data) -> None:
    idx, store, queries = built
    data, _ = small_data
    truth, truth_d = exact_knn(idx.metric, data, queries, 10)
    keys, dists = idx.search_batch(store, queries, 10, ef=64)
    # hnswlib 0.8 with the same m=8, ef_construction=64, ef=64 on this data, seeds 0-4:
    # l2 1.0, cosine 0.915-0.982, ip 0.767-0.777 (inner product on unnormalised data is
    # not a metric, so greedy search is weaker); the floors sit just under that.
    assert recall(keys, truth) >= {"l2": 0.97, "cosine": 0.9, "ip": 0.72}[idx.metric.name]
    assert np.all(np.diff(dists, axis=1) >= 0)  # best first
    # exact mode is the oracle: it must agree with float64 NumPy up to float32 rounding
    ek, ed = idx.search_batch(store, queries, 10, exact=True)
    np.testing.assert_allclose(ed, truth_d, rtol=1e-4, atol=1e-4)
    assert recall(ek, truth) >= 0.99


def test_distances_match_metric(built, small_data) -> None:
    idx, store, queries = built
    data, _ = small_data
    hits = idx.search(store, queries[0], 5)
    for h in hits:
        ref = idx.metric.distance_numpy(queries[0], data[h.key])
        assert h.distance == pytest.approx(ref, rel=1e-4, abs=1e-4)


def test_single_matches_batch(built) -> None:
    idx, store, queries = built
    keys, dists = idx.search_batch(store, queries[:8], 7, ef=40, num_threads=1)
    for i in range(8):
        hits = idx.search(store, queries[i], 7, ef=40)
        assert [h.key for h in hits] == keys[i].tolist()
        np.testing.assert_allclose([h.distance for h in hits], dists[i], rtol=1e-6)


def test_a_query_gets_the_same_distances_in_a_batch_as_alone(built) -> None:
    """A batch's queries are checked and normalised by the single-query kernel's recipe
    (``prepare_rows``): the same float32 values, so the same distances bit for bit, at any
    magnitude; the caller's array is left as it was."""
    idx, store, queries = built
    scales = np.array([1.0, 1e-30, 3e25, 7.0, 1e-3, 1.0, 2.0, 0.5], np.float32)[:, None]
    q = (queries[:8] * scales).astype(np.float32) if idx.metric.normalize else queries[:8].copy()
    before = q.copy()
    keys, dists = idx.search_batch(store, q, 7, ef=40, num_threads=1)
    assert np.array_equal(q, before)
    for i in range(8):
        hits = idx.search(store, q[i], 7, ef=40)
        assert [h.key for h in hits] == keys[i].tolist()
        assert [h.distance for h in hits] == dists[i].tolist()


def test_a_batchs_bad_query_is_named_by_its_row(built) -> None:
    idx, store, queries = built
    q = queries[:6].copy()
    q[4, 2] = np.nan
    with pytest.raises(hn.InvalidVectorError, match="vector 4 contains NaN or inf"):
        idx.search_batch(store, q, 3)
    if not idx.metric.normalize:
        q = queries[:6].copy()
        q[5, 0] = 1e30
        with pytest.raises(hn.InvalidVectorError, match="vector 5 has a component beyond"):
            idx.search_batch(store, q, 3)
    ro = queries[:6].copy()
    ro.flags.writeable = False  # a mapped query file: read, never written
    keys, dists = idx.search_batch(store, ro, 3)
    assert np.array_equal(keys, idx.search_batch(store, queries[:6].copy(), 3)[0])


def test_search_row_matches_batch(built, small_data) -> None:
    """``search_row``: a one-row ``search_batch`` (keys, distances, padding) from the single
    path; the same errors as ``search``; ``None`` for str keys."""
    idx, store, queries = built
    keys, dists = idx.search_batch(store, queries[:4], 7, ef=40, num_threads=1)
    for i in range(4):
        for dtype in (np.int64, np.uint64):
            rk, rd, found = idx.search_row(store, queries[i], 7, 40, dtype)
            assert found == 7 and rk.shape == rd.shape == (1, 7) and rk.dtype == dtype and rd.dtype == np.float32
            assert rk[0].tolist() == keys[i].tolist()
            np.testing.assert_allclose(rd[0], dists[i], rtol=1e-6, atol=1e-6)
    data, _ = small_data
    tidx, tstore = build(idx.metric, data[:50], extra=0)
    rk, rd, found = tidx.search_row(tstore, queries[0].astype(np.float64), 53, 60)  # fewer items than k
    assert found == 50 and rk[0, 50:].tolist() == [-1] * 3 and np.isinf(rd[0, 50:]).all()
    assert sorted(rk[0, :50].tolist()) == list(range(50))
    q = np.array(queries[0], np.float32)
    q[2] = np.nan
    with pytest.raises(hn.InvalidVectorError):
        idx.search_row(store, q, 3, 10)
    with pytest.raises(hn.DimensionMismatchError):
        idx.search_row(store, q[:-1], 3, 10)
    sidx, sstore = build(hn.L2(), data[:50], keys=[f"k{i}" for i in range(50)], extra=0)
    assert sidx.search_row(sstore, data[0], 3, 10) is None


def test_query_layouts_agree(built) -> None:
    """Strided, read-only, float64 and (1, dim) queries answer like a contiguous float32 one."""
    idx, store, queries = built
    q = np.ascontiguousarray(queries[3], np.float32)
    want = [(h.key, h.distance) for h in idx.search(store, q, 5, ef=40)]
    wide = np.full((q.shape[0], 3), 1e6, np.float32)
    wide[:, 1] = q
    ro = q.copy()
    ro.flags.writeable = False
    for variant in (wide[:, 1], ro, q.astype(np.float64), q[None, :], q.tolist()):
        got = [(h.key, h.distance) for h in idx.search(store, variant, 5, ef=40)]
        assert [g[0] for g in got] == [w[0] for w in want]
        np.testing.assert_allclose([g[1] for g in got], [w[1] for w in want], rtol=1e-5, atol=1e-6)


def test_single_query_checked_in_kernel(built) -> None:
    """The lean float32 path checks the raw query inside the kernel: NaN / inf raise, and so
    do finite values whose distances would overflow float32 (ties at inf: no ranking), as
    in the batch path; cosine scales any finite query to unit length."""
    idx, store, queries = built
    for bad in (np.nan, np.inf, -np.inf):
        q = np.array(queries[0], np.float32)  # a copy: the fixture's queries are shared
        q[3] = bad
        with pytest.raises(hn.InvalidVectorError):
            idx.search(store, q, 5)
    huge = np.full(idx.dim, 1e30, np.float32)
    if idx.metric.normalize:
        hits = idx.search(store, huge, 5)
        assert [h.key for h in hits] == idx.search_batch(store, huge[None], 5)[0][0].tolist()
        return
    for search in (lambda: idx.search(store, huge, 5), lambda: idx.search_batch(store, huge[None], 5)):
        with pytest.raises(hn.InvalidVectorError, match="overflow"):
            search()
    large = np.full(idx.dim, 1e17, np.float32)  # within sqrt(FLT_MAX / (4 dim)): ranked
    hits = idx.search(store, large, 5)
    assert [h.key for h in hits] == idx.search_batch(store, large[None], 5)[0][0].tolist()


def test_prepare_query_matches_metric_prepare() -> None:
    """The kernel's in-place check-and-normalise agrees with ``Metric.prepare`` from tiny
    (subnormal) to huge magnitudes, keeps a zero vector zero and refuses every NaN / inf
    (a NaN with its sign bit set too: the check compares IEEE bits), and without
    normalising every component past ``sqrt(FLT_MAX / (4 dim))``."""
    from hnsw_numba.kernels.search import prepare_query

    r = np.random.default_rng(5)
    base = r.standard_normal((4, 37)).astype(np.float32)
    cases = [base[0], base[1] * np.float32(1e37), base[2] * np.float32(1e-41), base[3].clip(0, None),
             np.zeros(37, np.float32), np.full(37, -0.0, np.float32), np.full(37, np.float32(3.4028235e38))]
    limit = np.sqrt(np.finfo(np.float32).max / (4.0 * 37))
    for x in cases:
        for prep in (1, 2):
            q = x.copy()
            if prep == 1 and np.abs(x).max() > limit:  # its distances would overflow: refused
                assert not prepare_query(q, prep)
                continue
            assert prepare_query(q, prep)
            want = hn.Cosine().prepare(x) if prep == 2 else x
            np.testing.assert_allclose(q, want, rtol=2e-6, atol=0)
            if prep == 2 and np.any(x):
                assert abs(float(np.dot(q.astype(np.float64), q)) - 1.0) < 1e-5
    for bad in (np.nan, np.inf, -np.inf, np.uint32(0xFFC00001).view(np.float32)):
        q = base[0].copy()
        q[36] = bad
        assert not prepare_query(q, 1) and not prepare_query(q.copy(), 2)


def test_single_query_beyond_the_scratch_and_with_str_keys(small_data) -> None:
    """The single-query kernel allocates its own heaps when ``ef`` outgrows the per-thread
    scratch, and hands NodeIds back for str keys (the wrapper maps them): both must answer
    exactly like the batch path."""
    from hnsw_numba.kernels.search import one_scratch_size
    from hnsw_numba.core.visited import SCRATCH

    data, queries = small_data
    idx, store = build(hn.L2(), data[:600], keys=[f"k{i}" for i in range(600)], extra=0)
    ef = 1700
    assert one_scratch_size(10, ef, 2 * idx.config.m, idx.dim)[0] > SCRATCH
    for e in (16, ef):
        keys, dists = idx.search_batch(store, queries[:4], 10, ef=e, num_threads=1)
        for i in range(4):
            hits = idx.search(store, queries[i], 10, ef=e)
            assert [h.key for h in hits] == keys[i].tolist()
            assert [h.node_id for h in hits] == [idx.node_id(k) for k in keys[i]]
            np.testing.assert_allclose([h.distance for h in hits], dists[i], rtol=1e-6)
    # ef = 1700 over 600 items visits them all: the exact answer
    exact = idx.search(store, queries[0], 10, exact=True)
    assert [h.key for h in idx.search(store, queries[0], 10, ef=ef)] == [h.key for h in exact]


def test_single_query_kernel_refuses_what_it_cannot_read(small_data) -> None:
    """Status codes instead of reads out of bounds: a query of the wrong length, rows or a
    key array that do not cover the graph (an index that grew since the caller looked)."""
    from hnsw_numba.kernels.search import ONE_OK, ONE_STALE, ONE_WRONG_DIM, knn_one_kernel

    data, queries = small_data
    idx, store = build(hn.L2(), data[:200], extra=0)
    g, rows, code = idx.graph_arrays, store.rows(), idx.metric.code
    visited, sf, si = idx.state.visited.single()
    no_keys = np.empty(0, np.int64)

    def call(q, rows=rows, visited=visited, dim=idx.dim, keys=no_keys):
        return knn_one_kernel(g, rows, code, q, dim, 3, 8, visited, sf, si, keys, 1)

    status, found = call(queries[0])
    assert status == ONE_OK and [f[2] for f in found] == [h.node_id for h in idx.search(store, queries[0], 3, ef=8)]
    assert call(queries[0][:-1])[0] == ONE_WRONG_DIM
    assert call(queries[0], dim=idx.dim + 1)[0] == ONE_WRONG_DIM  # wider than the rows
    assert call(queries[0], rows=type(rows)(rows.data[:150]))[0] == ONE_STALE
    # a key array shorter than the graph (read just before a concurrent resize swapped the
    # key map): nodes inserted after it would index past its end
    keys = idx.key_map.node_keys
    assert call(queries[0], keys=keys)[0] == ONE_OK
    assert call(queries[0], keys=keys[: max(f[2] for f in found)].copy())[0] == ONE_STALE
    # a visited array shorter than the graph (a concurrent resize): the kernel uses its own
    status, found2 = call(queries[0], visited=np.zeros(100, np.uint16))
    assert status == ONE_OK and found2 == found


def test_threads_agree(built) -> None:
    idx, store, queries = built
    k1, d1 = idx.search_batch(store, queries, 10, num_threads=1)
    k2, d2 = idx.search_batch(store, queries, 10, num_threads=2)
    np.testing.assert_array_equal(k1, k2)


def test_exact_and_explain_are_strict_bools(built) -> None:
    """``exact`` / ``explain`` take bools (NumPy's too), as ``grow`` and ``reorder`` do: a str,
    1 or None is refused instead of read by its truth."""
    idx, store, queries = built
    mask = np.zeros(idx.node_count, bool)
    mask[::3] = True
    for bad in ("yes", "", 1, 0, None, 1.0):
        for call in (lambda: idx.search(store, queries[0], 5, exact=bad), lambda: idx.search(store, queries[0], 5, mask, exact=bad),
                     lambda: idx.search_batch(store, queries[:4], 5, exact=bad), lambda: idx.search_batch(store, queries[:4], 5, mask, exact=bad),
                     lambda: idx.search_batch_ids(store, queries[:4], 5, exact=bad)):
            with pytest.raises(hn.InvalidParameterError, match="exact must be a bool"):
                call()
        for flt in (None, mask):
            with pytest.raises(hn.InvalidParameterError, match="explain must be a bool"):
                idx.search(store, queries[0], 5, flt, explain=bad)
    assert idx.search(store, queries[0], 5, exact=np.True_).keys == idx.search(store, queries[0], 5, exact=True).keys
    assert idx.search(store, queries[0], 5, exact=np.False_).keys == idx.search(store, queries[0], 5).keys
    hits, plan = idx.search(store, queries[0], 5, mask, explain=np.True_)
    assert plan is idx.last_plan and hits.keys == idx.search(store, queries[0], 5, mask).keys
    np.testing.assert_array_equal(idx.search_batch(store, queries, 5, exact=np.True_)[0], idx.search_batch(store, queries, 5, exact=True)[0])


def test_recall_grows_with_ef(small_data) -> None:
    data, queries = small_data
    idx, store = build(hn.L2(), data, m=4, efc=16)
    truth, _ = exact_knn(hn.L2(), data, queries, 10)
    r = [recall(idx.search_batch(store, queries, 10, ef=ef)[0], truth) for ef in (10, 40, 200)]
    assert r[0] <= r[1] <= r[2] and r[2] > 0.9


def test_empty_index() -> None:
    idx = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=4, max_nodes=10))
    store = hn.InMemoryVectorStore(4, 10)
    assert idx.search(store, np.zeros(4), 3) == []
    k, d = idx.search_batch(store, np.zeros((2, 4)), 3)
    assert k.shape == (2, 3) and (k == -1).all() and np.isinf(d).all()
    idx.check_integrity()


def test_k_larger_than_live_count(small_data) -> None:
    data, queries = small_data
    idx, store = build(hn.L2(), data[:30])
    idx.delete(0)
    hits = idx.search(store, queries[0], 50)
    assert len(hits) == 29 and 0 not in [h.key for h in hits]
    k, d = idx.search_batch(store, queries[:4], 50)
    assert (k[:, :29] >= 0).all() and (k[:, 29:] == -1).all() and np.isinf(d[:, 29:]).all()


@pytest.mark.parametrize("str_keys", [False, True], ids=["int-keys", "str-keys"])
@pytest.mark.parametrize("exact", [False, True], ids=["graph", "exact"])
@pytest.mark.parametrize("filtered", [False, True], ids=["unfiltered", "filtered"])
def test_result_size_check_counts_what_a_batch_allocates(small_data, monkeypatch, str_keys, exact, filtered) -> None:
    """A batch the size check lets through stays under HNSW_NUMBA_MAX_BYTES: NodeIds,
    distances, keys (int64 or object) and the temporaries, not 8 bytes an entry."""
    import tracemalloc

    data, queries = small_data
    idx, store = build(hn.L2(), data[:50], keys=[f"k{i}" for i in range(50)] if str_keys else None)
    n, limit = 20, 20 * 5000 * 8  # k=5000 at 8 bytes an entry would fit exactly
    flt = hn.Filter(idx, np.arange(50) % 2 == 0) if filtered else None
    idx.search_batch(store, queries[:n], 3, exact=exact, filter=flt)  # compiled before the limit
    monkeypatch.setenv("HNSW_NUMBA_MAX_BYTES", str(limit))
    refused = []
    for k in (1000, 5000):
        tracemalloc.start()
        try:
            keys, dists = idx.search_batch(store, queries[:n], k, exact=exact, filter=flt)
            peak = tracemalloc.get_traced_memory()[1]
        except hn.CapacityError:
            refused.append(k)
            continue
        finally:
            tracemalloc.stop()
        assert keys.shape == (n, k) and peak <= limit, (k, peak, limit)
    assert refused == [5000]


def test_all_deleted(small_data) -> None:
    data, queries = small_data
    idx, store = build(hn.L2(), data[:50])
    for key in range(50):
        idx.delete(key)
    assert idx.search(store, queries[0], 5) == []
    assert len(idx) == 0
    idx.insert(store, 999, data[60])
    assert [h.key for h in idx.search(store, queries[0], 5)] == [999]
    idx.check_integrity()


def test_heavy_deletion_keeps_recall(small_data) -> None:
    data, queries = small_data
    idx, store = build(hn.L2(), data)
    rng = np.random.default_rng(5)
    gone = rng.choice(len(data), len(data) // 2, replace=False)
    for key in gone:
        idx.delete(int(key))
    keys, _ = idx.search_batch(store, queries, 10, ef=100)
    truth, _ = idx.search_batch(store, queries, 10, exact=True)
    assert not set(keys.ravel().tolist()) & set(gone.tolist())
    assert recall(keys, truth) >= 0.9


def test_the_walk_reads_tombstones_while_the_header_counts_deletions(small_data) -> None:
    """The walk checks a result's tombstone only while the graph's header counts deleted nodes
    (read once per search), which ``delete`` keeps exact: a tombstone written behind the
    count's back is not seen; counted, its node leaves the answers of both query paths."""
    data, _ = small_data
    idx, store = build(hn.L2(), data[:300], num_threads=1)
    g = idx.graph_arrays
    nid = idx.node_id(7)
    g.tombstones[nid] = 1
    assert idx.search(store, data[7], 3, ef=32).keys[0] == 7
    g.header[H_DELETED] += 1
    assert 7 not in idx.search(store, data[7], 3, ef=32).keys
    assert 7 not in idx.search_batch(store, data[7:8], 3, ef=32)[0][0]
    g.tombstones[nid] = 0
    g.header[H_DELETED] -= 1
    idx.delete(7)
    assert 7 not in idx.search(store, data[7], 3, ef=32).keys
    idx.check_integrity()


@pytest.fixture(scope="module")
def filtered(small_data):
    data, queries = small_data
    idx, store = build(hn.L2(), data)
    return idx, store, data, queries


@pytest.mark.parametrize("plan", ["graph", "exact"])
def test_filter_forms_give_k_allowed_results(filtered, plan) -> None:
    idx, store, data, queries = filtered
    allowed = set(range(0, len(data), 3))
    mask = np.zeros(idx.node_count, bool)
    mask[list(allowed)] = True
    truth = idx.search_batch(store, queries, 10, filter=allowed, exact=True)[0]
    for flt in (allowed, list(allowed), np.array(sorted(allowed)), mask, lambda key: key % 3 == 0):
        keys, dists = idx.search_batch(store, queries, 10, filter=flt, ef=64, plan=plan)
        assert set(keys.ravel().tolist()) <= allowed
        assert (keys >= 0).all()  # k results whenever k allowed items exist
        assert recall(keys, truth) >= 0.9
        hits = idx.search(store, queries[0], 10, filter=flt, plan=plan)
        assert idx.last_plan.plan.startswith(plan)
        assert len(hits) == 10 and {h.key for h in hits} <= allowed


def test_selective_filter_is_exact(filtered) -> None:
    idx, store, data, queries = filtered
    allowed = {5, 77, 301, 1200}
    keys, dists = idx.search_batch(store, queries, 10, filter=allowed)
    assert (keys[:, :4] >= 0).all() and (keys[:, 4:] == -1).all()
    assert set(keys[:, :4].ravel().tolist()) == allowed
    # unknown keys in the allow-list are ignored
    assert {h.key for h in idx.search(store, queries[0], 3, filter={5, "nope", 10**9})} == {5}


def test_filter_excludes_deleted(filtered) -> None:
    idx, store, data, queries = filtered
    idx2, store2 = build(hn.L2(), data[:200])
    idx2.delete(3)
    keys, _ = idx2.search_batch(store2, queries, 10, filter={3, 4, 5})
    assert 3 not in keys and set(keys[:, :2].ravel().tolist()) == {4, 5}


def test_a_cosine_query_scores_the_same_bits_on_every_path() -> None:
    """The exact single query and the filtered single query normalised through NumPy, the
    batch through the kernel's recipe: 139 of 200 queries' distances differed in a last bit,
    and a list query differed from the same query as an array."""
    rng = np.random.default_rng(21)
    data = rng.standard_normal((300, 24)).astype(np.float32)
    queries = rng.standard_normal((60, 24)).astype(np.float32) * 3.7
    idx = hn.Hnsw(hn.Cosine(), hn.HnswConfig(dim=24, max_nodes=300, m=8, ef_construction=40, seed=2))
    store = hn.InMemoryVectorStore(24, 300)
    idx.insert_batch(store, np.arange(300), data)
    allowed = list(range(0, 300, 3))
    _, batch = idx.search_batch(store, queries, 5, exact=True)
    _, fbatch = idx.search_batch(store, queries, 5, filter=allowed, plan="exact")
    for i, q in enumerate(queries):
        for got, want in ((idx.search(store, q, 5, exact=True).distances, batch[i]),
                          (idx.search(store, q.tolist(), 5, exact=True).distances, batch[i]),
                          (idx.search(store, q.astype(np.float64), 5, filter=allowed, plan="exact").distances, fbatch[i])):
            assert np.asarray(got, np.float32).view(np.uint32).tolist() == want.view(np.uint32).tolist(), i
