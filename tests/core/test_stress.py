"""Stress test: searches run while other threads insert, update, delete and resurrect.

Bounded to a few seconds in CI; ``HNSW_STRESS_SECONDS=300`` runs it longer.
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np

import hnsw_numba as hn
from conftest import clustered
from naive import recall

SECONDS = float(os.environ.get("HNSW_STRESS_SECONDS", "8"))


def test_stress_search_while_mutating() -> None:
    rng = np.random.default_rng(11)
    dim, n_total = 32, 6000
    data = clustered(rng, n_total + 200, dim, centers=200)
    queries = data[n_total:]
    idx = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=dim, max_nodes=n_total, m=8, ef_construction=64, seed=2))
    store = hn.InMemoryVectorStore(dim, n_total)
    idx.insert_batch(store, np.arange(1000), data[:1000])
    idx.set(store, 0, data[0])  # compile every kernel before the clock starts
    idx.search_batch_ids(store, queries[:2], 10, num_threads=1)
    vectors = {k: data[k] for k in range(1000)}  # reference contents
    ref_lock = threading.Lock()
    dead: dict[int, float] = {}  # key -> time its delete returned
    errors: list[str] = []
    stop = threading.Event()
    searches = [0]

    def searcher(seed: int) -> None:
        r = np.random.default_rng(seed)
        while not stop.is_set():
            t0 = time.monotonic()
            with ref_lock:
                gone_before = {k for k, t in dead.items() if t < t0}
            q = queries[r.integers(0, len(queries), 8)]
            ids, dist = idx.search_batch_ids(store, q, 10, num_threads=1)
            n_nodes = idx.node_count
            if ((ids < -1) | (ids >= n_nodes)).any():
                errors.append(f"out-of-range id {ids.min()}..{ids.max()} with {n_nodes} nodes")
            if np.isnan(dist).any():
                errors.append("NaN distance")
            keys = {idx.key(int(i)) for i in ids.ravel() if i >= 0}
            with ref_lock:
                still_gone = gone_before & {k for k in dead if dead[k] <= t0}
            if keys & still_gone:
                errors.append(f"deleted keys returned: {sorted(keys & still_gone)[:5]}")
            searches[0] += 1

    ops = {"deleted": 0, "resurrected": 0, "set": 0}
    next_key = [1000]
    key_lock = threading.Lock()

    def inserter() -> None:
        while time.monotonic() < deadline:
            with key_lock:
                lo = next_key[0]
                if lo + 20 > n_total - 100:
                    return
                next_key[0] += 20
            keys = np.arange(lo, lo + 20)
            with ref_lock:  # before the insert: the deleter may touch a key as soon as it is in
                for k in keys:
                    vectors[int(k)] = data[k]
            idx.insert_batch(store, keys, data[keys], num_threads=1)

    def setter() -> None:
        r = np.random.default_rng(5)
        while time.monotonic() < deadline:
            k = int(r.integers(0, 1000))
            with ref_lock:
                if k in dead:
                    continue
            v = (data[k] + r.standard_normal(dim).astype(np.float32) * 0.05).astype(np.float32)
            idx.set(store, k, v)
            with ref_lock:
                vectors[k] = v
            ops["set"] += 1

    def deleter() -> None:
        r = np.random.default_rng(6)
        while time.monotonic() < deadline:
            if len(dead) > 0.3 * next_key[0]:  # keep most of the index alive
                time.sleep(0.001)
                continue
            k = int(r.integers(0, next_key[0]))
            if k < 1000 or k not in idx:  # keys < 1000 belong to the setter
                continue
            nid = idx.delete(k)
            with ref_lock:
                dead[k] = time.monotonic()
            ops["deleted"] += 1
            if r.random() < 0.3:  # resurrect some: same NodeId, new vector
                v = data[k] + np.float32(0.01)
                with ref_lock:
                    del dead[k]
                    vectors[k] = v
                assert idx.set(store, k, v) == nid
                ops["resurrected"] += 1

    def guarded(fn, *args):
        def run() -> None:
            try:
                fn(*args)
            except BaseException as exc:  # a dead worker must fail the test
                import traceback

                errors.append("".join(traceback.format_exception(exc)))
                stop.set()

        return threading.Thread(target=run)

    threads = [guarded(searcher, s) for s in range(4)]
    threads += [guarded(inserter) for _ in range(2)]
    threads += [guarded(setter), guarded(deleter)]
    deadline = time.monotonic() + SECONDS
    for t in threads:
        t.start()
    for t in threads[4:]:
        t.join()
    stop.set()
    for t in threads[:4]:
        t.join()
    assert not errors, errors[:5]
    assert searches[0] > 10 and ops["deleted"] > 20 and ops["set"] > 20 and ops["resurrected"] > 5, ops
    idx.check_integrity()
    live = sorted(k for k in vectors if k not in dead)
    assert sorted(idx.keys()) == live  # every inserted key exactly once, deleted ones absent
    assert len(idx) == len(live)
    for k in live[::50]:
        np.testing.assert_allclose(store.vector(idx.node_id(k)), vectors[k], rtol=1e-6)
    # a small ef keeps the recall comparison sensitive (at the default both are ~1.0)
    found, _ = idx.search_batch(store, queries, 10, ef=12)
    truth, _ = idx.search_batch(store, queries, 10, exact=True)
    assert not set(found.ravel().tolist()) & set(dead)
    ref = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=dim, max_nodes=n_total, m=8, ef_construction=64, seed=2))
    ref_store = hn.InMemoryVectorStore(dim, n_total)
    ref.insert_batch(ref_store, np.array(live), np.stack([vectors[k] for k in live]), num_threads=1)
    ref_found, _ = ref.search_batch(ref_store, queries, 10, ef=12)
    r_stress, r_serial = recall(found, truth), recall(ref_found, truth)
    print(f"stress: {searches[0]} searches, {ops}, {len(live)} live, {len(dead)} deleted; recall {r_stress:.3f} vs serial {r_serial:.3f}")
    assert r_stress >= r_serial - 0.02
