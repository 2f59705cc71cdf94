"""Progress bars: tqdm.auto, an automatic default, no warnings, and compilation as a step of its own."""

from __future__ import annotations

import subprocess
import sys
import types
import warnings

import numba
import numpy as np
import pytest

import hnsw_numba as hn
from hnsw_numba.core import progress as prog
from hnsw_numba.kernels.jit import cache_state


def test_default_shows_long_work_to_someone_watching(monkeypatch) -> None:
    monkeypatch.setattr(prog, "interactive", lambda: True)
    assert prog.want_progress(None, 10.0) and not prog.want_progress(None, 0.5)
    assert prog.want_progress(True, 0.0) and not prog.want_progress(False, 100.0)
    monkeypatch.setattr(prog, "interactive", lambda: False)
    assert not prog.want_progress(None, 100.0)  # a log file or a pipe: silent unless asked
    # the estimate puts ~50,000 128-d inserts at ef_construction 200 on 2 threads past the threshold
    assert prog.insert_seconds(50_000, 128, 200, 2) > prog.AUTO_SECONDS > prog.insert_seconds(5_000, 128, 200, 2)


def test_progress_takes_true_false_or_none_only() -> None:
    """A str or 1 is refused, before an insert changes anything; NumPy bools are bools."""
    x = np.random.default_rng(0).standard_normal((40, 8)).astype(np.float32)
    idx = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=8, max_nodes=100, seed=1))
    store = hn.InMemoryVectorStore(8, 100)
    idx.insert_batch(store, np.arange(30), x[:30])
    before = (idx.node_count, store.rows()[0].tobytes(), idx.graph_arrays.links0.tobytes())
    index = hn.Index(8, "l2", seed=1)
    for bad in ("x", "", 1, 0, 1.0):
        for call in (lambda: idx.insert_batch(store, [30, 31], x[30:32], progress=bad), lambda: idx.knn_graph(store, 3, progress=bad),
                     lambda: hn.knn_join(idx, store, x[:5], 3, progress=bad), lambda: index.add(x[:2], progress=bad),
                     lambda: index.add(7, x[0], progress=bad), lambda: index.add_from(x[:2], progress=bad)):
            with pytest.raises(hn.InvalidParameterError, match="progress must be True, False or None"):
                call()
        with pytest.raises(hn.InvalidParameterError):
            prog.want_progress(bad, 10.0)
    assert (idx.node_count, store.rows()[0].tobytes(), idx.graph_arrays.links0.tobytes()) == before and len(index) == 0
    assert prog.want_progress(np.True_, 0.0) is True and prog.want_progress(np.False_, 10.0) is False
    np.testing.assert_array_equal(idx.insert_batch(store, [30, 31], x[30:32], progress=np.False_), [30, 31])


def test_a_jupyter_kernel_counts_as_watching(monkeypatch) -> None:
    assert not prog.in_notebook()
    shell = types.SimpleNamespace(kernel=object())
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: shell))
    assert prog.in_notebook() and prog.interactive()
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: None))
    assert not prog.in_notebook()


def test_progress_true_draws_a_bar_without_warnings(capfd) -> None:
    pytest.importorskip("tqdm")
    x = np.random.default_rng(0).standard_normal((300, 8)).astype(np.float32)
    idx = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=8, max_nodes=300, seed=1))
    store = hn.InMemoryVectorStore(8, 300)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        idx.insert_batch(store, np.arange(300), x, progress=True)
    err = capfd.readouterr().err
    assert "insert" in err and "300/300" in err and "Warning" not in err
    idx2 = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=8, max_nodes=300, seed=1))
    idx2.insert_batch(hn.InMemoryVectorStore(8, 300), np.arange(300), x, progress=False)
    assert capfd.readouterr().err == ""


def test_compilation_is_its_own_step(capfd, monkeypatch) -> None:
    pytest.importorskip("tqdm")

    @numba.njit(cache=False)
    def twice(a):
        return a * 2

    args = (np.zeros(3, np.float32),)
    assert cache_state(twice, args) == "missing"
    rows = hn.InMemoryVectorStore(2, 2, dtype="float16").rows()
    prog.compile_step(twice, args, rows, True)
    assert cache_state(twice, args) == "compiled"
    assert "compiling kernels for float16 (once, ~10 s)" in capfd.readouterr().err
    prog.compile_step(twice, args, rows, True)
    assert capfd.readouterr().err == ""  # once per process
    # an insert shows the step before its own bar when its kernel must be compiled
    monkeypatch.setattr(prog, "_READY", set())
    monkeypatch.setattr(prog, "cache_state", lambda kernel, args: "missing")
    x = np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32)
    idx = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=8, max_nodes=50, seed=1))
    idx.insert_batch(idx_store := hn.InMemoryVectorStore(8, 50), np.arange(50), x, progress=True)
    err = capfd.readouterr().err
    assert 0 <= err.index("compiling kernels for float32") < err.index("insert")
    assert len(idx) == 50 and idx_store.written.all()


def test_a_kernel_in_the_disk_cache_is_seen_as_cached(tmp_path) -> None:
    """The disk cache is read as Numba lays it out (a separate process sees the entry)."""
    (tmp_path / "kern.py").write_text("import numba\n\n@numba.njit(cache=True)\ndef plus(a):\n    return a + 1\n")
    code = ("import sys, numpy as np; sys.path.insert(0, {d!r}); import kern; "
            "from hnsw_numba.kernels.jit import cache_state; a = (np.zeros(2),); "
            "print(cache_state(kern.plus, a)); kern.plus(*a); print(cache_state(kern.plus, a))").format(d=str(tmp_path))
    env_dir = {"NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    import os

    env = {**os.environ, **env_dir}
    first = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    second = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert first.stdout.split() == ["missing", "compiled"], first.stderr[-2000:]
    assert second.stdout.split() == ["cached", "compiled"], second.stderr[-2000:]
