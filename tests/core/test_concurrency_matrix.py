"""{save, compact, resize, repair} x {search, insert, set, delete} from threads.

Each cell runs one maintenance operation (repeatedly) while a worker thread runs one
kind of call and a searcher thread checks every answer; afterwards the last save loads,
integrity holds, every hit's distance is the distance to its key's vector, and no key
deleted before a search began was returned. ``HNSW_STRESS_SECONDS`` runs every cell for
that long (the quick version runs each a fraction of a second).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import hnsw_numba as hn

DIM = 8
N0 = 1500
SECONDS = float(os.environ.get("HNSW_STRESS_SECONDS", "0")) / 16  # the long version, split over the 16 cells
QUICK = SECONDS <= 0


def _maintain(kind: str, idx: hn.Hnsw, store: hn.InMemoryVectorStore, path: Path, rnd: int) -> None:
    if kind == "save":
        hn.save(path, idx, store)
    elif kind == "compact":
        idx.compact(store)
    elif kind == "resize":
        idx.resize(idx.max_nodes + 64)
        with idx.lock.exclusive():  # a store resize copies rows: no insert may write meanwhile
            store.resize(max(store.max_nodes, idx.max_nodes))
    else:
        idx.repair(store)


@pytest.mark.parametrize("work", ["search", "insert", "set", "delete"])
@pytest.mark.parametrize("op", ["save", "compact", "resize", "repair"])
def test_matrix(op: str, work: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(hash((op, work)) % 2**32)
    total = N0 + 40_000
    vecs = rng.standard_normal((total, DIM)).astype(np.float32)
    moved = rng.standard_normal((total, DIM)).astype(np.float32)  # what set() writes
    idx = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=DIM, max_nodes=N0 + 64, m=6, ef_construction=32, seed=1))
    store = hn.InMemoryVectorStore(DIM, N0 + 64)
    idx.insert_batch(store, np.arange(N0), vecs[:N0], num_threads=1)
    idx.delete_batch(np.arange(0, N0, 7))
    deleted = set(range(0, N0, 7))
    was_set: set[int] = set()
    lock = threading.Lock()
    stop = threading.Event()
    errors: list = []
    queries = rng.standard_normal((32, DIM)).astype(np.float32)

    def searcher() -> None:
        i = 0
        try:
            while not stop.is_set():
                with lock:
                    gone = set(deleted)
                q = queries[i % 32]
                i += 1
                hits = idx.search(hn_store(), q, 5) if i % 2 else None
                pairs = [(h.key, h.distance) for h in hits] if hits is not None else None
                if pairs is None:
                    keys, d = idx.search_batch(hn_store(), q[None], 5, num_threads=1)
                    pairs = [(int(k), float(x)) for k, x in zip(keys[0], d[0]) if k >= 0]
                with lock:
                    touched = set(was_set)
                for key, dist in pairs:
                    assert key not in gone, f"deleted key {key} returned"
                    if key in touched:
                        continue  # set() may have replaced its vector during the search
                    true = float(((vecs[key] - q) ** 2).sum())
                    assert abs(true - dist) <= 1e-3 * max(1.0, true), (key, dist, true)
        except BaseException as exc:
            errors.append(exc)

    def hn_store() -> hn.InMemoryVectorStore:
        return store

    def worker() -> None:
        nxt = N0
        live = [k for k in range(N0 // 2 if work == "set" else N0) if k not in deleted]
        r = np.random.default_rng(7)
        try:
            while not stop.is_set():
                if work == "insert" and nxt < total:
                    idx.insert(store, nxt, vecs[nxt], grow=True)
                    nxt += 1
                elif work == "set" and live:
                    k = live[int(r.integers(len(live)))]
                    with lock:
                        was_set.add(k)
                    idx.set(store, k, moved[k])
                elif work == "delete" and len(live) > 50:
                    k = live.pop(int(r.integers(len(live))))
                    idx.delete(k)
                    with lock:
                        deleted.add(k)
                elif work == "search":
                    idx.search_batch(store, queries, 3, num_threads=1)
                else:
                    time.sleep(0.001)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=searcher), threading.Thread(target=worker)]
    for t in threads:
        t.start()
    path = tmp_path / "ix"
    end = time.monotonic() + (SECONDS if not QUICK else 0.3)
    rounds = 0
    try:
        while rounds < 2 or time.monotonic() < end:
            _maintain(op, idx, store, path, rounds)
            rounds += 1
            if op == "compact" and work != "delete":  # give compaction something to drop
                k = int(np.random.default_rng(rounds).integers(N0 // 2, N0))  # keys the worker never sets
                if k in idx:
                    idx.delete(k)
                    with lock:
                        deleted.add(k)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors[0]
    idx.check_integrity()
    if op == "save":
        loaded, lstore = hn.load(path)
        loaded.check_integrity()
    hn.save(path, idx, store)
    loaded, lstore = hn.load(path)
    assert len(loaded) == len(idx)
    for key in list(idx.keys())[:: max(1, len(idx) // 50)]:
        want = moved[key] if key in was_set else vecs[key]
        np.testing.assert_allclose(idx.get_vectors(store, key), want, rtol=0, atol=0)
        np.testing.assert_array_equal(loaded.get_vectors(lstore, key), want)
        assert loaded.search(lstore, want, 1, exact=True)[0].distance == 0.0
