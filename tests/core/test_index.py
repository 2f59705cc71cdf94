"""Public API semantics of Hnsw: mutation, errors that change nothing, integrity."""

from __future__ import annotations

import numpy as np
import pytest

import hnsw_numba as hn
from hnsw_numba.core import mutation
from conftest import build


def snapshot(idx: hn.Hnsw, store) -> tuple:
    """Everything observable about an index + store, for 'nothing changed' checks."""
    a = idx.graph_arrays
    return (
        len(idx), idx.node_count, idx.deleted_count, idx.max_nodes,
        tuple(np.array(x, copy=True).tobytes() for x in a),
        idx.key_map.node_keys[: idx.node_count].tolist(),
        store.rows()[0].tobytes(),
    )


@pytest.fixture
def index(small_data):
    data, _ = small_data
    return build(hn.L2(), data[:300], extra=50)


def test_config_validation() -> None:
    for bad in [dict(dim=0, max_nodes=10), dict(dim=4, max_nodes=0), dict(dim=4, max_nodes=10, m=1),
                dict(dim=4, max_nodes=10, ef_construction=0), dict(dim=4, max_nodes=10, ef_search=0),
                dict(dim=4, max_nodes=10, seed=-1), dict(dim=4.5, max_nodes=10), dict(dim=4, max_nodes=2**40)]:
        with pytest.raises(hn.InvalidParameterError):
            hn.HnswConfig(**bad)
    c = hn.HnswConfig(dim=4, max_nodes=10)
    assert (c.m, c.m0, c.ef_construction, c.ef_search) == (16, 32, 200, 50)
    assert hn.HnswConfig.from_dict(c.to_dict()) == c
    with pytest.raises(Exception):
        c.m = 3  # frozen


@pytest.mark.parametrize("bad", [None, 0, "8", 2.5, True, 10**7])
def test_set_ef_names_the_value_it_refuses(bad) -> None:
    idx = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=4, max_nodes=10, ef_search=7))
    with pytest.raises(hn.InvalidParameterError, match=f"got {bad!r}$"):
        idx.set_ef(bad)
    assert idx.config.ef_search == 7
    idx.set_ef(np.int64(9))
    assert idx.config.ef_search == 9


def test_errors_are_builtins_too() -> None:
    assert issubclass(hn.KeyExistsError, KeyError) and issubclass(hn.KeyExistsError, hn.HnswError)
    assert issubclass(hn.KeyNotFoundError, KeyError)
    assert issubclass(hn.DimensionMismatchError, ValueError)
    assert issubclass(hn.InvalidVectorError, ValueError)
    assert issubclass(hn.CapacityError, hn.HnswError)


def test_insert_and_lookup(index) -> None:
    idx, store = index
    assert len(idx) == 300 and 5 in idx and 300 not in idx and "5" not in idx
    assert idx.node_id(5) == 5 and idx.key(5) == 5
    np.testing.assert_array_equal(store.vector(5), store.rows().data[5])
    assert store.vector(349) is None
    v = np.full(idx.dim, 0.5, np.float32)
    nid = idx.insert(store, 1000, v)
    assert nid == 300 and idx.node_id(1000) == 300
    hits = idx.search(store, v, 1)
    assert hits[0].key == 1000 and hits[0].distance == pytest.approx(0.0, abs=1e-5) and hits[0].node_id == 300
    idx.check_integrity()


def test_duplicate_insert_refused(index) -> None:
    idx, store = index
    before = snapshot(idx, store)
    with pytest.raises(hn.KeyExistsError):
        idx.insert(store, 3, np.zeros(idx.dim, np.float32))
    with pytest.raises(KeyError):
        idx.insert_batch(store, [400, 3], np.zeros((2, idx.dim), np.float32))
    with pytest.raises(hn.KeyExistsError, match="twice"):
        idx.insert_batch(store, [400, 401, 400], np.zeros((3, idx.dim), np.float32))
    assert snapshot(idx, store) == before
    idx.check_integrity()


@pytest.mark.parametrize(
    "call, exc",
    [
        (lambda i, s: i.insert(s, 900, np.zeros(3, np.float32)), hn.DimensionMismatchError),
        (lambda i, s: i.insert(s, 900, np.full(i.dim, np.nan, np.float32)), hn.InvalidVectorError),
        (lambda i, s: i.insert(s, 900, np.r_[np.inf, np.zeros(i.dim - 1)]), hn.InvalidVectorError),
        (lambda i, s: i.insert(s, 1.5, np.zeros(i.dim)), hn.InvalidKeyError),
        (lambda i, s: i.insert(s, None, np.zeros(i.dim)), TypeError),
        (lambda i, s: i.insert(s, [1], np.zeros(i.dim)), hn.InvalidKeyError),
        (lambda i, s: i.insert(s, True, np.zeros(i.dim)), hn.InvalidKeyError),
        (lambda i, s: i.insert(s, 900, "abc"), hn.InvalidVectorError),
        (lambda i, s: i.insert_batch(s, [900, 901], np.zeros((3, i.dim))), hn.InvalidKeyError),
        (lambda i, s: i.insert_batch(s, range(900, 1000), np.zeros((100, i.dim))), hn.CapacityError),
        (lambda i, s: i.insert_batch(s, [900, 901], np.c_[np.zeros((2, i.dim - 1)), [0, np.nan]]), hn.InvalidVectorError),
        (lambda i, s: i.search(s, np.zeros(i.dim), 0), hn.InvalidParameterError),
        (lambda i, s: i.search(s, np.zeros(i.dim), 5, ef=0), ValueError),
        (lambda i, s: i.search(s, np.zeros(i.dim + 1), 5), hn.DimensionMismatchError),
        (lambda i, s: i.search(s, np.full(i.dim, np.nan), 5), hn.InvalidVectorError),
        (lambda i, s: i.search_batch(s, np.zeros(i.dim), 5), hn.DimensionMismatchError),
        (lambda i, s: i.search(s, np.zeros(i.dim), 5, filter=3), hn.InvalidParameterError),
        (lambda i, s: i.search(s, np.zeros(i.dim), 5, filter=np.ones(3, bool)), hn.InvalidParameterError),
        (lambda i, s: i.delete(12345), hn.KeyNotFoundError),
        (lambda i, s: i.node_id(12345), KeyError),
        (lambda i, s: i.key(10**6), hn.KeyNotFoundError),
        (lambda i, s: i.insert(hn.InMemoryVectorStore(i.dim + 1, 500), 900, np.zeros(i.dim)), hn.DimensionMismatchError),
        (lambda i, s: i.insert(hn.InMemoryVectorStore(i.dim, 10), 900, np.zeros(i.dim)), hn.CapacityError),
        (lambda i, s: i.resize(10), hn.CapacityError),
        (lambda i, s: i.insert_batch(s, [900], np.zeros((1, i.dim)), num_threads=0), hn.InvalidParameterError),
    ],
)
def test_bad_input_changes_nothing(index, call, exc) -> None:
    idx, store = index
    before = snapshot(idx, store)
    with pytest.raises(exc):
        call(idx, store)
    assert snapshot(idx, store) == before
    idx.check_integrity()


@pytest.mark.parametrize(
    "call",
    [
        lambda i, s: i.insert_batch(s, 5, np.zeros((1, i.dim))),
        lambda i, s: i.insert_batch(s, None, np.zeros((1, i.dim))),
        lambda i, s: i.delete_batch(None),
        lambda i, s: i.delete_batch(2.0),
        lambda i, s: i.get_vectors(s, None),
        lambda i, s: i.get_vectors(s, 1.0),
        lambda i, s: i.get_vectors(s, np.True_),
    ],
)
def test_keys_that_are_no_sequence_raise_invalid_key_error(index, call) -> None:
    """Not "'NoneType' object is not iterable": a typed error that is still a TypeError."""
    idx, store = index
    before = snapshot(idx, store)
    with pytest.raises(hn.InvalidKeyError, match="expected a sequence of keys") as caught:
        call(idx, store)
    assert isinstance(caught.value, TypeError)
    assert snapshot(idx, store) == before


def test_node_ids_follow_the_key_rules(index) -> None:
    """``key`` / ``is_deleted`` take ints and NumPy integers; bools, floats and the rest raise
    InvalidKeyError (a TypeError and a ValueError, as int() raised before)."""
    from fractions import Fraction

    idx, _ = index
    for bad in (None, b"x", "", "3", object(), True, np.True_, 1.0, np.float32(3), Fraction(3), np.array(3)):
        for call in (idx.key, idx.is_deleted):
            with pytest.raises(hn.InvalidKeyError, match="NodeIds must be ints"):
                call(bad)
    assert idx.key(np.int8(3)) == 3 and idx.key(np.uint64(4)) == 4 and idx.is_deleted(np.int64(3)) is False
    with pytest.raises(hn.KeyNotFoundError):
        idx.key(np.int64(-1))


def test_num_threads_takes_numpy_ints_and_is_checked_with_nothing_to_do(index, small_data) -> None:
    """NumPy integers are thread counts (as they are ks and efs); a bad count raises from
    repair and compact even when there is nothing to repair or drop."""
    idx, store = index
    _, queries = small_data
    two = np.int64(2)
    np.testing.assert_array_equal(idx.search_batch(store, queries, 5, num_threads=two)[0],
                                  idx.search_batch(store, queries, 5, num_threads=2)[0])
    assert idx.insert_batch(store, [900, 901], queries[:2], num_threads=np.uint8(2)).tolist() == [300, 301]
    assert idx.knn_graph(store, 3, num_threads=two).shape == (302, 302)
    assert idx.repair(store, num_threads=two) == 0
    before = snapshot(idx, store)
    for bad in (-1, 0, True, 1.0, "2", np.float64(2), np.True_):
        for call in (idx.repair, idx.compact):
            with pytest.raises(hn.InvalidParameterError, match="num_threads must be a positive int"):
                call(store, num_threads=bad)
    assert snapshot(idx, store) == before
    np.testing.assert_array_equal(idx.compact(store, num_threads=two), np.arange(302))


def test_wrong_store_kind_is_a_clear_error(index) -> None:
    idx, _ = index

    class FakeQi8Store:
        kind, dim, max_nodes = "qi8", idx.dim, 1000

    with pytest.raises(hn.MetricMismatchError):
        idx.search(FakeQi8Store(), np.zeros(idx.dim), 3)


def test_delete_never_returned(index, small_data) -> None:
    idx, store = index
    data, queries = small_data
    victims = [int(k) for k in idx.search_batch(store, queries[:10], 3)[0][:, 0]]
    for key in set(victims):
        assert idx.delete(key) == key
        assert key not in idx
    assert len(idx) == 300 - len(set(victims)) and idx.deleted_count == len(set(victims))
    keys, dists = idx.search_batch(store, queries, 20, ef=80)
    assert not set(keys.ravel().tolist()) & set(victims)
    exact_keys, _ = idx.search_batch(store, queries, 20, exact=True)
    assert not set(exact_keys.ravel().tolist()) & set(victims)
    with pytest.raises(hn.KeyNotFoundError):
        idx.delete(victims[0])
    idx.check_integrity()


def test_set_live_deleted_and_new(index, rng) -> None:
    idx, store = index
    v_new = rng.standard_normal(idx.dim).astype(np.float32) * 10
    # live key: moved, same NodeId, found at its new place
    assert idx.set(store, 7, v_new) == 7
    np.testing.assert_allclose(store.vector(7), v_new)
    assert idx.search(store, v_new, 1)[0].key == 7
    # deleted key: resurrected on the same NodeId
    idx.delete(8)
    v8 = rng.standard_normal(idx.dim).astype(np.float32) * 10
    assert idx.set(store, 8, v8) == 8 and 8 in idx and idx.node_id(8) == 8
    assert idx.search(store, v8, 1)[0].key == 8
    assert idx.deleted_count == 0
    # new key
    assert idx.set(store, "new", v_new + 1) == 300
    assert idx.search(store, v_new + 1, 1)[0].key == "new"
    idx.check_integrity()


def test_insert_on_deleted_key_resurrects(index) -> None:
    idx, store = index
    idx.delete(4)
    v = np.full(idx.dim, 3.0, np.float32)
    assert idx.insert(store, 4, v) == 4
    assert idx.search(store, v, 1)[0].key == 4 and len(idx) == 300


def test_update_keeps_recall(small_data) -> None:
    data, queries = small_data
    idx, store = build(hn.L2(), data[:600])
    rng = np.random.default_rng(1)
    moved = rng.choice(600, 120, replace=False)
    for key in moved:  # move a fifth of the points to other points' neighbourhoods
        idx.set(store, int(key), data[600 + int(key) % 400])
    idx.check_integrity()
    found, _ = idx.search_batch(store, queries, 10, ef=64)
    truth, _ = idx.search_batch(store, queries, 10, exact=True)
    from naive import recall

    assert recall(found, truth) >= 0.95


def test_str_and_mixed_keys(small_data) -> None:
    data, queries = small_data
    keys = [f"item-{i}" for i in range(200)]
    idx, store = build(hn.Cosine(), data[:200], keys=keys)
    assert idx.node_id("item-17") == 17 and "item-17" in idx
    k, d = idx.search_batch(store, queries[:3], 5)
    assert k.dtype == object and all(isinstance(x, str) for x in k.ravel())
    idx.insert(store, 12, data[250])  # an int among strs
    assert idx.search(store, data[250], 1)[0].key == 12
    k, d = idx.search_batch(store, queries[:1], 300)
    assert k[0, -1] is None and np.isinf(d[0, -1])
    idx.check_integrity()


def test_big_uint_keys(small_data) -> None:
    data, _ = small_data
    keys = np.arange(2**64 - 50, 2**64 - 10, dtype=np.uint64)
    idx, store = build(hn.L2(), data[:40], keys=keys)
    assert idx.search(store, data[3], 1)[0].key == 2**64 - 47


def test_resize_grows(small_data) -> None:
    data, queries = small_data
    idx, store = build(hn.L2(), data[:100], extra=0)
    with pytest.raises(hn.CapacityError):
        idx.insert(store, 100, data[100])
    idx.resize(400)
    store.resize(400)
    idx.insert_batch(store, np.arange(100, 400), data[100:400])
    assert len(idx) == 400 and idx.max_nodes == 400 and idx.config.max_nodes == 400
    idx.check_integrity()
    found, _ = idx.search_batch(store, queries, 10)
    truth, _ = idx.search_batch(store, queries, 10, exact=True)
    from naive import recall

    assert recall(found, truth) >= 0.95


def test_single_query_binding_follows_the_store_and_the_index(small_data) -> None:
    """search() caches its store validation; new store arrays or a grown index re-check it."""
    data, queries = small_data
    idx, store = build(hn.L2(), data[:100], extra=0)
    assert idx.search(store, queries[0], 1)[0].key != 7
    assert store.rows() is store.rows()  # one tuple per state of the arrays
    store.resize(300)  # new arrays: the binding must not keep reading the old ones
    assert store.rows()[0].shape[0] == 300
    idx.set(store, 7, queries[0])  # written to the new arrays only
    assert idx.search(store, queries[0], 1)[0][:2] == (7, 0.0)
    idx.resize(300)
    idx.insert_batch(store, np.arange(100, 300), data[100:300])
    truth = idx.search(store, queries[0], 5, exact=True)
    assert [h.key for h in idx.search(store, queries[0], 5)] == [h.key for h in truth]

    # the index grows past a bound store's rows through another store: a clear error on
    # the next search with the small store, never a read past its end
    idx2, small = build(hn.L2(), data[:100], extra=0)
    idx2.search(small, queries[0], 5)
    idx2.resize(200)
    big = hn.InMemoryVectorStore(idx2.dim, 200)
    big.write(np.arange(100), big.encode(data[:100]))
    idx2.insert(big, 100, data[100])
    with pytest.raises(hn.CapacityError):
        idx2.search(small, queries[0], 5)
    assert idx2.search(big, data[100], 1)[0].key == 100

    # a store whose rows() starts returning fewer rows than the index has nodes
    class Shrinking(hn.InMemoryVectorStore):
        short = False

        def rows(self):
            rows = super().rows()
            return type(rows)(rows[0][:50]) if self.short else rows

    # rows narrower than the index's dimension: refused before any kernel reads them
    class Narrow(hn.InMemoryVectorStore):
        def rows(self):
            return type(super().rows())(np.zeros((300, idx.dim - 1), np.float32))

    with pytest.raises(hn.InvalidParameterError, match="columns"):
        idx.search(Narrow(idx.dim, 300), queries[0], 5)

    shrinking = Shrinking(idx.dim, 300)
    shrinking.write(np.arange(300), shrinking.encode(store.rows()[0][:300]))
    idx.search(shrinking, queries[0], 5)
    shrinking.short = True
    with pytest.raises(hn.CapacityError):
        idx.search(shrinking, queries[0], 5)


def test_integrity_detects_corruption(index) -> None:
    idx, _ = index
    a = idx.graph_arrays
    saved = a.links0[10].copy()
    a.links0[10, 1] = 10  # self loop
    with pytest.raises(hn.IntegrityError, match="self loop"):
        idx.check_integrity()
    a.links0[10, 1] = 10_000  # out of range
    with pytest.raises(hn.IntegrityError, match="out of range"):
        idx.check_integrity()
    a.links0[10] = saved
    a.links0[10, 0] = 1000  # count above degree
    with pytest.raises(hn.IntegrityError, match="maximum degree"):
        idx.check_integrity()
    a.links0[10] = saved
    idx.check_integrity()


def test_repr_and_keys(index) -> None:
    idx, _ = index
    idx.delete(0)
    assert "live=299" in repr(idx)
    assert list(idx.keys())[:2] == [1, 2]


def test_memmap_store_qualifies(tmp_path, small_data) -> None:
    data, queries = small_data
    path = tmp_path / "vectors.f32"
    mm = np.memmap(path, dtype=np.float32, mode="w+", shape=(400, data.shape[1]))
    store = hn.InMemoryVectorStore.from_array(mm)
    assert isinstance(store, hn.VectorStore)
    idx = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=data.shape[1], max_nodes=400, m=8, ef_construction=64, seed=1))
    idx.insert_batch(store, np.arange(300), data[:300])
    mm.flush()
    np.testing.assert_array_equal(np.fromfile(path, np.float32).reshape(400, -1)[:300], data[:300])
    # reopen the file read-through (copy-on-write): searchable without loading into RAM
    store2 = hn.InMemoryVectorStore.from_array(np.memmap(path, dtype=np.float32, mode="c", shape=(400, data.shape[1])))
    k1, d1 = idx.search_batch(store, queries, 5)
    k2, d2 = idx.search_batch(store2, queries, 5)
    np.testing.assert_array_equal(k1, k2)
    with pytest.raises(hn.InvalidParameterError):
        hn.InMemoryVectorStore.from_array(np.memmap(path, dtype=np.float32, mode="r", shape=(400, data.shape[1])))


def test_interrupted_batch_leaves_a_consistent_index(small_data, monkeypatch) -> None:
    data, queries = small_data
    idx = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=data.shape[1], max_nodes=1500, m=8, ef_construction=32, seed=1))
    store = hn.InMemoryVectorStore(data.shape[1], 1500)
    calls = {"n": 0}
    real = mutation.run_kernel

    def flaky(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(mutation, "run_kernel", flaky)
    monkeypatch.setattr(mutation, "INSERT_ROUND", 500)
    with pytest.raises(KeyboardInterrupt):
        idx.insert_batch(store, np.arange(1500), data, progress=True, num_threads=1)
    monkeypatch.undo()
    idx.check_integrity()
    inserted = len(idx)
    assert 0 < inserted < 1500 and idx.deleted_count == 1500 - inserted
    found = idx.search_batch(store, queries, 5)[0]
    assert (found >= 0).all() and (found < inserted).all()  # only the linked first round
    # inserting the abandoned keys again resurrects them
    idx.insert_batch(store, np.arange(inserted, 1500), data[inserted:])
    assert len(idx) == 1500
    idx.check_integrity()


def test_absurd_sizes_fail_before_allocating(index) -> None:
    idx, store = index
    big = hn.HnswConfig(dim=8, max_nodes=2_000_000_000)  # valid config, ~300 GB of graph
    with pytest.raises(hn.CapacityError, match="GiB"):
        hn.Hnsw(hn.L2(), big)
    with pytest.raises(hn.CapacityError, match="GiB"):
        hn.InMemoryVectorStore(65_536, 2_000_000_000)
    with pytest.raises(hn.CapacityError):
        idx.resize(2_000_000_000)
    before = snapshot(idx, store)
    with pytest.raises(hn.CapacityError):
        idx.search_batch(store, np.zeros((100_000, idx.dim), np.float32), 1_000_000)
    with pytest.raises(hn.InvalidParameterError):
        idx.search(store, np.zeros(idx.dim), 10, ef=10**9)
    assert snapshot(idx, store) == before


def test_a_store_without_the_graphs_rows_is_refused_by_every_call() -> None:
    # a new store, or another index's, of the right kind and dim: its rows would be
    # searched as zeros (or as someone else's vectors) without a word
    data = np.random.default_rng(3).standard_normal((150, 8)).astype(np.float32)
    idx = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=8, max_nodes=200, m=8, ef_construction=32, seed=1))
    store = hn.InMemoryVectorStore(8, 200)
    idx.insert_batch(store, np.arange(150), data)
    empty = hn.InMemoryVectorStore(8, 200)
    calls = [lambda s: idx.search(s, data[0], 3), lambda s: idx.search_batch(s, data[:4], 3),
             lambda s: idx.search(s, data[0], 3, filter=[1, 2, 3]), lambda s: idx.search(s, data[0], 3, exact=True),
             lambda s: idx.insert(s, 999, data[0]), lambda s: idx.get_vectors(s, [1]), lambda s: idx.repair(s),
             lambda s: idx.compact(s), lambda s: idx.knn_graph(s, 3)]
    for call in calls:
        with pytest.raises(hn.InvalidParameterError, match="entry point"):
            call(empty)
    assert len(idx) == 150 and not empty.written.any()
    assert idx.search(store, data[7], 1).keys == [7]


@pytest.mark.parametrize("dim", [1, 7, 1000, 1536])
def test_vectors_at_the_limit_stay_finite_apart(dim: int) -> None:
    """x and -x with every component at the limit: the float32 sum of 4 x**2 dim rounded past
    FLT_MAX (inf) when the limit was sqrt(FLT_MAX / (4 dim)) exactly (1,000 dimensions)."""
    from hnsw_numba.core.store_base import value_limit

    x = np.float32(value_limit(dim))
    while float(x) > value_limit(dim):
        x = np.nextafter(x, np.float32(0))
    rows = np.stack([np.full(dim, x), np.full(dim, -x)]).astype(np.float32)
    idx = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=dim, max_nodes=4, m=4, ef_construction=8, seed=1))
    store = hn.InMemoryVectorStore(dim, 4)
    idx.insert_batch(store, [0, 1], rows)
    for exact in (False, True):
        hits = idx.search(store, rows[0], 2, exact=exact)
        assert hits.keys == [0, 1] and np.isfinite(hits.distances).all()
    assert np.isfinite(idx.search_batch(store, rows, 2)[1]).all()


@pytest.mark.parametrize("metric", [hn.L2(), hn.InnerProduct(), hn.L2Qi8()], ids=lambda m: m.name)
def test_components_whose_distances_overflow_float32_are_refused(metric) -> None:
    # past sqrt(FLT_MAX / (4 dim)) a squared distance or dot product can overflow: ties at inf, NaN
    dim = 8
    data = np.random.default_rng(4).standard_normal((60, dim)).astype(np.float32)
    qi8 = metric.store_kind == "qi8"
    idx = hn.Hnsw(metric, hn.HnswConfig(dim=dim, max_nodes=100, m=8, ef_construction=32, seed=1))
    store = hn.InMemoryQi8VectorStore(dim, 100) if qi8 else hn.InMemoryVectorStore(dim, 100)
    idx.insert_batch(store, np.arange(60), data)
    huge = np.zeros(dim, np.float32)
    huge[3] = 1e19  # limit at dim 8: 6.5e18
    for call in (lambda: idx.insert(store, 100, huge), lambda: idx.insert_batch(store, [100, 101], np.stack([data[0], huge])),
                 lambda: idx.search(store, huge, 3), lambda: idx.search_batch(store, huge[None, :], 3),
                 lambda: idx.search(store, huge, 3, filter=list(range(0, 60, 2))), lambda: idx.search(store, huge, 3, exact=True),
                 lambda: idx.search(store, huge, 3, filter=hn.Filter(idx, list(range(30))), plan="exact")):
        with pytest.raises(hn.InvalidVectorError, match="overflow"):
            call()
    assert len(idx) == 60 and 100 not in idx
    ok = np.zeros(dim, np.float32)
    ok[3] = 1e18
    idx.insert(store, 100, ok)
    assert idx.search(store, ok, 1).keys == [100]
    cos = hn.Hnsw(hn.Cosine(), hn.HnswConfig(dim=dim, max_nodes=10, m=8, ef_construction=32, seed=1))
    cos.insert(hn.InMemoryVectorStore(dim, 10), 0, huge)  # cosine stores unit vectors: any finite size will do


def test_exact_duplicates_stay_reachable() -> None:
    """Six points, fifty copies each, one thread: every copy is found (hnswlib finds them all).

    Fails with equal distances in arrival order: a new copy never displaced an older one from
    a full list, and 93 of the 300 items had no in-link (search found 43 of 300 at ef 300).
    Fails too when the walk's entry is scored by another kernel than its neighbours (one
    last bit apart, the entry outranks its copies): seeds 0, 2, 3 and 7 stranded 10-45 copies.
    """
    x = np.repeat(np.random.default_rng(0).standard_normal((6, 4)), 50, axis=0).astype(np.float32)
    for seed in (0, 1, 2, 3, 4, 7):
        idx = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=4, max_nodes=300, m=16, ef_construction=200, seed=seed))
        store = hn.InMemoryVectorStore(4, 300)
        idx.insert_batch(store, np.arange(300), x, num_threads=1)
        assert idx.stats()["unreachable_live"] == 0
        keys, dists = idx.search_batch(store, x[::50], 50, ef=300)
        assert (dists == 0).all() and all(sorted(row) == list(range(50 * c, 50 * c + 50)) for c, row in enumerate(keys.tolist()))
