"""Where the time of one single-query call goes, next to hnswlib's ``knn_query``.

Usage: python benchmarks/bench_single.py [FILE.hdf5] [--ef 32] [--repeat 7]

On the test queries of an ann-benchmarks file (default: the words dev set), with both
indexes built in this process (M=16, ef_construction=200, one thread per query), it times
per query, best of ``--repeat`` passes over all queries:

1. our batch kernel with every query in one call (the floor: no Python between queries),
2. the single-query kernel called once per query through the bound entry point, as
   ``search()`` does (it returns the ``(key, distance, NodeId)`` tuples),
3. the same plus wrapping them in the ``Hits`` result that ``search()`` returns,
4. for comparison, a list of ``Hit`` tuples made up front instead (what ``search()``
   returned before ``Hits``),
5. ``Hnsw.search()`` itself,
6. hnswlib: ``knn_query`` on all queries in one call (1 thread) and once per query.

Row 2 against hnswlib's per-query row compares the compiled code with the Python call around
it included on both sides (the two graphs are built separately, so they are not the same
walk: compare equal-recall numbers in bench_ann.py); rows 3 and 5 are what our wrapper adds. Every query streams about a
megabyte of vectors through the caches, so Python that runs between two kernel calls finds
its own objects cold and costs more than it does in isolation.
"""

from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path

import numpy as np

from common import DEV_SET, RESULTS, Table, best_of, load_hdf5, machine

import hnsw_numba as hn  # noqa: E402
from hnsw_numba.core.batch import NO_STARTS  # noqa: E402
from hnsw_numba.core.batch import NO_MASK  # noqa: E402
from hnsw_numba.core.hits import Hit, Hits  # noqa: E402
from hnsw_numba.core.single import SingleQuery  # noqa: E402
from hnsw_numba.kernels.search import knn_kernel  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file", nargs="?", default=str(DEV_SET))
    ap.add_argument("--ef", type=int, default=32)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=7)
    a = ap.parse_args(argv)
    ds = load_hdf5(a.file)
    x, qs, k, ef = ds.train, np.ascontiguousarray(ds.test, np.float32), a.k, a.ef
    n, dim = x.shape
    metric = hn.Cosine() if ds.metric == "cosine" else hn.L2()
    index = hn.Hnsw(metric, hn.HnswConfig(dim=dim, max_nodes=n, seed=1))
    store = hn.InMemoryVectorStore(dim, n)
    index.insert_batch(store, np.arange(n), x, progress=False)
    index.search(store, qs[0], k, ef=ef)  # compile / load, bind the entry point

    # the kernel's view of the queries: prepared (unit length for cosine) float32 rows
    prepared = np.ascontiguousarray(metric.prepare(qs), np.float32)
    b = SingleQuery(index.state).bind(store)
    visited, scratch_f, scratch_i = index.state.visited.single()
    new_hit = functools.partial(tuple.__new__, Hit)
    nq = qs.shape[0]
    all_ids = np.empty((nq, k), np.int32)
    all_d = np.empty((nq, k), np.float32)
    counter = np.zeros(1, np.int64)

    def one_call() -> None:
        counter[0] = 0
        knn_kernel(b.graph, b.rows, b.metric_code, prepared, k, ef, NO_MASK, visited, counter, 4, all_ids, all_d, NO_STARTS)

    def per_call(results: str):
        def run() -> None:
            entry, g, rows, code, nk, dim = b.entry, b.graph, b.rows, b.metric_code, b.node_keys, b.dim
            for q in prepared:
                found = entry(g, rows, code, q, dim, k, ef, visited, scratch_f, scratch_i, nk, 0)[1]
                if results == "hits":
                    h = object.__new__(Hits)
                    h.raw = found
                elif results == "eager":
                    list(map(new_hit, found))
        return run

    def search() -> None:
        s = index.search
        for q in qs:
            s(store, q, k, ef=ef)

    t = Table(["path", "us per query", "time / hnswlib knn_query per call"])
    timings: dict[str, float] = {}
    try:
        import hnswlib

        p = hnswlib.Index(space="cosine" if ds.metric == "cosine" else "l2", dim=dim)
        p.init_index(max_elements=n, M=16, ef_construction=200, random_seed=1)
        p.add_items(x, np.arange(n))
        p.set_ef(ef)
        p.set_num_threads(1)

        def hl_per_call() -> None:
            knn = p.knn_query
            for q in qs:
                knn(q, k=k, num_threads=1)

        hl = {"hnswlib knn_query, all queries in one call (1 thread)": lambda: p.knn_query(qs, k=k, num_threads=1),
              "hnswlib knn_query, one call per query": hl_per_call}
    except ImportError:
        hl = {}
    ours = {"hnsw_numba batch kernel, all queries in one call (1 thread)": one_call,
            "hnsw_numba single-query kernel, one call per query (bound entry point)": per_call(""),
            "... + the Hits result (what search() returns)": per_call("hits"),
            "... + a list of Hit tuples instead (not used: for comparison)": per_call("eager"),
            "hnsw_numba search()": search}
    for _ in range(2):  # two rounds, alternating, best of both
        for name, fn in {**ours, **hl}.items():
            timings[name] = min(timings.get(name, np.inf), best_of(fn, a.repeat) / nq * 1e6)
    ref = timings.get("hnswlib knn_query, one call per query")
    for name, us in timings.items():
        t.add(name, f"{us:.1f}", "-" if ref is None else f"{us / ref:.2f}x")
    md = (f"# One single-query call, taken apart\n\n`python benchmarks/bench_single.py` — {Path(a.file).name}, "
          f"{n:,} x {dim} ({ds.metric}), {nq} queries, k={k}, ef={ef}, M=16, ef_construction=200; "
          f"best of {a.repeat} passes x 2 rounds.\nmachine: {machine()}; date {time.strftime('%Y-%m-%d')}\n\n"
          f"{t.markdown()}\n")
    print(md)
    (RESULTS / "single.md").write_text(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
