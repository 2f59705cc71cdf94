"""Compilation hygiene: nothing compiles at import, the disk cache is hit, one decorator."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import PKG, ROOT

SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    t0 = time.perf_counter()
    import numpy as np
    import hnsw_numba as hn
    from hnsw_numba.kernels import search, insert
    t_import = time.perf_counter() - t0
    compiled_at_import = sum(len(k.signatures) for k in (search.knn_kernel, search.knn_one_kernel, insert.insert_kernel))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1000, 16)).astype(np.float32)
    idx = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=16, max_nodes=1000, seed=1))
    store = hn.InMemoryVectorStore(16, 1000)
    idx.insert_batch(store, np.arange(1000), x)
    hits = idx.search(store, x[3], 1)
    print(json.dumps({
        "import_s": t_import,
        "total_s": time.perf_counter() - t0,
        "compiled_at_import": compiled_at_import,
        "hits": [h.key for h in hits],
        "cache_hits": sum(sum(k.stats.cache_hits.values()) for k in (search.knn_one_kernel, insert.insert_kernel)),
    }))
    """
)


def run_fresh_process(cache_dir: Path) -> dict:
    import json

    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir))
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_cache_is_hit_in_a_second_process(tmp_path) -> None:
    # The first process may compile (or hit the shared test cache); the second must hit.
    cache = Path(os.environ["NUMBA_CACHE_DIR"])
    first = run_fresh_process(cache)
    second = run_fresh_process(cache)
    assert first["hits"] == [3] and second["hits"] == [3]
    assert second["compiled_at_import"] == 0
    assert second["cache_hits"] >= 2, second


def test_one_decorator_no_full_fastmath() -> None:
    for path in PKG.rglob("*.py"):
        text = path.read_text()
        if path.relative_to(ROOT).as_posix() != "hnsw_numba/kernels/jit.py":
            assert not re.search(r"numba\.njit|from numba import .*njit|@njit", text), path
        assert "fastmath=True" not in text, path


def cache_race(cls: type, where: Path) -> list:
    """Two writers of one function's cache that both read its index before either writes:
    what a third reader then loads for each of their keys."""
    import threading
    import time

    where.mkdir()
    writers = [cls(str(where), "f-1", ("stamp", 1)) for _ in range(2)]
    for w in writers:
        def read_then_wait(read=w._load_index) -> dict:
            found = read()
            time.sleep(0.3)  # the other writer reads meanwhile, unless a lock keeps it out
            return found
        w._load_index = read_then_wait
    threads = [threading.Thread(target=w.save, args=(("sig", i), f"code {i}")) for i, w in enumerate(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    reader = cls(str(where), "f-1", ("stamp", 1))
    return [reader.load(("sig", i)) for i in range(2)]


@pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX only")
def test_cache_writers_side_by_side_keep_each_key_with_its_own_code(tmp_path) -> None:
    from numba.core.caching import IndexDataCacheFile

    from hnsw_numba.kernels import jit, search

    assert jit.CACHE_LOCKED
    assert type(search.knn_kernel._cache._cache_file) is jit.LockedCacheFile
    assert cache_race(jit.LockedCacheFile, tmp_path / "locked") == ["code 0", "code 1"]
    # Numba's own files lose one entry (both writers take data file 1): the race the lock closes
    assert cache_race(IndexDataCacheFile, tmp_path / "plain") != ["code 0", "code 1"]


def test_helpers_compile_without_wrappers_and_run_from_python() -> None:
    """A helper compiled for a kernel has no CPython or C wrapper in its code (they are most
    of a cold compile's waste); called from Python it runs its twin, which has them."""
    import importlib
    import pkgutil

    import numba
    import numpy as np

    import hnsw_numba.kernels as kernels
    from hnsw_numba.kernels.jit import CACHE, Helper, helper

    @helper
    def twice(x):
        return 2 * x

    @numba.njit
    def caller(x):
        return twice(x) + 1

    assert caller(np.int64(3)) == 7
    (sig,) = twice.signatures
    own = twice.overloads[sig]
    code = own.library.get_llvm_str()
    assert own.fndesc.mangled_name in code
    assert own.fndesc.llvm_cpython_wrapper_name not in code and own.fndesc.llvm_cfunc_wrapper_name not in code
    assert twice(np.int64(5)) == 10 and twice.signatures == [sig]  # the twin compiled, not the helper
    twin = twice.python_twin.overloads[sig]
    assert twin.fndesc.llvm_cpython_wrapper_name in twin.library.get_llvm_str()
    # every uncached function of the kernels' modules is a Helper (a plain njit function
    # would bring its wrappers back); with the disk cache off the kernels are uncached too
    if not CACHE:
        return
    for info in pkgutil.iter_modules(kernels.__path__, "hnsw_numba.kernels."):
        for name, obj in vars(importlib.import_module(info.name)).items():
            if isinstance(obj, numba.core.registry.CPUDispatcher) and obj.py_func.__module__ == info.name and obj._cache.__class__.__name__ == "NullCache":
                assert type(obj) is Helper and obj.targetoptions["no_cpython_wrapper"], info.name + "." + name
