"""hn.Index: the one-object API over Hnsw + store (growth, forms of add/search, files, pickling, add_from)."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

import hnsw_numba as hn
from hnsw_numba.core import half_walk
from conftest import clustered


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(11)
    return clustered(rng, 2000, 24), clustered(rng, 50, 24)


def graph_bytes(index: hn.Index) -> list[bytes]:
    native, _ = index.native
    a, n = native.graph_arrays, native.node_count
    return [a.levels[:n].tobytes(), a.links0[:n].tobytes(), a.upper_start[:n].tobytes()]


def test_construction_and_description() -> None:
    index = hn.Index(24, metric="ip", dtype="bf16", m=8, ef_construction=64, ef=32, capacity=10, seed=1)
    assert (index.dim, index.metric, index.dtype, index.m, index.ef_construction, index.ef, index.capacity) == \
        (24, "ip", "bf16", 8, 64, 32, 10)
    assert repr(index) == "Index(dim=24, metric='ip', dtype='bf16', len=0, capacity=10, m=8, ef_construction=64, ef=32)"
    assert hn.Index(3).metric == "cosine" and hn.Index(3).dtype == "f32" and hn.Index(3).capacity == hn.index.DEFAULT_CAPACITY
    assert hn.Index(3, dtype=np.float16).dtype == "f16" and hn.Index(3, "l2sq", "i8").native[0].metric == hn.L2Qi8()
    for bad in (dict(metric="euclid"), dict(dtype="f64"), dict(capacity=0), dict(m=1), dict(ef=0), dict(dtype=object)):
        with pytest.raises(hn.InvalidParameterError):
            hn.Index(4, **bad)


@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16", "qi8", "f32+f16"])
def test_grows_from_one_and_matches_the_low_level_api(data, dtype) -> None:
    x, q = data
    index = hn.Index(24, metric="l2", dtype=dtype, m=8, ef_construction=64, capacity=1, seed=5)
    index.add(0, x[0])  # one at a time, then batches: never a CapacityError
    index.add([1, 2], x[1:3])
    index.add(np.arange(3, 1500), x[3:1500])
    for i in range(1500, 1600):
        index.add(i, x[i])
    assert len(index) == 1600 and index.capacity >= 1600 and index.capacity <= 2 * 1600
    native, store = index.native
    assert native.max_nodes == store.max_nodes == index.capacity
    keys, dists = index.search(q, 5)
    k2, d2 = native.search_batch(store, q, 5)
    np.testing.assert_array_equal(keys, k2)
    np.testing.assert_array_equal(dists, d2)
    hits = index.search(q[0], 5)
    assert isinstance(hits, hn.Hits) and hits == native.search(store, q[0], 5)
    exact, _ = index.search(q, 5, exact=True)
    assert (keys == exact).mean() > 0.9
    native.check_integrity()


def test_add_numbers_items_and_checks_keys(data) -> None:
    x, _ = data
    index = hn.Index(24, "l2", seed=1)
    np.testing.assert_array_equal(index.add(x[:10]), np.arange(10))
    assert index.add(x[10]) == 10  # one vector, numbered
    assert index.add("s", x[11]) == "s" and index.add(["t"], x[12]) == "t"
    np.testing.assert_array_equal(index.add(x[13:15]), [13, 14])  # numbered after the NodeIds in use
    assert len(index) == 15 and "s" in index and 14 in index and 15 not in index
    with pytest.raises(hn.KeyExistsError):
        index.add(3, x[0])
    with pytest.raises(hn.InvalidKeyError):
        index.add(-1, x[0])
    with pytest.raises(hn.InvalidKeyError):
        index.add([1, 2], x[0])
    with pytest.raises(hn.DimensionMismatchError):
        index.add(99, x[0, :5])
    assert len(index) == 15


def test_get_remove_set(data) -> None:
    x, _ = data
    index = hn.Index(24, "cosine", "f16", seed=2)
    index.add(np.arange(100), x[:100])
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    np.testing.assert_allclose(index.get(7), unit[7], atol=1e-3)
    assert index.get([7, 8]).shape == (2, 24) and index.get(np.array([7])).shape == (1, 24)
    index.remove(7)
    index.remove([8, 9])
    assert len(index) == 97 and 8 not in index
    with pytest.raises(hn.KeyNotFoundError, match="8"):
        index.remove([10, 8])
    assert 10 in index
    with pytest.raises(hn.KeyNotFoundError):
        index.get(7)
    nid = index.native[0].key_map.get(7)
    index.set([7, 10, 500], x[[150, 151, 152]])  # deleted, live, new
    assert len(index) == 99 and index.native[0].node_id(7) == nid
    np.testing.assert_allclose(index.get([7, 10, 500]), unit[[150, 151, 152]], atol=1e-3)
    assert index.search(x[151], 1)[0].key == 10
    index.set(11, x[153])
    np.testing.assert_allclose(index.get(11), unit[153], atol=1e-3)
    with pytest.raises(hn.InvalidParameterError):
        index.set([12, 12], x[:2])
    index.native[0].check_integrity()
    l2 = hn.Index(24, "l2", "f16")
    l2.add(x[:20])
    before = l2.get(np.arange(20))
    with pytest.raises(hn.InvalidVectorError):  # beyond float16: checked before anything changes
        l2.set([12, 600], np.full((2, 24), 1e6, np.float32))
    np.testing.assert_array_equal(l2.get(np.arange(20)), before)
    assert 600 not in l2 and len(l2) == 20
    for dtype in ("qi8", "f16"):  # codes given as a Qi8Batch are checked whole as well
        q = hn.Index(24, "l2", dtype)
        q.add(x[:20])
        before = q.get(np.arange(20))
        codes = hn.quantize_qi8(x[20:23])
        big = hn.Qi8Batch(codes.data, np.array([codes.scale[0], codes.scale[1], 1e17], np.float32), codes.zero_point)
        with pytest.raises(hn.InvalidVectorError, match="vector 2"):
            q.set([600, 3, 4], big)
        np.testing.assert_array_equal(q.get(np.arange(20)), before)
        assert 600 not in q and len(q) == 20


@pytest.mark.parametrize("deleted", [False, True])
def test_set_batch_upserts_keys_another_thread_adds_meanwhile(data, deleted) -> None:
    """A key added by another thread between set's look-up and its insert is updated, not
    refused with KeyExistsError (the other thread's add is played inside the insert call)."""
    x, _ = data
    index = hn.Index(24, "l2", seed=3)
    index.add([0, 2], x[:2])
    if deleted:
        index.remove(2)
    native, store = index.native
    real = native.insert_batch

    def racing(*args, **kwargs):
        native.insert_batch = real
        native.insert(store, 2, x[9])  # the other thread's add of key 2
        return real(*args, **kwargs)

    native.insert_batch = racing
    index.set([0, 1, 2], x[3:6])
    np.testing.assert_array_equal(index.get([0, 1, 2]), x[3:6])
    assert len(index) == 3
    native.check_integrity()


def test_malformed_vectors_and_keys_raise_typed_errors(data) -> None:
    """What is no vector or batch raises InvalidVectorError (a ValueError), what is no key
    or sequence of keys InvalidKeyError (a TypeError); nothing changes."""
    x, _ = data
    index = hn.Index(24, "l2", seed=1)
    index.add(x[:10])
    ragged = [x[0].tolist(), x[1, :20].tolist()]
    for call in (lambda: index.add(None), lambda: index.add("abc"), lambda: index.add({1: 2}),
                 lambda: index.add(row for row in x[:2]), lambda: index.add(ragged), lambda: index.add([50, 51], ragged),
                 lambda: index.set([50, 51], ragged), lambda: index.search(ragged, 3)):
        with pytest.raises(hn.InvalidVectorError):
            call()
    for call in (lambda: index.remove(None), lambda: index.remove(1.0), lambda: index.get(None)):
        with pytest.raises(hn.InvalidKeyError) as caught:
            call()
        assert isinstance(caught.value, TypeError)
    assert len(index) == 10 and index.native[0].node_count == 10
    with pytest.raises(hn.DimensionMismatchError):
        index.add(np.zeros((2, 3, 24), np.float32))
    np.testing.assert_array_equal(index.add(x[10:12].tolist()), [10, 11])  # nested lists still add


def test_search_flags_are_strict(data) -> None:
    """``exact`` is a bool (NumPy's too) on the fast single-query path as on the others."""
    x, q = data
    index = hn.Index(24, "l2", seed=1)
    index.add(x[:200])
    for bad in ("yes", 1, None):
        for queries in (q[0], q[:3], q[0].tolist()):
            with pytest.raises(hn.InvalidParameterError, match="exact must be a bool"):
                index.search(queries, 3, exact=bad)
    assert index.search(q[0], 3, exact=np.True_).keys == index.search(q[0], 3, exact=True).keys
    for bad in ("x", -5, 2.5):  # a single query took any num_threads (it runs on the calling thread)
        for queries in (q[0], q[:3], q[0].tolist()):
            with pytest.raises(hn.InvalidParameterError, match="num_threads"):
                index.search(queries, 3, num_threads=bad)
    assert index.search(q[0], 3, num_threads=2).keys == index.search(q[0], 3).keys


def test_save_and_open_flags_are_strict(tmp_path, data) -> None:
    """``fsync="no"`` (truthy: it flushed) and ``mmap=1`` were taken."""
    x, _ = data
    index = hn.Index(24, "l2", seed=1)
    index.add(x[:50])
    with pytest.raises(hn.InvalidParameterError, match="fsync"):
        index.save(tmp_path / "a.zarr", fsync="no")
    assert not (tmp_path / "a.zarr").exists()
    index.save(tmp_path / "a.zarr", fsync=False)
    for flag in ("mmap", "verify"):
        with pytest.raises(hn.InvalidParameterError, match=flag):
            hn.open(tmp_path / "a.zarr", **{flag: 1})
    assert len(hn.open(tmp_path / "a.zarr", mmap=np.True_)) == 50


def test_ef_and_filter(data) -> None:
    x, q = data
    index = hn.Index(24, "l2", seed=3)
    index.add(x[:500])
    index.ef = 8
    assert index.ef == 8 and index.native[0].config.ef_search == 8
    hits = index.search(q[0], 5, filter=lambda key: key % 2 == 0)
    assert len(hits) == 5 and all(h.key % 2 == 0 for h in hits)
    keys, _ = index.search(q[:3], 5, filter=set(range(0, 500, 3)), ef=64)
    assert (keys % 3 == 0).all()


@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16", "qi8", "f32+f16"])
def test_save_and_open_read_the_configuration(tmp_path, data, dtype) -> None:
    x, q = data
    index = hn.Index(24, metric="ip", dtype=dtype, m=6, ef_construction=40, ef=20, seed=4)
    index.add([f"k{i}" for i in range(300)], x[:300])
    index.save(tmp_path / "i.zarr")
    back = hn.open(tmp_path / "i.zarr")
    assert repr(back).replace(f"capacity={back.capacity}", "") == repr(index).replace(f"capacity={index.capacity}", "")
    for a, b in zip(back.search(q, 5), index.search(q, 5)):
        np.testing.assert_array_equal(a, b)
    mapped = hn.open(tmp_path / "i.zarr", mmap=True)
    mapped.add("new", x[400])  # grows out of the mapping into memory
    assert "new" in mapped and len(mapped) == 301


def test_load_without_a_metric(tmp_path, data) -> None:
    x, _ = data
    idx = hn.Hnsw(hn.CosineQi8(), hn.HnswConfig(dim=24, max_nodes=100, seed=1))
    store = hn.InMemoryQi8VectorStore(24, 100)
    idx.insert_batch(store, np.arange(50), x[:50])
    hn.save(tmp_path / "q.zarr", idx, store)
    back, back_store = hn.load(tmp_path / "q.zarr")
    assert back.metric == hn.CosineQi8() and isinstance(back_store, hn.InMemoryQi8VectorStore)
    assert hn.load_index(None, tmp_path / "q.zarr").metric == hn.CosineQi8()
    with pytest.raises(hn.MetricMismatchError):
        hn.load(tmp_path / "q.zarr", hn.Cosine())
    with pytest.raises(hn.MetricMismatchError):
        hn.load(tmp_path / "q.zarr", hn.L2Qi8())
    with pytest.raises(hn.InvalidParameterError):
        hn.load(tmp_path / "q.zarr", "cosine")


def test_pickle_and_deepcopy_give_identical_results(data) -> None:
    x, q = data
    index = hn.Index(24, "cosine", "f16", seed=6)
    index.add(x[:800], num_threads=1)
    index.remove([3, 4])
    for twin in (pickle.loads(pickle.dumps(index)), copy.deepcopy(index)):
        assert repr(twin) == repr(index) and graph_bytes(twin) == graph_bytes(index)
        for a, b in zip(twin.search(q, 10), index.search(q, 10)):
            np.testing.assert_array_equal(a, b)
        assert twin.search(q[0], 3) == index.search(q[0], 3)
        twin.add(x[900])
        assert len(twin) == len(index) + 1


def _search_in_worker(index: hn.Index, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    import os

    keys, dists = index.search(queries, 10)
    return keys, dists, os.getpid()


@pytest.mark.parametrize("dtype", ["f32", "qi8"])
def test_a_pickle_is_one_moment_of_index_and_store(data, dtype) -> None:
    """The graph and the store are copied under one exclusive lock. Copied apart, a
    compaction between the two paired the old NodeIds with moved rows: keys with other
    keys' vectors. Here a compaction starts from another thread while the store is being
    copied; it waits for the copy to end."""
    import threading

    x, _ = data
    index = hn.Index(24, "l2", dtype, m=8, ef_construction=32, seed=4)
    index.add(np.arange(60), x[:60])
    index.remove(np.arange(0, 60, 3))
    before = {k: index.get(k) for k in index.keys()}
    _, store = index.native
    kind = type(store)
    original = kind.__getstate__
    runs: list = []

    def copy_during_a_compaction(self):
        if not runs:
            runs.append(threading.Thread(target=index.compact))
            runs[0].start()
            runs[0].join(0.5)  # done at once when nothing holds the lock; else it waits for the copy
        return original(self)

    try:
        kind.__getstate__ = copy_during_a_compaction
        again = pickle.loads(pickle.dumps(index))
    finally:
        kind.__getstate__ = original
    runs[0].join()
    assert sorted(again.keys()) == sorted(before) and len(index.native[0].key_map) == 40
    for k, v in before.items():
        np.testing.assert_array_equal(again.get(k), v)
    again.native[0].check_integrity()


def test_joblib_loky_workers_search_an_unpickled_index(data) -> None:
    joblib = pytest.importorskip("joblib")
    x, q = data
    index = hn.Index(24, "l2", seed=7)
    index.add(x)
    expect = index.search(q, 10)
    parts = joblib.Parallel(n_jobs=2, backend="loky")(joblib.delayed(_search_in_worker)(index, q[i::2]) for i in range(2))
    assert len({pid for _, _, pid in parts}) == 2  # two worker processes
    for i, (keys, dists, _) in enumerate(parts):
        np.testing.assert_array_equal(keys, expect[0][i::2])
        np.testing.assert_array_equal(dists, expect[1][i::2])


def test_add_from_a_npy_larger_than_one_batch_equals_one_add(tmp_path, data, monkeypatch) -> None:
    """Batches of 300 rows build the very graph one add of all 2,000 builds (one thread, same
    seed), which walks a float16 copy of the rows: the batches share one (core/half_walk.py)."""
    monkeypatch.setattr(half_walk, "HALF_WALK_MIN", 1024)
    x, q = data
    np.save(tmp_path / "x.npy", x)
    whole = hn.Index(24, "l2", m=8, ef_construction=48, seed=8)
    whole.add(x, num_threads=1)
    sources = [np.load(tmp_path / "x.npy", mmap_mode="r"), (x[i:i + 300] for i in range(0, 2000, 300))]
    if _has_vector_readers():
        sources.append(str(tmp_path / "x.npy"))
    for source in sources:
        parts = hn.Index(24, "l2", m=8, ef_construction=48, capacity=100, seed=8)
        assert parts.add_from(source, batch_size=300, num_threads=1) == 2000
        assert graph_bytes(parts) == graph_bytes(whole)
        for a, b in zip(parts.search(q, 10), whole.search(q, 10)):
            np.testing.assert_array_equal(a, b)


def _has_vector_readers() -> bool:
    try:
        import hnsw_numba.io.vectors  # noqa: F401
    except ImportError:
        return False
    return True


def test_add_from_names_a_bad_row_by_its_place_in_the_source() -> None:
    """A NaN row of an array source was reported by its place in its batch ("vector 10" for
    row 30); the batches before it stay added."""
    x = np.random.default_rng(4).random((50, 4), np.float32)
    x[30, 1] = np.nan
    index = hn.Index(4, "l2")
    with pytest.raises(hn.InvalidVectorError, match=r"source rows 20\.\.39, vector 10 "):
        index.add_from(x, batch_size=20)
    assert len(index) == 20


def test_add_from_arrays_with_keys(tmp_path, data) -> None:
    x, q = data
    keys = np.arange(2000) * 7 + 1
    zarr = pytest.importorskip("zarr")
    z = zarr.create_array(str(tmp_path / "x.zarr"), shape=x.shape, chunks=(256, 24), dtype="float32")
    z[:] = x
    da = pytest.importorskip("dask.array")
    ref = hn.Index(24, "l2", seed=9)
    ref.add(keys, x)
    for source in (z, da.from_array(x, chunks=(333, 24))):
        index = hn.Index(24, "l2", seed=9)
        assert index.add_from(source, batch_size=512, keys=keys) == 2000
        assert sorted(index.keys()) == keys.tolist()
        np.testing.assert_array_equal(index.get(keys[[0, 1999]]), x[[0, 1999]])
        assert (index.search(q, 5)[0] == ref.search(q, 5)[0]).mean() > 0.95


def test_add_from_refuses_mismatches_before_adding(data) -> None:
    x, _ = data
    index = hn.Index(24, "l2")
    with pytest.raises(hn.DimensionMismatchError):
        index.add_from(x[:, :10])
    with pytest.raises(hn.InvalidKeyError):
        index.add_from(x, keys=np.arange(5))
    with pytest.raises(hn.InvalidParameterError):
        index.add_from(42)
    with pytest.raises(hn.InvalidParameterError):
        index.add_from(x, batch_size=0)
    assert len(index) == 0
    bad = x[:600].copy()
    bad[450] = np.nan
    with pytest.raises(hn.InvalidVectorError):
        index.add_from(bad, batch_size=200)
    assert len(index) == 400  # the batches before the bad one stay


def test_add_from_keys_are_one_per_row_of_an_iterable_source_and_no_str(data) -> None:
    """Keys past an iterable source's rows were dropped without a word; a str (a path, as a
    source may be) was read as keys, one character each."""
    x, _ = data
    index = hn.Index(24, "l2")
    with pytest.raises(hn.InvalidKeyError, match="11 keys given for 10 rows"):
        index.add_from(iter([x[:5], x[5:10]]), keys=list(range(11)))
    assert sorted(index.keys()) == list(range(10))  # the rows stay added, as documented
    index = hn.Index(24, "l2")
    with pytest.raises(hn.InvalidKeyError, match="source holds more rows"):
        index.add_from(iter([x[:5], x[5:10]]), keys=list(range(7)))
    assert len(index) == 5
    for keys in ("keys.bin", b"keys.bin"):
        with pytest.raises(hn.InvalidKeyError, match="array or a sequence of keys"):
            index.add_from(x[:8], keys=keys)
    assert len(index) == 5
    assert index.add_from(iter([x[10:13], x[13:15]]), keys=np.arange(100, 105)) == 5


def test_add_from_an_iterable_of_no_batches_raises_typed_errors(data) -> None:
    """Items of an iterable that are no (n, dim) batches (floats, NumPy scalars, a str,
    ragged rows) raise typed errors before anything is added; lists of rows are batches."""
    x, _ = data
    index = hn.Index(24, "l2")
    index.add(x[:5])
    for source in ({1.0, 2.0}, iter([1.0, 2.0]), iter(np.ones(3, np.float32)), [x[5:8], 7.0]):
        with pytest.raises(hn.DimensionMismatchError, match="expected batches of shape"):
            index.add_from(source)
    for source in (["abc"], [[[1.0] * 24, [1.0] * 3]]):
        with pytest.raises(hn.InvalidVectorError):
            index.add_from(source)
    assert len(index) == 8  # the batch before the float stays, as for any bad batch
    assert index.add_from([x[8:10].tolist()], num_threads=1) == 2
    np.testing.assert_array_equal(index.get([8, 9]), x[8:10])


def test_from_native_wraps_without_copying(data) -> None:
    x, _ = data
    idx = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=24, max_nodes=50))
    store = hn.InMemoryVectorStore(24, 50)
    index = hn.Index.from_native(idx, store)
    index.add(x[:100])  # grows both
    assert index.native == (idx, store) and len(idx) == 100 and store.max_nodes >= 100
    with pytest.raises(hn.MetricMismatchError):
        hn.Index.from_native(hn.Hnsw(hn.L2Qi8(), hn.HnswConfig(dim=24, max_nodes=5)), store)


def test_tune_ef_picks_an_ef_that_reaches_the_target(data) -> None:
    x, q = data
    index = hn.Index(24, "l2", m=6, ef_construction=32, seed=12)
    index.add(x)
    ef = index.tune_ef(q, k=10, target_recall=0.97, sample=None)
    truth = index.search(q, 10, exact=True)[0]
    assert hn.recall(index.search(q, 10, ef=ef)[0], truth) >= 0.97
    assert ef == 10 or hn.recall(index.search(q, 10, ef=ef - 1)[0], truth) < 0.97


def test_numbered_adds_go_past_every_int_key(data) -> None:
    x, _ = data
    index = hn.Index(24, "l2", seed=1)
    index.add(np.arange(100, 110), x[:10])  # keys above the NodeIds
    np.testing.assert_array_equal(index.add(x[10:12]), [110, 111])
    index.add("s", x[12])
    assert index.add(x[13]) == 112


def test_add_from_numbers_past_every_int_key_and_removed_number(data) -> None:
    """add_from numbers its rows as add(vectors) does: past the int keys given and the
    numbers a compaction forgot, never from the NodeId count."""
    x, _ = data
    index = hn.Index(24, "l2", seed=1)
    index.add(5, x[0])
    assert index.add_from(x[1:11], batch_size=4, num_threads=1) == 10
    assert sorted(index.keys()) == [5, *range(6, 16)]
    index.remove(15)
    index.compact()
    assert index.add_from(x[11:13], num_threads=1) == 2
    assert sorted(index.keys())[-2:] == [16, 17] and 15 not in index


@pytest.mark.parametrize("reorder", [False, True])
def test_compact_forgets_removed_items_and_keeps_answers(tmp_path, data, reorder) -> None:
    x, q = data
    index = hn.Index(24, "l2", m=8, ef_construction=64, seed=3)
    index.add(x[:1500])
    index.remove(list(range(0, 1500, 3)))
    before_keys, before_d = index.search(q, 5, exact=True)
    live = sorted(index.keys())
    moved = index.compact(reorder=reorder)
    assert moved.shape == (1500,) and (moved[::3] == -1).all() and sorted(moved[moved >= 0].tolist()) == list(range(1000))
    assert len(index) == 1000 and sorted(index.keys()) == live and 0 not in index
    keys, d = index.search(q, 5, exact=True)
    np.testing.assert_array_equal(keys, before_keys)
    np.testing.assert_allclose(d, before_d, rtol=1e-6)
    graph, _ = index.search(q, 5, ef=64)
    assert (graph == keys).mean() > 0.9
    np.testing.assert_array_equal(index.get(1), x[1])
    index.native[0].check_integrity()
    # numbering goes on past the numbers handed out, also after a save and open
    np.testing.assert_array_equal(index.add(x[1500:1502]), [1500, 1501])
    index.save(tmp_path / "ix")
    again = hn.open(tmp_path / "ix")
    np.testing.assert_array_equal(again.search(q, 5, exact=True)[0], index.search(q, 5, exact=True)[0])
    assert again.add(x[1502]) == 1502 and len(again) == 1003


def test_compaction_races_numbered_adds_removes_and_searches(data) -> None:
    """Numbered adds, removes and searches from threads while this one compacts and renumbers:
    no add fails, every number is handed out once, removed keys are never returned."""
    import threading

    x, q = data
    index = hn.Index(24, "l2", m=8, ef_construction=32, seed=2)
    index.add(x[:500])
    handed: list = []
    removed: set = set()
    errors: list = []
    done = threading.Event()

    def adder() -> None:
        try:
            for i in range(500, 1900, 20):
                handed.extend(index.add(x[i : i + 20]).tolist())
                index.remove(handed[-3])
                removed.add(handed[-3])
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    def searcher() -> None:
        try:
            while not done.is_set():
                gone = set(removed)
                keys, _ = index.search(q, 5)
                assert not gone & set(keys.ravel().tolist())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=adder), threading.Thread(target=searcher)]
    for t in threads:
        t.start()
    rounds = 0
    while not done.is_set() or rounds < 2:
        index.compact(reorder=rounds % 2 == 1)
        rounds += 1
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert len(handed) == len(set(handed)) == 1400 and min(handed) >= 500
    assert len(index) == 500 + 1400 - len(removed) and all(k not in index for k in removed)
    index.native[0].check_integrity()


@pytest.mark.parametrize("frozen", [False, True])
def test_add_from_leaves_a_copy_on_write_map_and_its_edits_alone(tmp_path, frozen: bool) -> None:
    """add_from drops the pages of rows it added from a memory-mapped source; on a
    copy-on-write map (``mmap_mode="c"``) those pages are the caller's edits: its array went
    back to the file's values, and rows of the next batch were read from the file too."""
    np.save(tmp_path / "x.npy", np.zeros((4096, 8), np.float32))
    x = np.load(tmp_path / "x.npy", mmap_mode="c")
    edits = np.random.default_rng(2).standard_normal((4096, 8)).astype(np.float32)
    x[:] = edits
    if frozen:
        x.flags.writeable = False  # the mapping stays private: the flag says nothing of it
    index = hn.Index(8, "l2", m=4, ef_construction=16, seed=1)
    index.add_from(x, batch_size=100)
    np.testing.assert_array_equal(x, edits)
    np.testing.assert_array_equal(index.get(np.arange(4096)), edits)


def test_add_from_keeps_int_keys_in_a_list_mixed_with_str_keys(data) -> None:
    """NumPy reads [0, "a"] as strings: add_from stored the int keys as "0", "2"."""
    x = data[0][:4]
    keys = [0, "a", 2, "b"]
    index = hn.Index(x.shape[1], "l2")
    index.add_from(x, keys=keys)
    assert sorted(index.keys(), key=str) == sorted(keys, key=str) and 0 in index and "0" not in index
    np.testing.assert_array_equal(index.get(2), x[2])


@pytest.mark.parametrize("keys", [["a\x00", "b\x00\x00", "c", "d"], ["a\x00", "a", "c", "d"], [2**63, 5, 2**64 - 1, 7],
                                  [np.int64(1), np.uint64(2**64 - 1), 3, np.int8(4)]])
def test_add_from_stores_a_list_of_keys_as_add_does(data, keys) -> None:
    """A key list went through NumPy's own conversion: trailing NULs of str keys dropped
    ("a\x00" and "a" then a repeated key), ints past int64 and mixed NumPy scalars made floats."""
    x = data[0][:4]
    ref, index = hn.Index(x.shape[1], "l2"), hn.Index(x.shape[1], "l2")
    ref.add(keys, x)
    index.add_from(x, keys=keys)
    assert list(index.keys()) == list(ref.keys()) == [k if isinstance(k, str) else int(k) for k in keys]
    np.testing.assert_array_equal(index.get(keys[0]), x[0])


def test_add_from_refuses_a_bool_key_as_add_does(data) -> None:
    x = data[0][:3]
    index = hn.Index(x.shape[1], "l2")
    for call in (lambda: index.add([True, 2, 3], x), lambda: index.add_from(x, keys=[True, 2, 3])):
        with pytest.raises(hn.InvalidKeyError):
            call()
    assert len(index) == 0


def test_add_returns_the_keys_an_iterator_gave(data) -> None:
    """``add`` returned the caller's keys object: an iterator came back spent."""
    x = data[0][:3]
    index = hn.Index(x.shape[1], "l2")
    assert list(index.add((k for k in [10, 20, 30]), x)) == [10, 20, 30]
    assert list(index.add(iter(["a", "b"]), x[:2])) == ["a", "b"]


def test_cosine_rows_are_stored_alike_whatever_their_layout_or_call() -> None:
    """A Fortran-ordered batch was normalised with sums in another order (69 of 300 rows an ulp
    apart), and ``set`` of new keys normalised its rows twice."""
    x = np.random.default_rng(1).standard_normal((300, 8)).astype(np.float32)
    stored = []
    for rows, call in ((x, "add"), (np.asfortranarray(x), "add"), (x, "set")):
        index = hn.Index(8, metric="cosine", seed=0)
        index.add(rows, num_threads=1) if call == "add" else index.set(list(range(300)), rows)
        stored.append(index.get(np.arange(300)))
    np.testing.assert_array_equal(stored[0], stored[1])
    np.testing.assert_array_equal(stored[0], stored[2])


def _within_limit_only_as_given(dtype: str, dim: int) -> np.ndarray:
    """A row within value_limit as given, past it as a ``dtype`` index stores it (bfloat16
    rounds the largest float32 within it up; Qi8 reads ``-L`` of ``[L, -L]`` back as ~ -1.004 L)."""
    lim = hn.core.store_base.value_limit(dim)
    if dtype == "bf16":
        x = np.float32(lim)
        while float(x) > lim:
            x = np.nextafter(x, np.float32(0))
        return np.full(dim, x, np.float32)
    return np.array([lim * 0.999, -lim * 0.999], np.float32)


@pytest.mark.parametrize("dtype, dim", [("bf16", 1), ("qi8", 2)])
@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_a_batch_refused_as_stored_changes_nothing(dtype: str, dim: int, metric: str) -> None:
    """A row past value_limit only once rounded or quantized passed the checks before the
    writes: a failed add kept its new key (the removed key's row, written after the new nodes
    were linked, was refused), and a failed set rewrote the rows before it."""
    index = hn.Index(dim, metric=metric, dtype=dtype, seed=0)
    index.add(np.arange(1, 4, dtype=np.float32)[:, None] * np.ones(dim, np.float32))
    index.remove(1)
    before = index.get([0, 2]).copy()
    bad = _within_limit_only_as_given(dtype, dim)
    calls = [lambda: index.add([10, 1], np.stack([np.full(dim, 5, np.float32), bad])),
             lambda: index.set([0, 2], np.stack([np.full(dim, 5, np.float32), bad])),
             lambda: index.set([9, 0], np.stack([np.full(dim, 5, np.float32), bad]))]
    for call in calls:
        with pytest.raises(hn.InvalidVectorError) as info:
            call()
        assert len(index) == 2 and 10 not in index and 9 not in index and 1 not in index
        np.testing.assert_array_equal(index.get([0, 2]), before)
        assert "vector 1 has a component beyond" in str(info.value) and "(within it as given)" in str(info.value)
    index.add(10, np.full(dim, 5, np.float32))  # the key a failed add left behind could not be added
    assert 10 in index


@pytest.mark.parametrize("dtype", ["f32", "qi8"])
def test_cosine_keeps_the_direction_of_wide_rows(dtype: str) -> None:
    """float64 rows of 1e-50 were stored as zero vectors (every distance 1.0) and rows of 1e50
    refused: cosine scales a wider float row in its own type before it becomes float32."""
    x = np.random.default_rng(0).standard_normal((50, 8))
    for scale in (1e-50, 1e50):
        index = hn.Index(8, metric="cosine", dtype=dtype, seed=0)
        index.add(x * scale)
        index.set([5, 60], x[[5, 6]] * scale)
        np.testing.assert_allclose(np.linalg.norm(index.get([0, 60]), axis=1), 1, atol=0.02)
        keys, dist = index.search(x[[5, 7]] * scale, k=1, exact=True)
        assert keys[:, 0].tolist() == [5, 7] and (dist < 0.01).all()
        assert index.search(x[7] * scale, k=1)[0].key == 7
        ids, _ = hn.exact_neighbors(x * scale, x[[5, 7]] * scale, 1, metric="cosine")
        assert ids[:, 0].tolist() == [5, 7]
