"""This tree against another checkout of hnsw_numba, in one process, interleaved.

Usage::

    python benchmarks/bench_compare.py --old /path/to/old/checkout [FILE.hdf5] [--rounds 7]

The other checkout's package (``OLD/hnsw_numba``) is imported under another module name
(loaded through a symlink ``hnsw_numba_old`` in a temporary directory, without touching
``sys.path``: its imports are relative; its own file paths keep its Numba cache apart), so both
versions live in one process and are timed alternately on the same data: build time
(one build each per round, the same seed), batch queries/s and single-query queries/s at
each ef, and a cold compile of the float32 paths in fresh processes with empty Numba
caches. Ratios are this tree / the old one (> 1: this tree is faster). Use it to check that a
refactoring leaves speed unchanged: on a shared machine differences under ~5 % are noise.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from common import DEV_SET, load_hdf5

ROOT = Path(__file__).resolve().parent.parent

COLD = """
import time
t = time.perf_counter()
import numpy as np
import hnsw_numba as hn
x = np.random.default_rng(0).standard_normal((2000, 64)).astype(np.float32)
idx = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=64, max_nodes=2000, seed=0))
store = hn.InMemoryVectorStore(64, 2000)
idx.insert_batch(store, np.arange(2000), x)
idx.search(store, x[0], 10)
idx.search_batch(store, x[:10], 10)
print(time.perf_counter() - t)
"""


def import_as(checkout: Path, name: str, scratch: Path) -> Any:
    """Import ``checkout/hnsw_numba`` as the package ``name``, through a symlink in ``scratch``.

    The symlink's paths are the modules' file paths, so Numba caches their kernels apart from
    the same files imported as ``hnsw_numba`` (a cached kernel names its module).
    """
    link = scratch / name
    if not link.exists():
        link.symlink_to(checkout / "hnsw_numba", target_is_directory=True)
    spec = importlib.util.spec_from_file_location(name, link / "__init__.py", submodule_search_locations=[str(link)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def build(hn: Any, metric: str, x: np.ndarray) -> tuple[Any, Any, float]:
    n, dim = x.shape
    m = hn.Cosine() if metric == "cosine" else hn.L2()
    idx = hn.Hnsw(m, hn.HnswConfig(dim=dim, max_nodes=n, m=16, ef_construction=200, seed=1))
    store = hn.InMemoryVectorStore(dim, n)
    t = time.perf_counter()
    idx.insert_batch(store, np.arange(n), x, progress=False)
    return idx, store, time.perf_counter() - t


def batch_qps(idx: Any, store: Any, q: np.ndarray, ef: int) -> float:
    t = time.perf_counter()
    idx.search_batch(store, q, 10, ef=ef)
    return q.shape[0] / (time.perf_counter() - t)


def single_qps(idx: Any, store: Any, q: np.ndarray, ef: int) -> float:
    search = idx.search
    t = time.perf_counter()
    for row in q:
        search(store, row, 10, ef=ef)
    return q.shape[0] / (time.perf_counter() - t)


def cold_compile(checkout: Path) -> float:
    """Seconds to import ``checkout``'s package and compile its float32 paths in a fresh process."""
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache, PYTHONPATH=str(checkout))
        out = subprocess.run([sys.executable, "-c", COLD], env=env, capture_output=True, text=True, check=True)
        return float(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", nargs="?", default=str(DEV_SET))
    ap.add_argument("--old", required=True, type=Path, help="another checkout (its hnsw_numba/ is compared)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--ef", default="32,64,128")
    ap.add_argument("--cold", type=int, default=2, help="cold-compile runs per tree (0: skip)")
    a = ap.parse_args(argv)
    efs = [int(e) for e in a.ef.split(",")]
    ds = load_hdf5(a.dataset)
    with tempfile.TemporaryDirectory() as scratch:
        trees = {"new": import_as(ROOT, "hnsw_numba_new", Path(scratch)), "old": import_as(a.old.resolve(), "hnsw_numba_old", Path(scratch))}
        built = {}
        builds: dict[str, list[float]] = {k: [] for k in trees}
        for r in range(2):
            for name, hn in trees.items() if r % 2 == 0 else reversed(trees.items()):
                idx, store, secs = build(hn, ds.metric, ds.train)
                builds[name].append(secs)
                built[name] = (idx, store)
        q = ds.test
        res: dict[tuple[str, str, int], list[float]] = {}
        for name, (idx, store) in built.items():  # warm: compile / load, bind
            idx.search_batch(store, q[:4], 10)
            idx.search(store, q[0], 10)
        for r in range(a.rounds):
            order = list(built) if r % 2 == 0 else list(reversed(built))
            for ef in efs:
                for name in order:
                    idx, store = built[name]
                    res.setdefault((name, "batch", ef), []).append(batch_qps(idx, store, q, ef))
                    res.setdefault((name, "single", ef), []).append(single_qps(idx, store, q, ef))
    print(f"{ds.name}: {ds.train.shape[0]:,} x {ds.train.shape[1]}, {q.shape[0]} queries, {a.rounds} rounds (best of each)")
    print(f"build (second of two, s): new {builds['new'][-1]:.2f}, old {builds['old'][-1]:.2f}, "
          f"speed ratio new/old {builds['old'][-1] / builds['new'][-1]:.3f} (first builds include compilation)")
    print("| mode | ef | new q/s | old q/s | new / old |\n|---|---|---|---|---|")
    for mode in ("batch", "single"):
        for ef in efs:
            n, o = max(res[("new", mode, ef)]), max(res[("old", mode, ef)])
            print(f"| {mode} | {ef} | {n:,.0f} | {o:,.0f} | {n / o:.3f} |")
    if a.cold:
        cold = {"new": [], "old": []}
        for _ in range(a.cold):
            cold["new"].append(cold_compile(ROOT))
            cold["old"].append(cold_compile(a.old.resolve()))
        print(f"cold compile of the float32 paths (s, each run): new {cold['new']}, old {cold['old']}; "
              f"ratio of the minima new/old {min(cold['new']) / min(cold['old']):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
