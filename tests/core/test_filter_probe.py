"""The walk's probe of the allowed share around the query: a filter whose allowed items lie
away from the queries (anti-correlated) keeps recall, the switch shows in the plan, random
filters stay on the walk, and plan= still forces a plan."""

from __future__ import annotations

import numpy as np
import pytest

import hnsw_numba as hn
from hnsw_numba.core import planner
from hnsw_numba.core.planner import POST_SHARE, SHORT_WIDEN, choose_plan
from hnsw_numba.kernels.filtered import PLAN_POST, PLAN_RICH
from hnsw_numba.kernels.probe import POST_RICH
from hnsw_numba.datasets import clustered_embeddings
from conftest import build, explain_each, toward_point
from naive import exact_knn, recall

K = 10
EF = 16


@pytest.fixture(scope="module")
def anti():
    """Clustered data; the allowed half is the one farthest from a point, the queries are the
    test points nearest it (the allowed items lie away from every query)."""
    n, dim = 3000, 16
    x, test = clustered_embeddings(n, dim, n_queries=200, seed=5)
    idx, store = build(hn.L2(), x, seed=3, extra=0)
    order, queries = toward_point(x, test)
    mask = np.zeros(n, bool)
    mask[order[n // 2 :]] = True
    truth = exact_knn(hn.L2(), x, queries, K, allowed=np.flatnonzero(mask))[0]
    return idx, store, x, queries, mask, truth


@pytest.fixture(autouse=True)
def walk_priced(monkeypatch):
    """Exact rows priced as wide ones: at 16-d the planner would answer these 1,500-row
    filters exactly outright, and these tests are about the walk."""
    monkeypatch.setattr(planner, "EXACT_ROW", 0.3)
    monkeypatch.setattr(planner, "EXACT_DIM", 0.0)
    monkeypatch.setattr(planner, "SKETCH_ROW", 0.3)  # through a kept Filter's sketch too
    monkeypatch.setattr(planner, "SKETCH_DIM", 0.0)


def test_anti_correlated_filter_keeps_recall(anti) -> None:
    idx, store, _, queries, mask, truth = anti
    f = hn.Filter(idx, mask)
    single = [idx.search(store, q, K, filter=f, ef=EF).keys for q in queries]
    assert recall(single, truth) >= 0.95
    keys, _ = idx.search_batch(store, queries, K, filter=mask, ef=EF)
    assert recall(keys, truth) >= 0.95
    plan = idx.last_plan
    assert plan.plan.startswith("graph->") and plan.switched > len(queries) // 2 and plan.queries == len(queries)
    assert 0.0 <= plan.local < plan.probe


def test_the_switch_is_visible_and_plans_stay_forced(anti) -> None:
    idx, store, _, queries, mask, truth = anti
    f = hn.Filter(idx, mask)
    hits, plan = idx.search(store, queries[0], K, filter=f, ef=EF, explain=True)
    assert plan == idx.last_plan and not plan.forced
    assert plan.plan == "graph->exact" and plan.switched == 1 and plan.ef == EF  # 1,500 rows: cheaper than the descent's walk
    assert "the query met" in plan.reason and "allowed around it" in plan.reason and "exact" in plan.reason
    assert set(hits.keys) == set(truth[0].tolist())
    # plan="graph" keeps walking, at the wider beam
    hits, plan = idx.search(store, queries[0], K, filter=f, ef=EF, plan="graph", explain=True)
    assert plan.forced and plan.plan == "graph->wide" and plan.ef == EF * SHORT_WIDEN
    assert "forced" in plan.reason
    # plan="exact" is exact, no probe
    hits, plan = idx.search(store, queries[0], K, filter=f, ef=EF, plan="exact", explain=True)
    assert plan.plan == "exact" and plan.forced and plan.switched == 0
    assert set(hits.keys) == set(truth[0].tolist())


def test_random_filter_stays_on_the_planned_walk(anti) -> None:
    idx, store, x, queries, _, _ = anti
    mask = np.random.default_rng(3).random(x.shape[0]) < 0.5
    f = hn.Filter(idx, mask)
    for q in queries:
        _, plan = idx.search(store, q, K, filter=f, ef=EF, explain=True)
        assert plan.plan == "graph" and plan.switched == 0 and plan.probe > 0.0
    idx.search_batch(store, queries, K, filter=f, ef=EF)
    assert idx.last_plan.plan == "graph" and idx.last_plan.switched == 0


def test_planner_fixes_what_a_short_walk_leaves_for() -> None:
    big = choose_plan(500_000, 1_000_000, 32, 64, "auto")  # exact over 500,000 rows: dearer than a wide walk, but exact
    assert big.plan == "graph" and big.short_plan == "exact" and big.exact_cost > big.short_cost
    assert choose_plan(500_000, 1_000_000, 32, 64, "graph").short_ef == 64 * SHORT_WIDEN  # a forced walk widens
    mid = choose_plan(10_000, 100_000, 32, 64, "auto")
    assert mid.plan == "graph" and mid.short_plan == "exact" and mid.exact_cost <= mid.short_cost
    assert choose_plan(10_000, 100_000, 32, 64, "graph").short_plan == "wide"
    assert choose_plan(20_000, 100_000, 32, 64, "exact").probe == 0.0


@pytest.mark.parametrize("walk", ["post", "acorn"])
def test_each_walk_probes_and_keeps_recall(anti, walk) -> None:
    """Forced, either walk leaves for the wider (ACORN) walk where the allowed items lie away."""
    idx, store, _, queries, mask, truth = anti
    f = hn.Filter(idx, mask)
    found, plans = explain_each(idx, store, queries, K, filter=f, ef=EF, plan=walk)
    for plan in plans:
        assert plan.forced and plan.probe > 0.0
        assert plan.walk == ("acorn" if plan.switched else walk)
    assert recall(found, truth) >= 0.95
    _, plan = idx.search(store, queries[0], K, filter=f, ef=EF, plan=walk, explain=True)
    assert plan.plan in ("graph->wide", "graph->acorn") and plan.switched == 1


def test_post_walk_for_wide_filters(anti) -> None:
    """plan="graph": the post-filter walk from POST_SHARE of the items allowed, ACORN's below;
    the walk shows in the plan and its reason."""
    idx, store, x, queries, _, _ = anti
    rng = np.random.default_rng(4)
    for share, walk in ((0.9, "post"), (POST_SHARE, "post"), (0.2, "acorn")):
        mask = rng.random(x.shape[0]) < share
        _, plan = idx.search(store, queries[0], K, filter=mask, ef=EF, plan="graph", explain=True)
        if plan.allowed < POST_SHARE * plan.live:
            walk = "acorn"
        assert plan.plan.startswith("graph") and plan.walk == walk, (share, plan)
        assert f"{walk} walk" in plan.reason
        assert bool(plan.code & PLAN_POST) == (walk == "post")


def test_correlated_filter_walks_as_the_post_filter(anti) -> None:
    """A planned ACORN walk whose probe meets POST_RICH or more allowed around the query (the
    allowed items are the ones nearest the queries) walks as the post-filter and keeps recall;
    plan="acorn" stays ACORN's, and a random filter of the same share stays on ACORN's walk."""
    idx, store, x, queries, _, _ = anti
    order, _ = toward_point(x, queries)
    mask = np.zeros(x.shape[0], bool)
    mask[order[: int(0.3 * x.shape[0])]] = True
    truth = exact_knn(hn.L2(), x, queries, K, allowed=np.flatnonzero(mask))[0]
    f = hn.Filter(idx, mask)
    found, plans = explain_each(idx, store, queries, K, filter=f, ef=EF, plan="graph")
    for plan in plans:
        assert plan.allowed < POST_SHARE * plan.live and plan.code & PLAN_RICH
        if plan.switched:
            assert plan.plan == "graph->post" and plan.walk == "post" and plan.ef == EF and plan.local >= POST_RICH and "post-filter walk" in plan.reason
    assert recall(found, truth) >= 0.95 and sum(p.switched for p in plans) > len(queries) // 2
    keys, _ = idx.search_batch(store, queries, K, filter=f, ef=EF, plan="graph")
    assert recall(keys, truth) >= 0.95
    assert idx.last_plan.plan == "graph->post" and idx.last_plan.switched > len(queries) // 2
    for q in queries[:20]:
        _, plan = idx.search(store, q, K, filter=f, ef=EF, plan="acorn", explain=True)
        assert plan.walk == "acorn" and not plan.code & PLAN_RICH and not plan.plan.endswith("->post")
    rand = hn.Filter(idx, np.random.default_rng(6).random(x.shape[0]) < 0.3)
    idx.search_batch(store, queries, K, filter=rand, ef=EF, plan="graph")
    assert not idx.last_plan.plan.endswith("->post") and idx.last_plan.walk == "acorn"


@pytest.mark.parametrize("copy", ["block", "no block", "no block, split scan"])
def test_queries_that_leave_a_kept_filter_come_back_for_the_sketch(anti, monkeypatch, copy) -> None:
    """From DEFER_ROWS allowed rows, the first query that leaves the walk makes the kept
    Filter's int8 sketch (of its block, or without one of the store's rows); later ones leave
    the kernel unanswered and get the exact plan's sketch answer, the same keys and distances
    as plan="exact" and as a raw mask's scan."""
    import hnsw_numba.core.block_search as block_search
    import hnsw_numba.core.filtered as filtered
    import hnsw_numba.core.filters as filters
    from hnsw_numba.core.filtered import DEFER_ROWS
    from hnsw_numba.core.sketch import Sketch, WideSketch

    if copy != "block":
        monkeypatch.setattr(filters, "BLOCK_BYTES", 0)
        monkeypatch.setattr(block_search, "SKETCH_AFTER", 1)
    if copy == "no block, split scan":
        monkeypatch.setattr(filtered, "SPLIT_ROWS", 100)
        monkeypatch.setattr(filtered, "available_cores", lambda: 2)

    calls = []
    exact_one = filtered.exact_one
    monkeypatch.setattr(filtered, "exact_one", lambda *a: calls.append(a[-1] is not None) or exact_one(*a))
    idx, store, _, queries, mask, truth = anti
    assert mask.sum() >= DEFER_ROWS
    f = hn.Filter(idx, mask)
    assert f.sketch is None
    came_back = 0
    for i, q in enumerate(queries):
        ready = f.sketch is not None
        calls.clear()
        hits, plan = idx.search(store, q, K, filter=f, ef=EF, explain=True)
        if plan.plan != "graph->exact":
            continue
        assert type(f.sketch) is (Sketch if copy == "block" else WideSketch)
        assert calls == ([True] if ready else [])  # the sketch once it is there
        assert set(hits.keys) == set(truth[i].tolist())
        forced = idx.search(store, q, K, filter=f, ef=EF, plan="exact")
        raw = idx.search(store, q, K, filter=mask, ef=EF)  # the kernel's own scan over the store
        assert list(hits.keys) == list(forced.keys) == list(raw.keys)
        np.testing.assert_allclose(hits.distances, raw.distances, rtol=1e-5)
        if ready:  # answered through the sketch, as plan="exact" is
            np.testing.assert_array_equal(hits.distances, forced.distances)
            came_back += 1
    assert came_back > len(queries) // 2


@pytest.mark.parametrize("copy", ["block", "no block"])
def test_a_batchs_queries_that_leave_come_back_for_the_sketch(anti, monkeypatch, copy) -> None:
    """A batch through a kept Filter: the queries that leave the walk for exact search are
    answered through the sketch of its block, or without a block of the store's rows (made
    for them: they are at least SKETCH_AFTER), with plan="exact"'s keys and distances, and
    the raw mask's scan's."""
    import hnsw_numba.core.block_search as block_search
    import hnsw_numba.core.filtered as filtered
    import hnsw_numba.core.filters as filters
    from hnsw_numba.core.sketch import Sketch, WideSketch

    if copy == "no block":
        monkeypatch.setattr(filters, "BLOCK_BYTES", 0)
        monkeypatch.setattr(block_search, "SKETCH_AFTER", 8)
    sketched = []
    batch = filtered.sketch_batch
    monkeypatch.setattr(filtered, "sketch_batch", lambda *a: sketched.append(a[3].shape[0]) or batch(*a))
    idx, store, _, queries, mask, truth = anti
    f = hn.Filter(idx, mask)
    keys, dists = idx.search_batch(store, queries, K, filter=f, ef=EF)
    plan = idx.last_plan
    assert plan.plan == "graph->exact" and type(f.sketch) is (Sketch if copy == "block" else WideSketch)
    assert sketched and sketched[0] >= 8  # every query that left, at once
    raw_keys, raw_dists = idx.search_batch(store, queries, K, filter=mask, ef=EF)  # the kernel's own scan
    assert recall(keys, truth) == recall(raw_keys, truth) >= 0.95
    np.testing.assert_array_equal(keys, raw_keys)
    if copy == "block":  # re-scored with the block scan's kernel: the gathering scan's to rounding
        np.testing.assert_allclose(dists, raw_dists, rtol=1e-5)
    else:  # re-scored from the store's rows with the gathering scan's own kernel
        np.testing.assert_array_equal(dists, raw_dists)
    for i in range(0, len(queries), 25):
        forced = idx.search(store, queries[i], K, filter=f, ef=EF, plan="exact")
        if keys[i].tolist() == forced.keys:
            assert dists[i].tolist() == forced.distances


def test_a_probe_from_a_sparse_list_reads_far_enough_to_tell() -> None:
    """Inner product keeps one link on many level-0 lists: a descent ending on one read 17
    links in two hops, too few to call a shortage, and 9 of 20 queries walked a region without
    allowed items (0-1 of their top-10). A third hop reads enough to send them to exact search."""
    rng = np.random.default_rng(0)
    dim, n = 32, 12000
    centres = rng.standard_normal((2, dim)).astype(np.float32) * 4
    side = np.arange(n) % 2
    x = (centres[side] + rng.standard_normal((n, dim)).astype(np.float32)) * np.float32(0.3)
    index = hn.Index(dim, metric="ip", m=8, ef_construction=32, seed=5)
    index.add(x)
    allowed = np.flatnonzero(side == 1)[:5000]  # 42 % of the items, all on the far side
    f = hn.Filter(index, allowed)
    queries = (centres[0] + rng.standard_normal((20, dim))).astype(np.float32)
    truth = allowed[exact_knn(hn.InnerProduct(), x[allowed], queries, K)[0]]
    found = [index.search(q, k=K, filter=f, ef=12).keys for q in queries]
    assert min(len(set(a) & set(t.tolist())) for a, t in zip(found, truth)) >= 8


def test_a_query_that_walked_on_below_the_line_says_why() -> None:
    """A probe below the line that did not send the query away (chance's margin, or a sample
    too small) read as if it had: "it met 0 % ...; a query meeting < 20.8 % leaves for exact"."""
    plan = planner.SearchPlan("graph", 12, 5000, 12000, 100.0, 400.0, False, probe=0.208, short_plan="exact", short_ef=12, local=0.0, walk="post")
    assert "it met 0 % allowed around it (within chance of the line, or too few links read to tell: it kept walking)" in plan.reason
    assert "kept walking" not in plan._replace(local=0.5).reason
