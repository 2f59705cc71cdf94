"""A float32 store with a float16 walk copy: walks read the copy, answers carry float32 distances."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

import hnsw_numba as hn
from conftest import clustered, without_digests, wrong_hits_during
from hnsw_numba.core.store import HALF_GROUP, float16_resolves
from hnsw_numba.kernels import refine
from naive import distances, exact_knn, recall

N, DIM = 1200, 16


def _pair(metric, walk: bool, seed: int = 5):
    data = clustered(np.random.default_rng(seed), N, DIM)
    idx = hn.Hnsw(metric, hn.HnswConfig(dim=DIM, max_nodes=N + 100, m=8, ef_construction=64, seed=seed))
    store = hn.InMemoryVectorStore(DIM, N + 100, walk_copy=walk)
    idx.insert_batch(store, np.arange(N), data, num_threads=1)
    return idx, store, data


@pytest.mark.parametrize("metric", [hn.L2(), hn.Cosine(), hn.InnerProduct()], ids=["l2", "cosine", "ip"])
def test_answers_carry_float32_distances_and_match_brute_force(metric) -> None:
    idx, store, data = _pair(metric, True)
    assert store.walk_copy and store.memory_report()["walk copy"] == store.max_nodes * DIM * 2
    queries = clustered(np.random.default_rng(9), 40, DIM)
    truth, truth_d = exact_knn(metric, data, queries, 10)
    keys, dists = idx.search_batch(store, queries, 10, ef=128)
    plain, plain_store, _ = _pair(metric, False)  # the same build over the float32 rows alone
    plain_recall = recall(plain.search_batch(plain_store, queries, 10, ef=128)[0], truth)
    assert recall(keys, truth) >= min(0.97, plain_recall - 0.02)  # inner product is no metric: HNSW finds less
    # each answer's distance is the float32 distance to its stored vector, not the copy's
    ref = np.take_along_axis(distances(metric, queries, data), keys, 1)
    np.testing.assert_allclose(dists, ref, rtol=1e-5, atol=1e-5)
    assert (np.diff(dists, axis=1) >= 0).all()
    one = idx.search(store, queries[3], 10, ef=128)
    assert one.keys == keys[3].tolist() and np.allclose(one.distances, dists[3])
    # exact and filtered searches read only the float32 rows: brute force's answer
    ek, ed = idx.search_batch(store, queries, 10, exact=True)
    assert (ek == truth).mean() >= 0.99
    np.testing.assert_allclose(ed, truth_d, rtol=1e-5, atol=1e-5)
    allowed = np.arange(0, N, 3)
    mask = np.zeros(N, bool)
    mask[allowed] = True
    fk = idx.search_batch(store, queries, 10, filter=mask, plan="exact")[0]
    assert (fk == exact_knn(metric, data, queries, 10, allowed=allowed)[0]).mean() >= 0.99


@pytest.mark.parametrize("share, walk", [(0.6, "post"), (0.2, "acorn")], ids=["post-filter", "acorn"])
def test_filtered_walks_of_the_copy_answer_with_float32_distances(share, walk) -> None:
    idx, store, data = _pair(hn.Cosine(), True)
    queries = clustered(np.random.default_rng(4), 40, DIM)
    allowed = np.flatnonzero(np.random.default_rng(1).random(N) < share)
    flt = hn.Filter(idx, allowed)
    truth = exact_knn(hn.Cosine(), data, queries, 10, allowed=allowed)[0]
    keys, dists = idx.search_batch(store, queries, 10, ef=64, filter=flt, plan="graph")
    assert np.isin(keys, allowed).all() and recall(keys, truth) >= 0.95
    ref = np.take_along_axis(distances(hn.Cosine(), queries, data), keys, 1)
    np.testing.assert_allclose(dists, ref, rtol=1e-5, atol=1e-5)  # the vectors' distances, not the copy's
    assert (np.diff(dists, axis=1) >= 0).all()
    for i in (0, 7, 21):
        one, plan = idx.search(store, queries[i], 10, ef=64, filter=flt, plan="graph", explain=True)
        assert (plan.plan, plan.walk) == ("graph", walk) and one.keys == keys[i].tolist() and np.allclose(one.distances, dists[i])


def test_adding_the_copy_to_a_built_store_keeps_its_answers() -> None:
    idx, store, data = _pair(hn.L2(), False)
    queries = clustered(np.random.default_rng(2), 50, DIM)
    before = idx.search_batch(store, queries, 10, ef=64)
    store.enable_walk_copy()  # the same rows and graph, now walked through the copy
    after = idx.search_batch(store, queries, 10, ef=64)
    truth = exact_knn(hn.L2(), data, queries, 10)[0]
    assert abs(recall(after[0], truth) - recall(before[0], truth)) <= 0.02
    same = after[0] == before[0]
    np.testing.assert_allclose(after[1][same], before[1][same], rtol=1e-5, atol=1e-5)
    assert idx.get_vectors(store, [7]).tobytes() == data[7:8].tobytes()  # the float32 vector


def test_the_refined_order_puts_a_near_tie_right() -> None:
    # two rows the float16 copy cannot tell apart: the float32 distances decide the order
    idx = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=4, max_nodes=8, m=4, ef_construction=16, seed=0))
    store = hn.InMemoryVectorStore(4, 8, walk_copy=True)
    near = np.array([[1.0, 0, 0, 0], [1.0 + 2**-13, 0, 0, 0], [5, 5, 5, 5]], np.float32)
    idx.insert_batch(store, [10, 11, 12], near[[1, 0, 2]], num_threads=1)  # the farther row first
    q = np.array([2.0, 0, 0, 0], np.float32)
    for hits in (idx.search(store, q, 2), idx.search(store, q, 2, filter=[10, 11, 12], plan="graph")):
        assert hits.keys == [10, 11]  # key 10 holds 1 + 2**-13: nearer to 2
        assert hits.distances[0] < hits.distances[1]


def _largest_group() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """400 spread rows, the largest group the resolve check admits (rows 400-419 within 2e-5 of
    0.5: one float16 row, every copy distance tied) and 4 rows in front of it for each of 16
    queries 0.02 from the group (rows 420-483); the queries and their exact top 5."""
    rng = np.random.default_rng(1)
    group = 0.5 + 2e-5 * rng.standard_normal((HALF_GROUP - 1, 8))
    q = 0.5 + 0.02 * np.vstack([np.eye(8), -np.eye(8)])
    v = rng.standard_normal((16, 4, 8))
    front = q[:, None] + np.array([2, 3.5, 5, 6.5])[:, None] * 1e-3 * v / np.linalg.norm(v, axis=2, keepdims=True)
    x = np.vstack([rng.standard_normal((400, 8)), group, front.reshape(64, 8)]).astype(np.float32)
    q = q.astype(np.float32)
    return x, q, np.argsort(((q[:, None].astype(np.float64) - x[None]) ** 2).sum(2), axis=1)[:, :5]


@pytest.mark.parametrize("plan", [None, "post", "acorn"], ids=["walk", "post-filter", "acorn"])
def test_a_tied_group_the_copy_admits_is_ordered_at_small_k(plan) -> None:
    """The copy ties the group's rows, so the true best of them may lie anywhere among its
    20 rows: at k = 1 (a group row as its own query) and at k = 5 with 4 rows in front of it."""
    x, q, truth = _largest_group()
    assert float16_resolves(x)
    index = hn.Index(8, metric="l2", dtype="f32+f16", seed=0)
    index.add(x)
    assert index.dtype == "f32+f16"
    kw = {} if plan is None else {"filter": np.arange(x.shape[0]), "plan": plan}
    own = np.arange(400, 400 + HALF_GROUP - 1)
    single = [index.search(x[j], k=1, ef=200, **kw)[0].key for j in own]
    assert single == own.tolist()
    assert [[h.key for h in index.search(q[i], k=5, ef=200, **kw)] for i in range(16)] == truth.tolist()
    if plan is None:
        assert index.search(x[own], k=1, ef=200)[0][:, 0].tolist() == own.tolist()
        assert index.search(q, k=5, ef=200)[0].tolist() == truth.tolist()


def test_the_rows_re_scored_cover_the_largest_group_the_resolve_check_admits() -> None:
    assert refine.MERGED_MAX == HALF_GROUP - 1  # the check refuses a group of HALF_GROUP rows
    assert [refine.refine_count(k) for k in (1, 5, 10, 19, 50)] == [20, 24, 29, 38, 100]


def test_bad_input_leaves_store_and_index_unchanged() -> None:
    with pytest.raises(hn.InvalidParameterError):
        hn.InMemoryVectorStore(4, 8, dtype="float16", walk_copy=True)
    with pytest.raises(hn.InvalidParameterError):
        hn.InMemoryVectorStore(4, 8, walk_copy="yes")
    idx, store, data = _pair(hn.L2(), True)
    size, version = len(idx), store.version
    big = np.full((1, DIM), 7e4, np.float32)  # finite in float32, beyond float16
    with pytest.raises(hn.InvalidVectorError) as err:
        idx.insert(store, N + 1, big[0])
    assert isinstance(err.value, ValueError) and "float16" in str(err.value)
    with pytest.raises(hn.InvalidVectorError):
        store.write(np.array([N + 2], np.int32), big)
    assert len(idx) == size and store.version == version and not store.written[N:].any()
    plain = hn.InMemoryVectorStore(DIM, 4)
    plain.write(np.array([1], np.int32), big)
    with pytest.raises(hn.InvalidVectorError):
        plain.enable_walk_copy()
    assert not plain.walk_copy and plain.rows().__class__.__name__ == "F32Rows"


def test_rows_the_copy_would_merge_are_refused_before_anything_changes() -> None:
    """40 +- 0.01: float16 rounds neighbours together (recall@10 0.09 at 3,000 x 8 walked)."""
    x = (40 + 0.01 * np.random.default_rng(3).standard_normal((3000, 8))).astype(np.float32)
    index = hn.Index(8, dtype="f32+f16")
    with pytest.raises(hn.InvalidVectorError, match="dtype='f32'"):
        index.add(x)
    assert len(index) == 0
    index.add((x - 40) * 100)  # the same rows spread out: taken
    assert len(index) == 3000


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_the_copy_takes_every_value_that_rounds_to_a_finite_float16(sign: float) -> None:
    store = hn.InMemoryVectorStore(DIM, 8, walk_copy=True)
    x = np.zeros((3, DIM), np.float32)
    x[2, 5] = sign * np.nextafter(np.float32(65520.0), np.float32(0.0))  # rounds to +-65504
    store.write(np.arange(3, dtype=np.int32), store.encode(x))
    assert store.walk.view(np.float16)[2, 5] == sign * 65504.0
    x[2, 5] = sign * 65520.0  # half-way to the next step: rounds (to even) to inf
    with pytest.raises(hn.InvalidVectorError, match="vector 2 .*float16 walk copy"):
        store.encode(x)
    with pytest.raises(hn.InvalidVectorError, match="vector 2 .*float16 walk copy"):
        store.write(np.arange(3, dtype=np.int32), x)
    assert store.walk.view(np.float16)[2, 5] == sign * 65504.0


def test_from_array_and_mutations_keep_the_copy_in_step() -> None:
    data = clustered(np.random.default_rng(1), 300, DIM)
    store = hn.InMemoryVectorStore.from_array(data.copy(), walk_copy=True)
    assert store.walk.view(np.float16).astype(np.float32).tolist() == data.astype(np.float16).astype(np.float32).tolist()
    idx = hn.Hnsw(hn.Cosine(), hn.HnswConfig(dim=DIM, max_nodes=600, m=8, ef_construction=48, seed=2))
    st = hn.InMemoryVectorStore(DIM, 100, walk_copy=True)
    idx.insert_batch(st, np.arange(200), data[:200], grow=True)  # grows the store: both columns
    idx.set(st, 5, data[250])
    for k in range(0, 200, 7):
        idx.delete(k)
    idx.compact(st, reorder=True)
    live = [k for k in range(200) if k % 7]
    nids = np.array([idx.node_id(k) for k in live])
    expect = idx.get_vectors(st, live)
    np.testing.assert_array_equal(st.walk[nids], expect.astype(np.float16).view(np.uint16))
    q = data[250:260]
    keys = idx.search_batch(st, q, 5, ef=64)[0]
    truth = np.asarray(live)[exact_knn(hn.Cosine(), expect, q, 5)[0]]
    assert recall(keys, truth) >= 0.95


def test_searches_racing_inserts_never_read_a_half_written_row() -> None:
    data = clustered(np.random.default_rng(4), 3000, DIM)
    idx = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=DIM, max_nodes=3000, m=8, ef_construction=40, seed=1))
    store = hn.InMemoryVectorStore(DIM, 3000, walk_copy=True)
    idx.insert_batch(store, np.arange(500), data[:500], num_threads=1)
    queries = data[2500:2600] + 0.01

    def grow() -> None:
        for s in range(500, 2500, 100):
            idx.insert_batch(store, np.arange(s, s + 100), data[s : s + 100], num_threads=1)

    assert wrong_hits_during(idx, store, data, queries, grow) == []


def _edit_vectors(path, field: str, value) -> None:
    zj = path / "vectors" / "zarr.json"
    meta = json.loads(zj.read_text())
    meta["attributes"]["hnsw_numba"][field] = value
    zj.write_text(json.dumps(meta))


def test_saved_copy_comes_back_and_a_file_that_cannot_hold_it_is_refused(tmp_path) -> None:
    pytest.importorskip("zarr")
    idx, store, data = _pair(hn.Cosine(), True)
    q = data[:20] + 0.01
    hn.save(tmp_path / "ix", idx, store)
    for mmap in (False, True):
        idx2, store2 = hn.load(tmp_path / "ix", hn.Cosine(), mmap=mmap)
        assert store2.walk_copy and np.array_equal(store2.walk[:N], store.walk[:N])
        a, b = idx.search_batch(store, q, 5), idx2.search_batch(store2, q, 5)
        assert a[0].tolist() == b[0].tolist() and a[1].tobytes() == b[1].tobytes()
    without_digests(tmp_path / "ix")
    assert hn.load(tmp_path / "ix")[1].walk_copy
    good = (tmp_path / "ix" / "vectors" / "zarr.json").read_text()
    for field, bad in (("walk_copy", "yes"), ("walk_copy", 1), ("walk_copy", None), ("dtype", "float16")):
        (tmp_path / "ix" / "vectors" / "zarr.json").write_text(good)
        _edit_vectors(tmp_path / "ix", field, bad)
        with pytest.raises(hn.IndexFormatError, match="walk_copy"):
            hn.load(tmp_path / "ix")
    # a float32 save whose vectors do not fit float16, marked as holding a walk copy
    plain = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=DIM, max_nodes=10))
    big = hn.InMemoryVectorStore(DIM, 10)
    plain.insert_batch(big, np.arange(3), np.full((3, DIM), 7e4, np.float32))
    hn.save(tmp_path / "big", plain, big)
    without_digests(tmp_path / "big")
    _edit_vectors(tmp_path / "big", "walk_copy", True)
    with pytest.raises(hn.IndexFormatError, match="float16"):
        hn.load(tmp_path / "big")
    index = hn.Index(DIM, metric="l2", dtype="f32+f16", seed=1)
    index.add(np.arange(50), data[:50])
    assert index.dtype == "f32+f16" and index.native[1].walk_copy
    index.save(tmp_path / "i.zarr")
    assert hn.open(tmp_path / "i.zarr").dtype == "f32+f16"


def _grouped(n: int, group: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n x 8 rows at 40 x N(0, 1), ``group`` of them at 100 +- 0.002 (float16's step there: 0.06)."""
    rng = np.random.default_rng(seed)
    x = (40 * rng.standard_normal((n, 8))).astype(np.float32)
    at = np.sort(rng.choice(n, group, replace=False))
    x[at] = (100 + 0.002 * rng.standard_normal((group, 8))).astype(np.float32)
    return x, at


def _spread(x: np.ndarray) -> np.ndarray:
    """``x`` with the rows at 100 +- 0.002 drawn as the others are."""
    y = x.copy()
    group = (x > 99).all(1)
    y[group] = (40 * np.random.default_rng(2).standard_normal((int(group.sum()), 8))).astype(np.float32)
    return y


def test_a_copy_of_stored_rows_refuses_rows_float16_merges() -> None:
    x, _ = _grouped(4000, 400)  # a tenth merged: queries there found 0.045 of their top-10 through a copy
    with pytest.raises(hn.InvalidVectorError, match="cannot tell these vectors apart") as err:
        hn.InMemoryVectorStore.from_array(x.copy(), walk_copy=True)
    assert isinstance(err.value, ValueError)
    store = hn.InMemoryVectorStore(8, 5000)
    store.write(np.arange(4000, dtype=np.int32), x)
    version = store.version
    with pytest.raises(hn.InvalidVectorError):
        store.enable_walk_copy()
    assert not store.walk_copy and store.version == version and type(store.rows()).__name__ == "F32Rows"
    assert not store.enable_walk_copy(strict=False) and not store.walk_copy
    assert store.vector(7).tobytes() == x[7].tobytes()
    small = hn.InMemoryVectorStore.from_array(x[:200].copy(), walk_copy=True)  # under RESOLVE_MIN rows: unchecked
    assert small.walk_copy
    spread = hn.InMemoryVectorStore.from_array(_spread(x))
    assert spread.enable_walk_copy() and spread.walk_copy


def test_a_group_split_over_writes_is_refused_by_the_write_that_completes_it() -> None:
    """120 near copies among 5,000 rows in eight writes of 625 (15 a write): each write tested alone
    took them (queries in the group found 0.76 of their top-10); the stored rows count too."""
    x, _ = _grouped(5000, 120, seed=1)
    index = hn.Index(8, metric="l2", dtype="f32+f16", m=8, ef_construction=32, seed=1)
    batches = np.array_split(np.arange(5000), 8)
    index.add(batches[0], x[batches[0]])
    store = index.native[1]
    version = store.version
    with pytest.raises(hn.InvalidVectorError, match="dtype='f32'"):
        index.add(batches[1], x[batches[1]])  # 30 rows of the group with the 15 stored
    assert len(index) == 625 and store.version == version and not store.written[625:].any()
    plain = hn.Index(8, metric="l2", dtype="f32+f16", m=8, ef_construction=32, seed=1)
    y = _spread(x)
    for b in batches:  # the same writes, the group spread out: every one taken
        plain.add(b, y[b])
    assert len(plain) == 5000


def _merged_index() -> tuple[np.ndarray, np.ndarray, "hn.Index"]:
    """2,000 rows, 100 at 100 +- 0.002, in writes of 200: under RESOLVE_MIN rows, none checked."""
    pytest.importorskip("zarr")
    x, at = _grouped(2000, 100, seed=3)
    index = hn.Index(8, metric="l2", dtype="f32+f16", m=8, ef_construction=32, seed=1)
    for b in np.array_split(np.arange(2000), 10):
        index.add(b, x[b])
    return x, at, index


def _flag(path) -> object:
    return json.loads((path / "vectors" / "zarr.json").read_text())["attributes"]["hnsw_numba"].get("walk_copy")


def test_a_save_of_rows_float16_merges_leaves_the_copy_out(tmp_path) -> None:
    x, at, index = _merged_index()
    assert index.dtype == "f32+f16"
    with pytest.warns(hn.HnswWarning, match="saved without the float16 walk copy"):
        index.save(tmp_path / "i.zarr")
    assert _flag(tmp_path / "i.zarr") is None and hn.open(tmp_path / "i.zarr").dtype == "f32"


def test_a_file_whose_rows_float16_merges_opens_without_the_copy(tmp_path) -> None:
    x, at, index = _merged_index()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", hn.HnswWarning)
        index.save(tmp_path / "i.zarr")
    without_digests(tmp_path / "i.zarr")
    _edit_vectors(tmp_path / "i.zarr", "walk_copy", True)  # a file flagged as holding a copy all the same
    q = x[at[:20]] + 0.0005
    truth = exact_knn(hn.L2(), x, q, 10)[0]
    for mmap in (False, True):
        with pytest.warns(hn.HnswWarning, match="opened without its float16 walk copy") as seen:
            opened = hn.open(tmp_path / "i.zarr", mmap=mmap)
        assert len([w for w in seen if issubclass(w.category, hn.HnswWarning)]) == 1
        assert opened.dtype == "f32" and not opened.native[1].walk_copy
        assert recall(opened.search(q, k=10, ef=64)[0], truth) >= 0.95  # the float32 walk
    with pytest.warns(hn.HnswWarning):
        assert not hn.load(tmp_path / "i.zarr")[1].walk_copy
    from hnsw_numba.cli.commands import index_info

    with pytest.warns(hn.HnswWarning):  # `hnsw-numba info` reports the store as opened
        assert index_info(str(tmp_path / "i.zarr"))["dtype"] == "f32"
    opened.save(tmp_path / "again.zarr")  # written as what it holds: float32 rows, no flag
    assert _flag(tmp_path / "again.zarr") is None


def test_rows_written_again_are_not_counted_twice() -> None:
    """A group under HALF_GROUP (12 near copies) written again as it is (set, or remove and
    add) was counted over the write and the stored rows it rewrites (24) and refused."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((600, 8)).astype(np.float32)
    x[::50] = rng.standard_normal(8).astype(np.float32) + 1e-5 * rng.standard_normal((12, 8)).astype(np.float32)
    index = hn.Index(8, metric="l2", dtype="f32+f16")
    index.add(np.arange(600), x)
    index.set(np.arange(600), x)
    index.remove(np.arange(600))
    index.add(np.arange(600), x)
    assert len(index) == 600 and index.dtype == "f32+f16"


def test_the_refusal_names_a_way_that_works() -> None:
    """Rows the float16 copy cannot tell apart: each refusal's hint, followed, stores them."""
    x = (np.random.default_rng(0).standard_normal((1000, 4)) * 1e-3 + [1000.0, 0, 0, 0]).astype(np.float32)
    index = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=4, max_nodes=1000, m=4, ef_construction=16, seed=0))
    with pytest.raises(hn.InvalidVectorError, match=r"InMemoryVectorStore\(walk_copy=False\)"):
        index.insert_batch(hn.InMemoryVectorStore(4, 1000, walk_copy=True), np.arange(1000), x)
    assert len(index) == 0
    plain = hn.InMemoryVectorStore(4, 1000, walk_copy=False)
    index.insert_batch(plain, np.arange(1000), x)
    with pytest.raises(hn.InvalidVectorError, match=r"strict=False"):
        plain.enable_walk_copy()
    assert plain.enable_walk_copy(strict=False) is False and not plain.walk_copy
    assert len(index.search(plain, x[0], 5)) == 5
