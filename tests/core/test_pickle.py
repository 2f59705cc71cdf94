"""Pickling an index and its store: copies that search, save and grow exactly as the original."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

import hnsw_numba as hn
from conftest import ROOT, clustered

STORES = {
    "float32": lambda dim, n: hn.InMemoryVectorStore(dim, n),
    "float16": lambda dim, n: hn.InMemoryVectorStore(dim, n, dtype="float16"),
    "bfloat16": lambda dim, n: hn.InMemoryVectorStore(dim, n, dtype="bfloat16"),
    "qi8": lambda dim, n: hn.InMemoryQi8VectorStore(dim, n),
    "walk-copy": lambda dim, n: hn.InMemoryVectorStore(dim, n, walk_copy=True),
}


def built(dtype: str, keys: str = "int"):
    rng = np.random.default_rng(3)
    data = clustered(rng, 400, 12)
    metric = hn.CosineQi8() if dtype == "qi8" else hn.Cosine()
    idx = hn.Hnsw(metric, hn.HnswConfig(dim=12, max_nodes=600, m=6, ef_construction=32, seed=9))
    store = STORES[dtype](12, 600)
    ks = np.arange(400) * 3 if keys == "int" else [f"k{i}" for i in range(400)]
    idx.insert_batch(store, ks, data, num_threads=1)
    for k in list(ks[:20:3]):
        idx.delete(k)
    return idx, store, data, ks


def arrays(idx: hn.Hnsw) -> list[bytes]:
    a, n = idx.graph_arrays, idx.node_count
    return [a.levels[:n].tobytes(), a.links0[:n].tobytes(), a.upper_start[:n].tobytes(), a.tombstones[:n].tobytes()]


@pytest.mark.parametrize("dtype", sorted(STORES))
@pytest.mark.parametrize("keys", ["int", "str"])
def test_round_trip_searches_identically(dtype: str, keys: str) -> None:
    idx, store, data, ks = built(dtype, keys)
    idx2, store2 = pickle.loads(pickle.dumps((idx, store)))
    assert type(idx2) is hn.Hnsw and repr(idx2) == repr(idx) and idx2.config == idx.config
    assert arrays(idx2) == arrays(idx) and store2.max_nodes == store.max_nodes
    for name, col in store.columns().items():
        np.testing.assert_array_equal(store2.columns()[name], col)
    q = data[:40] + 0.01
    k1, d1 = idx.search_batch(store, q, 5, num_threads=1)
    k2, d2 = idx2.search_batch(store2, q, 5, num_threads=1)
    np.testing.assert_array_equal(k1, k2)
    np.testing.assert_array_equal(d1, d2)
    assert idx2.search(store2, q[0], 3) == idx.search(store, q[0], 3)
    assert list(idx2.keys()) == list(idx.keys())
    idx2.check_integrity()


def test_copy_continues_as_the_original() -> None:
    """Level generator and capacity travel too: the same inserts give the same graph."""
    idx, store, data, _ = built("float32")
    twin, twin_store = copy.deepcopy((idx, store))
    extra = clustered(np.random.default_rng(5), 150, 12)
    for i, s in ((idx, store), (twin, twin_store)):
        i.insert_batch(s, np.arange(10_000, 10_150), extra, num_threads=1)
    assert arrays(twin) == arrays(idx)
    # and they are independent
    twin.delete(10_000)
    assert 10_000 in idx and 10_000 not in twin
    shallow = copy.copy(idx)
    shallow.delete(10_001)
    assert 10_001 in idx


def test_copy_is_writeable_and_has_its_own_locks() -> None:
    idx, store, data, _ = built("float16")
    idx2, store2 = pickle.loads(pickle.dumps((idx, store), protocol=pickle.HIGHEST_PROTOCOL))
    assert idx2.lock is not idx.lock
    assert all(a.flags.writeable for a in idx2.graph_arrays)
    assert all(a.flags.writeable for a in store2.columns().values())
    idx2.resize(2_000)
    store2.resize(2_000)
    idx2.insert_batch(store2, np.arange(5_000, 6_200), np.repeat(data, 3, axis=0), num_threads=2)
    assert len(idx2) == len(idx) + 1_200
    idx2.check_integrity()


def test_store_pickles_only_written_rows() -> None:
    store = hn.InMemoryVectorStore(64, 100_000)
    store.write(np.arange(3, dtype=np.int32), store.encode(np.ones((3, 64), np.float32)))
    blob = pickle.dumps(store)
    assert len(blob) < 10_000  # 3 rows, not 100,000
    back = pickle.loads(blob)
    assert back.max_nodes == 100_000 and back.written[:3].all() and not back.written[3:].any()
    np.testing.assert_array_equal(back.vector(2), np.ones(64, np.float32))


def test_a_store_pickles_while_another_thread_inserts() -> None:
    """The store takes no lock of its own: its written flags change during a pickle, and
    NumPy's nonzero over them raised RuntimeError ("number of non-zero array elements
    changed") in ~1 of 1,000 pickles beside inserts that grow the pair."""
    import threading
    import time

    x = np.random.default_rng(0).standard_normal((40_000, 8)).astype(np.float32)
    idx = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=8, max_nodes=64, m=4, ef_construction=16, seed=1))
    store = hn.InMemoryVectorStore(8, 64)
    stop = time.monotonic() + 3.0

    def insert() -> None:
        for i in range(0, x.shape[0], 100):
            if time.monotonic() > stop:
                return
            idx.insert_batch(store, np.arange(i, i + 100), x[i : i + 100], grow=True)

    t = threading.Thread(target=insert)
    t.start()
    pickles = 0
    try:
        while t.is_alive():
            copy_ = pickle.loads(pickle.dumps(store))
            assert copy_.max_nodes >= 64
            pickles += 1
    finally:
        t.join()
    assert pickles > 100


def test_memory_mapped_store_unpickles_into_memory(tmp_path) -> None:
    path = tmp_path / "x.npy"
    np.save(path, np.arange(60, dtype=np.float32).reshape(10, 6))
    mapped = hn.InMemoryVectorStore.from_array(np.load(path, mmap_mode="c"))
    back = pickle.loads(pickle.dumps(mapped))
    assert type(back.data) is np.ndarray and back.data.flags.writeable
    np.testing.assert_array_equal(back.data, mapped.data)


def test_read_only_index_refuses_with_a_hint() -> None:
    index, store = hn.load_hnswlib(hn.L2(), None, str(ROOT / "tests" / "data" / "hnswlib" / "l2.bin"))
    with pytest.raises(hn.ReadOnlyIndexError, match="materialize"):
        pickle.dumps(index)
    idx2, store2 = pickle.loads(pickle.dumps(index.materialize(store)))
    assert len(idx2) == len(index)
