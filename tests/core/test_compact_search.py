"""Searches that overlap ``compact()`` never mix old NodeIds with moved vectors."""

from __future__ import annotations

import threading

import numpy as np

import hnsw_numba as hn
from conftest import wrong_hits_during


def test_compact_during_searches_returns_true_distances() -> None:
    """Every hit's distance is the distance to its key's vector, and no deleted key comes back.

    Fails before searches detected a concurrent compaction: compaction rewrites the
    store's rows in place, and searches on the old graph returned keys with other
    vectors' distances, deleted keys among them.
    """
    rng = np.random.default_rng(5)
    n, dim = 20000, 16
    data = rng.standard_normal((n, dim)).astype(np.float32)
    queries = rng.standard_normal((64, dim)).astype(np.float32)
    idx = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=dim, max_nodes=n, m=8, ef_construction=32, seed=1))
    store = hn.InMemoryVectorStore(dim, n)
    idx.insert_batch(store, np.arange(n), data)
    idx.delete_batch(np.arange(0, n, 2))
    bad = wrong_hits_during(idx, store, data, queries, lambda: idx.compact(store), batch_rows=8,
                            excluded=lambda key: key % 2 == 0)
    assert not bad, bad[:5]
    assert len(idx) == n // 2
    idx.check_integrity()


def test_a_str_key_search_overlapped_by_a_compaction_and_a_shrink_runs_again() -> None:
    """A single search over str keys looks up its NodeIds' keys after the kernel. A
    compaction and a resize down to the live nodes while the kernel ran left a key map
    shorter than the NodeIds it found: ``IndexError: index 40 is out of bounds for axis 0
    with size 34`` (the race harness) where the search waits for them and runs again."""
    rng = np.random.default_rng(11)
    data = rng.standard_normal((60, 8)).astype(np.float32)
    idx = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=8, max_nodes=60, m=4, ef_construction=16, seed=1))
    store = hn.InMemoryVectorStore(8, 60)
    keys = [f"k{i}" for i in range(60)]
    idx.insert_batch(store, keys, data, num_threads=1)
    assert idx.search(store, data[50], 3)[0].key == "k50"  # binds the single-query path
    single = idx.search_one.__self__
    bound = single.bound

    def shrink() -> None:
        idx.delete_batch(keys[:40])
        idx.compact(store)
        idx.resize(20)

    def kernel_then_shrink(*args):
        out = bound.entry(*args)
        thread = threading.Thread(target=shrink)
        thread.start()
        thread.join()
        return out

    single.bound = bound._replace(entry=kernel_then_shrink)
    hits = idx.search(store, data[50], 3)
    assert len(idx) == 20 and idx.max_nodes == 20
    assert hits[0].key == "k50" and hits[0].distance == 0.0 and hits[0].node_id == idx.node_id("k50")
    assert all(h.key in keys[40:] for h in hits)


def test_a_settled_answer_is_never_paired_with_a_compaction_since_its_search(monkeypatch) -> None:
    """A search that overlapped renames is settled (its nodes' distances and keys read again);
    a compaction between the search and the settling renumbered its NodeIds, and the
    settling paired them with moved rows: right keys, other vectors' distances."""
    from hnsw_numba.core import renamed, single

    rng = np.random.default_rng(8)
    n, dim = 600, 8
    data = rng.standard_normal((n, dim)).astype(np.float32)
    queries = rng.standard_normal((20, dim)).astype(np.float32)

    def fresh():
        idx = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=dim, max_nodes=n, m=8, ef_construction=40, seed=1))
        store = hn.InMemoryVectorStore(dim, n)
        idx.insert_batch(store, np.arange(n), data)
        idx.delete_batch(np.arange(0, n, 3))  # the compaction moves rows and renumbers
        return idx, store

    def true_distances(keys, dists):
        for key, d, q in zip(keys, dists, queries):
            np.testing.assert_allclose(d, ((data[key] - q) ** 2).sum(axis=1), rtol=1e-4, atol=1e-5)
            assert not (key % 3 == 0).any()

    # batches and filtered single queries: compacted after the last lock-free rerun, before
    # the search that holds the locks
    for call in ("batch", "filtered"):
        idx, store = fresh()
        calls = []

        def overlapped(keys, count, idx=idx, store=store, calls=calls):
            calls.append(1)
            if len(calls) == renamed.RERUNS + 1:
                idx.compact(store)
            return True  # renamed every time: the last search runs under the locks

        monkeypatch.setattr(renamed, "renamed_since", overlapped)
        if call == "batch":
            keys, dists = idx.search_batch(store, queries, 5, ef=64)
        else:
            hits = [idx.search(store, q, 5, filter=lambda key: True, ef=64) for q in queries[:1]]
            keys = np.array([[h.key for h in hits[0]]])
            dists = np.array([[h.distance for h in hits[0]]])
        assert len(calls) == renamed.RERUNS + 1
        true_distances(keys, dists)
    monkeypatch.undo()

    # a single query whose reruns are used up searches once more holding alloc and the lock
    # shared (no rename, insert, row write or compaction meanwhile): k live keys, true distances
    idx, store = fresh()
    keys_map = idx._state.keys
    reads = []

    class Renaming(type(keys_map)):
        @property
        def renames(self):  # a new (even) count at each read of the first three searches: renamed each time
            reads.append(1)
            return 2 * min(len(reads), 2 * (renamed.RERUNS + 1))

        @renames.setter
        def renames(self, value):
            pass

    held = []
    real_search = single.SingleQuery.search

    def watched(self, *args, **kw):
        held.append(self.state.alloc.locked())
        return real_search(self, *args, **kw)

    monkeypatch.setattr(single.SingleQuery, "search", watched)
    keys_map.__class__ = Renaming
    try:
        hits = idx.search(store, queries[0], 5, ef=64)
    finally:
        keys_map.__class__ = Renaming.__mro__[1]
    assert held == [False] * (renamed.RERUNS + 1) + [True] and len(hits) == 5
    true_distances(np.array([[h.key for h in hits]]), np.array([[h.distance for h in hits]]))


def test_a_compaction_during_a_search_counts_as_a_rename_overlap() -> None:
    """A compaction installs a new key map and the search runs again on it (read_stable):
    renames on that map went unwatched (the seqlock read was the old map's), and a batch
    returned keys its filter refused with their NodeIds' old distances."""
    import types

    from hnsw_numba.core import renamed

    state = types.SimpleNamespace(keys=types.SimpleNamespace(renames=0), epoch=0)
    answers = iter(["overlapped", "clean"])

    def search():
        answer = next(answers)
        if answer == "overlapped":  # compacted meanwhile: a new key map, the epoch moved on
            state.keys, state.epoch = types.SimpleNamespace(renames=4), 2
        return answer

    assert renamed.keys_settled(state, search) == "clean"


def test_an_answer_after_renames_without_pause_holds_k_live_items(monkeypatch) -> None:
    """A batch or filtered search that renames overlapped every time was settled by keeping
    the nodes it found still live: items deleted after its last run left fewer than k in
    the answer although hundreds were live. It searches once more under the locks."""
    from hnsw_numba.core import renamed

    rng = np.random.default_rng(11)
    n, dim, k = 500, 8, 5
    data = rng.standard_normal((n, dim)).astype(np.float32)
    queries = data[:6] + np.float32(0.01)
    nearest = np.argsort(((data[None] - queries[:, None]) ** 2).sum(-1), axis=1)[:, :k]
    for call in ("batch", "filtered batch", "filtered"):
        idx = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=dim, max_nodes=n, m=8, ef_construction=40, seed=1))
        store = hn.InMemoryVectorStore(dim, n)
        idx.insert_batch(store, np.arange(n), data)
        calls = []

        def overlapped(keys, count, idx=idx, calls=calls):
            calls.append(1)
            if len(calls) == renamed.RERUNS + 1:  # after the last lock-free run: its answers deleted
                idx.delete_batch(np.unique(nearest))
            return True

        monkeypatch.setattr(renamed, "renamed_since", overlapped)
        if call == "batch":
            keys, dists = idx.search_batch(store, queries, k, ef=64)
        elif call == "filtered batch":
            keys, dists = idx.search_batch(store, queries, k, filter=lambda key: True, ef=64)
        else:
            hits = idx.search(store, queries[0], k, filter=lambda key: True, ef=64)
            keys, dists = np.array([hits.keys]), np.array([hits.distances])
        monkeypatch.undo()
        assert keys.shape[1] == k and (keys >= 0).all(), call
        assert not np.isin(keys, nearest).any()
        for q, row, d in zip(queries, keys, dists):
            np.testing.assert_allclose(d, ((data[row] - q) ** 2).sum(axis=1), rtol=1e-4, atol=1e-5)
