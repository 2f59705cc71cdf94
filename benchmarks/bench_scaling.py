"""Thread scaling: batch search, insert_batch and single-query calls from threads.

Usage: python benchmarks/bench_scaling.py [--n 20000] [--dim 128] [--threads 1,2]

Reports throughput with 1..T threads and the speed-up over one thread. Run it on an
otherwise idle machine: every other process steals the cores being measured.
"""

from __future__ import annotations

import argparse
import threading
import time

import numpy as np

from common import RESULTS, Table, machine

import hnsw_numba as hn  # noqa: E402
from hnsw_numba.datasets import clustered_embeddings  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--queries", type=int, default=4000)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args(argv)
    threads = [int(t) for t in a.threads.split(",")]
    data, queries = clustered_embeddings(a.n, a.dim, n_queries=a.queries, seed=1)
    from hnsw_numba.warmup import warmup

    warmup()

    def fresh():
        idx = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=a.dim, max_nodes=a.n, seed=1))
        return idx, hn.InMemoryVectorStore(a.dim, a.n)

    table = Table(["operation", "threads", "items/s", "speed-up vs 1 thread"])
    base: dict[str, float] = {}
    built = None
    for t in threads:
        best = 0.0
        for _ in range(a.repeat):
            idx, store = fresh()
            t0 = time.perf_counter()
            idx.insert_batch(store, np.arange(a.n), data, num_threads=t)
            best = max(best, a.n / (time.perf_counter() - t0))
            built = (idx, store)
        base.setdefault("insert_batch", best)
        table.add("insert_batch", t, f"{best:,.0f}", f"{best / base['insert_batch']:.2f}x")
    idx, store = built
    for t in threads:
        best = 0.0
        for _ in range(a.repeat):
            t0 = time.perf_counter()
            idx.search_batch(store, queries, 10, ef=64, num_threads=t)
            best = max(best, a.queries / (time.perf_counter() - t0))
        base.setdefault("search_batch", best)
        table.add("search_batch (ef=64)", t, f"{best:,.0f}", f"{best / base['search_batch']:.2f}x")
    for t in threads:
        best = 0.0
        parts = np.array_split(queries[:2000], t)
        for _ in range(a.repeat):
            def run(qs: np.ndarray) -> None:
                for q in qs:
                    idx.search(store, q, 10, ef=64)

            ws = [threading.Thread(target=run, args=(p,)) for p in parts]
            t0 = time.perf_counter()
            for w in ws:
                w.start()
            for w in ws:
                w.join()
            best = max(best, 2000 / (time.perf_counter() - t0))
        base.setdefault("single", best)
        table.add("search() from Python threads (ef=64)", t, f"{best:,.0f}", f"{best / base['single']:.2f}x")
    md = (f"{a.n} x {a.dim} clustered L2, M=16, ef_construction=200; machine: {machine()}; "
          f"date {time.strftime('%Y-%m-%d')}\n\n" + table.markdown() + "\n")
    print(md)
    out = RESULTS / "scaling.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
