"""Sharded index on a Dask LocalCluster: build, search, memory and recall, 1 vs 2 workers.

Usage:
    python benchmarks/bench_sharded.py [--n 1000000] [--dim 128] [--shards 8] [--workdir DIR]
                                       [--phase scaling|recall|all] [--m 16] [--efc 100]

``prepare`` (a subprocess, so this process never holds the data) writes seeded clustered
float32 data (``hnsw_numba.datasets.clustered_embeddings``), 1,000 queries and their exact
top-10 (squared L2) to ``--workdir`` as .npy files, once.

``scaling``: on a LocalCluster of 1, then 2 worker processes (1 thread each) it builds
the ``--shards``-shard index from the .npy path (rows read on the workers), then searches
10 x the queries (chunks of 1,000, k = 10, ef = 64; best of 3 after a warm-up) and reads
each worker's RSS. It reports the ratios 2 workers / 1 worker, this process's peak RSS
above its start (sampled every 0.1 s), the per-shard build and search task times (from
Dask's task stream), and re-opens the index in a fresh process.

``search``: the search part of ``scaling`` again, with a 1-worker and a 2-worker cluster
both up and their computes interleaved (less exposed to other jobs coming and going),
once with Dask's default configuration and once with its monitoring sampled less often
(``hnsw_numba.dask.QUIET_MONITORING``: the scheduler, nannies and workers share this machine's cores).

``ceiling``: the same searches without Dask, ``search_batch`` on 1 and 2 threads in this
process: what the machine itself allows for 1 -> 2 cores.

``shard``: one shard on one core without Dask (384-d float16, 25,000 and 100,000 rows):
build and search rates, RAM and disk bytes per vector, the inputs of docs/scaling.md.

``recall``: with 2 workers, builds 1-, 4- and ``--shards``-shard indexes of the same data
(kept in ``--workdir``) and measures recall@10 against the exact
neighbours for several ef.

Both clusters run without work stealing (``distributed.scheduler.work-stealing: False``),
the configuration docs/scaling.md advises when workers hold S / workers of RAM. Run the
full-size measurement holding ``flock -x /tmp/cpu.lock`` on a shared machine (the phases
can run separately; built indexes are kept in ``--workdir``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from common import RESULTS, ROOT, machine, recall  # sets the source-keyed Numba cache

PREPARE = """
import sys, numpy as np
import hnsw_numba as hn
from hnsw_numba.datasets import clustered_embeddings
n, dim, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
x, q = clustered_embeddings(n, dim, n_queries=1000, seed=7)
np.save(out + "/data.npy", x)
np.save(out + "/queries.npy", q)
np.save(out + "/truth.npy", hn.exact_neighbors(x, q, 10, "l2")[0])
"""

REOPEN = """
import sys, json, numpy as np, dask
import hnsw_numba.dask as hdask, dask.array as da
ix = hdask.ShardedIndex(sys.argv[1])
for i in range(ix.n_shards):
    ix.load_shard(i)  # checksum, counts and configuration against the manifest
q = np.load(sys.argv[2])[:50]
with dask.config.set(scheduler="synchronous"):
    k, _ = dask.compute(*ix.search(da.from_array(q, chunks=25), 10, ef=64))
print(json.dumps({"shards": ix.n_shards, "live": len(ix), "first": k[0].tolist()}))
"""


def rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


class PeakRss:
    """Samples this process's RSS every 0.1 s in a thread."""

    def __init__(self) -> None:
        self.start = rss()
        self.peak = self.start
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.peak = max(self.peak, rss())

    def stop(self) -> int:
        self._stop.set()
        self._t.join()
        return self.peak - self.start


def prepare(work: Path, n: int, dim: int) -> None:
    meta = work / "meta.json"
    if meta.exists() and json.loads(meta.read_text()) == {"n": n, "dim": dim}:
        return
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", PREPARE, str(n), str(dim), str(work)], check=True, env=env)
    meta.write_text(json.dumps({"n": n, "dim": dim}))


def task_seconds(stream: list, prefix: str) -> list[float]:
    return [t["startstops"][-1]["stop"] - t["startstops"][-1]["start"] for t in stream if str(t["key"]).find(prefix) >= 0]


def cluster(workers: int, quiet: bool = False):
    """A LocalCluster without work stealing (a shard's tasks stay on the worker serving it).

    ``quiet``: with Dask's monitoring sampled less often (``hnsw_numba.dask.QUIET_MONITORING``).
    """
    import dask
    from distributed import Client, LocalCluster

    import hnsw_numba.dask as hdask

    cfg = hdask.CLUSTER_CONFIG if quiet else {"distributed.scheduler.work-stealing": False}
    with dask.config.set(cfg):
        c = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
    return c, Client(c)


def warm_up(work: Path, workers: int) -> None:
    """Compile (or load) the kernels in every worker: a tiny build and search."""
    import dask
    import dask.array as da

    import hnsw_numba.dask as hdask

    x = da.from_array(np.random.default_rng(0).standard_normal((400 * workers, 8)).astype(np.float32), chunks=400)
    ix = hdask.build(x, work / "warm.zarr", metric="l2", n_shards=2 * workers, m=8, ef_construction=32)
    dask.compute(*ix.search(x, 5))


def scaling(a, work: Path, lines: list[str], peak: PeakRss) -> None:
    import dask
    import dask.array as da
    from distributed import get_task_stream, wait

    import hnsw_numba.dask as hdask

    queries = np.load(work / "queries.npy")
    truth = np.load(work / "truth.npy")
    res = {}
    for w in (1, 2):
        target = work / f"s{a.shards}-w{w}.zarr"
        c, client = cluster(w)
        with c, client:
            warm_up(work, w)
            client.run(hdask.clear_cache)
            base = client.run(rss)
            with get_task_stream(client) as ts:
                t0 = time.perf_counter()
                index = hdask.build(str(work / "data.npy"), target, metric="l2", n_shards=a.shards, m=a.m,
                                    ef_construction=a.efc, seed=1)
                build_s = time.perf_counter() - t0
            shard_build = task_seconds(ts.data, "hnsw-build-shard")
            after_build = client.run(rss)
            q = da.from_array(np.concatenate([queries] * 10), chunks=(1000, a.dim)).persist()
            wait(q)
            keys, dists = index.search(q, 10, ef=64)
            dask.compute(keys, dists)  # opens the shards, warms the kernels
            times = []
            with get_task_stream(client) as ts:
                for _ in range(3):
                    t0 = time.perf_counter()
                    got, _ = dask.compute(keys, dists)
                    times.append(time.perf_counter() - t0)
            shard_search = task_seconds(ts.data, "hnsw-search-shard")
            loads = client.run(hdask.load_counts)
            worker_rss = client.run(rss)
        res[w] = dict(build=build_s, qps=q.shape[0] / min(times), rss=worker_rss, base=base, after_build=after_build,
                      loads={k: len(v) for k, v in loads.items()}, recall=recall(got[: len(truth)], truth),
                      shard_build=shard_build, shard_search=shard_search, nbytes=sum(s.nbytes for s in index.manifest.shards))
    client_growth = peak.stop()
    r1, r2 = res[1], res[2]
    build_ratio = r1["build"] / r2["build"]
    qps_ratio = r2["qps"] / r1["qps"]
    rss1 = max(r1["rss"].values())
    rss2 = max(r2["rss"].values())
    held1 = rss1 - max(r1["base"].values())
    held2 = max(r2["rss"][k] - r2["base"][k] for k in r2["rss"])
    reopen = subprocess.run([sys.executable, "-c", REOPEN, str(work / f"s{a.shards}-w2.zarr"), str(work / "queries.npy")],
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    ok = reopen.returncode == 0 and json.loads(reopen.stdout.strip().splitlines()[-1])["live"] == a.n
    mb = 1 << 20
    per_shard = a.n / a.shards
    lines += [
        f"## Scaling: {a.n:,} x {a.dim} float32, {a.shards} shards (m={a.m}, ef_construction={a.efc}), 1 vs 2 workers\n",
        "| | 1 worker | 2 workers | 2 / 1 |", "|---|---|---|---|",
        f"| build wall s | {r1['build']:.1f} | {r2['build']:.1f} | {build_ratio:.2f}x throughput |",
        f"| search q/s (10,000 queries, k=10, ef=64) | {r1['qps']:,.0f} | {r2['qps']:,.0f} | {qps_ratio:.2f}x |",
        f"| max worker RSS after search, MB | {rss1 / mb:,.0f} | {rss2 / mb:,.0f} | {rss2 / rss1:.2f}x |",
        f"| max worker RSS above its start, MB | {held1 / mb:,.0f} | {held2 / mb:,.0f} | {held2 / max(held1, 1):.2f}x |",
        f"| shards opened per worker | {sorted(r1['loads'].values())} | {sorted(r2['loads'].values())} | |",
        f"| recall@10 at ef=64 | {r1['recall']:.4f} | {r2['recall']:.4f} | |",
        "",
        f"Index in memory: {r2['nbytes'] / mb:,.0f} MB over {a.shards} shards. Client (this process) peak RSS above its "
        f"start over both clusters and builds: {client_growth / mb:,.0f} MB. Re-opened in a fresh process: "
        f"{'yes' if ok else 'NO: ' + reopen.stderr[-500:]}.",
        f"Per-shard build task ({per_shard:,.0f} rows, one thread): median {np.median(r2['shard_build']):.1f} s "
        f"with 2 workers ({per_shard / np.median(r2['shard_build']):,.0f} rows/s), {np.median(r1['shard_build']):.1f} s with 1.",
        f"Per-shard search task (1,000 queries x 1 shard, ef=64): median {1000 * np.median(r2['shard_search']):.0f} ms "
        f"({1000 / np.median(r2['shard_search']):,.0f} queries/s per core per shard) with 2 workers, "
        f"{1000 * np.median(r1['shard_search']):.0f} ms with 1.",
        "",
    ]


def recall_table(a, work: Path, lines: list[str]) -> None:
    import dask
    import dask.array as da

    import hnsw_numba.dask as hdask

    queries = np.load(work / "queries.npy")
    truth = np.load(work / "truth.npy")
    efs = [16, 32, 64, 128, 256]
    rows = {}
    c, client = cluster(2)
    with c, client:
        for s in (1, 4, a.shards):
            target = work / f"s{s}.zarr"
            if not (target / "zarr.json").exists():
                # a single-shard build is one task: give it both threads of the machine
                hdask.build(str(work / "data.npy"), target, metric="l2", n_shards=s, m=a.m, ef_construction=a.efc,
                            seed=1, num_threads=2 if s == 1 else 1)
            index = hdask.ShardedIndex(target)
            q = da.from_array(queries, chunks=(250, a.dim))
            rows[s] = []
            for ef in efs:
                k, _ = dask.compute(*index.search(q, 10, ef=ef))
                rows[s].append(recall(k, truth))
            client.run(hdask.clear_cache)
    lines += [f"## Recall@10 vs ef (1,000 queries, exact ground truth; ef per shard)\n",
              "| shards | " + " | ".join(f"ef={e}" for e in efs) + " |", "|---" * (len(efs) + 1) + "|"]
    lines += [f"| {s} | " + " | ".join(f"{r:.4f}" for r in rows[s]) + " |" for s in rows]
    i64 = efs.index(64)
    lines += ["", f"At ef=64: {a.shards} shards {rows[a.shards][i64]:.4f} vs 1 shard {rows[1][i64]:.4f} "
              f"(difference {rows[a.shards][i64] - rows[1][i64]:+.4f}).", ""]


def shard_rates(a, work: Path, lines: list[str]) -> None:
    """One shard on one core, no Dask: build and search rates at 384-d float16, two sizes."""
    import hnsw_numba as hn
    from hnsw_numba.datasets import clustered_embeddings

    lines += ["## One shard, one core: 384-d float16, m=16, ef_construction=100 (inputs of docs/scaling.md)\n",
              "| rows | build rows per CPU s | search queries per CPU s (k=10, ef=64) | RAM bytes/vector | disk bytes/vector |",
              "|---|---|---|---|---|"]
    for n in (25_000, 100_000):
        x, q = clustered_embeddings(n, 384, n_queries=1000, seed=3)
        index = hn.Hnsw(hn.Cosine(), hn.HnswConfig(dim=384, max_nodes=n, m=16, ef_construction=100, seed=1))
        store = hn.InMemoryVectorStore(384, n, "float16")
        index.insert_batch(store, np.arange(1000), x[:1000], num_threads=1)  # compile / warm
        # CPU seconds of this single-threaded process: other jobs on a shared machine
        # lengthen the wall time, much less the CPU time of the work itself
        t0 = time.process_time()
        index.insert_batch(store, np.arange(1000, n), x[1000:], num_threads=1)
        build = (n - 1000) / (time.process_time() - t0)
        index.search_batch(store, q[:50], 10, ef=64, num_threads=1)
        t0 = time.process_time()
        for _ in range(3):
            index.search_batch(store, q, 10, ef=64, num_threads=1)
        qps = 3 * q.shape[0] / (time.process_time() - t0)
        ram = sum(int(v.nbytes) for v in index.graph_arrays) + store.nbytes + index.key_map.nbytes()
        hn.save(work / "one-shard.zarr", index, store)
        disk = sum(f.stat().st_size for f in (work / "one-shard.zarr").rglob("*") if f.is_file())
        lines.append(f"| {n:,} | {build:,.0f} | {qps:,.0f} | {ram / n:,.0f} | {disk / n:,.0f} |")
    lines.append("")


def search_ab(a, work: Path, lines: list[str]) -> None:
    """Search throughput of a 1-worker and a 2-worker cluster, both up, interleaved (A, B, A, B, ...).

    Twice: with Dask's default configuration, then with its monitoring sampled less often
    (``hnsw_numba.dask.QUIET_MONITORING``); each pair of clusters is closed before the next starts. The task
    stream of the 2-worker computes gives the search tasks' time per worker.
    """
    lines += ["## Search, 1 vs 2 workers, interleaved\n",
              f"{a.rounds} rounds, both clusters of a configuration up, computes alternated; 10,000 queries in "
              "chunks of 1,000, k=10, ef=64.\n",
              "| Dask configuration | 1 worker q/s | 2 workers q/s | 2 / 1 (best) | 2 / 1 per round | "
              "2-worker search task s per worker | client + scheduler CPU s per 2-worker compute |",
              "|---|---|---|---|---|---|---|"]
    for quiet in (False, True):
        lines.append(search_pair(a, work, quiet))
    lines.append("")


def search_pair(a, work: Path, quiet: bool) -> str:
    import dask.array as da
    from distributed import get_task_stream, wait

    import hnsw_numba.dask as hdask

    target = work / f"s{a.shards}-w2.zarr"
    queries = np.concatenate([np.load(work / "queries.npy")] * 10)
    setups = {}
    for w in (1, 2):
        c, client = cluster(w, quiet)
        with client.as_current():
            index = hdask.ShardedIndex(target)
            q = da.from_array(queries, chunks=(1000, a.dim)).persist()
            wait(q)
            arrays = index.search(q, 10, ef=64)
            client.gather(client.compute(list(arrays)))  # open the shards, warm the kernels
        setups[w] = (c, client, arrays)
    times = {1: [], 2: []}
    busy, own_cpu = [], []
    for _ in range(a.rounds):
        for w, (_, client, arrays) in setups.items():
            c0 = cpu_seconds()
            with get_task_stream(client) as ts:
                t0 = time.perf_counter()
                client.gather(client.compute(list(arrays)))
                times[w].append(time.perf_counter() - t0)
            if w == 2:
                own_cpu.append(cpu_seconds() - c0)
                busy.append(max(sum(task_seconds([t for t in ts.data if t["worker"] == wk], "hnsw-search-shard"))
                                for wk in {t["worker"] for t in ts.data}))
    loads = {w: sorted(len(v) for v in setups[w][1].run(hdask.load_counts).values()) for w in setups}
    for c, client, _ in setups.values():
        client.close()
        c.close()
    n = queries.shape[0]
    b1, b2 = min(times[1]), min(times[2])
    rounds = ", ".join(f"{t1 / t2:.2f}" for t1, t2 in zip(times[1], times[2]))
    name = ("monitoring sampled less often (`hdask.CLUSTER_CONFIG`)" if quiet else "default") + f"; shards opened {loads[1]} / {loads[2]}"
    return (f"| {name} | {n / b1:,.0f} | {n / b2:,.0f} | {b1 / b2:.2f}x | {rounds} | {np.median(busy):.2f} "
            f"| {np.median(own_cpu):.2f} |")


def cpu_seconds() -> float:
    """CPU seconds of this process (the client, and a LocalCluster's scheduler and nannies)."""
    t = os.times()
    return t.user + t.system


def ceiling(a, work: Path, lines: list[str]) -> None:
    """The machine's own 1 -> 2 core scaling of the same searches, without Dask.

    The scaling phase's index is loaded here and every shard searched with ``search_batch``
    on 1 and then 2 threads (interleaved, best of 3): the ratio the hardware allows for
    these memory-bound searches, to read the 2-worker ratio against.
    """
    import hnsw_numba.dask as hdask

    index = hdask.ShardedIndex(work / f"s{a.shards}-w2.zarr")
    shards = [index.load_shard(i) for i in range(index.n_shards)]
    q = np.concatenate([np.load(work / "queries.npy")] * 10)
    for ix, st in shards:
        ix.search_batch(st, q[:200], 10, ef=64, num_threads=2)
    best = {1: np.inf, 2: np.inf}
    for _ in range(3):
        for t in (1, 2):
            t0 = time.perf_counter()
            for ix, st in shards:
                ix.search_batch(st, q, 10, ef=64, num_threads=t)
            best[t] = min(best[t], time.perf_counter() - t0)
    lines += ["## The hardware's own scaling of these searches (no Dask)\n",
              f"`search_batch` of {q.shape[0]:,} queries in each of the {len(shards)} shards, k=10, ef=64, best of 3 "
              f"interleaved: 1 thread {q.shape[0] / best[1]:,.0f} q/s, 2 threads {q.shape[0] / best[2]:,.0f} q/s "
              f"({best[1] / best[2]:.2f}x).", ""]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--m", type=int, default=16)
    ap.add_argument("--efc", type=int, default=100)
    ap.add_argument("--phase", choices=["prepare", "scaling", "search", "ceiling", "recall", "shard", "all"], default="all")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--rounds", type=int, default=4, help="interleaved rounds of --phase search")
    a = ap.parse_args(argv)
    peak = PeakRss()  # before any data or cluster exists in this process
    work = Path(a.workdir or f"/tmp/hnsw-bench-sharded-{a.n}x{a.dim}")
    prepare(work, a.n, a.dim)
    lines = [f"# Sharded index on Dask: `python benchmarks/bench_sharded.py --n {a.n} --dim {a.dim} --shards {a.shards} "
             f"--phase {a.phase}`\n", f"machine: {machine()}; load average {os.getloadavg()[0]:.1f} at start; "
             f"date {time.strftime('%Y-%m-%d')}\n"]
    if a.phase == "prepare":
        return 0
    if a.phase in ("scaling", "all"):
        scaling(a, work, lines, peak)
    if a.phase in ("search", "all"):
        search_ab(a, work, lines)
    if a.phase in ("ceiling", "all"):
        ceiling(a, work, lines)
    if a.phase in ("recall", "all"):
        recall_table(a, work, lines)
    if a.phase in ("shard", "all"):
        shard_rates(a, work, lines)
    lines.append(f"load average {os.getloadavg()[0]:.1f} at the end (the machine is shared)")
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"sharded-{a.phase}.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
