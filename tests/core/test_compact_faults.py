"""An error while ``compact`` builds its new graph leaves the index and its store as they were:
the build reads copies of the live rows and the store's rows move only once it is done."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import hnsw_numba as hn
import hnsw_numba.core.health as health


@pytest.mark.parametrize("where", ["every thread", "a helper thread"])
def test_compact_error_in_the_build_changes_nothing(monkeypatch, where: str) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 8)).astype(np.float32)
    idx = hn.Index(8, metric="l2", seed=0)
    idx.add(np.arange(500), x)
    idx.remove(list(range(100)))
    h, s = idx.native
    real = health.insert_kernel
    main = threading.get_ident()

    def failing(*args):
        if where == "every thread" or threading.get_ident() != main:
            raise MemoryError("a thread's heaps")
        return real(*args)

    monkeypatch.setattr(health, "insert_kernel", failing)
    if where == "a helper thread":
        monkeypatch.setattr(health, "resolve_threads", lambda *a, **k: 2)
    with pytest.raises(MemoryError):
        idx.compact(num_threads=2)
    monkeypatch.undo()
    assert len(idx) == 400 and h.node_count == 500 and 50 not in idx
    np.testing.assert_array_equal(idx.get(list(range(100, 500))), x[100:])
    assert all(idx.search(x[k], k=1)[0].key == k for k in range(100, 500, 7))
    h.check_integrity()
    idx.compact()  # and then it compacts
    assert h.node_count == 400
    np.testing.assert_array_equal(idx.get(list(range(100, 500))), x[100:])
    assert all(idx.search(x[k], k=1)[0].key == k for k in range(100, 500, 7))
