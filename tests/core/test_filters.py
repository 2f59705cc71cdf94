"""Filtered search: every plan against the brute-force oracle, the planner's choice, compiled
filters against raw ones, per-query filters, the filter rule, filters that follow their index."""

from __future__ import annotations

import math

import numpy as np
import pytest

import hnsw_numba as hn
from hnsw_numba.core.filters import Filter
from hnsw_numba.kernels.filtered import EF_MASK, PLAN_POST, PLAN_RICH, POST_SHIFT, USED_POST, WIDE_SHIFT, post_beam
from hnsw_numba.core.planner import ACORN_COST, ACORN_GROW, ACORN_LIVE, POST_SHARE, WALK_PER_EF, acorn_growth, choose_plan, planned_post_beam
from conftest import build
from naive import exact_knn

PLANS = ["auto", "graph", "exact", "post", "acorn", "descend"]


@pytest.fixture(scope="module")
def index(small_data):
    data, queries = small_data
    idx, store = build(hn.L2(), data)
    return idx, store, data, queries


def oracle(data: np.ndarray, queries: np.ndarray, allowed: np.ndarray, k: int = 10) -> np.ndarray:
    return exact_knn(hn.L2(), data, queries, k, allowed=allowed)[0]


def masks(n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(11)
    out = {}
    for share in (0.5, 0.2, 0.05, 0.01):
        m = np.zeros(n, bool)
        m[rng.choice(n, max(12, int(share * n)), replace=False)] = True
        out[f"{share:g}"] = m
    return out


@pytest.mark.parametrize("plan", PLANS)
def test_every_plan_is_exact_on_small_data(index, plan) -> None:
    """With a beam wider than the index, every plan returns the exact filtered top-k."""
    idx, store, data, queries = index
    n = len(data)
    for name, mask in masks(n).items():
        truth = oracle(data, queries, np.flatnonzero(mask))
        keys, dists = idx.search_batch(store, queries, 10, filter=mask, ef=n, plan=plan)
        assert (keys == truth).all(), (plan, name)
        hits = idx.search(store, queries[3], 10, filter=mask, ef=n, plan=plan)
        assert hits.keys == truth[3].tolist(), (plan, name)
        ref = exact_knn(hn.L2(), data, queries[3:4], 10, allowed=np.flatnonzero(mask))[1][0]
        np.testing.assert_allclose(hits.distances, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "qi8", "walk-copy"])
def test_plans_match_brute_force_on_every_store_type(small_data, dtype) -> None:
    data, queries = small_data
    data = data[:600]
    if dtype == "qi8":
        idx = hn.Hnsw(hn.L2Qi8(), hn.HnswConfig(dim=data.shape[1], max_nodes=700, m=8, ef_construction=64, seed=3))
        store = hn.InMemoryQi8VectorStore(data.shape[1], 700)
        idx.insert_batch(store, np.arange(len(data)), data)
    elif dtype == "walk-copy":
        idx, store = build(hn.L2(), data)
        store.enable_walk_copy()
    else:
        idx, store = build(hn.L2(), data, dtype=dtype)
    mask = np.zeros(len(data), bool)
    mask[::4] = True
    # the oracle over the stored (rounded / quantized) rows: the kernels' own brute force
    truth = idx.search_batch(store, queries, 10, exact=True, filter=None)[0]
    stored = idx.get_vectors(store, np.arange(len(data)))
    truth = exact_knn(hn.L2(), stored, queries, 10, allowed=np.flatnonzero(mask))[0]
    for plan in PLANS:
        keys, _ = idx.search_batch(store, queries, 10, filter=mask, ef=600, plan=plan)
        assert np.mean(keys == truth) >= 0.98, plan  # float32 accumulation order may swap near ties
        one = idx.search(store, queries[0], 10, filter=mask, ef=600, plan=plan)
        assert one.keys == keys[0].tolist()


def test_planner_choice_is_visible_and_overridable(index) -> None:
    idx, store, data, queries = index
    n = len(data)
    few = np.zeros(n, bool)
    few[:20] = True
    most = np.ones(n, bool)
    most[::10] = False
    hits, plan = idx.search(store, queries[0], 5, filter=few, explain=True)
    assert plan.plan == "exact" and not plan.forced and idx.last_plan == plan
    assert "exact" in plan.reason and "20 of" in plan.reason
    idx.search(store, queries[0], 5, filter=most)  # on 1,500 items exact reads fewer rows than a walk
    assert idx.last_plan == choose_plan(int(most.sum()), n, 16, idx.config.ef_search, "auto", idx.config.dim)
    assert idx.last_plan.allowed == int(most.sum())
    idx.search(store, queries[0], 5, filter=few, plan="graph")
    assert idx.last_plan.plan.startswith("graph") and idx.last_plan.forced
    idx.search_batch(store, queries, 5, filter=most, plan="exact")
    assert idx.last_plan.plan == "exact" and idx.last_plan.forced
    assert idx.last_plan.queries == len(queries) > 1  # the batch's queries, not one
    _, plan = idx.search(store, queries[0], 5, explain=True)
    assert plan.plan == "unfiltered"
    with pytest.raises(hn.InvalidParameterError):
        idx.search(store, queries[0], 5, filter=few, plan="fast")


def test_planner_estimates() -> None:
    """Exact for few allowed items, the walk for many, a widened walk in between."""
    assert choose_plan(500, 1_000_000, 32, 64, "auto").plan == "exact"
    assert choose_plan(500_000, 1_000_000, 32, 64, "auto").plan == "graph"
    wide = choose_plan(8_000, 1_000_000, 32, 64, "graph")
    assert wide.plan == "graph-wide" and wide.ef > 64
    assert choose_plan(500_000, 1_000_000, 32, 64, "exact").plan == "exact"
    # the walk: the post-filter for wide filters, ACORN's for thin ones; plan= forces either
    assert choose_plan(500_000, 1_000_000, 32, 64, "auto").walk == "post"
    assert choose_plan(100_000, 1_000_000, 32, 64, "auto").walk == "post"  # its planned beam is the cheaper on a large index
    assert choose_plan(10_000, 100_000, 32, 64, "graph").walk == "acorn"
    assert choose_plan(70_000, 1_000_000, 32, 64, "graph").walk == "acorn"
    assert choose_plan(100_000, 1_000_000, 32, 64, "post").walk == "post"
    assert choose_plan(500_000, 1_000_000, 32, 64, "acorn").walk == "acorn"
    assert choose_plan(500, 1_000_000, 32, 64, "auto").walk == ""
    # below ACORN_MIN_SHARE allowed the auto plan is exact even where a walk is estimated cheaper
    thin = choose_plan(50_000, 1_000_000, 32, 64, "auto")
    assert thin.plan == "exact" and thin.exact_cost > thin.walk_cost and "loses recall" in thin.reason
    assert choose_plan(50_000, 1_000_000, 32, 64, "graph").plan == "graph-wide"  # ACORN's beam grows at 1,000,000
    assert choose_plan(5_000, 100_000, 32, 64, "graph").plan == "graph"
    assert choose_plan(100_000, 1_000_000, 32, 64, "acorn").plan == "graph-wide"
    # through a kept Filter's sketch exact rows cost less: half of a 20,000-row 384-d index is
    # answered exactly (measured 10,850 against the walk's 5,800 q/s), a million 128-d rows not
    assert choose_plan(10_000, 20_000, 32, 64, "auto", 384).plan == "graph"
    assert choose_plan(10_000, 20_000, 32, 64, "auto", 384, sketched=True).plan == "exact"
    assert choose_plan(500_000, 1_000_000, 32, 64, "auto", 128, sketched=True).plan == "graph"
    assert choose_plan(50_000, 100_000, 32, 64, "auto", 128, sketched=True).plan == "graph"


def test_acorn_beam_grows_with_the_index() -> None:
    """ACORN's beam is the asked one up to ACORN_LIVE live items and grows by ACORN_GROW per
    decade above; the post-filter takes over where its estimate is the cheaper."""
    assert acorn_growth(1_000) == acorn_growth(ACORN_LIVE) == 1.0
    assert acorn_growth(10 * ACORN_LIVE) == pytest.approx(1.0 + ACORN_GROW)
    assert acorn_growth(3 * ACORN_LIVE) < acorn_growth(10 * ACORN_LIVE)
    small = choose_plan(5_000, 100_000, 32, 64, "graph")
    assert (small.plan, small.walk, small.ef) == ("graph", "acorn", 64)
    big = choose_plan(70_000, 1_000_000, 32, 64, "graph")
    assert (big.plan, big.walk, big.ef) == ("graph-wide", "acorn", math.ceil(64 * (1.0 + ACORN_GROW)))
    assert big.walk_cost == pytest.approx(ACORN_COST * WALK_PER_EF * 32 * big.ef)
    # where its probe meets a rich share the walk turns post-filter, at the asked beam
    assert big.code & PLAN_RICH and (big.code >> POST_SHIFT) & EF_MASK == 64 and (big.code >> WIDE_SHIFT) & EF_MASK == big.short_ef
    assert big.left(1, 1, 0.9, USED_POST).ef == 64 and big.left(1, 1, 0.9, USED_POST).plan == "graph-wide->post"
    # 30 % allowed: ACORN's walk at 100,000 items, the post-filter at 1,000,000 (cheaper than the
    # grown beam), its beam twice 30 % of the asked one there (POST_GROW per decade)
    assert choose_plan(30_000, 100_000, 32, 64, "auto", k=10).walk == "acorn"
    post = choose_plan(300_000, 1_000_000, 32, 64, "auto", k=10)
    assert (post.walk, post.ef) == ("post", 64) and 0.3 < POST_SHARE
    assert (post.code >> POST_SHIFT) & EF_MASK == 39 == planned_post_beam(64, 0.3, 1_000_000) and post.code & PLAN_POST
    assert "keeps 39 allowed items" in post.reason
    # half allowed at 100,000 items: ef x the share; at least 2k and POST_MIN, never past ef
    for k, ef, beam in ((10, 64, 32), (1, 64, 32), (10, 20, 20), (1, 10, 10), (20, 50, 40)):
        half = choose_plan(50_000, 100_000, 32, ef, "auto", k=k)
        assert half.walk == "post" and (half.code >> POST_SHIFT) & EF_MASK == beam, (k, ef)
    assert (choose_plan(100_000, 1_000_000, 32, 64, "auto", k=10).code >> POST_SHIFT) & EF_MASK == 20  # 13 by the share
    assert planned_post_beam(64, 0.5, 10 ** 7) == 64 and planned_post_beam(64, 1.0, 1_000) == 64
    assert choose_plan(300_000, 1_000_000, 32, 64, "acorn").ef == big.ef


def test_the_post_filters_beam_follows_the_share_around_the_query() -> None:
    """The kernel walks the planned beam (at least k) where the share around the query is the
    filter's or lower, and the asked ef where it is higher by more than chance."""
    beam = post_beam.py_func
    assert beam(64, 32, 10, 0.5, 0.5, 32) == 32
    assert beam(64, 32, 10, 0.5, -1.0, 0) == 32  # nothing read
    assert beam(64, 32, 10, 0.5, 0.6, 32) == 32  # within chance of a random half
    assert beam(64, 32, 10, 0.5, 0.97, 64) == 64  # a filter correlated with the query
    assert beam(64, 7, 10, 0.1, 0.1, 100) == 10  # k at least
    assert beam(16, 32, 10, 0.5, 0.5, 32) == 16  # never past the asked ef


def test_a_kept_filter_is_priced_through_its_sketch(small_data, monkeypatch) -> None:
    """The planner prices a kept Filter's exact search at its sketch's cost (from DEFER_ROWS
    allowed rows whose block fits BLOCK_BYTES), a raw mask's at the rows' own."""
    import hnsw_numba.core.filtered as filtered
    import hnsw_numba.core.filters as filters
    import hnsw_numba.core.planner as planner

    rng = np.random.default_rng(8)
    n = 8000
    data, queries = rng.standard_normal((n, 16)).astype(np.float32), rng.standard_normal((4, 16)).astype(np.float32)
    idx, store = build(hn.L2(), data)
    mask = np.arange(n) % 5 != 0
    assert mask.sum() >= filtered.DEFER_ROWS
    f = hn.Filter(idx, mask)
    _, kept = idx.search(store, queries[0], 5, filter=f, explain=True)
    _, raw = idx.search(store, queries[0], 5, filter=mask, explain=True)
    dim = idx.config.dim
    assert kept.exact_cost == pytest.approx(raw.exact_cost * (planner.SKETCH_ROW + planner.SKETCH_DIM * dim) / (planner.EXACT_ROW + planner.EXACT_DIM * dim))

    class Unversioned:  # a store of the caller's without ``version``: no block, no sketch
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            if name == "version":
                raise AttributeError(name)
            return getattr(self.inner, name)

    _, kept = idx.search(Unversioned(store), queries[0], 5, filter=hn.Filter(idx, mask), explain=True)
    assert kept.exact_cost == pytest.approx(raw.exact_cost)
    rows = int(mask.sum())
    half = build(hn.L2(), data, dtype="float16")
    monkeypatch.setattr(filters, "BLOCK_BYTES", rows * dim * 2)  # fits float16 rows, not float32 ones
    _, kept16 = half[0].search(half[1], queries[0], 5, filter=hn.Filter(half[0], mask), explain=True)
    _, kept = idx.search(store, queries[0], 5, filter=hn.Filter(idx, mask), explain=True)
    assert kept16.exact_cost == pytest.approx(raw.exact_cost * (planner.SKETCH_ROW + planner.SKETCH_DIM * dim) / (planner.EXACT_ROW + planner.EXACT_DIM * dim))
    assert kept.exact_cost == pytest.approx(raw.exact_cost)
    monkeypatch.setattr(filters, "BLOCK_BYTES", 0)  # no block: no sketch of one to price
    _, kept = idx.search(store, queries[0], 5, filter=hn.Filter(idx, mask), explain=True)
    assert kept.exact_cost == pytest.approx(raw.exact_cost)
    # a row of exact search costs more the longer it is
    assert choose_plan(5_000, 100_000, 32, 64, "auto", 1024).exact_cost > choose_plan(5_000, 100_000, 32, 64, "auto", 128).exact_cost


def test_compiled_filters_equal_raw_filters(index) -> None:
    idx, store, data, queries = index
    n = len(data)
    allowed = np.arange(0, n, 7)
    mask = np.zeros(n, bool)
    mask[allowed] = True
    forms = [mask, allowed, set(allowed.tolist()), lambda key: key % 7 == 0]
    expect = oracle(data, queries, allowed)
    for plan in PLANS:
        base = idx.search_batch(store, queries, 10, filter=mask, plan=plan)[0]
        if plan == "exact":
            assert (base == expect).all()
        for form in forms:
            f = Filter(idx, form)
            assert f.size == allowed.shape[0] and (f.ids == allowed).all()
            assert (idx.search_batch(store, queries, 10, filter=form, plan=plan)[0] == base).all()
            assert (idx.search_batch(store, queries, 10, filter=f, plan=plan)[0] == base).all()
            for i in (0, 5):
                assert idx.search(store, queries[i], 10, filter=f, plan=plan).keys == base[i].tolist()
                assert idx.search(store, queries[i], 10, filter=form, plan=plan).keys == base[i].tolist()


def test_predicate_runs_once_per_key_when_compiled(index) -> None:
    idx, store, data, queries = index
    calls = []

    def pred(key: int) -> bool:
        calls.append(key)
        return key % 2 == 0

    f = Filter(idx, pred)
    assert len(calls) == idx.node_count
    for q in queries[:10]:
        idx.search(store, q, 5, filter=f)
    idx.search_batch(store, queries, 5, filter=f)
    assert len(calls) == idx.node_count


def test_per_query_filters_equal_one_call_per_query(index) -> None:
    idx, store, data, queries = index
    n, nq = len(data), len(queries)
    rng = np.random.default_rng(2)
    grid = rng.random((nq, n)) < np.linspace(0.005, 0.9, nq)[:, None]
    for plan in PLANS:
        keys, dists = idx.search_batch(store, queries, 10, filter=grid, plan=plan)
        for i in range(nq):
            hits = idx.search(store, queries[i], 10, filter=grid[i], plan=plan)
            assert keys[i][: len(hits)].tolist() == hits.keys and (keys[i][len(hits):] == -1).all()
            np.testing.assert_array_equal(dists[i][: len(hits)], np.float32(hits.distances))
    mixed = [grid[i] if i % 4 == 0 else (np.flatnonzero(grid[i]) if i % 4 == 1 else (set(np.flatnonzero(grid[i]).tolist()) if i % 4 == 2
             else Filter(idx, grid[i]))) for i in range(nq)]
    keys, _ = idx.search_batch(store, queries, 10, filter=mixed)
    for i in range(nq):
        assert keys[i][keys[i] >= 0].tolist() == idx.search(store, queries[i], 10, filter=grid[i]).keys
    with pytest.raises(hn.InvalidParameterError):
        idx.search_batch(store, queries, 10, filter=grid[:-1])
    with pytest.raises(hn.InvalidParameterError):
        idx.search_batch(store, queries, 10, filter=mixed[:-1])


def test_filter_rule(index) -> None:
    """Booleans are a mask, integers are keys, a 0/1 integer array of mask length raises."""
    idx, store, data, queries = index
    n = len(data)
    ones = np.zeros(n, np.int64)
    ones[:50] = 1
    between = np.zeros((n + idx.max_nodes) // 2, np.int8)  # a mask's length between node_count and capacity
    between[:50] = 1
    assert n < between.shape[0] < idx.max_nodes
    for bad in (ones, ones.astype(np.uint8), np.ones(idx.max_nodes, np.int32), between):
        with pytest.raises(hn.InvalidParameterError, match="pass a boolean array for a mask, or keys"):
            idx.search(store, queries[0], 5, filter=bad)
        with pytest.raises(ValueError):
            idx.search_batch(store, queries, 5, filter=bad)
        with pytest.raises(hn.InvalidParameterError):
            Filter(idx, bad)
    assert set(idx.search(store, queries[0], 5, filter=ones.astype(bool)).keys) <= set(range(50))
    keys01 = np.array([0, 1, 1, 0])  # 0/1 values but not of mask length: the keys 0 and 1
    assert set(idx.search(store, queries[0], 5, filter=keys01).keys) == {0, 1}
    assert set(idx.search(store, queries[0], 5, filter=np.arange(2, 9)).keys) <= set(range(2, 9))
    for bad in ("abc", 3, np.zeros((2, 2), bool)):
        with pytest.raises(hn.InvalidParameterError):
            idx.search(store, queries[0], 5, filter=bad)


def test_non_boolean_arrays_of_two_dimensions_raise(index) -> None:
    """One mask per query is a 2-D boolean array: the same 0/1 rows as integers (or floats,
    or any 2-D array of keys) raise instead of being read as the keys they hold."""
    idx, store, data, queries = index
    n, nq = len(data), 4
    grid = np.zeros((nq, n), bool)
    grid[:, 100:140] = True
    keys2d = np.arange(100, 140).reshape(4, 10)
    for bad in (grid.astype(np.int64), grid.astype(np.uint8), grid.astype(np.float32), keys2d, keys2d[None]):
        with pytest.raises(hn.InvalidParameterError, match="filter is ambiguous"):
            idx.search_batch(store, queries[:nq], 5, filter=bad)
        with pytest.raises(hn.InvalidParameterError, match="filter is ambiguous"):
            idx.search(store, queries[0], 5, filter=bad)
        with pytest.raises(hn.InvalidParameterError, match="filter is ambiguous"):
            Filter(idx, bad)
        with pytest.raises(hn.InvalidParameterError, match="filter is ambiguous"):
            idx.search_batch(store, queries[:nq], 5, filter=[bad] * nq)
    keys, _ = idx.search_batch(store, queries[:nq], 5, filter=grid)
    assert ((keys >= 100) & (keys < 140)).all()
    assert set(idx.search(store, queries[0], 5, filter=keys2d.ravel()).keys) <= set(range(100, 140))


def test_filter_follows_its_index(small_data) -> None:
    data, queries = small_data
    idx, store = build(hn.L2(), data[:300], extra=400)
    f = Filter(idx, lambda key: key % 2 == 0)
    assert f.size == 150
    idx.delete(0)
    assert 0 not in idx.search(store, data[0], 5, filter=f, plan="exact").keys
    assert 0 not in idx.search(store, data[0], 5, filter=f, plan="graph").keys
    idx.set(store, 0, data[0])  # resurrected: allowed again
    assert idx.search(store, data[0], 1, filter=f).keys == [0]
    idx.insert_batch(store, np.arange(300, 340), data[300:340])  # new keys: compiled again
    assert f.size == 170 and 302 in f.ids
    assert idx.search(store, data[302], 1, filter=f, plan="exact").keys == [302]
    idx.resize(800)
    store.resize(800)
    assert idx.search(store, data[304], 1, filter=f).keys == [304]
    idx.delete(302)
    idx.rename_deleted([302], [10**6])  # an even key: allowed
    idx.insert(store, 10**6, data[302])
    assert idx.search(store, data[302], 1, filter=f, plan="exact").keys == [10**6]
    g = Filter(idx, lambda key: key < 10**6)
    idx.delete(304)
    idx.rename_deleted([304], [10**6 + 1])
    idx.insert(store, 10**6 + 1, data[304])
    assert 10**6 + 1 not in idx.search(store, data[304], 3, filter=g, plan="exact").keys
    other, ostore = build(hn.L2(), data[:50])
    with pytest.raises(hn.InvalidParameterError):
        other.search(ostore, data[0], 5, filter=f)
    # a mask filter leaves NodeIds added after it out
    m = Filter(idx, np.ones(idx.node_count, bool))
    idx.insert(store, 999, data[400])
    assert 999 not in idx.search(store, data[400], 3, filter=m, plan="exact").keys
    # a list or set of keys is copied: edits after it do not leak in when it compiles again
    for src in ([1, 3, 5], {1, 3, 5}):
        kf = Filter(idx, src)
        src.add(7) if isinstance(src, set) else src.append(7)
        idx.insert(store, 1000 + isinstance(src, set), data[401])  # the index changes: compiled again
        assert 7 not in idx.search(store, data[7], 4, filter=kf, plan="exact").keys and kf.size == 3


def test_a_kept_filter_prices_its_plan_by_the_items_still_live() -> None:
    """Deletions leave a kept Filter compiled, and its plan was priced by the live count of its
    compile: 40 of 300 allowed items left live, "auto" still walked at the width of 300 and
    missed neighbours (recall 0.83 at ef = k on 20,000 items); the same keys compiled afresh
    were answered exactly."""
    rng = np.random.default_rng(8)
    n = 8000
    data, queries = rng.standard_normal((n, 16)).astype(np.float32), rng.standard_normal((4, 16)).astype(np.float32)
    idx, store = build(hn.L2(), data)
    allowed = np.flatnonzero(np.arange(n) % 10)  # 90 %: walked
    f = Filter(idx, allowed)
    first = idx.search(store, queries[0], 10, filter=f, ef=10, explain=True)[1]
    assert first.plan != "exact" and f.size == allowed.shape[0]
    idx.delete_batch(allowed[10:])
    hits, plan = idx.search(store, queries[0], 10, filter=f, ef=10, explain=True)
    assert f.size == 10 and len(f) == 10 and plan.allowed == 10 and plan.plan == "exact"
    assert sorted(hits.keys) == allowed[:10].tolist()
    idx.undelete(int(allowed[10]))  # a resurrection counts as well
    assert f.size == 11
    # deletions and resurrections that leave the deleted count as it was count too
    others = np.arange(0, n, 10)[:5]  # not allowed
    idx.delete_batch(others)
    assert f.size == 11
    idx.delete_batch(allowed[:5])
    for key in others:
        idx.undelete(int(key))
    assert f.size == 6


def test_index_wrapper_takes_filters_and_plans(small_data) -> None:
    data, queries = small_data
    ix = hn.Index(data.shape[1], metric="l2")
    ix.add(np.arange(len(data)), data)
    f = hn.Filter(ix, lambda key: key < 100)
    hits = ix.search(queries[0], 5, filter=f, plan="exact")
    assert hits.keys == oracle(data, queries[:1], np.arange(100), 5)[0].tolist()
    assert ix.last_plan.plan == "exact"
    keys, _ = ix.search(queries, 5, filter=f)
    assert (keys < 100).all()


@pytest.mark.parametrize("blas", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "qi8"])
def test_kept_filter_block_follows_writes_and_renumbering(monkeypatch, small_data, dtype, blas) -> None:
    """A kept Filter's copy of the allowed rows never answers with vectors the store no longer holds.

    The exact plan reads that copy (or, ``blas``, its float32 form through BLAS); a ``set`` of
    an allowed key, a renumbering (``compact(reorder=True)``) and a compaction each change the
    rows behind it.
    """
    import hnsw_numba.core.filtered as filtered

    monkeypatch.setattr(filtered, "BLAS_ROWS", 1 if blas else 10**9)
    data, queries = small_data
    data = data[:400].copy()
    dim = data.shape[1]
    metric = hn.L2Qi8() if dtype == "qi8" else hn.L2()
    idx = hn.Hnsw(metric, hn.HnswConfig(dim=dim, max_nodes=500, m=8, ef_construction=64, seed=5))
    store = hn.InMemoryQi8VectorStore(dim, 500) if dtype == "qi8" else hn.InMemoryVectorStore(dim, 500)
    idx.insert_batch(store, np.arange(400), data, num_threads=1)
    f = Filter(idx, lambda key: key % 3 == 0)

    gone: set[int] = set()

    def check() -> None:
        live = np.array([k for k in range(400) if k % 3 == 0 and k not in gone])
        exact_keys = [idx.search(store, q, 5, filter=f, plan="exact").keys for q in queries[:6]]
        batch_keys = idx.search_batch(store, queries[:6], 5, filter=f, plan="exact")[0]
        vecs = idx.get_vectors(store, live.tolist())
        truth = live[exact_knn(metric, vecs, queries[:6], 5)[0]]
        assert (batch_keys == truth).all() and [list(r) for r in truth] == exact_keys

    check()
    near = queries[0] + 0.01
    data[0] = near
    idx.set(store, 0, near)  # key 0 is allowed: its new vector is the nearest to queries[0]
    check()
    assert idx.search(store, queries[0], 1, filter=f, plan="exact").keys == [0]
    idx.compact(store, reorder=True)
    check()
    gone.update(range(0, 400, 2))
    idx.delete_batch(sorted(gone))
    idx.compact(store)
    check()


@pytest.mark.parametrize("plan", ["graph", "post", "acorn", "descend", "exact"])
def test_copies_of_one_vector_tie_on_every_plan(plan: str) -> None:
    """ACORN's walk scored its entry and seeds with the one-row kernel, its neighbours with the
    four-row one: copies of one vector came back one last bit apart (73 of 200 queries)."""
    rng = np.random.default_rng(3)
    base = rng.standard_normal((6, 24)).astype(np.float32)
    x = np.vstack([np.repeat(base, 50, axis=0), 3 * rng.standard_normal((300, 24)).astype(np.float32)])
    idx = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=24, max_nodes=600, m=16, ef_construction=100, seed=4))
    store = hn.InMemoryVectorStore(24, 600)
    idx.insert_batch(store, np.arange(600), x)
    allowed = np.ones(600, bool)
    allowed[::7] = False
    for t in range(60):
        q = (base[t % 6] + 0.3 * rng.standard_normal(24)).astype(np.float32)
        hits = idx.search(store, q, 60, filter=allowed, ef=80, plan=plan)
        keys, d = np.array(hits.keys), np.array(hits.distances, np.float32)
        for g in set((keys[keys < 300] // 50).tolist()):
            assert len(set(d[(keys < 300) & (keys // 50 == g)].tolist())) == 1, (t, g)


def test_a_filter_refuses_pickle_and_deepcopy_with_a_typed_error(index) -> None:
    import copy
    import pickle

    idx, store, data, _ = index
    for source in (np.arange(idx.node_count) % 2 == 0, [0, 2, 3], lambda key: key % 2 == 0):
        flt = Filter(idx, source)
        for attempt in (pickle.dumps, copy.deepcopy):
            with pytest.raises(hn.InvalidParameterError, match="pass its source"):
                attempt(flt)
        assert copy.copy(flt) is flt
        assert idx.search(store, data[0], 1, filter=flt)[0].key == 0  # still usable


def test_a_filter_keeps_its_meaning_as_the_index_changes() -> None:
    """A Filter of a generator allowed nothing once the index changed (the source was read
    again, exhausted); one of a mask longer than the index after a compaction and a shrink
    raised on every search; one of the int keys [0, 1] became an ambiguous 0/1 mask when a
    compaction left two NodeIds."""
    rng = np.random.default_rng(6)
    data = rng.standard_normal((400, 4)).astype(np.float32)
    idx = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=4, max_nodes=400, m=4, ef_construction=20, seed=1))
    store = hn.InMemoryVectorStore(4, 400)
    idx.insert_batch(store, np.arange(300), data[:300])
    made = Filter(idx, (k for k in [3, 4, 5]))
    viewed = Filter(idx, {3: "a", 4: "b"}.keys())
    mask = Filter(idx, np.arange(400) < 100)
    pair = Filter(idx, np.array([0, 1]))

    def keys(flt, q=0):
        return sorted(h.key for h in idx.search(store, data[q], 10, filter=flt, exact=True))

    assert keys(made) == [3, 4, 5] and keys(viewed) == [3, 4] and keys(pair) == [0, 1]
    idx.insert_batch(store, [300], data[300:301])
    assert keys(made) == [3, 4, 5] and keys(viewed) == [3, 4] and len(keys(mask)) == 10
    idx.delete_batch(np.arange(2, 301))
    idx.compact(store)
    store.resize(150)
    idx.resize(150)
    assert keys(made) == [] and keys(pair) == [0, 1]
    with pytest.raises(hn.InvalidParameterError, match="renumbered"):
        keys(mask)  # its NodeIds name other items now


@pytest.mark.parametrize("reorder", [False, True])
def test_a_filter_of_a_mask_refuses_nodeids_a_compaction_renumbered(reorder: bool) -> None:
    """A mask names NodeIds: compiled again after a compaction it allowed other items (NodeIds
    0..19 -> keys 23, 26, 31, ... after a renumbering; keys 100..119 -> 150..169 after 50
    deletions and a compaction), with no error. A Filter of keys keeps its meaning."""
    rng = np.random.default_rng(4)
    data = rng.standard_normal((200, 4)).astype(np.float32)
    idx = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=4, max_nodes=200, m=8, ef_construction=40, seed=1))
    store = hn.InMemoryVectorStore(4, 200)
    idx.insert_batch(store, np.arange(200), data)
    allowed = np.zeros(200, bool)
    allowed[100:120] = True
    by_mask, by_keys = Filter(idx, allowed), Filter(idx, range(100, 120))
    search = lambda flt: sorted(h.key for h in idx.search(store, data[0], 20, filter=flt, exact=True))  # noqa: E731
    assert search(by_mask) == search(by_keys) == list(range(100, 120))
    if not reorder:
        idx.delete_batch(np.arange(50))
    idx.compact(store, reorder=reorder)
    assert search(by_keys) == list(range(100, 120))
    with pytest.raises(hn.InvalidParameterError, match="renumbered"):
        search(by_mask)
    fresh = np.zeros(idx.node_count, bool)
    fresh[[idx.node_id(k) for k in range(100, 120)]] = True
    kept = Filter(idx, fresh)
    assert search(kept) == list(range(100, 120))
    idx.compact(store)  # nothing deleted, no renumbering: the mask still names the same items
    idx.insert_batch(store, [500], data[:1], grow=True)
    assert search(kept) == list(range(100, 120))


@pytest.mark.parametrize("batch", [False, True])
def test_a_raw_mask_search_that_a_renumbering_overlapped_raises(monkeypatch, batch: bool) -> None:
    """A search overlapped by a compaction runs again, and made its Filter of a raw mask
    again over the renumbered NodeIds: it answered with items the mask never allowed."""
    from hnsw_numba.core import filtered

    rng = np.random.default_rng(5)
    data = rng.standard_normal((200, 4)).astype(np.float32)
    idx = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=4, max_nodes=200, m=8, ef_construction=40, seed=1))
    store = hn.InMemoryVectorStore(4, 200)
    idx.insert_batch(store, np.arange(200), data)
    idx.delete_batch(np.arange(50))
    mask = np.zeros(200, bool)
    mask[100:120] = True
    name = "_batch" if batch else "_search"
    original, calls = getattr(filtered.FilteredSearch, name), []

    def overlapped(self, *args, **kwargs):
        if not calls:  # a compaction runs after the call began, before its first read
            calls.append(1)
            idx.compact(store)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(filtered.FilteredSearch, name, overlapped)
    with pytest.raises(hn.InvalidParameterError, match="renumbered"):
        if batch:
            idx.search_batch(store, data[:3], 20, filter=mask, exact=True)
        else:
            idx.search(store, data[0], 20, filter=mask, exact=True)


def test_a_settled_filtered_answer_holds_only_keys_the_filter_allows(monkeypatch) -> None:
    """A search that overlapped renames is settled by key; a NodeId whose old key the filter
    allowed, deleted and renamed to a key it refuses and revived, came back under the new key."""
    from hnsw_numba.core import renamed

    rng = np.random.default_rng(9)
    data = rng.standard_normal((300, 4)).astype(np.float32)
    idx = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=4, max_nodes=400, m=8, ef_construction=40, seed=1))
    store = hn.InMemoryVectorStore(4, 400)
    idx.insert_batch(store, np.arange(300), data)
    even = lambda key: key % 2 == 0  # noqa: E731
    q = data[10]
    calls = []

    def overlapped(keys, count):
        calls.append(1)
        if len(calls) == renamed.RERUNS + 1:  # between the last search and the settling:
            idx.delete(10)  # hnswlib's replace_deleted: key 10's NodeId renamed to 301 and revived
            idx.rename_deleted([10], [301])
            idx.insert(store, 301, q)
        return True

    monkeypatch.setattr(renamed, "renamed_since", overlapped)
    for flt in (even, Filter(idx, even), [10, 12, 14, 16]):
        calls.clear()
        if 301 in idx:
            idx.delete(301)
            idx.rename_deleted([301], [10])
            idx.insert(store, 10, q)
        hits = idx.search(store, q, 3, filter=flt, ef=64)
        keys, _ = idx.search_batch(store, q[None], 3, filter=flt, ef=64)
        assert 301 not in [h.key for h in hits] and 301 not in keys.ravel().tolist()


def test_a_mask_passed_to_every_single_query_is_compiled_once(monkeypatch) -> None:
    """Equal masks in a loop of single queries share one compilation; a mask changed in place,
    one that no longer covers the NodeIds and one after a renumbering are read afresh."""
    from hnsw_numba.core import filters

    rng = np.random.default_rng(21)
    data = rng.standard_normal((300, 4)).astype(np.float32)
    idx, store = build(hn.L2(), data, extra=100)
    compiles = []
    original = filters.filter_to_mask
    monkeypatch.setattr(filters, "filter_to_mask", lambda *a: compiles.append(1) or original(*a))
    mask = np.zeros(300, bool)
    mask[rng.choice(300, 40, replace=False)] = True
    for i in range(5):  # the same object, then equal copies
        m = mask if i < 3 else mask.copy()
        assert idx.search(store, data[i], 10, filter=m, ef=300).keys == oracle(data, data[i : i + 1], np.flatnonzero(mask))[0].tolist()
    assert len(compiles) == 1
    mask[np.flatnonzero(mask)[:20]] = False  # changed in place: the next call follows it
    assert idx.search(store, data[7], 10, filter=mask, ef=300).keys == oracle(data, data[7:8], np.flatnonzero(mask))[0].tolist()
    assert len(compiles) == 2
    more = rng.standard_normal((20, 4)).astype(np.float32)
    idx.insert_batch(store, np.arange(300, 320), more)
    with pytest.raises(hn.InvalidParameterError, match="length between 320"):  # as for a mask never seen
        idx.search(store, data[0], 10, filter=mask)
    everything = np.concatenate([data, more])
    wide = np.zeros(400, bool)  # covers the capacity: valid as the index grows
    wide[:300] = mask
    for deleted in ([], np.arange(0, 300, 3)):
        idx.search(store, data[0], 10, filter=wide)
        idx.delete_batch(deleted)
        idx.compact(store, reorder=True)  # the same mask names other items now
        allowed = [k for k in range(320) if k in idx and wide[idx.node_id(k)]]
        truth = oracle(everything, data[1:2], np.asarray(allowed))[0].tolist()
        assert idx.search(store, data[1], 10, filter=wide, ef=400).keys == truth


def test_threads_passing_their_own_masks_get_their_own_answers() -> None:
    """Single queries from threads, each with its own mask (so the reused compilation changes
    hands on every call), answer as the oracle does for their own mask."""
    import threading

    rng = np.random.default_rng(22)
    data = rng.standard_normal((400, 4)).astype(np.float32)
    idx, store = build(hn.L2(), data)
    masks_ = [rng.random(400) < share for share in (0.5, 0.3, 0.1, 0.03)]
    truths = [oracle(data, data[:25], np.flatnonzero(m)) for m in masks_]
    wrong = []

    def run(t: int) -> None:
        for rep in range(4):
            for i in range(25):
                m = masks_[t] if rep % 2 else masks_[t].copy()
                if idx.search(store, data[i], 10, filter=m, ef=400).keys != truths[t][i].tolist():
                    wrong.append((t, i))

    threads = [threading.Thread(target=run, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not wrong


@pytest.mark.parametrize("share", [0.01, 0.5])
def test_a_filter_counts_its_live_allowed_items(share: float) -> None:
    """Thin filters count their deleted NodeIds by gathering, wide ones by a pass over the mask:
    both equal the oracle's count, before and after deletions and a resurrection."""
    rng = np.random.default_rng(23)
    data = rng.standard_normal((800, 4)).astype(np.float32)
    idx, store = build(hn.L2(), data)
    mask = rng.random(800) < share
    f = Filter(idx, mask)
    assert len(f) == np.count_nonzero(mask)
    gone = np.flatnonzero(mask)[::2]
    idx.delete_batch(gone)
    assert len(f) == len(Filter(idx, mask)) == np.count_nonzero(mask) - gone.shape[0]
    idx.insert(store, int(gone[0]), data[gone[0]])
    assert len(f) == len(Filter(idx, mask)) == np.count_nonzero(mask) - gone.shape[0] + 1


@pytest.mark.parametrize("change", ["compact", "grow"])
def test_a_reused_mask_lets_the_old_graph_go(change: str) -> None:
    """The Filter kept for a repeated mask holds the graph it was compiled for: once searches
    bind the compacted or grown graph, the old arrays are freed (it kept a whole graph)."""
    import gc
    import weakref

    rng = np.random.default_rng(24)
    data = rng.standard_normal((300, 4)).astype(np.float32)
    idx, store = build(hn.L2(), data, extra=0)
    mask = np.arange(300) % 3 == 0
    idx.search(store, data[0], 5, filter=mask)
    old = weakref.ref(idx.graph_arrays.links0)
    if change == "compact":
        idx.delete_batch(np.arange(0, 300, 2))
        idx.compact(store)
    else:
        idx.insert_batch(store, np.arange(300, 400), rng.standard_normal((100, 4)).astype(np.float32), grow=True)
    idx.search(store, data[1], 5, filter=[3, 9, 15])
    idx.search(store, data[1], 5)
    gc.collect()
    assert old() is None


def test_a_masked_filter_is_refused_and_an_unmasked_one_reads_as_its_data(index) -> None:
    """np.asarray drops a mask: a boolean filter whose entries were all masked filtered by its
    hidden data, and masked keys were allowed. A masked entry raises InvalidParameterError on
    every path; a masked array with nothing masked is its data; a set of keys is a filter."""
    idx, store, data, queries = index
    n = len(data)
    allow = np.zeros(n, bool)
    allow[:40] = True
    hidden = np.ma.masked_array(np.ones(n, bool), mask=True)
    some = np.ma.masked_array(allow, mask=np.arange(n) == 7)
    keys = np.ma.masked_array(np.arange(40), mask=np.arange(40) >= 20)
    per_query = np.ma.masked_array(np.ones((len(queries), n), bool), mask=False)
    per_query.mask[3, 5] = True
    for bad in (hidden, some, keys):
        for call in (lambda f: idx.search(store, queries[0], 5, filter=f), lambda f: idx.search_batch(store, queries, 5, filter=f),
                     lambda f: Filter(idx, f), lambda f: idx.search_batch(store, queries[:2], 5, filter=[allow, f])):
            with pytest.raises(hn.InvalidParameterError, match="filter: a masked array with"):
                call(bad)
    with pytest.raises(hn.InvalidParameterError, match=r"filter: a masked array with 1 masked entry \(the first in row 3\)"):
        idx.search_batch(store, queries, 5, filter=per_query)
    plain = np.ma.masked_array(allow, mask=False)
    want = idx.search(store, queries[0], 5, filter=allow).keys
    assert idx.search(store, queries[0], 5, filter=plain).keys == want
    assert idx.search(store, queries[0], 5, filter=Filter(idx, plain)).keys == want
    assert type(Filter(idx, plain).source) is np.ndarray
    np.testing.assert_array_equal(idx.search_batch(store, queries, 5, filter=np.ma.masked_array(np.arange(40), mask=False))[0],
                                  idx.search_batch(store, queries, 5, filter=np.arange(40))[0])
    assert idx.search(store, queries[0], 5, filter=set(range(40))).keys == want
    assert idx.search(store, queries[0], 5, filter=frozenset(range(40))).keys == want


def test_per_query_filters_are_checked_before_any_query_runs(index) -> None:
    """A bad filter anywhere in the list fails the call before any query runs: no earlier
    predicate is called and ``last_plan`` stays as it was."""
    idx, store, x, _ = index
    q = x[:3]
    idx.search(store, x[0], 5, filter=[1, 2, 3])
    before = idx.last_plan
    calls = []

    def pred(key) -> bool:
        calls.append(key)
        return key % 2 == 0

    bad_mask = np.ones(idx.node_count + 10_000, bool)
    for bad in (bad_mask, [None, 1], [1, 10**5000], [True, 2], [-(10**5000), 1], np.zeros((2, 2), np.float32), 3.5, "keys"):
        with pytest.raises(hn.HnswError) as err:
            idx.search_batch(store, q, 5, [pred, [7, 8], bad])
        assert isinstance(err.value, (ValueError, TypeError, KeyError))
        assert calls == [] and idx.last_plan is before
    keys, _ = idx.search_batch(store, q, 5, [pred, [7, 8], np.ones(idx.node_count, bool)])  # the same list, well formed
    assert len(calls) > 0 and set(keys[1].tolist()) <= {7, 8, -1}


@pytest.mark.parametrize("scalar", [np.array(3.0), np.array(3), np.array("abc"), np.array(True)])
def test_a_0d_array_is_no_filter(index, scalar) -> None:
    """A 0-d array is a scalar, as ``filter=3`` is: refused for one query and in a batch, typed."""
    idx, store, x, _ = index
    with pytest.raises(hn.InvalidParameterError, match="0 dimensions|1-D"):
        idx.search(store, x[0], 5, filter=scalar)
    with pytest.raises(hn.InvalidParameterError, match="0 dimensions|1-D"):
        idx.search_batch(store, x[:2], 5, [scalar, [1, 2]])
