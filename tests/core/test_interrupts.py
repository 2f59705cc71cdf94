"""Ctrl-C during a change that takes several steps: the change finishes, then the interrupt
arrives (core/interrupts.py), and the index is whole: no live item without links, no key
claimed for good, no row moved under the old graph, no row of two vectors."""

from __future__ import annotations

import inspect
import os
import signal
import sys
import threading

import numpy as np
import pytest

import hnsw_numba as hn
from hnsw_numba.core import half_walk
from hnsw_numba.core.interrupts import held_interrupts

DIM = 8


def _ctrl_c() -> None:
    """A real SIGINT to this process: Python runs its handler at the next bytecode boundary."""
    os.kill(os.getpid(), signal.SIGINT)


class SignalAfterWrite(np.ndarray):
    """A view whose writes send SIGINT once done: a Ctrl-C between two steps of a change."""

    def __setitem__(self, i, v):
        super().__setitem__(i, v)
        _ctrl_c()


def test_held_interrupts_delivers_one_ctrl_c_at_the_end() -> None:
    steps = []
    with pytest.raises(KeyboardInterrupt):
        with held_interrupts():
            _ctrl_c()
            steps.append("after the signal")
            with held_interrupts():  # nested: handed outwards
                _ctrl_c()
                steps.append("inner")
            steps.append("end")
    assert steps == ["after the signal", "inner", "end"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with held_interrupts():  # nothing arrives: nothing raised
        pass
    done = []
    t = threading.Thread(target=lambda: done.append(held_interrupts().__enter__()))  # elsewhere: a no-op
    t.start()
    t.join()
    assert done == [None] and signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_ctrl_c_while_a_batch_gets_its_node_ids(monkeypatch) -> None:
    """Interrupted as its NodeIds are handed out, an add left every new item live without a
    link and its deleted keys claimed for good (a later set of one never returned)."""
    rng = np.random.default_rng(0)
    index = hn.Index(DIM, metric="l2", seed=1)
    index.add(np.arange(200), rng.standard_normal((200, DIM)).astype(np.float32))
    index.remove([5, 6])
    start = half_walk.HalfWalks.start
    monkeypatch.setattr(half_walk.HalfWalks, "start", lambda self, *a: (_ctrl_c(), start(self, *a))[1])
    with pytest.raises(KeyboardInterrupt):
        index.add([5, 6, 1000, 1001], rng.standard_normal((4, DIM)).astype(np.float32))
    monkeypatch.undo()
    state = index.native[0].state
    assert len(index) == 198 and not state.reviving and 1000 not in index
    fresh = 10 + rng.standard_normal((3, DIM)).astype(np.float32)
    index.add([5, 1000], fresh[:2])
    done = threading.Event()
    threading.Thread(target=lambda: (index.set(6, fresh[2]), done.set()), daemon=True).start()
    assert done.wait(30)  # the key is not left claimed by the interrupted add
    for key, vec in zip((5, 1000, 6), fresh):
        assert index.search(vec, 1, ef=200)[0].key == key  # linked: a walk finds it
    assert not [h for h in index.native[0].stats().items() if h[0] == "unreachable_live" and h[1]]
    index.native[0].check_integrity()


@pytest.mark.parametrize("reorder", [False, True])
def test_ctrl_c_while_compaction_moves_rows(reorder: bool) -> None:
    """Interrupted between moving the store's rows and installing the graph built over
    them, every key answered with another key's vector."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((600, DIM)).astype(np.float32)
    index = hn.Index(DIM, metric="l2", seed=2)
    index.add(x)
    index.remove(np.arange(0, 600, 3))
    store = index.native[1]
    store.data = store.data.view(SignalAfterWrite)  # the signal lands once a column of rows has moved
    with pytest.raises(KeyboardInterrupt):
        index.compact(reorder=reorder)
    store.data = store.data.view(np.ndarray)
    keys = [k for k in range(600) if k % 3]
    assert len(index) == 400
    np.testing.assert_array_equal(index.get(keys), x[keys])
    found, _ = index.search(x[keys], k=1, exact=True)
    assert found[:, 0].tolist() == keys


def test_ctrl_c_while_a_qi8_row_is_written() -> None:
    """Interrupted between a Qi8 row's codes and its scale, the row held neither vector."""
    rng = np.random.default_rng(2)
    index = hn.Index(DIM, metric="l2", dtype="qi8", seed=3)
    index.add(rng.standard_normal((50, DIM)).astype(np.float32))
    old = index.get(7)
    new = (rng.standard_normal(DIM) * 40).astype(np.float32)
    store = index.native[1]
    store.codes = store.codes.view(SignalAfterWrite)  # the signal lands between the codes column and the scale
    with pytest.raises(KeyboardInterrupt):
        index.set(7, new)
    store.codes = store.codes.view(np.ndarray)
    got = index.get(7)
    assert np.allclose(got, new, atol=0.5) or np.array_equal(got, old)


def _ctrl_c_at(func, text: str):
    """A tracer sending SIGINT just before the line of ``func`` that holds ``text`` runs."""
    lines, start = inspect.getsourcelines(func)
    target = start + next(i for i, line in enumerate(lines) if text in line)

    def local(frame, event, arg):
        if event == "line" and frame.f_lineno == target:
            _ctrl_c()
        return local

    return lambda frame, event, arg: local if frame.f_code is func.__code__ else None


def test_ctrl_c_inside_delete_undelete_and_rename() -> None:
    """Between a tombstone and the deleted count (remove, undelete), or between a rename's key
    array and its look-up table: the count and the tombstones disagreed, a renamed key was
    found by no look-up (and could be added twice), and the rename seqlock stayed odd (every
    later search ran three times)."""
    from hnsw_numba.core import keymap, mutation, revive

    rng = np.random.default_rng(4)
    index = hn.Index(DIM, metric="l2", seed=5)
    index.add(rng.standard_normal((100, DIM)).astype(np.float32))
    h = index.native[0]
    steps = ((lambda: index.remove(3), mutation.delete_key, "header[H_DELETED] += 1"),
             (lambda: h.undelete(3), revive.undelete, "header[H_DELETED] -= 1"),
             (lambda: index.remove(5), mutation.delete_key, "header[H_DELETED] += 1"),
             (lambda: h.rename_deleted([5], [10**7]), keymap.KeyMap.rename, "self._ints.insert(int_keys, node_ids)"))
    for call, func, text in steps:
        sys.settrace(_ctrl_c_at(func, text))
        try:
            with pytest.raises(KeyboardInterrupt):
                call()
        finally:
            sys.settrace(None)
        h.check_integrity()
    assert h.state.keys.renames % 2 == 0 and h.state.keys.get(10**7) == 5 and len(index) == 99 and 3 in index
    count = h.node_count
    index.add(10**7, np.zeros(DIM, np.float32))  # the renamed NodeId takes it: one NodeId per key
    assert h.node_count == count and h.node_id(10**7) == 5
    h.check_integrity()


def test_ctrl_c_between_a_set_and_its_repair(monkeypatch) -> None:
    """Interrupted after its row write, a set left the node's links fitting the old vector (a
    search for the new one missed it): the repair runs before the interrupt arrives."""
    from hnsw_numba.core import mutation

    rng = np.random.default_rng(6)
    index = hn.Index(DIM, metric="l2", seed=7)
    index.add(rng.standard_normal((300, DIM)).astype(np.float32))
    repaired = []
    run = mutation.run_kernel
    monkeypatch.setattr(mutation, "run_kernel", lambda *a: (repaired.append(a[2]), run(*a))[1])
    new = (rng.standard_normal(DIM) * 5).astype(np.float32)
    sys.settrace(_ctrl_c_at(mutation.update_key, "run_kernel(state, update_kernel"))
    try:
        with pytest.raises(KeyboardInterrupt):
            index.set(9, new)
    finally:
        sys.settrace(None)
    assert repaired and np.array_equal(index.get(9), new)
    assert index.search(new, 1, ef=64)[0].key == 9


def test_ctrl_c_stops_a_long_batch_search_between_rounds(monkeypatch) -> None:
    from hnsw_numba.core import batch, parallel

    rng = np.random.default_rng(11)
    data = rng.standard_normal((1500, DIM)).astype(np.float32)
    queries = rng.standard_normal((600, DIM)).astype(np.float32)
    idx = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=DIM, max_nodes=1500, seed=3))
    store = hn.InMemoryVectorStore(DIM, 1500)
    idx.insert_batch(store, np.arange(1500), data)
    whole = idx.search_batch(store, queries, 5, ef=32, num_threads=2)
    monkeypatch.setattr(batch, "FIRST_ROUND", 16)
    monkeypatch.setattr(batch, "EXACT_ROUND_OPS", 1)
    monkeypatch.setattr(parallel, "ROUND_SECONDS", 1e-9)  # every round as small as allowed: 16 queries
    rounds = []
    real = batch.run_parallel

    def counted(work, threads):
        rounds.append(threads)
        real(work, threads)

    monkeypatch.setattr(batch, "run_parallel", counted)
    for exact in (False, True):  # in rounds, the answers of one call
        rounds.clear()
        keys, dists = idx.search_batch(store, queries, 5, ef=32, num_threads=2, exact=exact)
        assert len(rounds) == 600 // 16 + 1
        if not exact:
            np.testing.assert_array_equal(keys, whole[0])
            np.testing.assert_array_equal(dists, whole[1])

    def interrupted(work, threads):
        counted(work, threads)
        if len(rounds) == 3:
            _ctrl_c()  # arrives as the third round returns

    monkeypatch.setattr(batch, "run_parallel", interrupted)
    rounds.clear()
    with pytest.raises(KeyboardInterrupt):
        idx.search_batch(store, queries, 5, ef=32, num_threads=2)
    assert len(rounds) == 3  # the rest of the batch never ran
    monkeypatch.setattr(batch, "run_parallel", real)
    np.testing.assert_array_equal(idx.search_batch(store, queries, 5, ef=32)[0], whole[0])


def test_a_ctrl_c_while_helpers_start_still_waits_for_them(monkeypatch) -> None:
    """A Ctrl-C inside ``submit()`` (a helper thread starting) left the helper queued in no
    list: ``run_parallel`` raised at once, the caller abandoned the batch's nodes and released
    its locks, and the helper linked on over them (heap corruption, ``free(): double free``)."""
    import time

    from hnsw_numba.core import parallel

    real = parallel._executor()

    class Interrupting:
        def submit(self, fn):
            future = real.submit(fn)
            _ctrl_c()  # right after the helper is queued: as a Ctrl-C can land by chance
            return future

    monkeypatch.setattr(parallel, "_executor", lambda: Interrupting())
    done = []

    def work() -> None:
        time.sleep(0.2)
        done.append(1)

    with pytest.raises(KeyboardInterrupt):
        parallel.run_parallel(work, 2)
    assert done == [1]  # the helper finished (the work, as the counter hands it out) before run_parallel raised
