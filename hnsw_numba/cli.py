"""The ``hnsw-numba`` command line (also ``python -m hnsw_numba``)."""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    from . import Cosine, Hnsw, HnswConfig, InMemoryVectorStore, L2
    from .datasets import clustered_embeddings

    n, dim, nq = args.n, args.dim, args.queries
    print(f"hnsw_numba demo: {n:,} generated {dim}-d embeddings, {nq} queries, metric {args.metric}")
    data, queries = clustered_embeddings(n, dim, n_queries=nq, seed=args.seed)
    metric = {"l2": L2(), "cosine": Cosine()}[args.metric]
    t = time.perf_counter()
    index = Hnsw(metric, HnswConfig(dim=dim, max_nodes=n, m=16, ef_construction=200, seed=args.seed))
    store = InMemoryVectorStore(dim, n)
    index.insert_batch(store, np.arange(100), data[:100])  # first call compiles or loads the cache
    index.search_batch(store, queries[:2], 10)
    index.search(store, queries[0], 10)
    index.search_batch(store, queries[:2], 10, exact=True)
    t_jit = time.perf_counter() - t
    print(f"  compile / cache load: {t_jit:.1f} s")
    t = time.perf_counter()
    index.insert_batch(store, np.arange(100, n), data[100:])
    t_build = time.perf_counter() - t
    print(f"  build: {t_build:.1f} s ({n / t_build:,.0f} inserts/s, all cores)")
    t = time.perf_counter()
    truth, _ = index.search_batch(store, queries, 10, exact=True)
    t_exact = time.perf_counter() - t
    print(f"  brute force: {nq / t_exact:,.0f} queries/s")
    print("      ef  recall@10  batch q/s  single q/s")
    for ef in (16, 32, 64, 128):
        index.search_batch(store, queries, 10, ef=ef)
        t = time.perf_counter()
        keys, _ = index.search_batch(store, queries, 10, ef=ef)
        qps = nq / (time.perf_counter() - t)
        t = time.perf_counter()
        for q in queries[:200]:
            index.search(store, q, 10, ef=ef)
        single = 200 / (time.perf_counter() - t)
        rec = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(keys.tolist(), truth.tolist())])
        print(f"  {ef:6d}  {rec:9.4f}  {qps:9,.0f}  {single:10,.0f}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hnsw-numba", description="HNSW approximate nearest neighbours, Numba-compiled.")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser(
        "demo",
        help="build and query an index on generated data; prints recall and speed",
        description="Build an index on generated clustered embeddings, then print recall@10 "
        "against brute force, build time and queries/s.\n\nexample: hnsw-numba demo --n 50000 --dim 128",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d.add_argument("--n", type=int, default=50_000, help="vectors to index (default 50,000)")
    d.add_argument("--dim", type=int, default=128, help="dimension (default 128)")
    d.add_argument("--queries", type=int, default=1000, help="queries (default 1,000)")
    d.add_argument("--metric", choices=["l2", "cosine"], default="cosine")
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``hnsw-numba`` command."""
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
