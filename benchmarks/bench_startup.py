"""Start-up costs: cold compile of the float32 paths, and warm start to first answer.

Usage: python benchmarks/bench_startup.py [--n 100000] [--dim 128]

1. cold: a fresh process with an empty Numba cache imports hnsw_numba and runs
   ``warmup(metrics=("l2", "cosine", "ip"))`` (insert, update, search, brute force, integrity).
2. warm: with the cache filled, a fresh process imports hnsw_numba, loads a saved
   n-vector index (``hnsw_numba.load``) and answers one query.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import RESULTS, Table, machine

COLD = """
import json, time
t = time.perf_counter()
from hnsw_numba.warmup import warmup
s = warmup(metrics=("l2", "cosine", "ip"))
print(json.dumps({"total": time.perf_counter() - t, "warmup": s}))
"""

WARM = """
import json, sys, time
t0 = time.perf_counter()
import numpy as np
import hnsw_numba as hn
t1 = time.perf_counter()
index, store = hn.load(sys.argv[1], hn.L2(), mmap={mmap})
t2 = time.perf_counter()
hits = index.search(store, np.zeros(index.dim, np.float32), 10)
t3 = time.perf_counter()
print(json.dumps({{"import": t1 - t0, "load": t2 - t1, "query": t3 - t2, "total": t3 - t0}}))
"""


def run(code: str, env: dict, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=128)
    a = ap.parse_args(argv)
    t = Table(["measurement", "seconds", "target"])
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, NUMBA_CACHE_DIR=str(Path(tmp) / "cache"))
        cold = run(COLD, env)
        t.add("cold: import + compile f32 paths (3 metrics)", f"{cold['total']:.1f}", "<= 15 s")
        import numpy as np

        import hnsw_numba as hn
        from hnsw_numba.datasets import clustered_embeddings

        x, _ = clustered_embeddings(a.n, a.dim, seed=0)
        index = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=a.dim, max_nodes=a.n, seed=0))
        store = hn.InMemoryVectorStore(a.dim, a.n)
        index.insert_batch(store, np.arange(a.n), x)
        target = str(Path(tmp) / "index.zarr")
        hn.save(target, index, store)
        run(WARM.format(mmap=False), env, target)  # fill the cache for the load path
        for mmap in (False, True):
            best = min((run(WARM.format(mmap=mmap), env, target) for _ in range(3)), key=lambda r: r["total"])
            t.add(f"warm start, {'memory-mapped' if mmap else 'in-memory'} load of {a.n:,} x {a.dim}: total "
                  f"(import {best['import']:.2f}, load {best['load']:.2f}, query {best['query']:.3f})",
                  f"{best['total']:.2f}", "<= 1 s")
    md = f"machine: {machine()}; date {time.strftime('%Y-%m-%d')}\n\n" + t.markdown() + "\n"
    print(md)
    (RESULTS / "startup.md").write_text(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
