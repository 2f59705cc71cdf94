"""A kept Filter's walk single-query call (core.kept_walk): made after the first walk, it
answers as the general path does (bit for bit), leaves a query its probe sends to exact search
to the general path, and gives way to the general path whenever something it depends on
changed."""

from __future__ import annotations

import numpy as np
import pytest

import hnsw_numba as hn
import hnsw_numba.core.planner as planner
from hnsw_numba.core.errors import DimensionMismatchError, InvalidVectorError
from hnsw_numba.core.kept_walk import KeptWalk
from conftest import GeneralCalls, allowed_top_k, clustered, index_of, toward_point

N, DIM, K, EF = 3000, 16, 5, 48


@pytest.fixture(autouse=True)
def walks(monkeypatch):
    """The auto plan walks on this small index: exact rows priced as a walk's distances are."""
    monkeypatch.setattr(planner, "EXACT_ROW", 4.0)
    monkeypatch.setattr(planner, "SKETCH_ROW", 4.0)


def make(metric: str = "l2", str_keys: bool = False, dtype: str = "float32"):
    rng = np.random.default_rng(5)
    x = clustered(rng, N, DIM)
    test = x[rng.choice(N, 40, replace=False)] + rng.standard_normal((40, DIM)).astype(np.float32) * np.float32(0.5)
    idx, store, m = index_of(x, metric, str_keys=str_keys, dtype=dtype, efc=48)
    return idx, store, x, test, m


@pytest.mark.parametrize(("metric", "dtype", "plan", "share"),
                         [(metric, "float32", plan, share) for metric in ("l2", "cosine", "ip", "l2qi8") for plan, share in (("auto", 2), ("auto", 5), ("acorn", 2), ("graph", 3))]
                         + [("cosine", "float16", "post", 2), ("l2", "walk", "auto", 2), ("l2", "walk", "acorn", 4)])
def test_the_kept_walk_answers_as_the_general_path(monkeypatch, metric, dtype, plan, share) -> None:
    idx, store, x, test, m = make(metric, dtype=dtype)
    mask = np.zeros(N, bool)
    mask[::share] = True
    qs = test[:12]
    general, plans = [], []
    for q in qs:  # a new Filter each: the general path
        general.append(idx.search(store, q, K, filter=hn.Filter(idx, mask), ef=EF, plan=plan))
        plans.append(idx.last_plan)
    assert sum(p.plan.startswith("graph") and not p.plan.endswith("exact") for p in plans) >= 6
    f = hn.Filter(idx, mask)
    walked = next(q for q, p in zip(qs, plans) if not p.plan.endswith("exact"))
    idx.search(store, walked, K, filter=f, ef=EF, plan=plan)
    assert type(f.kept) is KeptWalk
    counted = GeneralCalls(monkeypatch)
    for q, a, p in zip(qs, general, plans):
        before = counted.calls
        b = idx.search(store, q, K, filter=f, ef=EF, plan=plan)
        assert b.raw == a.raw and idx.last_plan == p  # the answer, and what ran as the general path reports it
        assert counted.calls - before == int(p.plan.endswith("exact"))  # sent to exact search: the general path answers
    allowed = list(np.flatnonzero(mask))
    found = sum(len(set(a.keys) & set(allowed_top_k(idx, store, m, allowed, q, K)[0])) for a, q in zip(general, qs))
    assert found >= 0.8 * K * len(qs)  # walks, whose recall the oracle bounds (inner product's the lowest: 0.87)


def test_the_kept_walk_gives_way_when_anything_changed(monkeypatch) -> None:
    idx, store, x, test, m = make("l2")
    f = hn.Filter(idx, lambda key: key % 2 == 0)
    q = test[0]
    idx.search(store, q, K, filter=f, ef=EF)
    assert type(f.kept) is KeptWalk
    counted = GeneralCalls(monkeypatch)

    def check(k: int = K, ef=EF, query=q, expect_general: bool = True, **kw) -> None:
        before = counted.calls
        hits = idx.search(store, query, k, filter=f, ef=ef, **kw)
        assert counted.calls - before == int(expect_general)
        assert idx.last_plan.plan.startswith("graph")
        assert all(key % 2 == 0 and key in idx for key in hits.keys)
        allowed = [key for key in range(idx.node_count) if key % 2 == 0 and key in idx]
        keys, _ = allowed_top_k(idx, store, m, allowed, np.asarray(query, np.float32), k)
        assert len(set(hits.keys) & set(keys)) >= k - 1

    check(expect_general=False)
    check(k=K + 1)  # another k (recorded now) ...
    check(expect_general=True)  # ... and back
    check(expect_general=False)
    check(ef=EF + 1)  # another ef
    check(ef=None)  # the config's
    check(plan="acorn")
    check(query=q.astype(np.float64))  # converted first: the general path
    check(query=list(q))  # the general path, which records the call again ...
    check(expect_general=False)  # ... and the kept call answers
    idx.delete(20)  # a deletion: the filter's live count and its plans priced again
    check(query=x[20])
    check(query=x[20], expect_general=False)
    assert 20 not in idx.search(store, x[20], K, filter=f, ef=EF).keys
    idx.set(store, 14, x[22])  # a write: the store's version
    check(query=x[22], expect_general=True)
    check(query=x[22], expect_general=False)
    idx.insert(store, N, x[28] + np.float32(0.001))  # an allowed key added: the filter compiles again
    check(query=x[28], expect_general=True)
    check(query=x[28], expect_general=False)
    assert N in idx.search(store, x[28], K, filter=f, ef=EF).keys
    with pytest.raises(InvalidVectorError):
        idx.search(store, np.full(DIM, np.nan, np.float32), K, filter=f, ef=EF)
    with pytest.raises(DimensionMismatchError):
        idx.search(store, np.zeros(DIM + 1, np.float32), K, filter=f, ef=EF)
    other = hn.InMemoryVectorStore.from_array(store.rows()[0].copy())  # the same rows, another store
    before = counted.calls
    idx.search(other, q, K, filter=f, ef=EF)
    assert counted.calls == before + 1
    idx.compact(store)  # renumbered: the filter compiles again
    check(query=x[28], expect_general=True)
    check(query=x[28], expect_general=False)


def test_a_query_sent_to_exact_search_is_answered_by_the_general_path(monkeypatch) -> None:
    """A filter on the far side of the data: a query among its items walks (and is kept), the
    queries near the other side are sent to exact search by the probe, which the kept walk
    leaves to the general path; their answers are exact."""
    idx, store, x, test, m = make("l2")
    order, qs = toward_point(x, test, 10)
    far = order[N // 2 :]
    f = hn.Filter(idx, far)
    idx.search(store, x[far[-1]], K, filter=f, ef=EF)
    assert idx.last_plan.plan == "graph" and type(f.kept) is KeptWalk
    counted = GeneralCalls(monkeypatch)
    allowed = far.tolist()
    sent = 0
    for q in qs:
        before = counted.calls
        hits = idx.search(store, q, K, filter=f, ef=EF)
        if idx.last_plan.plan == "graph->exact":
            sent += 1
            assert counted.calls - before == 1  # the kept walk left it to the general path ...
            assert hits.keys == allowed_top_k(idx, store, m, allowed, q, K)[0]
        assert type(f.kept) is KeptWalk  # ... which keeps the walk
    assert sent > 0


def test_a_query_leaving_for_another_walk_is_answered_by_the_kept_walk(monkeypatch) -> None:
    idx, store, x, test, m = make("l2")
    order, qs = toward_point(x, test, 10)
    far = order[N // 2 :]
    general = []
    for q in qs:
        hits = idx.search(store, q, K, filter=hn.Filter(idx, far), ef=EF, plan="graph")
        general.append((hits.raw, idx.last_plan))
    assert any(p.plan == "graph->wide" for _, p in general)
    f = hn.Filter(idx, far)
    idx.search(store, qs[0], K, filter=f, ef=EF, plan="graph")
    assert type(f.kept) is KeptWalk
    counted = GeneralCalls(monkeypatch)
    for q, (raw, p) in zip(qs, general):
        hits = idx.search(store, q, K, filter=f, ef=EF, plan="graph")
        assert hits.raw == raw and idx.last_plan == p
    assert counted.calls == 0


def test_the_kept_walk_maps_str_keys() -> None:
    idx, store, x, test, m = make("cosine", str_keys=True)
    allowed = [f"k{i}" for i in range(0, N, 2)]
    f = hn.Filter(idx, allowed)
    general = [idx.search(store, q, K, filter=hn.Filter(idx, allowed), ef=EF) for q in test[:8]]
    for q, a in zip(test[:8], general):
        hits = idx.search(store, q, K, filter=f, ef=EF)
        assert type(f.kept) is KeptWalk
        assert hits.raw == a.raw and all(type(key) is str for key in hits.keys)


def test_an_ef_below_k_is_raised_to_k_as_on_the_general_path(monkeypatch) -> None:
    """``ef < k`` searches at ``ef = k``: the kept walk of ``(k, k)`` answers it, as the general path would."""
    idx, store, x, test, m = make("l2")
    mask = np.zeros(N, bool)
    mask[::2] = True
    f = hn.Filter(idx, mask)
    idx.search(store, test[0], K, filter=f, ef=3)  # recorded for (K, K, "auto")
    assert type(f.kept) is KeptWalk and f.kept.key == (K, K, "auto")
    counted = GeneralCalls(monkeypatch)
    for q in test[:6]:
        for ef in (1, 4, K):
            kept = idx.search(store, q, K, filter=f, ef=ef)
            assert kept.raw == idx.search(store, q, K, filter=hn.Filter(idx, mask), ef=K).raw
    assert counted.calls == 6 * 3  # the new Filters only
