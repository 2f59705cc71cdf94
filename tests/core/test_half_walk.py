"""A large insert into a float32 store walks a float16 copy made for it (core/half_walk.py)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import hnsw_numba as hn
from hnsw_numba.core import half_walk
from hnsw_numba.core.store import float16_resolves
from hnsw_numba.kernels.layout import F16Rows, F32Rows, WalkRows
from conftest import clustered
from naive import exact_knn, recall

DIM = 16


@pytest.fixture(autouse=True)
def _small_batches_take_the_copy(monkeypatch) -> None:
    """Batches from 1,024 new nodes take a copy here (small data, fast tests)."""
    monkeypatch.setattr(half_walk, "HALF_WALK_MIN", 1024)


def _index(n: int, seed: int = 3) -> tuple[hn.Hnsw, hn.InMemoryVectorStore]:
    idx = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=DIM, max_nodes=n, m=8, ef_construction=64, seed=seed))
    return idx, hn.InMemoryVectorStore(DIM, n)


def _copies_at_stop(monkeypatch, state) -> list:
    """Patch ``HalfWalks.stop`` to record, under ``alloc``, each copy and the store rows it
    stands for (the rows below the node count) just before the copy is dropped."""
    seen = []
    stop = half_walk.HalfWalks.stop

    def record(self, rows):
        if type(rows) is WalkRows:
            with state.alloc:
                n = state.graph.node_count
                seen.append((rows.bits[:n].view(np.float16).copy(), rows.data[:n].copy()))
        stop(self, rows)

    monkeypatch.setattr(half_walk.HalfWalks, "stop", record)
    return seen


def test_which_batches_walk_a_copy(monkeypatch) -> None:
    data = np.zeros((4, DIM), np.float32)
    rows = F32Rows(data)
    n = half_walk.HALF_WALK_MIN
    assert half_walk.wants_half_walk(rows, n, n * half_walk.HALF_WALK_SHARE)
    assert not half_walk.wants_half_walk(rows, n, n * half_walk.HALF_WALK_SHARE + 1)  # a small share of the rows
    assert not half_walk.wants_half_walk(rows, n - 1, n - 1)  # a small batch
    assert not half_walk.wants_half_walk(F16Rows(data.view(np.uint16)[:, :DIM]), n, n)  # already half the bytes
    assert not half_walk.wants_half_walk(WalkRows(data.view(np.uint16)[:, :DIM], data), n, n)  # a walk copy of its own
    monkeypatch.setenv("HNSW_NUMBA_HALF_WALK", "0")
    assert not half_walk.wants_half_walk(rows, n, n)
    monkeypatch.setenv("HNSW_NUMBA_HALF_WALK", "1")
    monkeypatch.setattr(half_walk, "available_memory", lambda: n * DIM * 2 * 2 - 1)  # the copy needs half of what is left
    assert not half_walk.wants_half_walk(rows, n, n)


def test_a_large_batch_builds_the_walk_copy_stores_graph_and_leaves_the_store_as_it_was(monkeypatch) -> None:
    n = 2000
    data = clustered(np.random.default_rng(8), n, DIM)
    idx, store = _index(n)
    seen = _copies_at_stop(monkeypatch, idx.state)
    idx.insert_batch(store, np.arange(n), data, num_threads=1)
    assert len(seen) == 1 and idx.state.half_walks.active() == 0
    np.testing.assert_array_equal(seen[0][0], seen[0][1].astype(np.float16))  # the copy was every row rounded
    assert not store.walk_copy and type(store.rows()) is F32Rows  # nothing of it stays
    twin, twin_store = _index(n)
    twin.insert_batch(hn.InMemoryVectorStore(DIM, n, walk_copy=True), np.arange(n), data, num_threads=1)
    np.testing.assert_array_equal(idx.graph_arrays.links0[:n], twin.graph_arrays.links0[:n])
    queries = data[:100] + 0.05
    found, dist = idx.search_batch(store, queries, 10, ef=64)
    truth, truth_d = exact_knn(hn.L2(), data, queries, 10)
    assert recall(found, truth) >= 0.97
    hit = found[:, 0] == truth[:, 0]  # answers carry the float32 rows' distances
    np.testing.assert_allclose(dist[hit, 0], truth_d[hit, 0], rtol=1e-4, atol=1e-5)


def test_a_first_large_batch_compiles_only_the_walks_insert_kernel(monkeypatch) -> None:
    """The insert kernel is made ready (compiled in a fresh cache) for the rows the walk will
    read, before the first lock: a first large batch never asks for the float32 one too."""
    import hnsw_numba.core.mutation as mutation

    asked = []
    step = mutation.compile_step
    monkeypatch.setattr(mutation, "compile_step", lambda kernel, args, rows, *a: asked.append(type(rows)) or step(kernel, args, rows, *a))
    n = 1100
    idx, store = _index(n)
    idx.insert_batch(store, np.arange(n), clustered(np.random.default_rng(15), n, DIM), num_threads=1)
    assert asked and set(asked) == {WalkRows}


def test_small_batches_and_switched_off_walk_the_float32_rows(monkeypatch) -> None:
    n = 1500
    data = clustered(np.random.default_rng(9), n, DIM)
    for env, batch in (("1", 500), ("0", n)):
        monkeypatch.setenv("HNSW_NUMBA_HALF_WALK", env)
        idx, store = _index(n)
        seen = _copies_at_stop(monkeypatch, idx.state)
        for s in range(0, n, batch):
            idx.insert_batch(store, np.arange(s, s + batch), data[s : s + batch], num_threads=1)
        assert seen == []
        monkeypatch.undo()


def test_rows_beyond_float16_walk_the_float32_rows(monkeypatch) -> None:
    n = 1200
    data = clustered(np.random.default_rng(10), n, DIM) * 1e4  # past 65504
    assert np.abs(data).max() > 65504
    idx, store = _index(n)
    seen = _copies_at_stop(monkeypatch, idx.state)
    idx.insert_batch(store, np.arange(n), data, num_threads=1)
    assert seen == []
    found, _ = idx.search_batch(store, data[:50], 1, ef=32)
    assert (found[:, 0] == np.arange(50)).mean() >= 0.98


@pytest.mark.parametrize("offset, spread", [(40.0, 0.01), (0.0, 1e-9)])
def test_rows_float16_would_merge_walk_the_float32_rows(monkeypatch, offset: float, spread: float) -> None:
    """Rows closer together than float16's resolution (a large offset, values below its
    smallest) round to equal copies: walked, recall@10 fell to 0.47-0.74 on 20,000 rows."""
    n = 3000
    rng = np.random.default_rng(12)
    data = (offset + rng.standard_normal((n, DIM)) * spread).astype(np.float32)
    queries = (offset + rng.standard_normal((50, DIM)) * spread).astype(np.float32)
    idx, store = _index(n)
    seen = _copies_at_stop(monkeypatch, idx.state)
    idx.insert_batch(store, np.arange(n), data, num_threads=1)
    assert seen == []
    found, _ = idx.search_batch(store, queries, 10, ef=64)
    assert recall(found, exact_knn(hn.L2(), data, queries, 10)[0]) >= 0.95


def test_float16_resolves_tells_spread_from_rounding() -> None:
    rng = np.random.default_rng(13)
    assert float16_resolves(rng.standard_normal((2000, 32)).astype(np.float32))
    assert float16_resolves((40 + rng.standard_normal((2000, 32))).astype(np.float32))  # share ~0.01
    assert not float16_resolves((40 + 0.03 * rng.standard_normal((2000, 32))).astype(np.float32))
    assert not float16_resolves((1e-9 * rng.standard_normal((2000, 32))).astype(np.float32))
    assert float16_resolves(np.ones((600, 8), np.float32))  # all equal: nothing to tell apart
    twice = np.repeat(rng.standard_normal((300, 16)).astype(np.float32), 2, axis=0)[rng.permutation(600)]
    assert float16_resolves(twice)  # exact duplicates are no rounding: they were refused
    # a tight group among spread rows: the median rule passed a tenth of the rows at 100 +- 0.002
    group = rng.standard_normal((4000, 8)).astype(np.float32) * 30 + 100
    group[:400] = 100 + 0.002 * rng.standard_normal((400, 8))
    assert not float16_resolves(group[rng.permutation(4000)])
    # pairs of near copies (the same text embedded twice) tie, and the walk's re-scoring orders them
    unit = rng.standard_normal((400, 64)).astype(np.float32)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    unit[::33] = unit[1::33] + np.float32(1e-6) * rng.standard_normal((13, 64)).astype(np.float32)
    assert float16_resolves(unit)
    # a group of 1.2 % of the rows, below what a share of the sample rows allowed
    small = (30 * rng.standard_normal((10_000, 8))).astype(np.float32)
    small[:120] = 100 + 0.002 * rng.standard_normal((120, 8))
    assert not float16_resolves(small[rng.permutation(10_000)])
    # groups of 4-11 near copies of unit vectors (texts embedded again): the re-scoring orders them
    base = rng.standard_normal((4000, 128))
    copies = [base] + [base[i] + 1e-5 * rng.standard_normal((int(c), 128)) for i, c in enumerate(rng.integers(3, 11, 600))]
    near = np.concatenate(copies)
    near = (near / np.linalg.norm(near, axis=1, keepdims=True)).astype(np.float32)
    assert float16_resolves(near[rng.permutation(near.shape[0])])
    # groups of 31 rows at 0.002 about spread centres, added group by group: 0.82 of the top-10 at any ef
    centres = rng.uniform(-100, 100, (64, 8))
    grouped = np.concatenate([rng.uniform(-100, 100, (8000, 8))] + [c + 0.002 * rng.standard_normal((31, 8)) for c in centres])
    assert not float16_resolves(grouped.astype(np.float32))
    # a group written last: a sample step rounded down never reached the batch's tail
    tail = np.concatenate([rng.standard_normal((512, 8)), 1 + 2e-4 * rng.standard_normal((500, 8))]).astype(np.float32)
    assert not float16_resolves(tail)


def test_a_tight_group_among_spread_rows_walks_the_float32_rows() -> None:
    """float16 merges the group's rows (its step at 100 is 0.06): through a walk copy queries
    in it found 0.045 of their top-10, after a build's float16 walk 0.75 (35 % of 18,000 rows)."""
    rng = np.random.default_rng(14)
    x = (100 + 30 * rng.standard_normal((6000, 8))).astype(np.float32)
    x[: 2000] = 100 + 0.002 * rng.standard_normal((2000, 8))
    x = x[rng.permutation(6000)]
    q = (100 + 0.002 * rng.standard_normal((30, 8))).astype(np.float32)
    truth = exact_knn(hn.L2(), x, q, 10)[0]
    index = hn.Index(8, metric="l2", seed=0)
    index.add(x)
    assert recall(index.search(q, 10, ef=64)[0], truth) >= 0.99  # 0.91-0.96 walked in float16 (seeds 14-16)
    with pytest.raises(hn.InvalidVectorError, match="cannot tell these vectors apart"):
        hn.Index(8, metric="l2", dtype="f32+f16").add(x)


def test_rows_written_beside_a_build_reach_its_copy(monkeypatch) -> None:
    """Inserts and ``set`` beside a large insert write their rows into the copy it walks:
    when the copy is dropped it equals every row below the node count, rounded. The other
    thread's first half runs after the copy is made and before the linking starts (so it
    surely writes into a live copy), its second half while the linking runs."""
    import hnsw_numba.core.mutation as mutation

    n0, big, small = 600, 3000, 40
    rng = np.random.default_rng(12)
    data = clustered(rng, n0 + big + 10 * small, DIM)
    n = data.shape[0]
    idx = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=DIM, max_nodes=n, m=8, ef_construction=64, seed=4))
    store = hn.InMemoryVectorStore(DIM, n)
    idx.insert_batch(store, np.arange(n0), data[:n0], num_threads=1)
    seen = _copies_at_stop(monkeypatch, idx.state)
    moved = data[:n0] + rng.normal(0, 0.5, (n0, DIM)).astype(np.float32)
    copied, first_half, errors = threading.Event(), threading.Event(), []
    start, run_kernel = half_walk.HalfWalks.start, mutation.run_kernel

    def start_then_signal(self, *args):
        rows = start(self, *args)
        if type(rows) is WalkRows:
            copied.set()
        return rows

    def link_after_first_half(state, kern, rows, *args):
        if type(rows) is WalkRows:
            assert first_half.wait(60)
        run_kernel(state, kern, rows, *args)

    monkeypatch.setattr(half_walk.HalfWalks, "start", start_then_signal)
    monkeypatch.setattr(mutation, "run_kernel", link_after_first_half)

    def others() -> None:
        try:
            assert copied.wait(60)
            for i in range(10):
                if i == 5:
                    first_half.set()
                s = n0 + big + i * small
                idx.insert_batch(store, np.arange(s, s + small), data[s : s + small], num_threads=1)
                for key in range(i * 30, i * 30 + 30):
                    idx.set(store, key, moved[key])
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)
        finally:
            first_half.set()

    t = threading.Thread(target=others)
    t.start()
    idx.insert_batch(store, np.arange(n0, n0 + big), data[n0 : n0 + big], num_threads=2)
    t.join()
    assert errors == []
    assert len(seen) == 1
    half, rows = seen[0]
    assert rows.shape[0] >= n0 + big + 5 * small  # the first half's rows are among them
    np.testing.assert_array_equal(half, rows.astype(np.float16))
    final = data.copy()
    final[:300] = moved[:300]
    found, _ = idx.search_batch(store, final, 1, ef=64)
    assert (found[:, 0] == np.arange(n)).mean() >= 0.99


def test_a_held_copy_follows_growth_and_is_made_again_after_rows_change_behind_it(monkeypatch) -> None:
    """Batches inside ``hold`` share one copy; a store that grew, or whose rows changed
    without ``written`` (a compaction between batches, a direct store write), gets a new one."""
    n = 3000
    data = clustered(np.random.default_rng(14), n, DIM)
    idx = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=DIM, max_nodes=600, m=8, ef_construction=64, seed=5))
    store = hn.InMemoryVectorStore(DIM, 600)
    state = idx.state
    seen = _copies_at_stop(monkeypatch, state)
    made = []  # copies made
    half_rows = half_walk._half_rows
    monkeypatch.setattr(half_walk, "_half_rows", lambda *a: made.append(1) or half_rows(*a))
    with state.half_walks.hold(store):
        for s in range(0, 1500, 300):  # grows at 600 and 1200: a new copy each time
            idx.insert_batch(store, np.arange(s, s + 300), data[s : s + 300], num_threads=1, grow=True)
        assert state.half_walks.active() == 1
        store.write(np.arange(10), data[2000:2010])  # behind the copy's back
        idx.insert_batch(store, np.arange(1500, 1800), data[1500:1800], num_threads=1, grow=True)
    assert state.half_walks.active() == 0
    assert len(seen) == 6
    for half, rows in seen:  # every batch walked rows equal to the store's, rounded
        np.testing.assert_array_equal(half, rows.astype(np.float16))
    assert len(made) == 4  # batch 1, after each growth (600 -> 1200 -> 2400 rows), after the direct write


def test_a_failed_link_drops_the_copy(monkeypatch) -> None:
    import hnsw_numba.core.mutation as mutation

    n = 1200
    data = clustered(np.random.default_rng(13), n, DIM)
    idx, store = _index(n)

    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(mutation, "run_kernel", fail)
    with pytest.raises(KeyboardInterrupt):
        idx.insert_batch(store, np.arange(n), data, num_threads=1)
    assert idx.state.half_walks.active() == 0
