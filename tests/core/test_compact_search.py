"""Searches that overlap ``compact()`` never mix old NodeIds with moved vectors."""

from __future__ import annotations

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
