"""``compact(reorder=True)``: a renumbering that keeps every answer, on every store and metric."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import hnsw_numba as hn
from hnsw_numba.kernels.layout import COUNT_MASK, H_ENTRY

from conftest import clustered, wrong_hits_during

N, DIM = 900, 12
STORES = {
    "f32": (lambda: hn.InMemoryVectorStore(DIM, N + 50), {}),
    "f16": (lambda: hn.InMemoryVectorStore(DIM, N + 50, dtype="float16"), {}),
    "bf16": (lambda: hn.InMemoryVectorStore(DIM, N + 50, dtype="bfloat16"), {}),
    "f32+f16": (lambda: hn.InMemoryVectorStore(DIM, N + 50, walk_copy=True), {}),
    "qi8": (lambda: hn.InMemoryQi8VectorStore(DIM, N + 50), {"l2": hn.L2Qi8, "cosine": hn.CosineQi8, "ip": hn.InnerProductQi8}),
}
PLAIN = {"l2": hn.L2, "cosine": hn.Cosine, "ip": hn.InnerProduct}


def _build(kind: str, metric: str, keys=None, seed: int = 3):
    make_store, qi8 = STORES[kind]
    data = clustered(np.random.default_rng(seed), N, DIM)
    idx = hn.Hnsw((qi8 or PLAIN)[metric](), hn.HnswConfig(dim=DIM, max_nodes=N + 50, m=6, ef_construction=40, seed=seed))
    store = make_store()
    idx.insert_batch(store, np.arange(N) if keys is None else keys, data, num_threads=1)
    return idx, store, data


@pytest.mark.parametrize("metric", ["l2", "cosine", "ip"])
@pytest.mark.parametrize("kind", list(STORES))
def test_same_answers_after_reorder(kind: str, metric: str) -> None:
    idx, store, data = _build(kind, metric)
    queries = clustered(np.random.default_rng(9), 40, DIM)
    keys0, d0, ids0 = idx.search_prepared(store, idx.prepare_queries(queries), 10, ef=24)
    single0 = [[(h.key, h.distance) for h in idx.search(store, q, 5, ef=16)] for q in queries[:10]]
    vectors0 = idx.get_vectors(store, np.arange(0, N, 37))
    new_id = idx.compact(store, reorder=True)
    assert new_id.dtype == np.int32 and np.array_equal(np.sort(new_id), np.arange(N))
    assert new_id[0] != 0 or new_id[1] != 1  # something moved
    keys1, d1, ids1 = idx.search_prepared(store, idx.prepare_queries(queries), 10, ef=24)
    np.testing.assert_array_equal(keys1, keys0)
    np.testing.assert_array_equal(d1, d0)
    np.testing.assert_array_equal(ids1, np.where(ids0 >= 0, new_id[np.maximum(ids0, 0)], -1))
    assert [[(h.key, h.distance) for h in idx.search(store, q, 5, ef=16)] for q in queries[:10]] == single0
    np.testing.assert_array_equal(idx.get_vectors(store, np.arange(0, N, 37)), vectors0)
    idx.check_integrity()


def test_bfs_order_from_the_entry_point() -> None:
    idx, store, _ = _build("f32", "l2", keys=[f"k{i}" for i in range(N)])
    a = idx.graph_arrays
    entry = int(a.header[H_ENTRY])
    first = a.links0[entry, 1 : 1 + (a.links0[entry, 0] & COUNT_MASK)].copy()
    old_keys = [idx.key(i) for i in range(N)]
    new_id = idx.compact(store, reorder=True)
    a = idx.graph_arrays
    assert int(a.header[H_ENTRY]) == 0 and new_id[entry] == 0
    # the entry point's neighbours follow it, in list order
    np.testing.assert_array_equal(a.links0[0, 1 : 1 + first.shape[0]], np.arange(1, 1 + first.shape[0]))
    np.testing.assert_array_equal(new_id[first], np.arange(1, 1 + first.shape[0]))
    for old in range(0, N, 53):
        assert idx.key(int(new_id[old])) == old_keys[old] and idx.node_id(old_keys[old]) == new_id[old]
    # keeps working: inserts, deletes, the filter's NodeIds follow the keys
    v = np.full(DIM, 9.0, np.float32)
    idx.insert(store, "new", v)
    assert idx.search(store, v, 1)[0].key == "new"
    idx.delete("k0")
    hits = idx.search(store, v, 3, filter=["k1", "k2", "k3"])
    assert sorted(h.key for h in hits) == ["k1", "k2", "k3"]
    idx.check_integrity()


def test_reorder_with_deletions_drops_then_renumbers() -> None:
    idx, store, data = _build("f32", "l2")
    gone = np.arange(0, N, 5)
    idx.delete_batch(gone)
    new_id = idx.compact(store, reorder=True)
    assert (new_id[gone] == -1).all()
    kept = np.flatnonzero(new_id >= 0)
    assert np.array_equal(np.sort(new_id[kept]), np.arange(kept.shape[0])) and idx.deleted_count == 0
    for old in kept[::41]:
        assert idx.key(int(new_id[old])) == old
        np.testing.assert_array_equal(store.vector(int(new_id[old])), data[old])
    idx.check_integrity()


def test_save_load_round_trip(tmp_path: Path) -> None:
    idx, store, _ = _build("bf16", "cosine", keys=[f"k{i}" for i in range(N)])
    idx.compact(store, reorder=True)
    queries = clustered(np.random.default_rng(2), 20, DIM)
    want = idx.search_batch(store, queries, 10, ef=32)
    hn.save(tmp_path / "ix", idx, store)
    loaded, lstore = hn.load(tmp_path / "ix")
    loaded.check_integrity()
    got = loaded.search_batch(lstore, queries, 10, ef=32)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def test_bad_flag_and_read_only_change_nothing() -> None:
    idx, store, _ = _build("f32", "l2")
    before = idx.graph_arrays.links0.copy()
    with pytest.raises(hn.HnswError) as err:
        idx.compact(store, reorder="yes")
    assert isinstance(err.value, ValueError)
    np.testing.assert_array_equal(idx.graph_arrays.links0, before)
    other = hn.InMemoryVectorStore(DIM, N + 50)  # no vectors written: not this index's store
    with pytest.raises(hn.HnswError):
        idx.compact(other, reorder=True)
    np.testing.assert_array_equal(idx.graph_arrays.links0, before)


def test_searches_during_reorder_return_true_distances() -> None:
    """Every hit's distance is the distance to its key's vector while rows move under the searches."""
    rng = np.random.default_rng(5)
    n = 12000
    data = rng.standard_normal((n, 8)).astype(np.float32)
    queries = rng.standard_normal((16, 8)).astype(np.float32)
    idx = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=8, max_nodes=n, m=6, ef_construction=32, seed=1))
    store = hn.InMemoryVectorStore(8, n)
    idx.insert_batch(store, np.arange(n), data)

    def renumber() -> None:
        for _ in range(25):  # each call moves every row: many chances to overlap a search
            idx.compact(store, reorder=True)

    bad = wrong_hits_during(idx, store, data, queries, renumber)
    assert not bad, bad[:5]
    idx.check_integrity()
