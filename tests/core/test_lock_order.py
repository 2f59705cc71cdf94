"""What an operation reads of the index and its store, it reads under the lock that excludes
the change: ``repair`` binds the store's rows once it holds the exclusive lock (a growth it
waited on replaces them), and a store pickles its columns and attributes at one moment
(``enable_walk_copy`` adds a column under ``COLUMNS_LOCK``)."""

from __future__ import annotations

import pickle
import threading

import numpy as np

import hnsw_numba as hn
import hnsw_numba.core.health as health
from conftest import signal_waits



def holding(lock, held: threading.Event, waiting: threading.Event, change) -> threading.Thread:
    """A thread that takes ``lock`` exclusive, waits until another thread waits for it, then runs ``change()``."""
    def run() -> None:
        with lock.exclusive():
            held.set()
            assert waiting.wait(10)
            change()

    t = threading.Thread(target=run)
    t.start()
    assert held.wait(10)
    return t


def test_repair_reads_the_rows_of_a_growth_it_waited_on(monkeypatch) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((600, 8)).astype(np.float32)
    idx = hn.Index(8, metric="l2", m=6, ef_construction=32, seed=0, capacity=64)
    idx.add(np.arange(50), x[:50], num_threads=1)
    h, s = idx.native
    real, bound = health.repair_links, []

    def spy(state, store, rows, threads):
        bound.append((rows[0].shape[0], state.node_count))
        # rows short of the NodeIds would have the kernel read past their end
        return real(state, store, rows, threads) if rows[0].shape[0] >= state.node_count else 0

    monkeypatch.setattr(health, "repair_links", spy)

    def grow_and_delete() -> None:
        idx.add(np.arange(50, 600), x[50:600], num_threads=1)  # past 64 rows: new arrays
        idx.remove(list(range(100, 600, 2)))

    held, waiting = threading.Event(), threading.Event()
    signal_waits(monkeypatch, h.lock, waiting)
    t = holding(h.lock, held, waiting, grow_and_delete)
    h.repair(s)  # waits for the growth
    t.join()
    (rows, nodes), = bound
    assert nodes == 600 and rows >= nodes
    live = [k for k in range(600) if k in idx]
    assert all(idx.search(x[k], k=1)[0].key == k for k in live)
    h.check_integrity()


def test_store_pickles_one_moment_of_an_added_walk_copy(monkeypatch) -> None:
    rng = np.random.default_rng(1)
    store = hn.InMemoryVectorStore(8, 300)
    idx = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=8, max_nodes=300, m=6, ef_construction=32, seed=0))
    idx.insert_batch(store, np.arange(200), rng.standard_normal((200, 8)).astype(np.float32), num_threads=1)
    cls = type(store)
    real_columns, real_add = cls.columns, cls._add_walk
    adding, threads = threading.Event(), []

    def add_walk(self, walk):
        adding.set()
        return real_add(self, walk)

    def columns(self):
        out = real_columns(self)
        if not threads:  # enable_walk_copy runs between the columns and the attributes, if it can
            threads.append(threading.Thread(target=self.enable_walk_copy))
            threads[0].start()
            assert adding.wait(10)
            threads[0].join(1.0)  # it cannot finish while the pickle holds COLUMNS_LOCK
        return out

    monkeypatch.setattr(cls, "_add_walk", add_walk)
    monkeypatch.setattr(cls, "columns", columns)
    blob = pickle.dumps(store)
    threads[0].join()
    monkeypatch.undo()
    back = pickle.loads(blob)  # the store without the copy (the pickle came first)
    assert store.walk_copy and not back.walk_copy
    np.testing.assert_array_equal(back.data[:200], store.data[:200])
    keys, _ = idx.search_batch(back, store.data[:20], 1)
    assert keys[:, 0].tolist() == list(range(20))
