"""knn_graph (the self-join) and knn_join against brute force."""

from __future__ import annotations

import numpy as np
import pytest

sp = pytest.importorskip("scipy.sparse")

import hnsw_numba as hn  # noqa: E402
from hnsw_numba.core import knn, parallel  # noqa: E402
from hnsw_numba.core.config import MAX_EF  # noqa: E402

from conftest import build, clustered, shared_path  # noqa: E402
from naive import exact_knn, recall  # noqa: E402


def exact_graph(metric, data: np.ndarray, k: int, live: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force k-NN (self excluded) among the ``live`` rows: (ids, float64 distances)."""
    rows = np.arange(data.shape[0]) if live is None else live
    return exact_knn(metric, data, data[rows], k, allowed=rows, exclude_self=True)


def rows_of(g, n: int, k: int) -> np.ndarray:
    assert np.all(np.diff(g.indptr) == k)
    return g.indices.reshape(n, k)


@pytest.mark.parametrize("metric", [hn.L2(), hn.Cosine()], ids=["l2", "cosine"])
def test_graph_matches_brute_force(metric, rng) -> None:
    data = clustered(rng, 800, 16)
    idx, store = build(metric, data)
    k = 10
    g = idx.knn_graph(store, k, ef=128)
    assert isinstance(g, sp.csr_matrix) and g.shape == (800, 800) and g.dtype == np.float32
    truth, tdist = exact_graph(metric, data, k)
    found = rows_of(g, 800, k)
    assert recall(found, truth) >= 0.98
    assert not np.any(found == np.arange(800)[:, None])  # self excluded
    vals = g.data.reshape(800, k)
    assert np.all(np.diff(vals, axis=1) >= 0)  # each row best first
    # values are the metric's distances to the listed neighbours
    ref = metric.distance_numpy(data[:, None, :], data[found])
    np.testing.assert_allclose(vals, ref, rtol=1e-4, atol=1e-4)


def test_include_self_puts_item_first_with_zero(rng) -> None:
    data = clustered(rng, 300, 8)
    data[1] = data[0]  # an exact duplicate may rank ahead of the item itself
    idx, store = build(hn.L2(), data)
    g = idx.knn_graph(store, 5, exclude_self=False, ef=64)
    ids = rows_of(g, 300, 5)
    np.testing.assert_array_equal(ids[:, 0], np.arange(300))
    assert np.all(g.data.reshape(300, 5)[:, 0] == 0)
    assert g.nnz == 1500  # explicit zeros are stored, not dropped
    assert 1 in ids[0, 1:] and 0 in ids[1, 1:]  # the duplicate stays a neighbour


def test_node_id_order_keys_and_deleted_rows(rng) -> None:
    data = clustered(rng, 400, 8)
    keys = [f"item-{i}" for i in range(400)]
    order = rng.permutation(400)
    idx, store = build(hn.L2(), data[order], keys=[keys[i] for i in order])
    for key in ("item-3", "item-77", "item-200"):
        idx.delete(key)
    g = idx.knn_graph(store, 6, ef=128)
    assert g.shape == (400, 400)
    dead = [idx.key_map.get(k) for k in ("item-3", "item-77", "item-200")]
    counts = np.diff(g.indptr)
    assert all(counts[d] == 0 for d in dead) and counts.sum() == 397 * 6
    assert not np.isin(g.indices, dead).any()
    live = np.array([i for i in range(400) if i not in dead])
    truth, _ = exact_graph(hn.L2(), data[order], 6, live)
    found = np.stack([g.indices[g.indptr[i] : g.indptr[i + 1]] for i in live])
    assert recall(found, truth) >= 0.98
    # row i is the key index.key(i)
    i = int(live[5])
    assert idx.key(i) == keys[order[i]]


def test_fewer_live_items_than_k_and_empty_index(rng) -> None:
    data = clustered(rng, 5, 4)
    idx, store = build(hn.L2(), data)
    g = idx.knn_graph(store, 10)
    assert np.all(np.diff(g.indptr) == 4)
    empty = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=4, max_nodes=10))
    e = empty.knn_graph(hn.InMemoryVectorStore(4, 10), 3)
    assert e.shape == (0, 0) and e.nnz == 0


@pytest.mark.parametrize("exclude_self", [True, False])
def test_a_k_beyond_the_items_gives_the_graph_of_every_item(rng, monkeypatch, exclude_self) -> None:
    """k far above the item count answers as k = every other item: the same matrix, and
    searches (result arrays and beams) no wider than the index."""
    data = clustered(rng, 300, 8)
    idx, store = build(hn.L2(), data)
    idx.delete(7)
    n = 299  # live items
    full = n - 1 if exclude_self else n
    want = idx.knn_graph(store, full, exclude_self=exclude_self)
    widths = []
    real = idx.search_prepared

    def recording(store, queries, k, *args, **kw):
        widths.append((k, kw.get("ef")))
        return real(store, queries, k, *args, **kw)

    monkeypatch.setattr(idx, "search_prepared", recording)
    for huge in (5000, MAX_EF - 1):
        got = idx.knn_graph(store, huge, exclude_self=exclude_self)
        assert got.shape == want.shape and (got != want).nnz == 0
        np.testing.assert_array_equal(got.indptr, want.indptr)
        np.testing.assert_array_equal(got.indices, want.indices)  # the same order in every row
        assert np.all(np.diff(got.indptr)[np.arange(300) != 7] == full)
        assert widths and all(k <= 300 and ef <= 300 for k, ef in widths), widths[:3]


@pytest.mark.parametrize("kind", ["float16", "qi8"])
def test_compact_stores(kind, rng) -> None:
    data = clustered(rng, 500, 16)
    if kind == "qi8":
        metric = hn.CosineQi8()
        idx = hn.Hnsw(metric, hn.HnswConfig(dim=16, max_nodes=500, m=8, ef_construction=64, seed=1))
        store = hn.InMemoryQi8VectorStore(16, 500)
    else:
        metric = hn.Cosine()
        idx = hn.Hnsw(metric, hn.HnswConfig(dim=16, max_nodes=500, m=8, ef_construction=64, seed=1))
        store = hn.InMemoryVectorStore(16, 500, dtype=np.float16)
    idx.insert_batch(store, np.arange(500), data)
    g = idx.knn_graph(store, 8, ef=128)
    truth, _ = exact_graph(hn.Cosine(), data, 8)
    found = rows_of(g, 500, 8)
    assert not np.any(found == np.arange(500)[:, None])
    assert recall(found, truth) >= 0.9  # quantisation moves near-ties


def test_rounds_progress_and_interrupt(rng, monkeypatch, capsys) -> None:
    data = clustered(rng, 1200, 8)
    idx, store = build(hn.L2(), data)
    whole = idx.knn_graph(store, 5, ef=64, progress=False)
    monkeypatch.setattr(parallel, "MIN_ROUND", 100)
    monkeypatch.setattr(parallel, "ROUND_SECONDS", 1e-9)  # many small rounds
    calls = []
    real = idx.search_prepared

    def counting(*args, **kw):
        calls.append(1)
        return real(*args, **kw)

    monkeypatch.setattr(idx, "search_prepared", counting)
    pytest.importorskip("tqdm")
    rounds = idx.knn_graph(store, 5, ef=64, progress=True, num_threads=2)
    assert len(calls) == 12 and "knn_graph" in capsys.readouterr().err
    assert (whole != rounds).nnz == 0  # rounds change nothing

    def interrupted(*args, **kw):
        if len(calls) == 14:
            raise KeyboardInterrupt
        return counting(*args, **kw)

    monkeypatch.setattr(idx, "search_prepared", interrupted)
    with pytest.raises(KeyboardInterrupt):
        idx.knn_graph(store, 5, progress=False)
    idx.check_integrity()  # read-only operation: nothing to undo
    assert idx.search(store, data[3], 1)[0].key == 3


def test_knn_join_equals_search_batch(rng, monkeypatch) -> None:
    data, queries = clustered(rng, 1000, 12), clustered(rng, 450, 12)
    idx, store = build(hn.Cosine(), data, keys=[f"k{i}" for i in range(1000)])
    keys, dists = idx.search_batch(store, queries, 7, ef=40)
    monkeypatch.setattr(parallel, "MIN_ROUND", 100)
    monkeypatch.setattr(parallel, "ROUND_SECONDS", 1e-9)
    jk, jd = hn.knn_join(idx, store, queries, 7, ef=40, progress=False)
    np.testing.assert_array_equal(jk, keys)
    np.testing.assert_array_equal(jd, dists)
    ek, ed = hn.knn_join(idx, store, queries[:0], 7)
    assert ek.shape == (0, 7) and ed.shape == (0, 7)


def test_bad_input_raises_typed_errors(rng) -> None:
    data = clustered(rng, 50, 4)
    idx, store = build(hn.L2(), data)
    for bad in (0, -1, 1.5, True, MAX_EF):
        with pytest.raises(hn.InvalidParameterError):
            idx.knn_graph(store, bad)
    with pytest.raises(hn.InvalidParameterError):
        idx.knn_graph(store, 3, ef=0)
    with pytest.raises(hn.InvalidParameterError):
        idx.knn_graph(store, 3, exclude_self="yes")
    with pytest.raises(hn.InvalidParameterError):
        idx.knn_graph(store, 3, num_threads=0)
    with pytest.raises(hn.DimensionMismatchError):
        idx.knn_graph(hn.InMemoryVectorStore(5, 200), 3)
    with pytest.raises(hn.MetricMismatchError):
        idx.knn_graph(hn.InMemoryQi8VectorStore(4, 200), 3)
    with pytest.raises(hn.DimensionMismatchError):
        hn.knn_join(idx, store, np.zeros((3, 5), np.float32), 3)
    with pytest.raises(hn.InvalidVectorError):
        hn.knn_join(idx, store, np.full((3, 4), np.nan, np.float32), 3)


def test_words_dev_set_recall_at_default_ef() -> None:
    """Acceptance: recall of the k=15 graph vs the exact graph >= 0.95 at the default ef."""
    h5py = pytest.importorskip("h5py")
    with h5py.File(shared_path("data", "words-minilm-384-angular-dev.hdf5"), "r") as f:
        x = np.ascontiguousarray(f["train"][:], np.float32)
    n, dim = x.shape
    idx = hn.Hnsw(hn.Cosine(), hn.HnswConfig(dim=dim, max_nodes=n, seed=1))
    store = hn.InMemoryVectorStore(dim, n)
    idx.insert_batch(store, np.arange(n), x)
    g = idx.knn_graph(store, 15)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    hits = 0
    for s in range(0, n, 2000):
        sim = xn[s : s + 2000] @ xn.T
        sim[np.arange(sim.shape[0]), np.arange(s, s + sim.shape[0])] = -np.inf
        truth = np.argpartition(-sim, 15, axis=1)[:, :15]
        found = g.indices[g.indptr[s] : g.indptr[min(s + 2000, n)]].reshape(-1, 15)
        hits += sum(len(set(a) & set(b)) for a, b in zip(found.tolist(), truth.tolist()))
    assert hits / (n * 15) >= 0.95


def test_self_join_starts_at_each_node(rng) -> None:
    """knn_graph searches from the item's own node: less work than a search from the top."""
    data = clustered(rng, 3000, 16)
    idx = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=16, max_nodes=3000, m=8, ef_construction=64, seed=3))
    store = hn.InMemoryVectorStore(16, 3000)
    idx.insert_batch(store, np.arange(3000), data, num_threads=1)  # serial: a fixed graph
    nids = np.arange(200, dtype=np.int32)
    q = np.ascontiguousarray(data[:200], np.float32)

    def level0_evals(own_node: bool) -> tuple[int, np.ndarray]:
        total, found = 0, []
        for i in range(200):  # one query per call: the visited tags then mark its level-0 walk
            starts = nids[i : i + 1] if own_node else np.empty(0, np.int32)
            _, _, ids = idx.search_prepared(store, q[i : i + 1], 11, ef=16, num_threads=1, starts=starts)
            tags = idx.state.visited.acquire()
            total += int((tags[:-1] == tags[-1]).sum())
            found.append(ids[0])
        return total, np.array(found)

    top, top_ids = level0_evals(False)
    own, own_ids = level0_evals(True)
    print(f"level-0 evaluations from the top {top}, from the own node {own}")
    assert np.all(own_ids[:, 0] == nids)  # each item finds itself first
    truth, _ = idx.search_batch(store, q, 11, exact=True)
    assert recall(idx.key_map.keys_for(own_ids), truth) >= recall(idx.key_map.keys_for(top_ids), truth) - 0.01
    assert own < top


@pytest.mark.parametrize("meanwhile", ["add", "compact"])
def test_graph_beside_adds_and_a_compaction(meanwhile) -> None:
    """knn_graph takes no lock. Items added while it runs are not its columns (their
    NodeIds lie past its shape), and a compaction that renumbers the NodeIds under it makes
    it run again (rows and columns would mix two numberings). Either is played inside its
    first round of searches."""
    x = np.random.default_rng(9).standard_normal((80, 8)).astype(np.float32)
    index = hn.Index(8, "l2", m=6, ef_construction=32, seed=1, capacity=64)
    index.add(np.arange(60), x[:60])
    index.remove(np.arange(0, 60, 4))
    native, _ = index.native
    search = native.search_prepared

    def search_meanwhile(*args, **kwargs):
        native.search_prepared = search
        if meanwhile == "add":  # the new items lie where the queries are: each is a neighbour
            index.add(np.arange(100, 120), x[1:21] + 1e-3, num_threads=1)
        else:
            index.compact()
        return search(*args, **kwargs)

    native.search_prepared = search_meanwhile
    g = index.knn_graph(3, ef=64, num_threads=1)
    assert native.search_prepared is search
    assert g.nnz and g.indices.max() < g.shape[1]
    vec = {k: x[k] for k in range(60)}
    for i in range(g.shape[0]):
        row = slice(g.indptr[i], g.indptr[i + 1])
        if g.indptr[i] == g.indptr[i + 1]:
            continue
        a = vec[native.key(i)]
        for j, d in zip(g.indices[row].tolist(), g.data[row].tolist()):
            assert d == pytest.approx(float(((a - vec[native.key(j)]) ** 2).sum()), rel=1e-5, abs=1e-6)
