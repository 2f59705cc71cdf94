"""``BFIndex`` from several threads: a ``load_index`` that replaces the store between an
operation's start and its lock must not leave that operation on the replaced store, and of
two ``init_index`` calls one raises.

The window is widened deterministically: the worker's first request for a lock waits on a
``threading.Event`` until the main thread has loaded another index.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

import hnsw_numba.hnswlib as hnswlib

DIM, N = 8, 10


class Pause:
    """Make the first call of ``name`` on ``target`` from thread ``worker`` wait on ``go``
    after setting ``reached`` (before the lock is requested)."""

    def __init__(self, target: Any, worker: Callable[[], threading.Thread | None]) -> None:
        self.target, self.worker = target, worker
        self.reached, self.go, self.done = threading.Event(), threading.Event(), False

    def wait(self) -> None:
        if not self.done and threading.current_thread() is self.worker():
            self.done = True
            self.reached.set()
            assert self.go.wait(60)

    def shared(self) -> Any:
        self.wait()
        return self.target.shared()

    def exclusive(self) -> Any:
        return self.target.exclusive()

    def __enter__(self) -> Any:
        self.wait()
        return self.target.__enter__()

    def __exit__(self, *exc: Any) -> Any:
        return self.target.__exit__(*exc)


def sqdist(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a.astype(np.float64) - b) ** 2).sum())


@pytest.mark.parametrize("action", ["knn_query", "add_items", "delete_vector", "save_index"])
def test_an_operation_overlapping_a_load_uses_the_loaded_store(action: str, tmp_path: Path) -> None:
    """Each answer (and each saved record) pairs a label with a vector it holds: the old
    code took the store before the lock, so after the load a query scanned the replaced
    store under the loaded labels, and an add or delete wrote the replaced store."""
    rng = np.random.default_rng(4)
    old, new = rng.standard_normal((N, DIM)).astype(np.float32), rng.standard_normal((N, DIM)).astype(np.float32) + 5
    other = hnswlib.BFIndex("l2", DIM)
    other.init_index(N + 2)
    other.add_items(new, ids=np.arange(N))
    other.save_index(str(tmp_path / "new.bin"))
    bf = hnswlib.BFIndex("l2", DIM)
    bf.init_index(N + 2)
    bf.add_items(old, ids=np.arange(N))
    fresh = rng.standard_normal((1, DIM)).astype(np.float32) - 5
    work = {
        "knn_query": lambda: bf.knn_query(new[3:4], k=N),
        "add_items": lambda: bf.add_items(fresh, ids=[3]),
        "delete_vector": lambda: bf.delete_vector(3),
        "save_index": lambda: bf.save_index(str(tmp_path / "saved.bin")),
    }[action]
    result: list = []
    worker = threading.Thread(target=lambda: result.append(work()))
    name = "_rw" if action in ("knn_query", "save_index") else "_mutate"
    pause = Pause(getattr(bf, name), lambda: worker)
    setattr(bf, name, pause)
    worker.start()
    assert pause.reached.wait(60)
    bf.load_index(str(tmp_path / "new.bin"))  # replaces the store while the worker waits
    pause.go.set()
    worker.join(60)
    assert not worker.is_alive() and result
    held = {label: new[label] for label in range(N)}
    if action == "add_items":
        held[3] = fresh[0]
    elif action == "delete_vector":
        del held[3]
    if action == "save_index":
        bf = hnswlib.BFIndex("l2", DIM)
        bf.load_index(str(tmp_path / "saved.bin"))
    assert bf.get_current_count() == len(held)
    labels, dists = result[0] if action == "knn_query" else bf.knn_query(new[3:4], k=len(held))
    assert sorted(labels[0].tolist()) == sorted(held)
    for label, d in zip(labels[0].tolist(), dists[0].tolist()):
        assert d == pytest.approx(sqdist(new[3], held[label]), rel=1e-4, abs=1e-4), label


class WatchedLock:
    """The index's readers-writer lock, setting ``blocked`` when a reader asks for it while
    a writer holds it (that reader then waits for the writer to finish)."""

    def __init__(self, target: Any, blocked: threading.Event) -> None:
        self.target, self.blocked, self.writing = target, blocked, False

    def shared(self) -> Any:
        if self.writing:
            self.blocked.set()
        return self.target.shared()

    def exclusive(self) -> Any:
        lock = self

        class Held:
            def __enter__(self) -> None:
                lock.cm = lock.target.exclusive()
                lock.cm.__enter__()
                lock.writing = True

            def __exit__(self, *exc: Any) -> Any:
                lock.writing = False
                return lock.cm.__exit__(*exc)

        return Held()


def test_a_query_beside_a_row_rewrite_never_reads_it_torn(monkeypatch) -> None:
    """A label added again is rewritten in place while a query may scan: the query's
    distance for it is to the old or the new vector, never to a row half old, half new.

    The rewrite stops with half its row written until the query either has scanned
    (``bruteforce_kernel`` returned: the torn row was readable) or waits for the lock."""
    import hnsw_numba.hnswlib_bf as bf_module

    rng = np.random.default_rng(6)
    x = rng.standard_normal((N, DIM)).astype(np.float32)
    fresh = x[3] + 10
    bf = hnswlib.BFIndex("l2", DIM)
    bf.init_index(N)
    bf.add_items(x, ids=np.arange(N))
    store, proceed, half = bf._store, threading.Event(), threading.Event()
    real_write, real_kernel = store.write, bf_module.bruteforce_kernel

    def torn_write(rows: np.ndarray, enc: np.ndarray) -> None:
        store.rows().data[rows, : DIM // 2] = enc[:, : DIM // 2]
        half.set()
        assert proceed.wait(60)
        real_write(rows, enc)

    def kernel(*args: Any) -> None:
        real_kernel(*args)
        proceed.set()

    monkeypatch.setattr(store, "write", torn_write)
    monkeypatch.setattr(bf_module, "bruteforce_kernel", kernel)
    bf._rw = WatchedLock(bf._rw, proceed)
    writer = threading.Thread(target=lambda: bf.add_items(fresh[None, :], ids=[3]))
    writer.start()
    assert half.wait(60)
    labels, dists = bf.knn_query(x[3:4], k=N, num_threads=1)
    writer.join(60)
    assert not writer.is_alive()
    got = dict(zip(labels[0].tolist(), dists[0].tolist()))
    assert any(got[3] == pytest.approx(sqdist(x[3], v), rel=1e-4, abs=1e-4) for v in (x[3], fresh)), got[3]


def test_two_threads_initialising_one_index_cannot_both_succeed() -> None:
    # The first init stops inside its allocation; the second, started meanwhile, must not
    # pass the "already initiated" check before the first has allocated: one of the two
    # raises, whatever the threads' timing (the join below only bounds the wait).
    bf = hnswlib.BFIndex("l2", DIM)
    entered, release = threading.Event(), threading.Event()
    room = bf._room
    first = []

    def paused(cap: int):
        if not first:
            first.append(cap)
            entered.set()
            assert release.wait(60)
        return room(cap)

    bf._room = paused
    outcome: dict[int, str] = {}

    def init(n: int) -> None:
        try:
            bf.init_index(n)
            outcome[n] = "ok"
        except hnswlib.HnswlibError:
            outcome[n] = "raised"

    t1 = threading.Thread(target=init, args=(10,))
    t1.start()
    assert entered.wait(60)
    t2 = threading.Thread(target=init, args=(20,))
    t2.start()
    t2.join(0.5)  # with the lock it waits for the first; without it, it allocates at once
    release.set()
    t1.join(60)
    t2.join(60)
    assert sorted(outcome.values()) == ["ok", "raised"]
    assert bf.get_max_elements() == (10 if outcome[10] == "ok" else 20)
