"""What ``hn.Index`` costs over ``Hnsw`` + store, and the memory ``Index.add_from`` needs.

Usage:
    python benchmarks/bench_index_api.py overhead [--n 20000] [--dim 128] [--rounds 21]
    python benchmarks/bench_index_api.py add_from [--n 4000000] [--dim 128] [--dtype qi8] [--file /tmp/x.npy]

``overhead``: one index, searched through ``Index.search`` and through ``Hnsw.search`` /
``search_batch`` on the same arrays, interleaved (A, B, A, B, ...) in one process; each round
times every query once as single calls, all queries as one batch (6 calls each, alternating),
and 5,000 single calls on a 64-item index with k=1, ef=1, where a call costs a few
microseconds and the wrapper's fixed cost is not lost in the noise of the search itself.
Reported: the median over rounds of the per-call difference (single, microseconds) and of
the time ratio (batch). Targets: single within 0.5 us per call, batch within 3 %.

``add_from``: builds an ``Index`` from a memory-mapped ``.npy`` file of float32 (4,000,000 x 128
= 2.05 GB by default, generated under /tmp when missing) in a fresh child process, and reads
the child's memory from ``/proc/self/status``: the resident set before the build (after the
kernels are loaded), its peak during the build (``VmHWM``), and the peaks of its anonymous and
file-backed parts (sampled every 20 ms). The index itself must be in memory (``--dtype qi8``:
134 bytes a vector, plus the graph), so the budget concerns the reading: ``add_from``'s own
overhead = peak growth - the index's bytes (store columns + graph arrays + key map), target
256 MB. The index is given ``capacity=n`` so that no growth copy is counted (growth doubles
arrays, a cost of the index, not of the reading).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from common import RESULTS, machine

MiB = 1 << 20


def status() -> dict[str, int]:
    """Memory fields of /proc/self/status in bytes."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[name] = int(value.split()[0]) * 1024
    return out


# ============================================================================ overhead
def overhead(a: argparse.Namespace) -> str:
    import hnsw_numba as hn
    from hnsw_numba.datasets import clustered_embeddings

    x, q = clustered_embeddings(a.n, a.dim, n_queries=a.queries, seed=0)
    index = hn.Index(a.dim, metric="cosine", seed=0)
    index.add(x, progress=False)
    native, store = index.native
    k, ef = 10, 64
    index.search(q[0], k, ef=ef), native.search(store, q[0], k, ef=ef)  # bind, compile
    index.search(q[:2], k, ef=ef)

    def singles_paired() -> tuple[float, float]:
        """us per call through Index and through Hnsw, timed query by query in pairs
        (alternating which goes first), so drift in the machine's speed hits both alike."""
        si_, sn_ = index.search, native.search
        clock = time.perf_counter
        ti = tn = 0.0
        for j, row in enumerate(q):
            if j % 2:
                t0 = clock(); si_(row, k, ef=ef); t1 = clock(); sn_(store, row, k, ef=ef); t2 = clock()  # noqa: E702
                ti += t1 - t0
                tn += t2 - t1
            else:
                t0 = clock(); sn_(store, row, k, ef=ef); t1 = clock(); si_(row, k, ef=ef); t2 = clock()  # noqa: E702
                tn += t1 - t0
                ti += t2 - t1
        return ti / len(q) * 1e6, tn / len(q) * 1e6

    def batch_index(queries: np.ndarray) -> float:
        t = time.perf_counter()
        index.search(queries, k, ef=ef)
        return time.perf_counter() - t

    def batch_native(queries: np.ndarray) -> float:
        t = time.perf_counter()
        native.search_batch(store, queries, k, ef=ef)
        return time.perf_counter() - t

    def batches(queries: np.ndarray, repeat: int) -> tuple[float, float]:
        """Total time of ``repeat`` calls each, alternating Index / Hnsw call by call."""
        ti = tn = 0.0
        for j in range(repeat):
            if j % 2:
                ti += batch_index(queries)
                tn += batch_native(queries)
            else:
                tn += batch_native(queries)
                ti += batch_index(queries)
        return ti / repeat, tn / repeat

    # the fixed cost of a call, where it is visible: a 64-item index, k=1, ef=1 (a few us a call)
    small = hn.Index(a.dim, metric="cosine", seed=0)
    small.add(x[:64], progress=False)
    s_native, s_store = small.native
    few = q[:200]
    small.search(few[0], 1, ef=1), s_native.search(s_store, few[0], 1, ef=1)

    def fixed(use_index: bool) -> float:
        t = time.perf_counter()
        if use_index:
            s = small.search
            for _ in range(25):
                for row in few:
                    s(row, 1, ef=1)
        else:
            s = s_native.search
            for _ in range(25):
                for row in few:
                    s(s_store, row, 1, ef=1)
        return (time.perf_counter() - t) / (25 * len(few)) * 1e6

    diffs, ratios, singles, batches_big, fixed_d, fixed_t = [], [], [], [], [], []
    for r in range(a.rounds):
        # alternate which goes first, so neither always runs on warmer caches
        si, sn = singles_paired()
        bi, bn = batches(q, 6)
        fi, fn = (fixed(True), fixed(False)) if r % 2 else (fixed(False), fixed(True))[::-1]
        fixed_d.append(fi - fn)
        fixed_t.append((fi, fn))
        diffs.append(si - sn)
        ratios.append(bi / bn)
        singles.append((si, sn))
        batches_big.append((bi, bn))
    d, rt = statistics.median(diffs), statistics.median(ratios)
    si_med = statistics.median(s for s, _ in singles)
    sn_med = statistics.median(s for _, s in singles)
    bi_med = statistics.median(b for b, _ in batches_big)
    bn_med = statistics.median(b for _, b in batches_big)
    return (
        f"## Index over Hnsw: the wrapper's cost\n\n"
        f"`python benchmarks/bench_index_api.py overhead --n {a.n} --dim {a.dim} --rounds {a.rounds}` — "
        f"{a.n:,} x {a.dim} cosine, {a.queries} queries, k={k}, ef={ef}; {a.rounds} interleaved rounds, medians.\n"
        f"machine: {machine()}; date {time.strftime('%Y-%m-%d')}\n\n"
        "| path | Index | Hnsw | Index - Hnsw (median of rounds) | target |\n|---|---|---|---|---|\n"
        f"| single query, us per call | {si_med:.2f} | {sn_med:.2f} | {d:+.2f} us | within 0.5 us |\n"
        f"| batch of {a.queries} (all cores; 6 calls each per round, alternating), ms | {bi_med * 1e3:.2f} | {bn_med * 1e3:.2f} "
        f"| {100 * (rt - 1):+.1f} % | within 3 % |\n"
        f"| single query on a 64-item index, k=1, ef=1 (the fixed cost of a call), us | "
        f"{statistics.median(f for f, _ in fixed_t):.2f} | {statistics.median(f for _, f in fixed_t):.2f} | "
        f"{statistics.median(fixed_d):+.2f} us | within 0.5 us |\n"
    )


# ============================================================================ add_from memory
def make_file(path: Path, n: int, dim: int) -> None:
    """A float32 .npy of clustered rows, written in chunks (never whole in memory)."""
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((1000, dim)).astype(np.float32) * 3
    out = np.lib.format.open_memmap(str(path) + ".part", mode="w+", dtype=np.float32, shape=(n, dim))
    step = 1 << 17
    for a in range(0, n, step):
        b = min(n, a + step)
        out[a:b] = centers[rng.integers(0, 1000, b - a)] + rng.standard_normal((b - a, dim), dtype=np.float32)
    out.flush()
    del out
    os.replace(str(path) + ".part", path)


def child(a: argparse.Namespace) -> None:
    """Run in a fresh process: build from the file and print the memory figures as JSON."""
    import hnsw_numba as hn

    n, dim = np.load(a.file, mmap_mode="r").shape
    warm = hn.Index(dim, metric="l2", dtype=a.dtype, m=a.m, ef_construction=a.efc)
    warm.add(np.zeros((10, dim), np.float32) + np.arange(10, dtype=np.float32)[:, None])  # load the kernels
    del warm
    before = status()
    peaks = {"RssAnon": 0, "RssFile": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            s = status()
            for key in peaks:
                peaks[key] = max(peaks[key], s[key])

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    index = hn.Index(dim, metric="l2", dtype=a.dtype, m=a.m, ef_construction=a.efc, capacity=n, seed=0)
    t = time.perf_counter()
    try:  # a path goes through hn's file readers; without them, the same memory map
        import hnsw_numba.io.vectors  # noqa: F401

        source: object = a.file
    except ImportError:
        source = np.load(a.file, mmap_mode="r")
    added = index.add_from(source, batch_size=a.batch_size, progress=False)
    secs = time.perf_counter() - t
    done.set()
    sampler.join()
    after = status()
    native, store = index.native
    index_bytes = store.nbytes + sum(arr.nbytes for arr in native.graph_arrays) + native.key_map.nbytes()
    print(json.dumps({"source": "path" if isinstance(source, str) else "np.load(mmap_mode='r')", "n": int(n), "dim": int(dim), "added": added, "seconds": secs, "before": before, "after": after,
                      "peaks": peaks, "index_bytes": int(index_bytes), "store_bytes": int(store.nbytes)}))


def add_from_memory(a: argparse.Namespace) -> str:
    path = Path(a.file)
    if not path.exists():
        print(f"writing {path} ({a.n:,} x {a.dim} float32, {a.n * a.dim * 4 / 1e9:.2f} GB) ...", file=sys.stderr)
        make_file(path, a.n, a.dim)
    cmd = [sys.executable, __file__, "child", "--file", str(path), "--dtype", a.dtype, "--m", str(a.m), "--efc", str(a.efc)]
    if a.batch_size:
        cmd += ["--batch-size", str(a.batch_size)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    b, after, peaks = r["before"], r["after"], r["peaks"]
    growth = after["VmHWM"] - b["VmRSS"]
    own = growth - r["index_bytes"]
    size = path.stat().st_size
    return (
        f"## add_from: memory while building from a memory-mapped file\n\n"
        f"`python benchmarks/bench_index_api.py add_from --file {path} --dtype {a.dtype}` — {r['n']:,} x {r['dim']} "
        f"float32 .npy ({size / 1e9:.2f} GB), Index(metric='l2', dtype='{a.dtype}', m={a.m}, ef_construction={a.efc}, "
        f"capacity=n), default batch size, source given as {r['source']}; built in {r['seconds']:.0f} s.\nmachine: {machine()}; date {time.strftime('%Y-%m-%d')}\n\n"
        "| figure | MiB |\n|---|---|\n"
        f"| RSS before the build (kernels loaded) | {b['VmRSS'] / MiB:,.0f} |\n"
        f"| peak RSS (VmHWM) above it | {growth / MiB:,.0f} |\n"
        f"| the index's own bytes (store {r['store_bytes'] / MiB:,.0f} + graph + key map) | {r['index_bytes'] / MiB:,.0f} |\n"
        f"| **add_from's overhead: peak growth - index bytes** (target < 256) | **{own / MiB:,.0f}** |\n"
        f"| peak anonymous RSS above the start (sampled) | {(peaks['RssAnon'] - b['RssAnon']) / MiB:,.0f} |\n"
        f"| peak file-backed RSS above the start (sampled; the file's pages mapped in) | {(peaks['RssFile'] - b['RssFile']) / MiB:,.0f} |\n"
        f"| RSS after the build | {after['VmRSS'] / MiB:,.0f} |\n\n"
        f"The file is {size / MiB:,.0f} MiB; file-backed RSS stays near one batch because add_from releases the pages "
        "of each batch once it is added (the OS keeps them in its page cache, outside the process).\n"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("phase", choices=["overhead", "add_from", "child"])
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--file", default="/tmp/hnsw_numba_bench_add_from.npy")
    ap.add_argument("--dtype", default="qi8")
    ap.add_argument("--m", type=int, default=8)
    ap.add_argument("--efc", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=None)
    a = ap.parse_args(argv)
    if a.phase == "child":
        child(a)
        return 0
    if a.phase == "overhead":
        a.n = a.n or 20_000
        md = overhead(a)
    else:
        a.n = a.n or 4_000_000
        md = add_from_memory(a)
    print(md)
    target = RESULTS / "index_api.md"
    old = target.read_text() if target.exists() else "# hn.Index\n\n"
    head = md.split("\n", 1)[0]
    parts = [p for p in old.split("\n## ") if p and not ("## " + p).startswith(head) and not p.startswith("# hn.Index")]
    target.write_text("# hn.Index\n\n" + "".join("## " + p.rstrip() + "\n\n" for p in parts) + md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
