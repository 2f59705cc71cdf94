"""stats / repair / compact: deletion health."""

from __future__ import annotations

import numpy as np
import pytest

import hnsw_numba as hn
from hnsw_numba.core import health
from hnsw_numba.kernels.layout import COUNT_MASK
from conftest import build, clustered
from naive import recall


def test_stats_counts(small_data) -> None:
    data, _ = small_data
    idx, store = build(hn.L2(), data[:500])
    for k in range(0, 100, 2):
        idx.delete(k)
    s = idx.stats()
    assert s["live"] == 450 and s["deleted"] == 50 and s["node_count"] == 500
    assert sum(s["level_histogram"]) == 500 and s["level_histogram"][0] > 400
    assert sum(s["degree_histogram_level0"]) == 450
    assert s["unreachable_live"] == 0
    assert s["live_links_to_deleted_level0"] > 0
    assert s["bytes"]["links0"] == idx.graph_arrays.links0.nbytes


def test_repair_removes_links_to_deleted_and_keeps_recall() -> None:
    rng = np.random.default_rng(2)
    data = clustered(rng, 3000, 16, centers=50)
    queries = clustered(rng, 100, 16, centers=50)
    idx, store = build(hn.L2(), data, m=6, efc=40)
    gone = rng.choice(3000, 1800, replace=False)
    for k in gone:
        idx.delete(int(k))
    truth, _ = idx.search_batch(store, queries, 10, exact=True)
    before = recall(idx.search_batch(store, queries, 10, ef=64)[0], truth)
    changed = idx.repair(store)
    assert changed > 0
    s = idx.stats()
    assert s["live_links_to_deleted_level0"] == 0
    idx.check_integrity()
    after = recall(idx.search_batch(store, queries, 10, ef=64)[0], truth)
    # measured on this data: 0.984 before, 0.982 after (a fresh build: 0.995)
    assert after >= before - 0.02
    found = idx.search_batch(store, queries, 10, ef=64)[0]
    assert not set(found.ravel().tolist()) & set(gone.tolist())
    assert idx.repair(store) == 0  # idempotent


def test_compact_renumbers_and_keeps_results() -> None:
    rng = np.random.default_rng(4)
    data = clustered(rng, 2000, 16)
    queries = clustered(rng, 50, 16)
    keys = [f"k{i}" for i in range(2000)]
    idx, store = build(hn.Cosine(), data, keys=keys)
    gone = set(rng.choice(2000, 700, replace=False).tolist())
    gone.add(idx.graph_arrays.header[0])  # make sure the entry point goes too
    for nid in gone:
        idx.delete(f"k{nid}")
    idx.repair(store)
    exact_before = idx.search_batch(store, queries, 10, exact=True)
    old_to_new = idx.compact(store)
    assert idx.node_count == 2000 - len(gone) and idx.deleted_count == 0 and len(idx) == idx.node_count
    assert (old_to_new[sorted(gone)] == -1).all()
    kept = np.flatnonzero(old_to_new >= 0)
    np.testing.assert_array_equal(old_to_new[kept], np.arange(kept.shape[0]))
    for old in kept[::97]:
        assert idx.key(int(old_to_new[old])) == f"k{old}"
        np.testing.assert_allclose(store.vector(int(old_to_new[old])), hn.Cosine().prepare(data[old]), rtol=1e-6)
    idx.check_integrity()
    exact_after = idx.search_batch(store, queries, 10, exact=True)
    np.testing.assert_array_equal(exact_before[0], exact_after[0])
    found, _ = idx.search_batch(store, queries, 10, ef=64)
    assert recall(found, exact_after[0]) >= 0.95
    fresh, fresh_store = build(hn.Cosine(), data[kept], keys=[f"k{i}" for i in kept])
    assert recall(found, exact_after[0]) >= recall(fresh.search_batch(fresh_store, queries, 10, ef=64)[0], exact_after[0]) - 0.02
    assert "k5" in idx or 5 in gone
    # the compacted index keeps working
    v = -data[0] + 1.0
    idx.insert(store, "new", v)
    assert idx.search(store, v, 1)[0].key == "new"
    idx.check_integrity()


def _half_deleted(seed: int = 6):
    data = clustered(np.random.default_rng(seed), 400, 8)
    idx, store = build(hn.L2(), data)
    for key in range(0, 400, 2):
        idx.delete(key)
    return idx, store, data


def test_compact_with_bad_arguments_changes_nothing() -> None:
    idx, store, data = _half_deleted()
    rows, graph = store.data.copy(), idx.graph_arrays.links0.copy()
    before = idx.search_batch(store, data[1::2], 1, exact=True)[0]
    for bad in (0, -1, 2.5, "2", True):
        with pytest.raises(hn.InvalidParameterError):
            idx.compact(store, num_threads=bad)
    np.testing.assert_array_equal(store.data, rows)
    np.testing.assert_array_equal(idx.graph_arrays.links0, graph)
    np.testing.assert_array_equal(idx.search_batch(store, data[1::2], 1, exact=True)[0], before)
    idx.check_integrity()


def test_ctrl_c_during_compaction_finishes_it_before_raising(monkeypatch) -> None:
    # the store's rows have moved when the graph is built: an interrupt that stopped the
    # build would leave the old graph over moved rows (wrong keys for every answer)
    idx, store, data = _half_deleted()

    def interrupted(work, n_threads):  # Ctrl-C before any thread started its kernel
        raise KeyboardInterrupt

    monkeypatch.setattr(health, "run_parallel", interrupted)
    with pytest.raises(KeyboardInterrupt):
        idx.compact(store)
    assert idx.node_count == 200 and idx.deleted_count == 0
    idx.check_integrity()
    keys = idx.search_batch(store, data[1::2], 1, ef=64)[0][:, 0]
    np.testing.assert_array_equal(keys, np.arange(1, 400, 2))


@pytest.mark.parametrize("metric,m", [(hn.InnerProduct(), 4), (hn.InnerProduct(), 3), (hn.L2(), 2)])
def test_repair_reaches_every_live_item_at_small_m(metric, m: int) -> None:
    """repair() promises ``unreachable_live == 0``; at small m (inner product most) replacing a
    full list's last link lost its node in turn, and eight rounds of that chain left 2-10
    items no search could return."""
    rng = np.random.default_rng(0)
    n = 3000
    data = rng.standard_normal((n, 16)).astype(np.float32)
    idx = hn.Hnsw(metric, hn.HnswConfig(dim=16, max_nodes=n, m=m, ef_construction=40, seed=1))
    store = hn.InMemoryVectorStore(16, n)
    idx.insert_batch(store, np.arange(n), data)
    idx.delete_batch(rng.permutation(n)[: 3 * n // 4])
    idx.repair(store)
    assert idx.stats()["unreachable_live"] == 0
    idx.check_integrity()


def test_items_only_upper_links_reach_are_counted_lost_and_repaired() -> None:
    """A search returns what its level-0 walk meets: items that only upper-level links
    reached were counted reachable, so stats() hid them and repair() left them (keys
    re-added onto five vectors: 40-156 of 200 items found, 4 counted lost)."""
    n = 200
    rng = np.random.default_rng(5)
    protos = rng.standard_normal((5, 8)).astype(np.float32)
    index = hn.Index(8, metric="l2", m=16, seed=0)
    index.add(np.arange(n), rng.standard_normal((n, 8)).astype(np.float32))
    for _ in range(3):
        perm = rng.permutation(n)
        index.remove(perm.tolist())
        index.add(perm, protos[rng.integers(0, 5, n)])
    idx, store = index.native
    q = rng.standard_normal((5, 8)).astype(np.float32)
    assert min(len(index.search(v, k=n, ef=1000)) for v in q) < n and idx.stats()["unreachable_live"] > 0
    idx.repair(store)
    assert idx.stats()["unreachable_live"] == 0
    assert [len(index.search(v, k=n, ef=1000)) for v in q] == [n] * 5
    idx.check_integrity()


def test_repair_gives_landing_nodes_a_level0_path_to_the_entry_point() -> None:
    """A search's level-0 walk starts where its descent lands: from nodes on level 1 whose
    level-0 links only led round among themselves, items every check counted reachable were
    never found. Here the upper nodes (the entry point aside) link in a ring at level 0."""
    rng = np.random.default_rng(3)
    data = rng.standard_normal((400, 8)).astype(np.float32)
    idx, store = build(hn.L2(), data, m=4, efc=32, num_threads=1)
    a = idx.graph_arrays
    entry = idx.stats()["entry_point"]
    upper = [int(v) for v in np.flatnonzero(a.levels[:400] >= 1) if v != entry]
    for u, nxt in zip(upper, upper[1:] + upper[:1]):
        a.links0[u, 0] = (a.links0[u, 0] & ~COUNT_MASK) | 1
        a.links0[u, 1] = nxt
    lower = np.flatnonzero(a.levels[:400] == 0)[:60]

    def found() -> float:
        return float(np.mean([idx.search(store, data[v], 1, ef=400)[0].key == v for v in lower]))  # ef: every node it reaches

    assert found() < 0.5
    idx.repair(store)
    assert idx.stats()["unreachable_live"] == 0
    assert found() == 1.0
    idx.check_integrity()


@pytest.mark.parametrize("delete_entry", [False, True])
def test_repair_keeps_every_item_of_duplicated_low_dim_data(delete_entry: bool) -> None:
    """800 rows in 2-D with 104 distinct vectors, half deleted, m = 4: repair replaced full
    lists' last links until most items were lost (unreachable 0 -> 330, a search of every
    item finding 10 of 401); with the entry point deleted it reached from the entry, whose
    live in-links its own first pass removes, and linked live items to it."""
    rng = np.random.default_rng(7)
    n = 800
    x = np.round(rng.standard_normal((n, 2)) * 2).astype(np.float32)
    index = hn.Index(2, metric="l2", dtype="f16", m=4, ef_construction=50, seed=7)
    index.add(np.arange(n), x, num_threads=1)
    idx, store = index.native
    entry = idx.key(idx.stats()["entry_point"])
    gone = set(rng.choice(n, n // 2, replace=False).tolist()) - {entry}
    if delete_entry:
        gone.add(entry)
    index.remove(sorted(gone))
    live = set(range(n)) - gone
    idx.repair(store)
    idx.check_integrity()
    st = idx.stats()
    assert st["unreachable_live"] == 0 and st["live_links_to_deleted_level0"] == 0
    q = rng.standard_normal((8, 2)).astype(np.float32)
    assert all(set(idx.search(store, v, len(live), ef=n + 10).keys) == live for v in q)


@pytest.mark.parametrize("metric,m,seed", [("l2", 2, 0), ("cosine", 3, 0), ("ip", 2, 2)])
def test_repair_reaches_every_item_when_half_the_rows_are_one_vector(metric: str, m: int, seed: int) -> None:
    """Where every list near the copies is full, repair replaced a link whose node had
    another in-link, which could come from that node's own descendants: a round's lost
    nodes came back lost (L2 at m 2: 85 of 320 live items after 32 rounds). It
    replaces links off the spanning tree of the walk from the entry point."""
    rng = np.random.default_rng(seed)
    n, dim = 800, 8
    x = rng.standard_normal((n, dim)).astype(np.float32)
    x[rng.integers(0, n, n // 2)] = x[0]
    index = hn.Index(dim, metric=metric, m=m, ef_construction=50, seed=seed)
    index.add(np.arange(n), x, num_threads=1)
    idx, store = index.native
    gone = rng.choice(n, int(n * 0.6), replace=False)
    index.remove(gone.tolist())
    live = set(range(n)) - set(gone.tolist())
    idx.repair(store)
    idx.check_integrity()
    assert idx.stats()["unreachable_live"] == 0
    assert set(idx.search(store, x[1], len(live), ef=n + 10).keys) == live


def test_stats_counts_landing_nodes_cut_off_and_repair_links_them() -> None:
    """Five points, 400 copies each: every node is reachable from the entry point, but the
    descent lands where the level-0 walk cannot reach two of the groups; stats() said
    nothing and a search with k = ef = 2,000 found 1,200 items."""
    rng = np.random.default_rng(18)
    x = np.repeat(rng.standard_normal((5, 4)), 400, 0).astype(np.float32)
    index = hn.Index(4, metric="l2", m=16, ef_construction=200, seed=1)
    index.add(np.arange(2000), x, num_threads=1)
    idx, store = index.native
    st = idx.stats()
    assert st["unreachable_live"] == 0
    found = len(idx.search(store, x[0], 2000, ef=2000))
    assert (found < 2000) == (st["landings_cut_off"] > 0)
    idx.repair(store)
    assert idx.stats()["landings_cut_off"] == 0 and idx.stats()["unreachable_live"] == 0
    assert len(idx.search(store, x[0], 2000, ef=2000)) == 2000
    idx.check_integrity()


def test_stats_beside_inserts_counts_one_moment() -> None:
    """stats() read the node count once in Python and the kernels read it again: inserts
    beside it made arrays of two lengths (IndexError), and the kernels followed links to
    nodes past their count (a segfault once the first was mended)."""
    import threading
    import time

    rng = np.random.default_rng(0)
    index = hn.Index(8, metric="l2", m=6, ef_construction=40, seed=0)
    index.add(rng.standard_normal((50, 8)).astype(np.float32))
    idx = index.native[0]
    idx.stats()
    stop, errors = threading.Event(), []

    def adder() -> None:
        r, i = np.random.default_rng(1), 1000
        while not stop.is_set():
            index.add(list(range(i, i + 5)), r.standard_normal((5, 8)).astype(np.float32))
            i += 5

    t = threading.Thread(target=adder)
    t.start()
    try:
        end = time.monotonic() + 3.0
        while time.monotonic() < end:
            st = idx.stats()
            assert st["live"] + st["deleted"] == st["node_count"] == sum(st["level_histogram"])
    finally:
        stop.set()
        t.join()
    st = idx.stats()
    assert st["live"] == len(index) and st["node_count"] == idx.node_count
    idx.check_integrity()


def test_one_repair_gives_every_landing_node_a_path_where_a_region_is_cut_off() -> None:
    """Stuck landing nodes whose own search found no node with a path were linked one a
    round: 136 of 197 stayed cut off after the rounds, and 14 of 40 searches returned no
    result with 45 items live (inner product, half the rows one vector, 97 % deleted)."""
    rng = np.random.default_rng(1382)
    n, dim, m = int(rng.integers(50, 1500)), int(rng.integers(2, 9)), int(rng.integers(2, 17))
    x = rng.normal(size=(n, dim))
    x[: n // 2] = x[0]
    x = x.astype(np.float32)
    idx = hn.Hnsw(hn.InnerProduct(), hn.HnswConfig(dim=dim, max_nodes=n, m=m, ef_construction=int(rng.integers(8, 100)), seed=1382))
    store = hn.InMemoryVectorStore(dim, n)
    idx.insert_batch(store, np.arange(n), x, num_threads=1)
    gone = rng.choice(n, int(rng.choice([0.0, 0.3, 0.6, 0.9, 0.97]) * n), replace=False)
    rng.random()
    idx.delete_batch(np.unique(np.append(gone, idx.stats()["entry_point"])))
    idx.repair(store, num_threads=1)
    st = idx.stats()
    assert st["landings_cut_off"] == 0 and st["unreachable_live"] == 0
    q = np.random.default_rng(0).normal(size=(40, dim)).astype(np.float32)
    assert [len(idx.search(store, v, 10, ef=n)) for v in q] == [min(10, st["live"])] * 40
    idx.check_integrity()
