"""A store pickled while another thread writes a row holds the row wholly as before or as
after the write: the write is paused between two of the row's columns (the second column's
batch converts to an array only when written), and a pickle taken meanwhile either waits
for the write or pickles no part of it. ``__getstate__`` hands the pickler copies, so a
write after it returns does not reach the pickle either."""

from __future__ import annotations

import pickle
import threading
from typing import Any

import numpy as np

import hnsw_numba as hn

#: How long the test lets a pickle run beside the paused write before the write goes on.
PICKLE_WINDOW = 0.3


class PausedPart:
    """A column's part of an encoded batch that, once the store converts it to write it,
    signals ``writing`` and waits for ``go``: the columns before it are written by then."""

    def __init__(self, part: np.ndarray, writing: threading.Event, go: threading.Event) -> None:
        self.part, self.writing, self.go = part, writing, go

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        self.writing.set()
        assert self.go.wait(10)
        return self.part if dtype is None else self.part.astype(dtype)


def pause_second_column(monkeypatch, store: Any, writing: threading.Event, go: threading.Event) -> None:
    """Make ``store``'s writes pause between their first and second column (patched on the
    class: an attribute of the store's own would be pickled with it)."""
    cls = type(store)
    real = cls.split_encoded

    def split(self: Any, encoded: Any, *rest: Any) -> tuple:
        parts = real(self, encoded, *rest)
        return parts if self is not store else (parts[0], PausedPart(parts[1], writing, go), *parts[2:])

    monkeypatch.setattr(cls, "split_encoded", split)


def pickle_beside_paused_write(write, writing: threading.Event, go: threading.Event, store: Any) -> bytes:
    """Run ``write()`` in a thread, pickle ``store`` in another once the write is half done,
    let the write finish after ``PICKLE_WINDOW`` seconds (or once the pickle is done) and
    return the pickle."""
    writer = threading.Thread(target=write)
    writer.start()
    assert writing.wait(10)
    blob: list[bytes] = []
    pickler = threading.Thread(target=lambda: blob.append(pickle.dumps(store)))
    pickler.start()
    pickler.join(PICKLE_WINDOW)  # a pickle that takes no lock the write holds is done by then
    go.set()
    writer.join(10)
    pickler.join(10)
    assert not writer.is_alive() and not pickler.is_alive()
    return blob[0]


def test_walk_copy_store_pickled_beside_a_set_loads_with_the_new_row(monkeypatch) -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((300, 8)).astype(np.float32)
    idx = hn.Index(8, metric="l2", dtype="f32+f16", m=6, ef_construction=32, seed=1)
    idx.add(x, num_threads=1)
    h, store = idx.native
    nid, new = h.node_id(7), x[7] * 1.5 + 0.25
    idx.set(8, x[8])  # the update kernel compiled before the write is timed
    writing, go = threading.Event(), threading.Event()
    pause_second_column(monkeypatch, store, writing, go)  # the float32 row, then its float16 copy
    blob = pickle_beside_paused_write(lambda: idx.set(7, new), writing, go, store)
    monkeypatch.undo()
    back = pickle.loads(blob)  # a walk copy that differs from the vectors does not load
    np.testing.assert_array_equal(back.data[nid], new)
    np.testing.assert_array_equal(back.walk[nid], new.astype(np.float16).view(np.uint16))
    np.testing.assert_array_equal(back.data[:300], store.data[:300])


def test_qi8_store_pickled_beside_a_write_holds_one_vector_of_the_row(monkeypatch) -> None:
    store = hn.InMemoryQi8VectorStore(16, 64)
    a, b = np.linspace(-1, 1, 16, dtype=np.float32), np.linspace(50, -10, 16, dtype=np.float32)
    store.write(np.arange(4), store.encode(np.stack([a, a, a, a])))
    writing, go = threading.Event(), threading.Event()
    enc_b = store.encode(b[None])
    pause_second_column(monkeypatch, store, writing, go)  # codes, then scale and zero point
    blob = pickle_beside_paused_write(lambda: store.write(np.array([2]), enc_b), writing, go, store)
    monkeypatch.undo()
    back = pickle.loads(blob)
    # b's codes with a's scale would stand for a vector never written (it loads without error)
    np.testing.assert_array_equal(back.decode(np.array([2])), store.decode(np.array([2])))
    np.testing.assert_allclose(back.decode(np.array([2]))[0], b, atol=0.5)
    np.testing.assert_array_equal(back.decode(np.arange(4))[[0, 1, 3]], store.decode(np.array([0, 1, 3])))


def test_getstate_copies_the_rows() -> None:
    store = hn.InMemoryVectorStore(4, 8, walk_copy=True)
    store.write(np.arange(3), store.encode(np.ones((3, 4), np.float32)))
    state = store.__getstate__()
    store.write(np.array([1]), store.encode(np.full((1, 4), 2.0, np.float32)))  # after it returned: the pickler reads later
    back = type(store).__new__(type(store))
    back.__setstate__(state)
    np.testing.assert_array_equal(back.data[:3], np.ones((3, 4), np.float32))
    assert "_row_lock" not in state["attrs"] and back.row_lock is not store.row_lock


def test_a_resize_waits_for_a_write_and_keeps_its_row(monkeypatch) -> None:
    store = hn.InMemoryQi8VectorStore(8, 4)
    rows = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    store.write(np.arange(3), store.encode(rows[:3]))
    writing, go = threading.Event(), threading.Event()
    enc = store.encode(rows[3:])
    pause_second_column(monkeypatch, store, writing, go)
    writer = threading.Thread(target=lambda: store.write(np.array([3]), enc))
    writer.start()
    assert writing.wait(10)
    grower = threading.Thread(target=store.resize, args=(16,))
    grower.start()
    grower.join(PICKLE_WINDOW)  # a resize copying the half-written row would drop its scale
    go.set()
    writer.join(10)
    grower.join(10)
    monkeypatch.undo()
    assert store.max_nodes == 16 and store.written[:4].all()
    np.testing.assert_allclose(store.decode(np.arange(4)), rows, atol=0.05)
