"""Hnsw's batch delete, vector lookup, opt-in growth, default ef, key rule and Qi8 inputs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import hnsw_numba as hn
from conftest import REFUSE_THREADS, build, clustered


def snapshot(idx: hn.Hnsw, store) -> tuple:
    a = idx.graph_arrays
    return (len(idx), idx.node_count, idx.deleted_count, idx.max_nodes, tuple(np.array(x).tobytes() for x in a),
            idx.key_map.node_keys[: idx.node_count].tolist(), tuple(c.tobytes() for c in store.columns().values()))


@pytest.fixture
def index(small_data):
    return build(hn.L2(), small_data[0][:300], extra=50)


def test_delete_batch_is_all_or_nothing(index) -> None:
    idx, store = index
    before = snapshot(idx, store)
    idx.delete(5)
    after_one = snapshot(idx, store)
    for bad, err, word in [([1, 2, 999], hn.KeyNotFoundError, "999"), ([3, 5, 4], hn.KeyNotFoundError, "5"),
                           ([7, 8, 7], hn.InvalidParameterError, "twice"), ([1, 2.5], hn.InvalidKeyError, "float")]:
        with pytest.raises(err, match=word):
            idx.delete_batch(bad)
        assert snapshot(idx, store) == after_one
    ids = idx.delete_batch(np.array([10, 11, 12]))
    assert ids.tolist() == [10, 11, 12] and ids.dtype == np.int32
    assert len(idx) == 296 and idx.deleted_count == 4 and not {10, 11, 12} & set(idx.keys())
    found, _ = idx.search_batch(store, store.decode(np.arange(300))[:20], 10, exact=True)
    assert not np.isin(found, [5, 10, 11, 12]).any()
    assert idx.delete_batch([]).shape == (0,)
    assert before != after_one


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16", "qi8"])
def test_get_vectors_decodes_every_store(small_data, dtype) -> None:
    data = small_data[0][:200]
    if dtype == "qi8":
        idx = hn.Hnsw(hn.L2Qi8(), hn.HnswConfig(dim=data.shape[1], max_nodes=200, seed=1))
        store = hn.InMemoryQi8VectorStore(data.shape[1], 200)
        idx.insert_batch(store, np.arange(200), data)
        expect = hn.quantize_qi8(data).dequantize()
        tol = 0
    else:
        idx, store = build(hn.L2(), data, dtype=dtype)
        expect = data.astype(dtype).astype(np.float32) if dtype != "bfloat16" else store.decode(np.arange(200))
        tol = 0
    got = idx.get_vectors(store, [3, 150, 7])
    assert got.dtype == np.float32 and got.shape == (3, data.shape[1])
    np.testing.assert_allclose(got, expect[[3, 150, 7]], rtol=0, atol=tol)
    if dtype == "bfloat16":
        np.testing.assert_allclose(got, data[[3, 150, 7]], rtol=1e-2)
    one = idx.get_vectors(store, np.int64(150))
    assert one.shape == (data.shape[1],)
    np.testing.assert_array_equal(one, got[1])
    idx.delete(7)
    with pytest.raises(hn.KeyNotFoundError, match="7"):
        idx.get_vectors(store, [3, 7])
    with pytest.raises(hn.KeyNotFoundError):
        idx.get_vectors(store, "nope")


def test_get_vectors_cosine_returns_unit_vectors(small_data) -> None:
    data = small_data[0][:50]
    idx, store = build(hn.Cosine(), data)
    got = idx.get_vectors(store, np.arange(50))
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1, atol=1e-6)
    np.testing.assert_allclose(got, data / np.linalg.norm(data, axis=1, keepdims=True), atol=1e-6)


def test_full_index_raises_unless_it_may_grow(small_data) -> None:
    data, queries = small_data
    idx = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=data.shape[1], max_nodes=10, m=8, ef_construction=32, seed=1))
    store = hn.InMemoryVectorStore(data.shape[1], 10)
    idx.insert_batch(store, np.arange(8), data[:8])
    before = snapshot(idx, store)
    with pytest.raises(hn.CapacityError, match="grow=True"):
        idx.insert_batch(store, np.arange(8, 20), data[8:20])
    assert snapshot(idx, store) == before
    idx.insert_batch(store, np.arange(8, 20), data[8:20], grow=True)
    assert idx.max_nodes == store.max_nodes == 20  # what the batch needs (more than double)
    capacities = []
    for i in range(20, 400):  # one at a time: doubling, so few growths
        idx.insert(store, i, data[i], grow=True)
        capacities.append(idx.max_nodes)
    assert sorted(set(capacities)) == [40, 80, 160, 320, 640] and store.max_nodes == 640
    idx.set(store, 1000, data[400], grow=True)
    idx.check_integrity()
    found, _ = idx.search_batch(store, queries, 5)
    truth, _ = idx.search_batch(store, queries, 5, exact=True)
    assert (found == truth).mean() > 0.95
    with pytest.raises(hn.InvalidParameterError):
        idx.insert(store, 2000, data[0], grow="yes")


def test_growth_grows_only_the_short_side(small_data) -> None:
    data = small_data[0]
    idx = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=data.shape[1], max_nodes=100, seed=1))
    store = hn.InMemoryVectorStore(data.shape[1], 30)
    idx.insert_batch(store, np.arange(30), data[:30])
    idx.insert(store, 30, data[30], grow=True)
    assert idx.max_nodes == 100 and store.max_nodes == 60


def test_set_ef_is_the_default_of_searches(index) -> None:
    idx, store = index
    idx.set_ef(7)
    assert idx.config.ef_search == 7
    with pytest.raises(hn.InvalidParameterError):
        idx.set_ef(0)
    assert idx.config.ef_search == 7


def test_int_keys_must_not_be_negative(index) -> None:
    idx, store = index
    before = snapshot(idx, store)
    v = np.zeros(idx.dim, np.float32)
    for call in (lambda: idx.insert(store, -1, v), lambda: idx.set(store, -5, v),
                 lambda: idx.insert_batch(store, np.array([400, -2]), np.zeros((2, idx.dim))),
                 lambda: idx.insert_batch(store, [400, "a", -3], np.zeros((3, idx.dim)))):
        with pytest.raises(hn.InvalidKeyError, match=">= 0") as err:
            call()
        assert isinstance(err.value, ValueError) and isinstance(err.value, TypeError)
        assert snapshot(idx, store) == before
    assert -1 not in idx
    with pytest.raises(hn.KeyNotFoundError):
        idx.delete(-1)
    idx.insert_batch(store, np.array([2**63 + 5], np.uint64), v[None, :])  # large unsigned keys are fine
    assert 2**63 + 5 in idx
    keys, _ = idx.search_batch(store, np.zeros((1, idx.dim)), 400)
    assert (keys[0, -1] is None or keys[0, -1] == -1) and -1 not in set(keys[0, :301].tolist())


def test_reinserting_a_deleted_key_reuses_its_node_id(index, rng) -> None:
    """A deleted key keeps its mapping: insert, insert_batch and set resurrect it on its NodeId."""
    idx, store = index
    count = idx.node_count
    for key in (4, 9):
        nid = idx.delete(key)
        assert key not in idx and idx.deleted_count == 1
        with pytest.raises(hn.KeyNotFoundError):
            idx.node_id(key)
        v = rng.standard_normal(idx.dim).astype(np.float32) * 5
        assert (idx.insert(store, key, v) if key == 4 else idx.set(store, key, v)) == nid
        assert key in idx and idx.node_id(key) == nid and idx.key(nid) == key and idx.deleted_count == 0
        assert idx.search(store, v, 1)[0].key == key
    nids = idx.delete_batch([20, 21])
    new = rng.standard_normal((3, idx.dim)).astype(np.float32)
    got = idx.insert_batch(store, [21, 5000, 20], new)
    assert got[0] == nids[1] and got[2] == nids[0] and got[1] == count
    # nothing orphaned: one NodeId per key, each key's NodeId maps back to it
    assert idx.node_count == count + 1 and len(idx.key_map) == idx.node_count and len(idx) == idx.node_count
    assert all(idx.node_id(idx.key(n)) == n for n in range(idx.node_count))
    idx.check_integrity()


@pytest.mark.parametrize("metric", [hn.L2Qi8(), hn.InnerProductQi8(), hn.CosineQi8()])
def test_qi8_input_is_stored_bit_for_bit(metric) -> None:
    rng = np.random.default_rng(4)
    x = clustered(rng, 300, 16)
    if metric.normalize:
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
    q = hn.quantize_qi8(x)
    idx = hn.Hnsw(metric, hn.HnswConfig(dim=16, max_nodes=400, m=8, ef_construction=64, seed=2))
    store = hn.InMemoryQi8VectorStore(16, 400)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # unit vectors: no re-quantization warning
        idx.insert_batch(store, np.arange(300), q)
        idx.insert(store, 300, q[7])
        idx.set(store, 5, q[8])
    np.testing.assert_array_equal(store.codes[:300][np.arange(300) != 5], q.data[np.arange(300) != 5])
    for col, ref in (("codes", q.data), ("scale", q.scale), ("zero_point", q.zero_point)):
        got = store.columns()[col]
        assert got[300].tobytes() == ref[7].tobytes() and got[5].tobytes() == ref[8].tobytes()
        assert got[:300][np.arange(300) != 5].tobytes() == ref[np.arange(300) != 5].tobytes()
    hit = idx.search(store, q.dequantize()[42], 1)[0]
    assert hit.key == 42
    if metric.code == hn.L2().code:
        assert hit.distance < 1e-10


def test_cosine_qi8_requantizes_vectors_that_are_not_unit() -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((20, 16)).astype(np.float32) * 3
    idx = hn.Hnsw(hn.CosineQi8(), hn.HnswConfig(dim=16, max_nodes=40, seed=2))
    store = hn.InMemoryQi8VectorStore(16, 40)
    with pytest.warns(hn.HnswWarning, match="not unit length"):
        idx.insert_batch(store, np.arange(20), hn.quantize_qi8(x))
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    np.testing.assert_array_equal(store.codes[:20], hn.quantize_qi8(unit).data)
    with pytest.raises(hn.DimensionMismatchError):
        idx.insert(store, 99, hn.quantize_qi8(np.ones(8, np.float32)))
    with pytest.raises(hn.DimensionMismatchError):
        idx.insert_batch(store, [99], hn.quantize_qi8(np.ones(16, np.float32)))
    assert len(idx) == 20



_ADD_NO_THREADS = REFUSE_THREADS + """
from hnsw_numba.core import mutation
from hnsw_numba.kernels.layout import COUNT_MASK
mutation.INSERT_ROUND = 50  # a batch of 1,000 on 3 threads links in rounds of 768 and 232
x = np.random.default_rng(0).standard_normal((1300, 8)).astype(np.float32)
index = hn.Index(8, metric="l2", seed=1, capacity=2000)
index.add(x[:100], num_threads=1)
if sys.argv[1] == "running":  # the pool holds one thread: the second helper needs a new one
    index.search(x[:64], 3, num_threads=2)
def report(threads):
    idx, store = index.native
    idx.check_integrity()
    live = np.array(sorted(index.keys()))
    q = x[::50]
    oracle = live[np.argsort(((q[:, None, :] - x[live][None, :, :]) ** 2).sum(-1), axis=1, kind="stable")[:, :5]]
    keys, _ = index.search(q, 5, exact=True, num_threads=threads)
    approx, dist = index.search(q, 5, num_threads=threads)
    assert (keys == oracle).all() and np.isin(approx, live).all()
    assert np.allclose(dist, ((q[:, None, :] - x[approx]) ** 2).sum(-1), rtol=1e-4, atol=1e-4)
    dead = np.setdiff1d(np.arange(idx.node_count), live)
    linked = int(((idx.graph_arrays.links0[dead, 0] & COUNT_MASK) > 0).sum())
    return f"{len(index)} {idx.deleted_count} {linked} {idx.stats()['unreachable_live']}"
def first():
    import warnings
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        index.add_from(x[100:1100], batch_size=1000, num_threads=3)
    print(sorted({w.category.__name__ for w in seen}), any("refused a worker thread" in str(w.message) for w in seen))
    return report(1)
def retry():
    before = report(2)  # its searches start the threads a refused insert may have left work queued for
    index.add(x[1100:1300], num_threads=3)
    return before + " " + report(2)
refused_then(first, retry)
"""


@pytest.mark.parametrize("pool", ["fresh", "running"])
def test_a_worker_thread_the_os_refuses_leaves_the_work_to_the_threads_running(pool: str) -> None:
    """add_from's parallel insert where the OS refuses a worker thread raised a bare RuntimeError
    and tombstoned the batch's unlinked items, and the helper it had queued ran later, on the
    next thread the pool started, linking those tombstoned nodes. The threads running take
    the rest of the work (an HnswWarning says so): every item is added, searches agree with
    the oracle, the graph checks pass, no helper runs late, and the next insert works."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _ADD_NO_THREADS, pool], capture_output=True, text=True, timeout=300)
    assert out.stdout.splitlines() == ["['HnswWarning'] True", "1100 0 0 0", "1100 0 0 0 1300 0 0 0"], out.stdout + out.stderr
