"""A single query's exact scan over many allowed rows without a kept block runs in one part per
core: the parts' merged top-k is the oracle's, through the exact plan and through a walk that
leaves for exact search, for raw masks and kept Filters, with deleted rows skipped."""

from __future__ import annotations

import numpy as np
import pytest

import hnsw_numba as hn
import hnsw_numba.core.filtered as filtered
from hnsw_numba.core import planner
from hnsw_numba.core.filtered import FilteredSearch
from hnsw_numba.datasets import clustered_embeddings
from conftest import build, toward_point
from naive import exact_knn

pytestmark = pytest.mark.usefixtures("rules_each_call")  # the rules change between searches of one Filter

K = 10


@pytest.fixture(scope="module")
def far():
    """2,000 clustered rows, the allowed ones the far half from the queries, a few of them deleted."""
    x, test = clustered_embeddings(2000, 16, n_queries=100, seed=7)
    idx, store = build(hn.L2(), x, seed=2, extra=0)
    order, queries = toward_point(x, test, 12)
    mask = np.zeros(x.shape[0], bool)
    mask[order[1000:]] = True
    gone = order[1000:1010]
    idx.delete_batch(gone)
    allowed = np.setdiff1d(np.flatnonzero(mask), gone)
    return idx, store, x, queries, mask, exact_knn(hn.L2(), x, queries, K, allowed=allowed)


@pytest.fixture
def split_calls(monkeypatch):
    """Split from 200 rows on two cores, and record each split scan's part count."""
    monkeypatch.setattr(filtered, "SPLIT_ROWS", 200)
    monkeypatch.setattr(filtered, "available_cores", lambda: 2)
    calls = []
    scan = FilteredSearch._split_scan
    monkeypatch.setattr(FilteredSearch, "_split_scan", lambda self, *a: calls.append(1) or scan(self, *a))
    return calls


@pytest.mark.parametrize("held", [False, True])
def test_split_exact_plan_is_the_oracle(far, split_calls, held, monkeypatch) -> None:
    idx, store, _, queries, mask, (rows, dists) = far
    monkeypatch.setattr(filtered, "BLAS_ROWS", 10**9)  # a kept Filter's block ...
    monkeypatch.setattr(hn.core.filters, "BLOCK_BYTES", 0)  # ... too large to copy
    f = hn.Filter(idx, mask) if held else mask
    for q, r, d in zip(queries, rows, dists):
        hits = idx.search(store, q, K, filter=f, plan="exact")
        assert list(hits.keys) == r.tolist()
        np.testing.assert_allclose(hits.distances, d, rtol=1e-5)
    assert len(split_calls) == len(queries)


def test_split_after_the_walk_leaves(far, split_calls, monkeypatch) -> None:
    idx, store, _, queries, mask, (rows, dists) = far
    monkeypatch.setattr(planner, "EXACT_ROW", 0.3)  # exact rows priced as wide ones: at 16-d the
    monkeypatch.setattr(planner, "EXACT_DIM", 0.0)  # planner would answer 1,000 rows exactly outright
    monkeypatch.setattr(planner, "SKETCH_ROW", 0.3)  # (through a kept Filter's sketch too)
    monkeypatch.setattr(planner, "SKETCH_DIM", 0.0)
    left = 0
    for q, r, d in zip(queries, rows, dists):
        before = len(split_calls)
        hits, plan = idx.search(store, q, K, filter=mask, ef=16, plan="auto", explain=True)
        if plan.plan == "graph->exact":
            left += 1
            assert len(split_calls) == before + 1
            assert list(hits.keys) == r.tolist()
            np.testing.assert_allclose(hits.distances, d, rtol=1e-5)
        else:
            assert len(split_calls) == before
    assert left > len(queries) // 2


def test_no_split_below_the_line_or_on_one_core(far, split_calls, monkeypatch) -> None:
    idx, store, _, queries, mask, (rows, _) = far
    monkeypatch.setattr(filtered, "available_cores", lambda: 1)
    assert list(idx.search(store, queries[0], K, filter=mask, plan="exact").keys) == rows[0].tolist()
    monkeypatch.setattr(filtered, "available_cores", lambda: 2)
    monkeypatch.setattr(filtered, "SPLIT_ROWS", 10**9)
    assert list(idx.search(store, queries[0], K, filter=mask, plan="exact").keys) == rows[0].tolist()
    assert split_calls == []


@pytest.mark.parametrize("rows", [200, 10**9])
def test_split_scans_race_deletes_inserts_and_compaction(split_calls, monkeypatch, rows) -> None:
    """Split exact searches from one thread while another deletes and inserts and this one
    compacts and resizes: every answer holds allowed keys only, none deleted before the search
    began, each at its vector's distance, nearest first."""
    import threading

    monkeypatch.setattr(filtered, "SPLIT_ROWS", rows)
    rng = np.random.default_rng(11)
    n0, extra, dim = 1500, 600, 8
    vecs = rng.standard_normal((n0 + extra, dim)).astype(np.float32)
    idx, store = build(hn.L2(), vecs[:n0], m=6, efc=32, extra=64)
    allowed = set(range(0, n0 + extra, 2))
    deleted: set[int] = set()
    lock = threading.Lock()
    stop = threading.Event()
    errors: list = []

    def searcher() -> None:
        r = np.random.default_rng(5)
        try:
            while not stop.is_set():
                with lock:
                    gone = set(deleted)
                q = r.standard_normal(dim).astype(np.float32)
                hits = idx.search(store, q, K, filter=allowed, plan="exact")
                assert list(hits.distances) == sorted(hits.distances)
                for key, dist in zip(hits.keys, hits.distances):
                    assert key in allowed and key not in gone, key
                    assert abs(float(((vecs[key] - q) ** 2).sum()) - dist) <= 1e-3 * max(1.0, dist)
        except BaseException as exc:
            errors.append(exc)

    def worker() -> None:
        r = np.random.default_rng(6)
        try:
            for key in range(n0, n0 + extra):
                if stop.is_set():
                    break
                idx.insert(store, key, vecs[key], grow=True)
                victim = int(r.integers(key))
                if victim in idx:
                    idx.delete(victim)
                    with lock:  # after the delete: a search may return a key until its delete returns
                        deleted.add(victim)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=searcher), threading.Thread(target=worker)]
    for t in threads:
        t.start()
    try:
        for _ in range(3):
            idx.compact(store)
            idx.resize(idx.max_nodes + 64)
            with idx.lock.exclusive():  # a store resize copies rows: no insert may write meanwhile
                store.resize(max(store.max_nodes, idx.max_nodes))
    finally:
        threads[1].join()
        stop.set()
        threads[0].join()
    assert not errors, errors[0]
    assert (len(split_calls) > 10) == (rows == 200)
    idx.check_integrity()
