"""The arrays a lock-free batch search holds while other calls add, compact and shrink the
index and its store: no node of the graph it walks lies past the rows it reads."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import hnsw_numba as hn
from conftest import clustered
from hnsw_numba.core import batch, filtered
from hnsw_numba.core.rowwrites import rescored
from hnsw_numba.kernels.layout import H_NODES


class _ShrinksBeforeRows(hn.InMemoryQi8VectorStore):
    """A Qi8 store whose ``rows()``, on the ``calls``-th call once armed, first runs ``hook``
    (other calls' adds, compaction and shrink) in another thread: the search that called it
    holds the graph arrays and node count it read before."""

    hook = None
    calls = 0

    def rows(self):
        self.calls -= 1
        if self.hook is not None and self.calls == 0:
            hook, self.hook = self.hook, None
            thread = threading.Thread(target=hook)
            thread.start()
            thread.join()
        return super().rows()


def _spy(monkeypatch, module, name: str) -> list:
    """Record ``(end of the starts, node count of the graph, rows)`` of every call of the
    kernel ``module.name``; a call handed starts or a graph past its rows is recorded and
    not run (it would read past their end)."""
    seen = []
    real = getattr(module, name)

    def kernel(g, rows, *args):
        starts = args[-1] if name == "knn_kernel" else np.empty(0, np.int32)
        seen.append((int(starts.max()) + 1 if starts.shape[0] else 0, int(g.header[H_NODES]), rows[0].shape[0]))
        if seen[-1][0] <= seen[-1][1] <= seen[-1][2]:
            real(g, rows, *args)

    monkeypatch.setattr(module, name, kernel)
    return seen


@pytest.mark.parametrize("filtered_search", [False, True])
def test_a_batch_search_reads_the_node_count_after_the_rows(monkeypatch, filtered_search) -> None:
    """A batch search read the graph's arrays and their node count, then the store's rows.
    Adds in between raised the count of those arrays (there was room: they stayed the
    graph's), a compaction then gave the graph new arrays with fewer nodes and a shrink
    cut the store to them: the count it had checked fit the rows, the graph it walked did
    not, and the kernel read rows past their end (a SIGSEGV in the race harness). The count
    it checks is read after the rows."""
    rng = np.random.default_rng(11)
    data = clustered(rng, 48, 8)
    idx = hn.Hnsw(hn.CosineQi8(), hn.HnswConfig(dim=8, max_nodes=64, m=4, ef_construction=16, seed=1))
    store = _ShrinksBeforeRows(8, 64)
    idx.insert_batch(store, np.arange(16), data[:16], num_threads=1)
    allowed = list(range(0, 48, 2))
    seen = _spy(monkeypatch, filtered, "knn_filter_kernel") if filtered_search else _spy(monkeypatch, batch, "knn_kernel")

    def add_compact_shrink() -> None:
        idx.insert_batch(store, np.arange(16, 48), data[16:], num_threads=1)  # 48 nodes in the arrays searched
        for key in range(16, 32):
            idx.delete(key)
        idx.compact(store, num_threads=1)
        idx.resize(32)
        store.resize(32)

    store.hook = add_compact_shrink
    store.calls = 2 if filtered_search else 1  # a filtered batch checks the store once before it compiles the filter
    keys, _ = idx.search_batch(store, data[[4, 40]], 3, filter=allowed if filtered_search else None, num_threads=1,
                               plan="graph" if filtered_search else "auto")
    assert store.hook is None and idx.max_nodes == 32 and store.max_nodes == 32
    assert seen and all(count <= n_rows for _, count, n_rows in seen), seen
    assert keys[0, 0] == 4 and keys[1, 0] == 40


def test_knn_graph_walks_from_no_node_past_the_graph(monkeypatch) -> None:
    """``knn_graph`` reads the NodeIds of the live items, then searches from each one's own
    node. A compaction and a shrink in between left those NodeIds past the graph's arrays
    and the rows, and the walk began there (a SIGSEGV). A start past the graph is refused,
    and knn_graph, which a compaction overlapped, runs again."""
    data = clustered(np.random.default_rng(12), 48, 8)
    idx = hn.Hnsw(hn.CosineQi8(), hn.HnswConfig(dim=8, max_nodes=64, m=4, ef_construction=16, seed=1))
    store = _ShrinksBeforeRows(8, 64)
    idx.insert_batch(store, np.arange(48), data, num_threads=1)
    for key in range(16, 32):
        idx.delete(key)
    seen = _spy(monkeypatch, batch, "knn_kernel")

    def compact_shrink() -> None:
        idx.compact(store, num_threads=1)
        idx.resize(32)
        store.resize(32)

    store.hook = compact_shrink
    store.calls = 2  # knn_graph's rows, then its search's
    g = idx.knn_graph(store, 3, num_threads=1)
    assert store.hook is None and g.shape == (32, 32) and g.nnz == 32 * 3
    assert seen and all(end <= count <= n_rows for end, count, n_rows in seen), seen
    with pytest.raises(hn.InvalidParameterError, match="starts"):
        idx.search_prepared(store, idx.prepare_queries(data[:2]), 3, starts=np.array([0, 32], np.int32))


def test_distances_computed_again_skip_nodes_past_the_rows() -> None:
    """A batch answer whose rows a ``set`` kept rewriting gets its distances computed again
    from the store's rows as they are then: a compaction and a shrink since the search left
    its NodeIds past their end, and the exact scan read beyond them. Those NodeIds are
    left out (the compaction makes the search run again)."""
    data = clustered(np.random.default_rng(13), 32, 8)
    idx = hn.Hnsw(hn.CosineQi8(), hn.HnswConfig(dim=8, max_nodes=32, m=4, ef_construction=16, seed=1))
    store = hn.InMemoryQi8VectorStore(8, 32)
    idx.insert_batch(store, np.arange(32), data, num_threads=1)
    ids, dists = rescored(idx.state, store, idx.prepare_queries(data[:1]), np.array([[0, 5, 36, 1000]], np.int32))
    assert ids[0].tolist() == [0, 5, -1, -1] and np.isfinite(dists[0, :2]).all() and np.isinf(dists[0, 2:]).all()
