"""Compiling the searches' kernels in a child process while a first build compiles its own.

The child compiles for the argument types ``one_query_args`` / ``batch_args`` give, so they
must be the types of the real calls: otherwise it fills the cache with a specialisation
nobody loads. A cold build in a fresh process (empty cache) must then load the single-query
kernel the child wrote instead of compiling it, and a child that dies must cost nothing but
its time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import hnsw_numba as hn
from conftest import ROOT, clustered
from hnsw_numba.core import compile_ahead
from hnsw_numba.core.batch import batch_args, prepare_args
from hnsw_numba.core.inthash import insert_args
from hnsw_numba.core.parallel import available_cores
from hnsw_numba.core.single import one_query_args
from hnsw_numba.kernels.jit import CACHE, CACHE_LOCKED, signature
from hnsw_numba.kernels.inthash import hash_insert
from hnsw_numba.kernels.search import knn_kernel, knn_one_kernel, prepare_rows

STORES = {
    "float32": lambda dim, cap: hn.InMemoryVectorStore(dim, cap),
    "float16": lambda dim, cap: hn.InMemoryVectorStore(dim, cap, dtype="float16"),
    "bfloat16": lambda dim, cap: hn.InMemoryVectorStore(dim, cap, dtype="bfloat16"),
    "walk copy": lambda dim, cap: hn.InMemoryVectorStore(dim, cap, walk_copy=True),
    "qi8": lambda dim, cap: hn.InMemoryQi8VectorStore(dim, cap),
}


@pytest.mark.parametrize("kind", sorted(STORES))
@pytest.mark.parametrize("str_keys", [False, True])
def test_the_child_compiles_the_signatures_the_searches_call(kind: str, str_keys: bool) -> None:
    x = clustered(np.random.default_rng(1), 80, 8)
    metric = hn.L2Qi8() if kind == "qi8" else hn.Cosine()
    idx = hn.Hnsw(metric, hn.HnswConfig(dim=8, max_nodes=100, m=4, ef_construction=16, seed=0))
    store = STORES[kind](8, 100)
    keys = [f"k{i}" for i in range(80)] if str_keys else np.arange(80)
    idx.insert_batch(store, keys, x, num_threads=1)
    idx.search(store, x[0], 3)
    idx.search_batch(store, x[:4], 3, num_threads=1)
    state = idx.state
    graph, rows = state.graph.arrays, store.rows()
    assert signature(knn_one_kernel, one_query_args(state, graph, rows, state.keys.node_keys)) in knn_one_kernel.overloads
    assert signature(knn_kernel, batch_args(state, graph, rows)) in knn_kernel.overloads
    assert signature(prepare_rows, prepare_args(metric, 8)) in prepare_rows.overloads
    if not str_keys:
        assert signature(hash_insert, insert_args()) in hash_insert.overloads


def test_no_child_runs_what_is_not_a_python_interpreter(monkeypatch) -> None:
    monkeypatch.setenv("HNSW_NUMBA_COMPILE_AHEAD", "1")
    for binary in ("/usr/bin/uwsgi", "", None):  # an embedding server, no interpreter at all
        monkeypatch.setattr(sys, "executable", binary)
        assert not compile_ahead.enabled()
    monkeypatch.setattr(sys, "executable", "/usr/bin/python3")
    monkeypatch.setattr(sys, "frozen", True, raising=False)  # a frozen application's binary
    assert not compile_ahead.enabled()


def test_switched_off_by_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("HNSW_NUMBA_COMPILE_AHEAD", "1")
    on = compile_ahead.enabled()
    monkeypatch.setenv("HNSW_NUMBA_COMPILE_AHEAD", "0")
    assert not compile_ahead.enabled()
    assert not compile_ahead.compile_ahead([(knn_one_kernel, ())])  # nothing starts, nothing is typed
    assert on == (CACHE and CACHE_LOCKED and available_cores() > 1)


COLD = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import hnsw_numba as hn
    from hnsw_numba.core.batch import batch_args
    from hnsw_numba.core.compile_ahead import enabled, wait_for
    from hnsw_numba.kernels.insert import insert_kernel
    from hnsw_numba.kernels.inthash import hash_insert
    from hnsw_numba.kernels.search import knn_kernel, knn_one_kernel, prepare_rows
    from hnsw_numba.core.batch import prepare_args

    if sys.argv[1] != "child":
        sys.executable = sys.argv[1]  # a "python" that exits at once, having compiled nothing
    x = np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32)
    idx = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=8, max_nodes=64, m=4, ef_construction=16, seed=0))
    store = hn.InMemoryVectorStore(8, 64)
    idx.insert_batch(store, np.arange(64), x, num_threads=1)
    first = idx.search(store, x[5], 1)[0].key
    wait_for(knn_kernel, batch_args(idx.state, idx.state.graph.arrays, store.rows()))  # compiled after the single-query kernel
    wait_for(prepare_rows, prepare_args(idx.metric, idx.dim))  # and the batch's query check after it
    ids, _ = idx.search_batch(store, x[:3], 1, num_threads=1)
    count = lambda k, kind: sum(getattr(k.stats, kind).values())

    def children():  # the states of this process's children, from /proc
        import os
        states = []
        for p in os.listdir("/proc") if os.path.isdir("/proc") else []:
            try:
                with open(f"/proc/{p}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == os.getpid():
                states.append(fields[0])
        return states

    import time
    t0 = time.monotonic()
    while any(s != "Z" for s in children()) and time.monotonic() - t0 < 120:  # the child finishing its list
        time.sleep(0.05)
    time.sleep(0.5)
    print(json.dumps({"first": int(first), "batch": ids[:, 0].tolist(), "enabled": enabled(), "zombies": children().count("Z"),
                      **{f"{name}_{kind}": count(k, kind) for name, k in (("insert", insert_kernel), ("hash", hash_insert), ("one", knn_one_kernel), ("batch", knn_kernel), ("prepare", prepare_rows))
                         for kind in ("cache_hits", "cache_misses")}}))
    """
)


def _cold(tmp_path, mode: str) -> dict:
    if mode == "dead":
        mode = str(tmp_path / "python-that-dies")
        Path(mode).write_text("#!/bin/sh\nexit 1\n")
        Path(mode).chmod(0o755)
    t = time.monotonic()
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"), HNSW_NUMBA_CACHE="1", HNSW_NUMBA_COMPILE_AHEAD="1")
    res = subprocess.run([sys.executable, "-W", "default::ResourceWarning", "-c", COLD, mode], env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-4000:]
    assert "ResourceWarning" not in res.stderr  # a child still running at exit is not a leaked handle
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["first"] == 5 and out["batch"] == [0, 1, 2] and out["enabled"]  # a child was started
    assert time.monotonic() - t < compile_ahead.WAIT_SECONDS  # nothing waited out the timeout for a dead child
    return out


@pytest.mark.skipif(not compile_ahead.enabled(), reason="compiling ahead needs two cores and a locked disk cache")
def test_a_cold_build_loads_the_search_kernels_a_child_compiled(tmp_path) -> None:
    out = _cold(tmp_path, "child")
    assert out["insert_cache_misses"] == 1 and out["insert_cache_hits"] == 0  # compiled here
    assert out["one_cache_hits"] == 1 and out["one_cache_misses"] == 0  # loaded: the child compiled it
    assert out["hash_cache_hits"] == 1 and out["hash_cache_misses"] == 0  # the key map's, compiled after the insert kernel's
    assert out["batch_cache_hits"] == 1 and out["batch_cache_misses"] == 0
    assert out["prepare_cache_hits"] == 1 and out["prepare_cache_misses"] == 0
    assert out["zombies"] == 0  # the finished child was reaped (before: a zombie until the next compilation)


@pytest.mark.skipif(not compile_ahead.enabled(), reason="compiling ahead needs two cores and a locked disk cache")
def test_a_child_that_dies_costs_only_its_time(tmp_path) -> None:
    out = _cold(tmp_path, "dead")
    assert out["one_cache_misses"] == 1 and out["one_cache_hits"] == 0  # compiled here, as without a child
    assert out["batch_cache_misses"] == 1 and out["prepare_cache_misses"] == 1
