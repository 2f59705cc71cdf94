"""Search speed before and after ``compact(reorder=True)`` on the same graph, in one process.

Usage: python benchmarks/bench_reorder.py [dev | synthetic] [--n 200000] [--rounds 9] [--threads 1]

One index is built (M=16, ef_construction=200, seed 1) and copied; the copy is renumbered in
breadth-first order. Both answer the same queries with the same keys and distances (checked
at every ef), so the only difference is where nodes sit in memory. Batch searches
(``search_batch``, ``--threads`` threads) and single searches (``search`` per query) alternate
between the two indexes, ``--rounds`` rounds; the table gives medians and the speed ratio
(as built / reordered time) at each ef. Writes ``results/reorder-<set>.md``.
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np

from common import DEV_SET, RESULTS, Table, load_hdf5, machine, recall, synthetic_clustered

import hnsw_numba as hn  # noqa: E402


def _batch(index: hn.Hnsw, store, qs: np.ndarray, k: int, ef: int, threads: int) -> float:
    t = time.perf_counter()
    index.search_batch(store, qs, k, ef=ef, num_threads=threads)
    return time.perf_counter() - t


def _single(index: hn.Hnsw, store, qs: np.ndarray, k: int, ef: int) -> float:
    t = time.perf_counter()
    for q in qs:
        index.search(store, q, k, ef=ef)
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("set", nargs="?", default="dev", choices=["dev", "synthetic"])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ef", type=int, nargs="+", default=[16, 32, 64, 128])
    ap.add_argument("--dtype", default="float32")
    a = ap.parse_args(argv)
    ds = load_hdf5(DEV_SET) if a.set == "dev" else synthetic_clustered(a.n, 128, 1000, seed=0)
    x, qs, k = ds.train, np.ascontiguousarray(ds.test, np.float32), 10
    n, dim = x.shape
    metric = hn.Cosine() if ds.metric == "cosine" else hn.L2()
    t = time.perf_counter()
    built = hn.Hnsw(metric, hn.HnswConfig(dim=dim, max_nodes=n, m=16, ef_construction=200, seed=1))
    store_a = hn.InMemoryVectorStore(dim, n, dtype=a.dtype)
    built.insert_batch(store_a, np.arange(n), x, progress=False)
    t_build = time.perf_counter() - t
    reordered, store_b = copy.deepcopy(built), copy.deepcopy(store_a)
    t = time.perf_counter()
    reordered.compact(store_b, reorder=True)
    t_reorder = time.perf_counter() - t
    again, store_c = copy.deepcopy(built), copy.deepcopy(store_a)
    t = time.perf_counter()
    again.compact(store_c, reorder=True)  # compiled now: the cost of the operation itself
    t_reorder_warm = time.perf_counter() - t
    del again, store_c
    table = Table(["ef", "recall@10", "same answers", "batch as built ms", "batch reordered ms", "batch speed-up",
                   "single as built us/q", "single reordered us/q", "single speed-up"])
    for ef in a.ef:
        ka, da = built.search_batch(store_a, qs, k, ef=ef)
        kb, db = reordered.search_batch(store_b, qs, k, ef=ef)
        same = bool(np.array_equal(ka, kb) and np.array_equal(da, db))
        rec = recall(ka, ds.neighbors[:, :k])
        ta, tb, sa, sb = [], [], [], []
        for _ in range(a.rounds):
            ta.append(_batch(built, store_a, qs, k, ef, a.threads))
            tb.append(_batch(reordered, store_b, qs, k, ef, a.threads))
            sb.append(_single(reordered, store_b, qs, k, ef))
            sa.append(_single(built, store_a, qs, k, ef))
        ma, mb, msa, msb = (float(np.median(v)) for v in (ta, tb, sa, sb))
        table.add(ef, f"{rec:.3f}", str(same), f"{ma * 1e3:.1f}", f"{mb * 1e3:.1f}", f"{ma / mb:.3f}x",
                  f"{msa / len(qs) * 1e6:.1f}", f"{msb / len(qs) * 1e6:.1f}", f"{msa / msb:.3f}x")
        print(table.rows[-1], flush=True)
    text = (f"# compact(reorder=True): search speed on the same graph renumbered\n\n"
            f"{ds.name} ({n:,} x {dim}, {ds.metric}, {a.dtype}), M=16, ef_construction=200, {len(qs)} queries, "
            f"k={k}; batch with {a.threads} thread(s); medians of {a.rounds} interleaved rounds; "
            f"speed-up = as built / reordered.\nBuild {t_build:.1f} s; reorder {t_reorder:.2f} s "
            f"(first call, compiling included), {t_reorder_warm:.2f} s (compiled).\n{machine()}\n\n" + table.markdown() + "\n")
    print(text)
    out = RESULTS / f"reorder-{a.set}.md"
    out.write_text(text)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
