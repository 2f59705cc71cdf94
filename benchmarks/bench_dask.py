"""Dask fan-out throughput: hnsw_numba.dask.search with 1 and 2 worker processes.

Usage: python benchmarks/bench_dask.py [FILE.hdf5] [--k 10] [--ef 64] [--chunk 1000] [--repeat 3]

Saves an index of the train set (default: the words dev set) to a temporary directory,
then joins the train vectors themselves as queries (a dask array in row chunks, persisted
on the workers first) on a distributed.LocalCluster of 1 and then 2 worker processes (one thread each, one search
thread per task). Every worker opens the index before timing (as it does on its first
task); the times are the best of ``--repeat`` computes. For reference it also times a
local ``search_batch`` with 1 and 2 threads. Queries per CPU second (of this process's
threads, or of the worker processes) show the work per query apart from the contention of
a shared machine: throughput scales with workers as long as they get their cores.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from common import DEV_SET, RESULTS, Table, load_hdf5, machine

import hnsw_numba as hn  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file", nargs="?", default=str(DEV_SET))
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--ef", type=int, default=64)
    ap.add_argument("--chunk", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", default="1,2")
    a = ap.parse_args(argv)
    import dask
    import dask.array as da
    from distributed import Client, LocalCluster, wait

    import hnsw_numba.dask as hdask

    ds = load_hdf5(a.file)
    x = ds.train
    n, dim = x.shape
    metric = hn.Cosine() if ds.metric == "cosine" else hn.L2()
    index = hn.Hnsw(metric, hn.HnswConfig(dim=dim, max_nodes=n, seed=1))
    store = hn.InMemoryVectorStore(dim, n)
    index.insert_batch(store, np.arange(n), x)

    table = Table(["where", "workers x threads", "queries/s", "vs 1", "queries per CPU s"])
    local: dict[int, float] = {}
    for t in (1, 2):
        index.search_batch(store, x[:500], a.k, ef=a.ef, num_threads=t)  # warm
        c0 = time.process_time()
        best = min(_timed(lambda: index.search_batch(store, x, a.k, ef=a.ef, num_threads=t)) for _ in range(a.repeat))
        per_cpu = n * a.repeat / (time.process_time() - c0)
        local[t] = n / best
        table.add("local search_batch", f"1 x {t} threads", f"{local[t]:,.0f}", f"{local[t] / local[1]:.2f}x", f"{per_cpu:,.0f}")

    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as tmp:
        target = str(Path(tmp) / "index.zarr")
        hn.save(target, index, store)
        rates: dict[int, float] = {}
        for workers in [int(w) for w in a.workers.split(",")]:
            with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, Client(cluster) as client:
                # The queries live on the workers (as when read from storage there), so the
                # timing measures the join, not shipping the array from this process.
                q = da.from_array(x, chunks=(a.chunk, dim)).persist()
                wait(q)
                client.run(hdask.preload, target)  # every worker opens the index
                keys, dists = hdask.search(target, q, a.k, ef=a.ef)
                dask.compute(keys[: a.chunk * workers], dists[: a.chunk * workers])  # warm the kernels
                c0 = sum(client.run(time.process_time).values())
                best = min(_timed(lambda: dask.compute(keys, dists)) for _ in range(a.repeat))
                per_cpu = n * a.repeat / (sum(client.run(time.process_time).values()) - c0)
                loads = sorted(c.get(target, 0) for c in client.run(hdask.load_counts).values())
            rates[workers] = n / best
            first = rates[min(rates)]
            table.add(f"dask LocalCluster (loads per worker {loads})", f"{workers} x 1", f"{rates[workers]:,.0f}", f"{rates[workers] / first:.2f}x", f"{per_cpu:,.0f}")
    load.append(os.getloadavg()[0])
    text = (
        "# Dask fan-out: hnsw_numba.dask.search throughput\n\n"
        f"`python benchmarks/bench_dask.py` — index of {Path(a.file).name} train ({n:,} x {dim}, {ds.metric}, "
        f"m=16, ef_construction=200) saved to a local directory; the {n:,} train vectors joined as queries "
        f"in chunks of {a.chunk} rows, k={a.k}, ef={a.ef}, best of {a.repeat}.\n"
        f"machine: {machine()}; 1-minute load average {load[0]:.1f} before, {load[1]:.1f} after "
        f"(shared with other jobs); date {time.strftime('%Y-%m-%d')}\n\n"
        f"{table.markdown()}\n"
    )
    print(text)
    (RESULTS / "dask.md").write_text(text)
    return 0


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


if __name__ == "__main__":
    raise SystemExit(main())
