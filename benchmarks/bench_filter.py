"""Filtered search at every selectivity and correlation: ours, hnswlib, faiss, NumPy.

Usage:
    python benchmarks/bench_filter.py dev [--queries 200] [--ef 64]
    python benchmarks/bench_filter.py synthetic [--n 1000000] [--dim 128]
    python benchmarks/bench_filter.py exact          # the exact path against a matmul
    python benchmarks/bench_filter.py report         # filter.md and the plots from the saved runs

Each data set runs on its own (one process, under ``flock -x /tmp/cpu.lock``) and saves its
cells to ``benchmarks/results/filter-<name>.json``; ``report`` (run at the end of each) writes
``benchmarks/results/filter.md`` and ``filter-<name>-<mode>.png`` (q/s against selectivity).

Filters, at 50 / 20 / 10 / 5 / 2 / 1 / 0.5 / 0.1 % of the items:

* ``random``: items drawn uniformly;
* ``correlated``: the items nearest a point ``c`` (a test query), the queries being the test
  queries nearest ``c``: the allowed items lie next to the queries;
* ``anti``: the items farthest from ``c``, same queries: the allowed items lie away from them.

Every method answers the same queries with the same filter, k = 10; recall@10 is against the
exact filtered top-10 (NumPy over the allowed rows, float64). Ours: ``Hnsw.search`` with an
``hn.Filter`` compiled once per cell (its compile time is reported), default settings
(``plan="auto"``) at ``--ef``. hnswlib: ``knn_query(filter=...)`` with a Python predicate over
labels at the same ef. ``--walk-copy``: our store also keeps a float16 copy that the walks
read (``enable_walk_copy()`` on the graph built over the float32 rows; a section of its own).
``--reorder``: our index renumbered once built (``compact(reorder=True)``, its time given as
the build's ``ours-reorder``), as ``hnsw-numba build`` prepares an index for queries; its filters
are compiled from the allowed keys (a mask is over NodeIds); a section of its own.
faiss: ``IndexHNSWFlat`` with ``IDSelectorBitmap`` in ``SearchParametersHNSW``, ef raised (64 ... 4096) until its recall reaches ours (minus 0.005):
its q/s at that ef, or its best recall if none does (the peers' recall on the first 50
queries; slow peers time their batch on a prefix of about one second). NumPy: the allowed rows gathered once
per cell, then per query a matrix-vector product and ``argpartition``. Single: one call per
query, best of ``--rounds`` passes, the methods interleaved; batch: all queries in one call
(all cores for every method). Each timed pass follows ``WARM`` seconds of the same method, untimed. At 50 % our unfiltered search runs in the same rounds, at the same
ef and at the first ef in ``UNFILTERED_EFS`` whose recall against the unfiltered top-10 reaches
the filtered search's recall (minus 0.005). ``OMP_WAIT_POLICY`` is ``PASSIVE`` unless set: faiss's idle
OpenMP threads then sleep instead of spinning into the next method's time.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any, Callable

from pathlib import Path

import numpy as np

# faiss's OpenMP threads (libgomp) otherwise spin after its calls and take a core from the method
# timed next: our exact plan, whose BLAS product runs on both cores, measured 0.43-0.59x NumPy's
# speed with the default wait policy and 0.84-0.88x with a passive one (random 20 % / 10 % of the
# dev set); faiss's own figures do not move (1,410 vs 1,436 q/s). Set before faiss is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from common import DEV_SET, RESULTS, ROOT, load_hdf5, machine, versions

import hnsw_numba as hn  # noqa: E402
from hnsw_numba.datasets import clustered_embeddings  # noqa: E402

SELECTIVITY = (0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.001)
KINDS = ("random", "correlated", "anti")
#: The saved runs' ``store`` of ``--walk-copy``: its cells form a section of their own.
STORE_WALK = "float32+float16"
#: Appended to ``store`` by ``--reorder`` (a section of its own too).
RENUMBERED = ", renumbered"
K = 10
FAISS_EFS = (64, 128, 256, 512, 1024, 2048, 4096)
#: The beams our unfiltered search tries for the recall a 50 % cell's filtered search reaches.
UNFILTERED_EFS = (64, 96, 128, 192, 256, 384, 512, 768, 1024)
#: Our own unfiltered timings in a 50 % cell's rounds: references, not peers (left out of "best of the others" and the plots).
UNFILTERED_KEYS = ("unfiltered", "unfiltered_eq")
#: Seconds a single-query loop of one method runs per round at most.
BUDGET = 1.0
#: Queries the peers' recall is measured on (the slow ones take seconds per query at low selectivity).
PEER_RECALL = 50
#: Seconds each method runs untimed right before each timed pass. The pass before it may leave
#: the other core busy: OpenBLAS's threads spin after NumPy's products, and on a 2-core host
#: our single queries ran 0.64-0.72x as fast for the next ~10 ms (19,500 -> 12,400-13,800 q/s),
#: which favoured the slower methods, whose passes are long.
WARM = 0.03


def warm_up(fn: Callable[[], Any]) -> None:
    """Call ``fn`` untimed until ``WARM`` seconds have passed (at least once)."""
    t0 = time.perf_counter()
    while True:
        fn()
        if time.perf_counter() - t0 >= WARM:
            return


def timed(fn: Callable[[], Any], n: int, rounds: int) -> float:
    """Best queries/s of ``rounds`` runs of ``fn`` (answering ``n`` queries), after ``warm_up``."""
    best = np.inf
    warm_up(fn)
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return n / best


def per_query(call: Callable[[int], Any], nq: int) -> Callable[[], float]:
    """A single-query loop over queries ``0..nq-1`` that stops after ``BUDGET`` seconds:
    returns its queries/s (slow peers answer a prefix of the queries)."""

    def run() -> float:
        queries = iter(range(1 << 62))
        warm_up(lambda: call(next(queries) % nq))
        t0 = time.perf_counter()
        done = 0
        for i in range(nq):
            call(i)
            done += 1
            if done % 8 == 0 and time.perf_counter() - t0 > BUDGET:
                break
        return done / (time.perf_counter() - t0)

    return run


class Peers:
    """The indexes of one data set: ours, hnswlib, faiss, built with M=16, ef_construction=200."""

    def __init__(self, x: np.ndarray, metric: str, threads: int | None, cache: Path | None, walk_copy: bool = False, reorder: bool = False) -> None:
        n, dim = x.shape
        self.x, self.metric = x, metric
        self.xn = x / np.linalg.norm(x, axis=1, keepdims=True) if metric == "cosine" else x
        self.xn = np.ascontiguousarray(self.xn, np.float32)
        ours_metric = hn.Cosine() if metric == "cosine" else hn.L2()
        self.build: dict[str, float] = {}
        self.reordered = reorder
        t = time.perf_counter()
        renumbered = reorder and cache is not None and (cache / "ours-reorder").exists()
        if renumbered:
            self.ours, self.store = hn.load(str(cache / "ours-reorder"), ours_metric)
        elif cache is not None and (cache / "ours").exists():
            self.ours, self.store = hn.load(str(cache / "ours"), ours_metric)
        else:
            self.ours = hn.Hnsw(ours_metric, hn.HnswConfig(dim=dim, max_nodes=n, m=16, ef_construction=200, seed=1))
            self.store = hn.InMemoryVectorStore(dim, n)
            self.ours.insert_batch(self.store, np.arange(n), x, num_threads=threads, progress=False)
            self.build["ours"] = time.perf_counter() - t
            if cache is not None:
                cache.mkdir(parents=True, exist_ok=True)
                hn.save(str(cache / "ours"), self.ours, self.store)
        if reorder and not renumbered:
            t = time.perf_counter()
            self.ours.compact(self.store, reorder=True)  # the same graph, its NodeIds breadth-first
            self.build["ours-reorder"] = time.perf_counter() - t
            if cache is not None:
                hn.save(str(cache / "ours-reorder"), self.ours, self.store)
        if walk_copy:  # the same graph, walked through a float16 copy of the float32 rows
            self.store.enable_walk_copy()
        self.hnswlib = self.faiss = None
        self.truths: dict[bytes, np.ndarray] = {}  # unfiltered top-10 per query set (see unfiltered_truth)
        try:
            import hnswlib

            t = time.perf_counter()
            self.hnswlib = hnswlib.Index(space="cosine" if metric == "cosine" else "l2", dim=dim)
            if cache is not None and (cache / "hnswlib.bin").exists():
                self.hnswlib.load_index(str(cache / "hnswlib.bin"), max_elements=n)
            else:
                self.hnswlib.init_index(max_elements=n, M=16, ef_construction=200, random_seed=1)
                self.hnswlib.add_items(x, np.arange(n), num_threads=threads or -1)
                self.build["hnswlib"] = time.perf_counter() - t
                if cache is not None:
                    self.hnswlib.save_index(str(cache / "hnswlib.bin"))
        except ImportError:
            pass
        try:
            import faiss

            t = time.perf_counter()
            self.faiss_mod = faiss
            if cache is not None and (cache / "faiss.bin").exists():
                self.faiss = faiss.read_index(str(cache / "faiss.bin"))
            else:
                self.faiss = faiss.IndexHNSWFlat(dim, 16, faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2)
                self.faiss.hnsw.efConstruction = 200
                self.faiss.add(self.xn)
                self.build["faiss"] = time.perf_counter() - t
                if cache is not None:
                    faiss.write_index(self.faiss, str(cache / "faiss.bin"))
        except ImportError:
            pass

    def unfiltered_truth(self, queries: np.ndarray) -> np.ndarray:
        """The exact top-10 of ``queries`` over every row, computed once per query set (a pass over
        all rows per query: minutes at 1,000,000; the random cells reuse the run's own queries)."""
        key = queries.tobytes()
        if key not in self.truths:
            self.truths[key] = truth_of(self, queries, np.arange(self.x.shape[0]))
        return self.truths[key]

    def dist(self, q: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Distances (smaller is nearer) of query ``q`` to ``rows`` of ``xn``, float64."""
        if self.metric == "cosine":
            qn = q / np.linalg.norm(q)
            return -(self.xn[rows].astype(np.float64) @ qn.astype(np.float64))
        return ((self.x[rows].astype(np.float64) - q.astype(np.float64)) ** 2).sum(1)


def make_filter(peers: Peers, test: np.ndarray, kind: str, sel: float, nq: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(allowed bool mask over rows, queries) of one cell."""
    n = peers.x.shape[0]
    count = max(K, int(round(sel * n)))
    if kind == "random":
        mask = np.zeros(n, bool)
        mask[rng.choice(n, count, replace=False)] = True
        return mask, test[:nq]
    c = test[0]
    d_items = peers.dist(c, np.arange(n))
    qn = test / np.linalg.norm(test, axis=1, keepdims=True) if peers.metric == "cosine" else test
    cn = c / np.linalg.norm(c) if peers.metric == "cosine" else c
    d_tests = -(qn @ cn) if peers.metric == "cosine" else ((test - c) ** 2).sum(1)
    queries = test[np.argsort(d_tests)[:nq]]
    order = np.argsort(d_items)
    mask = np.zeros(n, bool)
    mask[order[:count] if kind == "correlated" else order[-count:]] = True
    return mask, np.ascontiguousarray(queries)


def truth_of(peers: Peers, queries: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    out = np.empty((queries.shape[0], K), np.int64)
    for i, q in enumerate(queries):
        d = peers.dist(q, allowed)
        top = np.argpartition(d, K - 1)[:K] if d.shape[0] > K else np.arange(d.shape[0])
        out[i] = allowed[top[np.argsort(d[top])]]
    return out


def equal_recall_ef(peers: Peers, queries: np.ndarray, target: float) -> tuple[int, float]:
    """``(ef, recall)``: the first of ``UNFILTERED_EFS`` at which our unfiltered search finds
    ``target - 0.005`` of the unfiltered top-10 (against every row), or the last one and its recall."""
    truth = peers.unfiltered_truth(queries)
    idx, store = peers.ours, peers.store
    for ef in UNFILTERED_EFS:
        r = hn.recall(idx.search_batch(store, queries, K, ef=ef)[0], truth)
        if r >= target - 0.005:
            break
    return ef, r


def run_cell(peers: Peers, queries: np.ndarray, mask: np.ndarray, ef: int, rounds: int, threads: int | None, unfiltered: bool) -> dict:
    allowed = np.flatnonzero(mask)
    truth = truth_of(peers, queries, allowed)
    nq = queries.shape[0]
    out: dict = {"allowed": int(allowed.shape[0])}
    nb: dict[str, int] = {}  # queries in a peer's timed batch
    idx, store = peers.ours, peers.store
    t = time.perf_counter()
    f = hn.Filter(idx, allowed if peers.reordered else mask)  # keys are the items' positions, NodeIds only as built
    out["filter_ms"] = (time.perf_counter() - t) * 1e3

    # ours: single queries and a batch, default plan
    found, plans = [], {}
    for q in queries:  # the plan can differ per query (a walk leaves where the allowed items lie away)
        found.append(idx.search(store, q, K, filter=f, ef=ef).keys)
        name = f"{idx.last_plan.plan} ({idx.last_plan.ef})"
        plans[name] = plans.get(name, 0) + 1
    top = max(plans, key=plans.get)
    out["plan"], out["plan_ef"] = top.split(" (")[0], int(top.split(" (")[1][:-1])
    out["plans"] = plans
    out["ours_recall"] = hn.recall(found, truth)
    bkeys, _ = idx.search_batch(store, queries, K, filter=f, ef=ef, num_threads=threads)
    out["ours_batch_recall"] = hn.recall(bkeys, truth)
    xa = np.ascontiguousarray(peers.xn[allowed])  # NumPy: the allowed rows gathered once
    xsq = (xa**2).sum(1)
    search = idx.search

    def numpy_one(i: int) -> None:
        q = queries[i]
        d = -(xa @ q) if peers.metric == "cosine" else xsq - 2 * (xa @ q)
        np.argpartition(d, min(K, d.shape[0] - 1))[:K]

    def numpy_batch() -> None:
        s = queries @ xa.T
        d = -s if peers.metric == "cosine" else xsq[None, :] - 2 * s
        np.argpartition(d, min(K, d.shape[1] - 1), axis=1)[:, :K]

    funcs: dict[str, Callable[[], float]] = {"ours": per_query(lambda i: search(store, queries[i], K, filter=f, ef=ef), nq),
                                             "numpy": per_query(numpy_one, nq)}
    if unfiltered:  # our unfiltered search at the same ef, and at the recall ours reaches, interleaved with the rest
        funcs["unfiltered"] = per_query(lambda i: search(store, queries[i], K, ef=ef), nq)
        out["unfiltered_ef"], out["unfiltered_recall"] = equal_recall_ef(peers, queries, out["ours_recall"])
        ueq = out["unfiltered_ef"]
        funcs["unfiltered_eq"] = per_query(lambda i: search(store, queries[i], K, ef=ueq), nq)
    bfuncs: dict[str, Callable[[], Any]] = {"ours": lambda: idx.search_batch(store, queries, K, filter=f, ef=ef, num_threads=threads),
                                            "numpy": numpy_batch}
    if peers.hnswlib is not None:
        p = peers.hnswlib
        p.set_ef(ef)
        allow = mask.tolist()

        def pred(label: int) -> bool:
            return allow[label]

        lab = np.array([p.knn_query(q, k=K, filter=pred)[0][0] for q in queries[:PEER_RECALL]])
        out["hnswlib_recall"] = hn.recall(lab, truth[:PEER_RECALL])
        funcs["hnswlib"] = per_query(lambda i: p.knn_query(queries[i], k=K, filter=pred), nq)
        bfuncs["hnswlib"] = lambda: p.knn_query(queries[:nb["hnswlib"]], k=K, filter=pred, num_threads=threads or -1)
    if peers.faiss is not None:
        faiss = peers.faiss_mod
        bits = np.packbits(mask, bitorder="little")
        sel = faiss.IDSelectorBitmap(mask.shape[0], faiss.swig_ptr(bits))
        qf = np.ascontiguousarray(queries / np.linalg.norm(queries, axis=1, keepdims=True) if peers.metric == "cosine" else queries, np.float32)
        target = out["ours_recall"] - 0.005
        best = (0.0, FAISS_EFS[-1])
        for fe in FAISS_EFS:
            params = faiss.SearchParametersHNSW(sel=sel, efSearch=fe)
            r = hn.recall(peers.faiss.search(qf[:PEER_RECALL], K, params=params)[1], truth[:PEER_RECALL])
            if r > best[0]:
                best = (r, fe)
            if r >= target:
                break
        out["faiss_recall"], out["faiss_ef"] = best
        params = faiss.SearchParametersHNSW(sel=sel, efSearch=best[1])
        out["faiss_reaches"] = best[0] >= target
        funcs["faiss"] = per_query(lambda i: peers.faiss.search(qf[i : i + 1], K, params=params), nq)
        bfuncs["faiss"] = lambda: peers.faiss.search(qf[:nb["faiss"]], K, params=params)
        out["_keep"] = bits  # the bitmap must outlive the selector
    # interleaved rounds: every method once per round, best of the rounds
    qps: dict[str, float] = {name: 0.0 for name in funcs}
    bqps: dict[str, float] = {name: 0.0 for name in bfuncs}
    for name in ("hnswlib", "faiss"):  # slow peers time their batch on a prefix of about BUDGET seconds
        if name in bfuncs:
            nb[name] = 16
            t = time.perf_counter()
            bfuncs[name]()
            nb[name] = int(min(nq, max(16, 16 * BUDGET / max(time.perf_counter() - t, 1e-9))))
    for _ in range(rounds):
        for name, fn in funcs.items():
            qps[name] = max(qps[name], fn())
        for name, fn in bfuncs.items():
            bqps[name] = max(bqps[name], timed(fn, nb.get(name, nq), 1))
    out.pop("_keep", None)
    out["single"] = qps
    out["batch"] = bqps
    return out


def run_dataset(name: str, x: np.ndarray, test: np.ndarray, metric: str, a: argparse.Namespace) -> None:
    import faiss

    faiss.omp_set_num_threads(a.threads or 2)
    t = time.perf_counter()
    peers = Peers(x, metric, a.threads, None if a.no_cache else ROOT / ".bench_cache" / f"filter-{name}", a.walk_copy, a.reorder)
    print(f"{name}: built in {time.perf_counter() - t:.0f} s ({peers.build})", flush=True)
    rng = np.random.default_rng(0)
    nq = a.queries
    # unfiltered, same ef: the reference for the 50 % cell
    qs = np.ascontiguousarray(test[:nq])
    truth = peers.unfiltered_truth(qs)
    idx, store = peers.ours, peers.store
    found = np.array([[h.key for h in idx.search(store, q, K, ef=a.ef)] for q in qs])
    unf = {"recall": hn.recall(found, truth), "single": max(per_query(lambda i: idx.search(store, qs[i], K, ef=a.ef), nq)() for _ in range(a.rounds))}
    print(f"unfiltered: recall {unf['recall']:.3f}, {unf['single']:,.0f} q/s", flush=True)
    cells: list = []

    def save(cells: list) -> None:  # after every cell: a run cut short keeps what it measured
        RESULTS.mkdir(exist_ok=True)
        res = {"name": name, "store": (STORE_WALK if a.walk_copy else "float32") + (RENUMBERED if a.reorder else ""), "n": int(x.shape[0]), "dim": int(x.shape[1]), "ef": a.ef, "queries": nq, "machine": machine(), "versions": versions(),
               "build_s": peers.build, "unfiltered": unf, "cells": cells, "command": a.command, "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
        (RESULTS / f"filter-{a.out or a.dataset}.json").write_text(json.dumps(res, indent=1))

    for kind in a.kinds:
        for sel in a.sel:
            mask, queries = make_filter(peers, test, kind, sel, nq, rng)
            t = time.perf_counter()
            cell = run_cell(peers, queries, mask, a.ef, a.rounds, a.threads, sel == 0.5)
            cell.update(kind=kind, sel=sel)
            cells.append(cell)
            save(cells)
            s = cell["single"]
            print(f"{kind:10s} {sel * 100:5.1f} %  {cell['plan']:10s} recall {cell['ours_recall']:.3f} "
                  + " ".join(f"{k} {v:,.0f}" for k, v in s.items())
                  + f"  hnswlib r {cell.get('hnswlib_recall', float('nan')):.3f} faiss r {cell.get('faiss_recall', float('nan')):.3f}@{cell.get('faiss_ef')}"
                  + f"  ({time.perf_counter() - t:.1f} s)", flush=True)
    save(cells)


def run_exact(a: argparse.Namespace) -> None:
    """The exact plan against NumPy's matmul over the same rows gathered beforehand (the lower bound)."""
    ds = load_hdf5(a.file)
    x = ds.train[: a.n] if a.n else ds.train
    n, dim = x.shape
    rng = np.random.default_rng(0)
    qs = np.ascontiguousarray(ds.test[: a.queries], np.float32)
    qs /= np.linalg.norm(qs, axis=1, keepdims=True)
    rows = []
    for dtype in ("float32", "float16", "bfloat16", "qi8"):
        metric = hn.CosineQi8() if dtype == "qi8" else hn.Cosine()
        idx = hn.Hnsw(metric, hn.HnswConfig(dim=dim, max_nodes=n, m=8, ef_construction=16, seed=1))
        store = hn.InMemoryQi8VectorStore(dim, n) if dtype == "qi8" else hn.InMemoryVectorStore(dim, n, dtype=dtype)
        idx.insert_batch(store, np.arange(n), x, progress=False)
        for count in (1000, 10000):
            allowed = np.sort(rng.choice(n, count, replace=False))
            f = hn.Filter(idx, allowed)
            xa = np.ascontiguousarray(idx.get_vectors(store, allowed))  # float32, gathered once
            idx.search(store, qs[0], K, filter=f, plan="exact")
            ours = mm = 0.0
            for _ in range(a.rounds):
                ours = max(ours, timed(lambda: [idx.search(store, q, K, filter=f, plan="exact") for q in qs], len(qs), 1))
                mm = max(mm, timed(lambda: [xa @ q for q in qs], len(qs), 1))
            rows.append({"dtype": dtype, "allowed": count, "ours_us": 1e6 / ours, "matmul_us": 1e6 / mm, "ratio": mm / ours})
            print(rows[-1], flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "filter-exact.json").write_text(json.dumps({"n": n, "dim": dim, "rows": rows, "machine": machine(), "command": a.command}, indent=1))


def report() -> None:
    """filter.md and the plots from the saved JSON files."""
    lines = ["# Filtered search: ours vs hnswlib, faiss and NumPy", "",
             "Written by `benchmarks/bench_filter.py report` from the runs saved beside it (see the script's docstring",
             "for the methods). k = 10; recall@10 against the exact filtered top-10. q/s: single = one call per query,",
             "best of the interleaved rounds; batch = all queries in one call. faiss runs at the first ef in",
             f"{FAISS_EFS} whose recall reaches ours - 0.005 (marked * where none does: its best recall then).",
             "target: ours >= 1.5x the best of the others (single), recall >= 0.95.", ""]
    sets = []  # one section per data set and size: runs of one set at another size are not merged
    for key in ("dev", "synthetic"):
        groups: dict = {}
        for run in sorted((json.loads(part.read_text()) for part in RESULTS.glob(f"filter-{key}*.json")), key=lambda r: r.get("finished", "")):
            groups.setdefault((run["name"], run["n"], run.get("store", "float32")), []).append(run)
        least = min((n for _, n, _ in groups), default=0)
        for (_, n, store), runs in sorted(groups.items(), key=lambda g: g[0][1:]):
            suffix = ("-walk" if store.startswith(STORE_WALK) else "") + ("-reorder" if store.endswith(RENUMBERED) else "")
            sets.append(((key if n == least else f"{key}-{n}") + suffix, runs))
    for key, runs in sets:
        r = runs[0]
        cells: dict = {}
        for run in runs:  # in the order they finished: a later run's cell replaces an earlier run's of the same filter
            for c in run["cells"]:
                cells[(c["kind"], c["sel"])] = c
        r["cells"] = sorted(cells.values(), key=lambda c: (KINDS.index(c["kind"]), -c["sel"]))
        # each run on its own host and in its own state of the machine: every command with both
        runs_md = "; ".join(f"`{run['command']}` ({run['machine']}{'; ' + run['versions'] if run.get('versions') else ''}; unfiltered at the same ef: recall {run['unfiltered']['recall']:.3f}, "
                            f"{run['unfiltered']['single']:,.0f} q/s single)" for run in runs)
        store = "" if r.get("store", "float32") == "float32" else f", {r['store']}"
        lines += [f"## {r['name']} ({r['n']:,} x {r['dim']}, ef = {r['ef']}, {r['queries']} queries{store})", "",
                  f"Runs (a later run's cell replaces an earlier one's): {runs_md}.",
                  "Cells at 50 % also time our unfiltered search in the same rounds: ours / unfiltered (target >= 0.5) is given there, at the same ef "
                  f"and, where the run measured it, at the first ef in {UNFILTERED_EFS} whose unfiltered recall reaches ours - 0.005 (the target's 'same recall').", "",
                  "| filter | allowed | plan (ef) | ours recall | ours q/s | hnswlib | faiss (ef) | NumPy | ours / best | batch: ours | hnswlib | faiss | NumPy | Filter ms |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for c in r["cells"]:
            s, b = c["single"], c["batch"]
            rest = sum(c.get("plans", {}).values()) - c.get("plans", {}).get(f"{c['plan']} ({c['plan_ef']})", 0)
            shown = f"{c['plan']} ({c['plan_ef']})" + (f"; {rest} queries other" if rest else "")
            others = [v for k2, v in s.items() if k2 != "ours" and k2 not in UNFILTERED_KEYS]
            ratio = s["ours"] / max(others) if others else float("nan")
            fz = f"{c['faiss_recall']:.3f}{'' if c['faiss_reaches'] else '*'}, {s['faiss']:,.0f} ({c['faiss_ef']})" if "faiss" in s else "-"
            hz = f"{c['hnswlib_recall']:.3f}, {s['hnswlib']:,.0f}" if "hnswlib" in s else "-"
            flag = "" if ratio >= 1.5 and c["ours_recall"] >= 0.95 else " **miss**"
            if "unfiltered" in s:
                flag += f"; {s['ours'] / s['unfiltered']:.2f}x unfiltered"
            if "unfiltered_eq" in s:
                flag += f", {s['ours'] / s['unfiltered_eq']:.2f}x at its recall (ef {c['unfiltered_ef']}: {c['unfiltered_recall']:.3f})"
            lines.append(f"| {c['kind']} {c['sel'] * 100:g} % | {c['allowed']:,} | {shown} | {c['ours_recall']:.3f} | {s['ours']:,.0f} | {hz} | {fz} | "
                         f"{s['numpy']:,.0f} | {ratio:.2f}{flag} | {b['ours']:,.0f} | {b.get('hnswlib', 0):,.0f} | {b.get('faiss', 0):,.0f} | {b['numpy']:,.0f} | {c['filter_ms']:.2f} |")
        lines.append("")
        plot(r, key)
        lines += [f"![q/s vs selectivity](filter-{key}-single.png)", ""]
    p = RESULTS / "filter-exact.json"
    if p.exists():
        r = json.loads(p.read_text())
        lines += [f"## The exact plan against a matmul ({r['n']:,} x {r['dim']} rows, cosine)", "",
                  f"Command: `{r['command']}`. Ours: `search(plan=\"exact\")` with a compiled Filter, one call per query "
                  "(the whole call: checks, distances, top-10, results). Lower bound: `xa @ q` over the allowed rows gathered "
                  "beforehand as float32 (no top-k). Target: ours / matmul <= 1.5.", "",
                  "| store | allowed rows | ours us/query | matmul us/query | ours / matmul |", "|---|---|---|---|---|"]
        for row in r["rows"]:
            lines.append(f"| {row['dtype']} | {row['allowed']:,} | {row['ours_us']:.1f} | {row['matmul_us']:.1f} | {row['ours_us'] / row['matmul_us']:.2f} |")
        lines.append("")
    (RESULTS / "filter.md").write_text("\n".join(lines))


def plot(r: dict, key: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    for mode in ("single", "batch"):
        fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), sharey=True)
        for ax, kind in zip(axes, KINDS):
            cells = [c for c in r["cells"] if c["kind"] == kind]
            if not cells:
                continue
            sel = [c["sel"] * 100 for c in cells]
            for name in [m for m in cells[-1][mode] if m not in UNFILTERED_KEYS]:
                ax.plot(sel, [c[mode].get(name, np.nan) for c in cells], marker="o", label=name)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title(f"{kind}")
            ax.set_xlabel("allowed items (%)")
            ax.grid(True, which="both", alpha=0.3)
        axes[0].set_ylabel(f"queries/s ({mode})")
        drawn = [ax for ax in axes if ax.lines]  # a section may hold one kind of filter only
        if drawn:
            drawn[0].legend()
        fig.suptitle(f"{r['name']}: filtered k=10, ef={r['ef']}")
        fig.tight_layout()
        fig.savefig(RESULTS / f"filter-{key}-{mode}.png", dpi=90)
        plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    import sys

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", choices=("dev", "synthetic", "exact", "report"))
    ap.add_argument("--file", default=str(DEV_SET))
    ap.add_argument("--n", type=int, default=0, help="items (synthetic: default 1,000,000; dev/exact: all)")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--ef", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    ap.add_argument("--sel", nargs="+", type=float, default=list(SELECTIVITY))
    ap.add_argument("--out", default=None, help="name of the saved run (default: the data set's); report reads filter-dev*.json")
    ap.add_argument("--no-cache", action="store_true", help="build the indexes even if .bench_cache holds them")
    ap.add_argument("--walk-copy", action="store_true", help="our float32 store walks a float16 copy (enable_walk_copy() on the built graph)")
    ap.add_argument("--reorder", action="store_true", help="our index renumbered once built (compact(reorder=True)), as hnsw-numba build makes it")
    a = ap.parse_args(argv)
    a.command = "python benchmarks/bench_filter.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if a.dataset == "dev":
        ds = load_hdf5(a.file)
        x = ds.train[: a.n] if a.n else ds.train
        run_dataset(ds.name, np.ascontiguousarray(x), np.ascontiguousarray(ds.test, np.float32), ds.metric, a)
    elif a.dataset == "synthetic":
        n = a.n or 1_000_000
        x, test = clustered_embeddings(n, a.dim, n_queries=1000, seed=0)
        run_dataset(f"synthetic-clustered-{n}x{a.dim}", x, test, "l2", a)
    elif a.dataset == "exact":
        run_exact(a)
    report()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
