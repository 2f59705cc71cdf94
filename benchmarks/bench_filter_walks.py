"""The two filtered walks' recall and speed by beam and share, on one index in one process.

Usage:
    python benchmarks/bench_filter_walks.py [--n 1000000] [--queries 300] [--shares 0.1 0.2 0.3]

Clustered 128-d vectors (``hnsw_numba.datasets.clustered_embeddings``, the ``bench_filter``
synthetic set; its cached index in ``.bench_cache`` when ``bench_filter.py synthetic --n N`` has
made one, else built here with M=16, ef_construction=200). For each share, random filters of two
seeds: ACORN's walk forced (``plan="acorn"``) at each ``--efs`` beam and the post-filter walk
(``plan="post"``) at the first, recall@10 against the exact filtered top-10 and single-query q/s
(best of ``--rounds`` passes). The planner's growth of ACORN's beam on a large index
(``ACORN_GROW``) is switched off here, so each cell walks at the beam it names.
Run under ``flock -x /tmp/cpu.lock`` on a shared machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import hnsw_numba as hn  # noqa: E402
from hnsw_numba.core import planner  # noqa: E402
from hnsw_numba.datasets import clustered_embeddings  # noqa: E402

K = 10


def load_or_build(x: np.ndarray) -> tuple[hn.Hnsw, hn.InMemoryVectorStore]:
    """The bench_filter cache's index of ``x`` if there is one, else a new build (not cached)."""
    n, dim = x.shape
    cached = ROOT / ".bench_cache" / f"filter-synthetic-clustered-{n}x{dim}" / "ours"
    if cached.exists():
        return hn.load(str(cached), hn.L2())
    idx = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=dim, max_nodes=n, m=16, ef_construction=200, seed=1))
    store = hn.InMemoryVectorStore(dim, n)
    idx.insert_batch(store, np.arange(n), x, progress=False)
    return idx, store


def truth_of(x: np.ndarray, queries: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """The exact filtered top-K of every query (float64 distances)."""
    xa = x[allowed].astype(np.float64)
    q = queries.astype(np.float64)
    d = (q * q).sum(1)[:, None] - 2.0 * q @ xa.T + (xa * xa).sum(1)[None]
    return allowed[np.argsort(d, axis=1)[:, :K]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--shares", type=float, nargs="+", default=[0.1, 0.15, 0.2, 0.25, 0.3, 0.39])
    ap.add_argument("--efs", type=int, nargs="+", default=[64, 80, 96, 128])
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    x, test = clustered_embeddings(a.n, 128, n_queries=max(1000, a.queries), seed=0)
    idx, store = load_or_build(x)
    queries = np.ascontiguousarray(test[: a.queries], np.float32)
    planner.ACORN_GROW = 0.0
    print(f"{a.n:,} x 128, {a.queries} queries, k={K}; cells: recall / q/s")
    for share in a.shares:
        for seed in (1, 2):
            mask = np.zeros(a.n, bool)
            mask[np.random.default_rng(seed).choice(a.n, int(share * a.n), replace=False)] = True
            truth = truth_of(x, queries, np.flatnonzero(mask))
            f = hn.Filter(idx, mask)
            row = []
            for plan, ef in [("acorn", ef) for ef in a.efs] + [("post", a.efs[0])]:
                found = [idx.search(store, q, K, filter=f, ef=ef, plan=plan).keys for q in queries]
                best = 0.0
                for _ in range(a.rounds):
                    t = time.perf_counter()
                    for q in queries:
                        idx.search(store, q, K, filter=f, ef=ef, plan=plan)
                    best = max(best, len(queries) / (time.perf_counter() - t))
                rec = hn.recall(found, truth)
                row.append(f"{plan} ef {idx.last_plan.ef}: {rec:.3f} / {best:,.0f}")
            print(f"share {share:.2f} seed {seed}:  " + "   ".join(row), flush=True)


if __name__ == "__main__":
    main()
