"""Searches that overlap ``compact()`` never mix old NodeIds with moved vectors."""

from __future__ import annotations

import threading

import numpy as np

import hnsw_numba as hn


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
    bad: list = []
    stop = threading.Event()
    started = threading.Barrier(3)

    def searcher(batch: bool) -> None:
        started.wait()
        i = 0
        while not stop.is_set():
            q = queries[i % 64]
            i += 1
            if batch:
                keys, dists = idx.search_batch(store, queries[:8], 5, num_threads=1)
                pairs = zip(keys.ravel().tolist(), dists.ravel().tolist())
            else:
                pairs = [(h.key, h.distance) for h in idx.search(store, q, 5)]
                keys = None
            for qi, (key, d) in enumerate(pairs):
                qv = queries[:8][qi // 5] if batch else q
                true = float(((data[key] - qv) ** 2).sum())
                if key % 2 == 0 or abs(true - d) > 1e-3 * max(1.0, true):
                    bad.append((key, d, true))

    threads = [threading.Thread(target=searcher, args=(b,)) for b in (False, True)]
    for t in threads:
        t.start()
    started.wait()
    idx.compact(store)
    stop.set()
    for t in threads:
        t.join()
    assert not bad, bad[:5]
    assert len(idx) == n // 2
    idx.check_integrity()
