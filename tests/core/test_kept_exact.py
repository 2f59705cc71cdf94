"""A kept Filter's exact single-query call (core.kept_exact): made after the first exact
answer, it answers as the general path does (bit for bit) and as the brute-force oracle, and
gives way to the general path whenever something it depends on changed."""

from __future__ import annotations

import numpy as np
import pytest

import hnsw_numba as hn
import hnsw_numba.core.filtered as filtered
from hnsw_numba.core.errors import DimensionMismatchError, InvalidVectorError
from conftest import GeneralCalls, allowed_top_k, index_of

N, DIM, K = 400, 24, 5


def make(metric: str = "cosine", str_keys: bool = False, dtype: str = "float32"):
    x = np.random.default_rng(4).standard_normal((N, DIM)).astype(np.float32)
    idx, store, m = index_of(x, metric, str_keys=str_keys, dtype=dtype)
    return idx, store, x, m


def queries(n: int = 6) -> np.ndarray:
    return np.random.default_rng(9).standard_normal((n, DIM)).astype(np.float32)


@pytest.mark.parametrize(("metric", "dtype", "sketch"), [(metric, "float32", sketch) for metric in ("l2", "cosine", "ip", "l2qi8") for sketch in (False, True)]
                         + [("cosine", "float16", False), ("l2", "walk", False)])
def test_the_kept_call_answers_as_the_general_path(monkeypatch, metric, dtype, sketch) -> None:
    if sketch:  # the block's int8 sketch from the first row
        monkeypatch.setattr(filtered, "SKETCH_ROWS", dict.fromkeys(filtered.SKETCH_ROWS, 1))
    idx, store, x, m = make(metric, dtype=dtype)
    mask = np.zeros(N, bool)
    mask[::13] = True
    f = hn.Filter(idx, mask)
    general = [idx.search(store, q, K, filter=hn.Filter(idx, mask)) for q in queries()]  # a new Filter: the general path
    assert idx.last_plan.plan == "exact"
    first = idx.search(store, queries()[0], K, filter=f)
    assert f.kept is not None and (f.kept.codes is not None) == sketch
    counted = GeneralCalls(monkeypatch)
    kept = [first] + [idx.search(store, q, K, filter=f) for q in queries()[1:]]
    assert counted.calls == 0
    assert idx.last_plan.plan == "exact"
    allowed = list(np.flatnonzero(mask))
    for a, b, q in zip(general, kept, queries()):
        assert b.raw == a.raw
        keys, dists = allowed_top_k(idx, store, m, allowed, q, K)
        assert b.keys == keys
        np.testing.assert_allclose(b.distances, dists, rtol=1e-4, atol=2e-3 if metric == "l2qi8" else 1e-5)  # the oracle reads the stored (rounded) rows


def test_the_kept_call_gives_way_when_anything_changed(monkeypatch) -> None:
    idx, store, x, m = make("l2")
    f = hn.Filter(idx, lambda key: key % 7 == 0)
    q = queries(1)[0]
    idx.search(store, q, K, filter=f, ef=40)
    counted = GeneralCalls(monkeypatch)

    def check(k: int = K, ef=40, query=q, expect_general: bool = True, **kw) -> None:
        before = counted.calls
        hits = idx.search(store, query, k, filter=f, ef=ef, **kw)
        assert counted.calls - before == int(expect_general)
        allowed = [key for key in range(idx.node_count) if key % 7 == 0 and key in idx]
        keys, dists = allowed_top_k(idx, store, m, allowed, np.asarray(query, np.float32), k)
        assert hits.keys == keys
        np.testing.assert_allclose(hits.distances, dists, rtol=1e-4, atol=1e-4)

    check(expect_general=False)
    check(k=K + 1)  # another k (recorded now) ...
    check(expect_general=True)  # ... and back
    check(expect_general=False)
    check(ef=41)  # another ef
    check(ef=None)  # the config's
    check(plan="exact")
    check(query=q.astype(np.float64))  # converted first: the general path
    check(query=list(q))  # the general path, which records the call again ...
    check(expect_general=False)  # ... and the kept call answers
    idx.delete(21)  # a deletion: the filter's live count and its plan priced again, then kept again
    check(query=x[21] + np.float32(0.01))
    assert idx.last_plan.live == N - 1
    check(query=x[21] + np.float32(0.01), expect_general=False)
    assert idx.last_plan.live == N - 1
    idx.set(store, 14, x[21])  # a write: the block is made again
    check(query=x[21], expect_general=True)
    check(query=x[21], expect_general=False)
    idx.insert(store, N, x[28] + np.float32(0.001))  # an allowed key added: the filter compiles again
    check(query=x[28], expect_general=True)
    check(query=x[28], expect_general=False)
    with pytest.raises(InvalidVectorError):
        idx.search(store, np.full(DIM, np.nan, np.float32), K, filter=f, ef=40)
    with pytest.raises(DimensionMismatchError):
        idx.search(store, np.zeros(DIM + 1, np.float32), K, filter=f, ef=40)
    other = hn.InMemoryVectorStore.from_array(store.rows()[0].copy())  # the same rows, another store
    before = counted.calls
    idx.search(other, q, K, filter=f, ef=40)
    assert counted.calls == before + 1


def test_the_kept_call_maps_str_keys() -> None:
    idx, store, x, m = make("cosine", str_keys=True)
    f = hn.Filter(idx, [f"k{i}" for i in range(0, N, 9)])
    for q in queries():
        hits = idx.search(store, q, K, filter=f)
        assert f.kept is not None
        keys, dists = allowed_top_k(idx, store, m, [f"k{i}" for i in range(0, N, 9)], q, K)
        assert hits.keys == keys
        np.testing.assert_allclose(hits.distances, dists, rtol=1e-4, atol=1e-5)


def test_the_kept_call_gives_way_to_a_rename_meanwhile(monkeypatch) -> None:
    """A rename overlapping the kept call (made here by its kernel's entry point) sends the query
    to the general path, as the rename loop around the general path reruns it."""
    idx, store, x, m = make("l2")
    idx.delete(4)
    f = hn.Filter(idx, lambda key: key % 7 == 0)
    q = queries(1)[0]
    idx.search(store, q, K, filter=f)
    entry = f.kept.entry

    def renaming(*args):
        idx.rename_deleted([4], [N + 4])
        return entry(*args)

    f.kept = f.kept._replace(entry=renaming)
    counted = GeneralCalls(monkeypatch)
    hits = idx.search(store, q, K, filter=f)
    assert counted.calls == 1
    assert hits.raw == idx.search(store, q, K, filter=hn.Filter(idx, lambda key: key % 7 == 0)).raw
