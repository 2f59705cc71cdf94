"""Resident memory per vector: hnsw_numba vs hnswlib, with a breakdown.

Usage: python benchmarks/bench_memory.py [--n 100000] [--dim 128]

Each library is measured in a fresh subprocess: RSS after import + data generation, then
after building an index of n f32 vectors (M=16); the difference over n is bytes/vector.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap
import time

from common import RESULTS, Table, machine

CHILD = textwrap.dedent(
    """
    import json, sys, numpy as np
    def rss():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS"):
                return int(line.split()[1]) * 1024
    lib, n, dim, keys = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    x = np.random.default_rng(0).standard_normal((n, dim)).astype(np.float32)
    out = {}
    if lib == "hnsw_numba":
        import hnsw_numba as hn
        from hnsw_numba.warmup import warmup
        warmup()
        k = np.arange(n) if keys == "int" else [f"item-{i:09d}" for i in range(n)]
        base = rss()
        idx = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=dim, max_nodes=n, m=16, ef_construction=100))
        store = hn.InMemoryVectorStore(dim, n)
        idx.insert_batch(store, k, x)
        out["rss"] = rss() - base
        out["vectors"] = store.nbytes
        out["graph"] = sum(idx.state.graph.nbytes().values())
        out["keys"] = idx.key_map.nbytes()
    else:
        import hnswlib
        base = rss()
        p = hnswlib.Index(space="l2", dim=dim)
        p.init_index(max_elements=n, M=16, ef_construction=100)
        p.add_items(x, np.arange(n))
        out["rss"] = rss() - base
    print(json.dumps(out))
    """
)


def measure(lib: str, n: int, dim: int, keys: str) -> dict:
    r = subprocess.run([sys.executable, "-c", CHILD, lib, str(n), str(dim), keys], capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=128)
    a = ap.parse_args(argv)
    t = Table(["library", "keys", "RSS bytes/vector", "ratio vs hnswlib", "vectors", "graph", "key map"])
    ref = measure("hnswlib", a.n, a.dim, "int")
    t.add("hnswlib 0.8", "uint64 labels", f"{ref['rss'] / a.n:.0f}", "1.00x", "-", "-", "-")
    for keys in ("int", "str"):
        r = measure("hnsw_numba", a.n, a.dim, keys)
        t.add("hnsw_numba", keys, f"{r['rss'] / a.n:.0f}", f"{r['rss'] / ref['rss']:.2f}x",
              f"{r['vectors'] / a.n:.0f}", f"{r['graph'] / a.n:.0f}", f"{r['keys'] / a.n:.0f}")
    md = (f"{a.n:,} x {a.dim} f32, M=16; bytes per vector (RSS growth while building, and hnsw_numba's own "
          f"accounting); machine: {machine()}; date {time.strftime('%Y-%m-%d')}\n\n" + t.markdown() + "\n")
    print(md)
    (RESULTS / "memory.md").write_text(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
