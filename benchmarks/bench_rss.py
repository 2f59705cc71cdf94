"""Memory stability of the single-query path: RSS over 1,000,000 searches.

Usage: python benchmarks/bench_rss.py [--searches 1000000] [--n 20000] [--dim 128]

Builds a small index, then calls ``index.search`` once per query in a loop, sampling the
resident set size every 50,000 calls. Per-call scratch (visited tags, outputs) is reused
per thread, so after the first samples RSS should stay flat; the report gives the growth
between the second sample and the last.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from common import RESULTS, machine


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--searches", type=int, default=1_000_000)
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--every", type=int, default=50_000)
    a = ap.parse_args(argv)

    import hnsw_numba as hn
    from hnsw_numba.datasets import clustered_embeddings

    data, queries = clustered_embeddings(a.n, a.dim, n_queries=1000, seed=0)
    index = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=a.dim, max_nodes=a.n, seed=0))
    store = hn.InMemoryVectorStore(a.dim, a.n)
    index.insert_batch(store, np.arange(a.n), data)
    search = index.search
    samples: list[tuple[int, int]] = [(0, rss_bytes())]
    t = time.perf_counter()
    for i in range(1, a.searches + 1):
        search(store, queries[i % 1000], 10, ef=32)
        if i % a.every == 0:
            samples.append((i, rss_bytes()))
    secs = time.perf_counter() - t
    ref = samples[min(2, len(samples) - 1)][1]
    growth = samples[-1][1] - ref
    lines = [
        f"{a.searches:,} single-vector searches (k=10, ef=32) on {a.n:,} x {a.dim} L2; RSS sampled every {a.every:,}",
        f"machine: {machine()}; date {time.strftime('%Y-%m-%d')}; {secs:.1f} s ({a.searches / secs:,.0f} searches/s)",
        "Command: `python benchmarks/bench_rss.py`",
        "",
        "| searches | RSS MiB |",
        "|---|---|",
        *[f"| {i:,} | {r / 2**20:.2f} |" for i, r in samples],
        "",
        f"Growth from {samples[min(2, len(samples) - 1)][0]:,} searches to the end: {growth / 2**10:+.0f} KiB "
        f"({growth / max(1, a.searches - samples[min(2, len(samples) - 1)][0]):.4f} bytes per search).",
    ]
    md = "\n".join(lines) + "\n"
    print(md)
    (RESULTS / "rss.md").write_text(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
