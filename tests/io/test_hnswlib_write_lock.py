"""``save_hnswlib`` reads the store's rows and the sizes once it holds the exclusive lock: a
growth it waited on replaces the rows, and the file holds every item the index has then."""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest

import hnsw_numba as hn
from hnsw_numba.io.hnswlib_write import save_hnswlib
from conftest import signal_waits



def manual(idx: hn.Index, x: np.ndarray) -> None:
    h, s = idx.native
    s.resize(256)
    h.resize(256)
    idx.add(np.arange(100, 128), x[100:128])  # fits the old rows: no error, only stale rows


def automatic(idx: hn.Index, x: np.ndarray) -> None:
    idx.add(np.arange(100, 200), x[100:200])  # grows by itself


@pytest.mark.parametrize("grow", [manual, automatic])
@pytest.mark.parametrize("to_file", [True, False], ids=["path", "file object"])
def test_save_hnswlib_writes_the_rows_of_a_growth_it_waited_on(monkeypatch, tmp_path, grow, to_file: bool) -> None:
    x = np.random.default_rng(0).standard_normal((200, 8)).astype(np.float32)
    idx = hn.Index(8, metric="l2", m=6, ef_construction=32, seed=0, capacity=128)
    idx.add(np.arange(100), x[:100])
    h, s = idx.native
    held, waiting = threading.Event(), threading.Event()
    signal_waits(monkeypatch, h.lock, waiting)

    def run() -> None:
        with h.lock.exclusive():
            held.set()
            assert waiting.wait(10)
            grow(idx, x)

    t = threading.Thread(target=run)
    t.start()
    assert held.wait(10)
    path = tmp_path / "i.bin"
    if to_file:
        save_hnswlib(path, h, s)  # waits for the growth
    else:
        buf = io.BytesIO()
        save_hnswlib(buf, h, s)
        path.write_bytes(buf.getvalue())
    t.join()
    j, js = hn.load_hnswlib(hn.L2(), 8, str(path))
    n = len(idx)
    assert j.node_count == n > 100
    np.testing.assert_array_equal(j.get_vectors(js, list(range(n))), x[:n])
