"""The filtered descent (plan="descend", on request): a query whose probe finds the allowed
items away from it descends again through allowed nodes only and walks from where that ends
("graph->descend"); it keeps recall on this small index against the brute-force oracle and
shows in the plan; the auto plan answers such queries exactly."""

from __future__ import annotations

import numpy as np
import pytest

import hnsw_numba as hn
from hnsw_numba.core import planner
from hnsw_numba.core.planner import choose_plan
from hnsw_numba.datasets import clustered_embeddings
from hnsw_numba.kernels.filtered import PLAN_DESCEND
from conftest import build, explain_each, toward_point
from naive import exact_knn, recall

K = 10
EF = 100


@pytest.fixture(scope="module")
def anti():
    """Clustered data; the allowed share is the part farthest from a point, the queries are
    the test points nearest it (the allowed items lie away from every query)."""
    n, dim = 4000, 16
    x, test = clustered_embeddings(n, dim, n_queries=200, seed=7)
    idx, store = build(hn.L2(), x, seed=2, extra=0, num_threads=1)  # one thread: the same graph, the same recall, every run
    order, queries = toward_point(x, test)
    return idx, store, x, queries, order


def far(x: np.ndarray, order: np.ndarray, share: float) -> np.ndarray:
    mask = np.zeros(x.shape[0], bool)
    mask[order[-int(share * x.shape[0]) :]] = True
    return mask


@pytest.mark.parametrize("share", [0.5, 0.2])
def test_forced_descent_keeps_recall(anti, share) -> None:
    idx, store, x, queries, order = anti
    mask = far(x, order, share)
    truth = exact_knn(hn.L2(), x, queries, K, allowed=np.flatnonzero(mask))[0]
    f = hn.Filter(idx, mask)
    found, plans = explain_each(idx, store, queries, K, filter=f, ef=EF, plan="descend")
    for plan in plans:
        assert plan.forced and plan.short_plan == "descend" and plan.probe > 0.0
        if plan.switched:
            assert plan.plan == "graph->descend" and plan.walk == "acorn" and plan.ef == plan.short_ef
            assert "filtered descent" in plan.reason
    assert sum(p.switched for p in plans) > len(queries) // 2
    assert recall(found, truth) >= 0.95
    keys, _ = idx.search_batch(store, queries, K, filter=f, ef=EF, plan="descend")
    assert recall(keys, truth) >= 0.95
    assert idx.last_plan.plan == "graph->descend" and idx.last_plan.switched > len(queries) // 2


def test_exact_with_a_wide_beam(anti) -> None:
    """With a beam as wide as the index the descent's walk returns the exact filtered top-k."""
    idx, store, x, queries, order = anti
    mask = far(x, order, 0.5)
    truth = exact_knn(hn.L2(), x, queries, K, allowed=np.flatnonzero(mask))[0]
    keys, _ = idx.search_batch(store, queries, K, filter=mask, ef=x.shape[0], plan="descend")
    assert (keys == truth).all()


def test_few_allowed_items_start_from_the_seeds(anti) -> None:
    """A filter with nothing allowed on the upper levels around the entry point still answers."""
    idx, store, x, queries, order = anti
    mask = far(x, order, 0.01)
    truth = exact_knn(hn.L2(), x, queries, K, allowed=np.flatnonzero(mask))[0]
    keys, _ = idx.search_batch(store, queries, K, filter=mask, ef=EF, plan="descend")
    assert recall(keys, truth) >= 0.95


def test_auto_answers_short_queries_exactly_whatever_the_price(anti, monkeypatch) -> None:
    """The descent is taken on request only: exact rows priced high, the auto plan still
    answers a short query exactly (the descent loses recall on large indexes)."""
    idx, store, x, queries, order = anti
    mask = far(x, order, 0.5)
    truth = exact_knn(hn.L2(), x, queries[:1], K, allowed=np.flatnonzero(mask))[0]
    monkeypatch.setattr(planner, "EXACT_ROW", 50.0)  # dearer than the wider walk and the descent
    hits, plan = idx.search(store, queries[0], K, filter=mask, ef=EF, explain=True)
    assert not plan.forced and plan.short_plan == "exact" and not plan.code & PLAN_DESCEND
    assert plan.plan == "graph->exact" and plan.exact_cost > plan.short_cost
    assert set(hits.keys) == set(truth[0].tolist())


def test_planner_short_plans() -> None:
    big = choose_plan(500_000, 1_000_000, 32, 64, "descend")
    assert big.short_plan == "descend" and big.short_ef == int(64 * planner.DESCEND_WIDEN) and big.code & PLAN_DESCEND
    assert choose_plan(500_000, 1_000_000, 32, 64, "auto").short_plan == "exact"
    assert choose_plan(3_000, 100_000, 32, 64, "auto").plan == "exact"
    forced = choose_plan(3_000, 100_000, 32, 64, "descend")
    assert forced.forced and forced.short_plan == "descend" and forced.plan.startswith("graph")
    assert choose_plan(500_000, 1_000_000, 32, 64, "graph").short_plan == "wide"  # a forced walk widens
