"""``hnsw-numba bench``: recall and speed against the installed peers on an ann-benchmarks file.

Self-contained (the repository's ``benchmarks/`` directory is not installed with the
package): every library is built with the same ``m`` / ``ef_construction`` on the file's
``train`` rows and queried with its ``test`` rows; peers that are not installed are
skipped with a note. Batch mode uses all cores (or ``--threads``); single mode times one
call per query on one thread.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Any, Callable

import numpy as np

__all__ = ["run_bench", "PEERS"]


# ============================================================================ adapters
class _Ours:
    name = "hnsw_numba"

    def __init__(self, metric: str, dim: int, n: int, m: int, efc: int, threads: int | None) -> None:
        import hnsw_numba as hn
        from hnsw_numba.core.metrics import metric_from_name

        self.index = hn.Hnsw(metric_from_name(metric), hn.HnswConfig(dim=dim, max_nodes=n, m=m, ef_construction=efc, seed=100))
        self.store = hn.InMemoryVectorStore(dim, n)
        self.threads = threads

    @staticmethod
    def version() -> str:
        from hnsw_numba import __version__

        return __version__

    def build(self, x: np.ndarray) -> None:
        self.index.insert_batch(self.store, np.arange(x.shape[0]), x, num_threads=self.threads, progress=False)

    def batch(self, q: np.ndarray, k: int, ef: int) -> np.ndarray:
        return self.index.search_batch(self.store, q, k, ef=ef, num_threads=self.threads)[0]

    def single(self, q: np.ndarray, k: int, ef: int) -> None:
        search, store = self.index.search, self.store
        for v in q:
            search(store, v, k, ef=ef)


class _Hnswlib:
    name = "hnswlib"
    module = "hnswlib"

    def __init__(self, metric: str, dim: int, n: int, m: int, efc: int, threads: int | None) -> None:
        import hnswlib

        self.index = hnswlib.Index(space=metric, dim=dim)
        self.index.init_index(max_elements=n, M=m, ef_construction=efc, random_seed=100)
        self.threads = threads or -1

    def build(self, x: np.ndarray) -> None:
        self.index.add_items(x, np.arange(x.shape[0]), num_threads=self.threads)

    def batch(self, q: np.ndarray, k: int, ef: int) -> np.ndarray:
        self.index.set_ef(ef)
        return self.index.knn_query(q, k=k, num_threads=self.threads)[0]

    def single(self, q: np.ndarray, k: int, ef: int) -> None:
        self.index.set_ef(ef)
        knn = self.index.knn_query
        for v in q:
            knn(v, k=k, num_threads=1)


class _Faiss:
    name = "faiss"
    module = "faiss"

    def __init__(self, metric: str, dim: int, n: int, m: int, efc: int, threads: int | None) -> None:
        import faiss

        self.normalize = metric == "cosine"
        self.index = faiss.IndexHNSWFlat(dim, m, faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = efc
        self.threads = threads
        self.faiss = faiss

    def _prep(self, x: np.ndarray) -> np.ndarray:
        if self.normalize:
            x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-30)
        return np.ascontiguousarray(x, np.float32)

    def _omp(self, n: int | None) -> None:
        if n:
            self.faiss.omp_set_num_threads(n)

    def build(self, x: np.ndarray) -> None:
        self._omp(self.threads)
        self.index.add(self._prep(x))

    def batch(self, q: np.ndarray, k: int, ef: int) -> np.ndarray:
        self._omp(self.threads)
        self.index.hnsw.efSearch = ef
        return self.index.search(self._prep(q), k)[1]

    def single(self, q: np.ndarray, k: int, ef: int) -> None:
        self.index.hnsw.efSearch = ef
        q = self._prep(q)
        search = self.index.search
        for i in range(q.shape[0]):
            search(q[i : i + 1], k)


class _USearch:
    name = "usearch"
    module = "usearch"

    def __init__(self, metric: str, dim: int, n: int, m: int, efc: int, threads: int | None) -> None:
        from usearch.index import Index

        self.index = Index(ndim=dim, metric={"l2": "l2sq", "cosine": "cos", "ip": "ip"}[metric],
                           dtype="f32", connectivity=m, expansion_add=efc)
        self.threads = threads or 0

    def build(self, x: np.ndarray) -> None:
        self.index.add(np.arange(x.shape[0]), x, threads=self.threads)

    def batch(self, q: np.ndarray, k: int, ef: int) -> np.ndarray:
        self.index.expansion_search = ef
        return np.asarray(self.index.search(q, k, threads=self.threads).keys)

    def single(self, q: np.ndarray, k: int, ef: int) -> None:
        self.index.expansion_search = ef
        search = self.index.search
        for v in q:
            search(v, k)


PEERS = {cls.name: cls for cls in (_Hnswlib, _Faiss, _USearch)}


def _peer_version(module: str) -> str:
    from importlib import metadata

    for dist in {"hnswlib": ("hnswlib",), "faiss": ("faiss-cpu", "faiss-gpu", "faiss"), "usearch": ("usearch",)}[module]:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return "?"


# ============================================================================ data
def _load(path: str, limit: int | None, nq: int | None, k: int):
    """train, test, ground truth (k columns) and metric of an ann-benchmarks file."""
    from .files import DataError, _is_hdf5, open_vectors

    if os.path.isfile(path) and not _is_hdf5(path):
        raise DataError(f"{path}: not an HDF5 file (bench reads ann-benchmarks files: train, test, neighbors)")
    train_in = open_vectors(path, "train")
    try:
        if train_in.metric_hint is None:
            raise DataError(f"{path}: no 'distance' attribute (angular, euclidean or dot): not an ann-benchmarks file")
        metric = train_in.metric_hint
        full = train_in.n
        n = min(full, limit or full)
        train = train_in.block(0, n)
    finally:
        train_in.close()
    test_in = open_vectors(path, "test")
    try:
        q = min(test_in.n, nq or test_in.n)
        test = test_in.block(0, q)
    finally:
        test_in.close()
    if test.shape[1] != train.shape[1]:
        raise DataError(f"{path}: test has dimension {test.shape[1]}, train {train.shape[1]}")
    if k > n:
        raise DataError(f"{path}: k={k} is more than the {n} train rows")
    truth = None
    if n == full:
        import h5py

        with h5py.File(path, "r") as f:
            nb = f.get("neighbors")
            if isinstance(nb, h5py.Dataset) and nb.ndim == 2 and nb.shape[0] >= q and nb.shape[1] >= k:
                truth = np.asarray(nb[:q, :k], np.int64)
    return train, test, truth, metric


def _exact(metric: str, train: np.ndarray, test: np.ndarray, k: int) -> np.ndarray:
    """Brute-force ground truth (float32 matrix products in blocks of queries)."""
    if metric == "cosine":
        train = train / np.maximum(np.linalg.norm(train, axis=1, keepdims=True), 1e-30)
        test = test / np.maximum(np.linalg.norm(test, axis=1, keepdims=True), 1e-30)
    sq = (train * train).sum(1) if metric == "l2" else None
    out = np.empty((test.shape[0], k), np.int64)
    for s in range(0, test.shape[0], 256):
        q = test[s : s + 256]
        d = -(q @ train.T)
        if sq is not None:
            d = sq[None, :] + 2 * d
        part = np.argpartition(d, k - 1, axis=1)[:, :k]
        order = np.take_along_axis(d, part, 1).argsort(1, kind="stable")
        out[s : s + 256] = np.take_along_axis(part, order, 1)
    return out


def _recall(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    hits = sum(len(set(a[:k].tolist()) & set(b[:k].tolist())) for a, b in zip(np.asarray(found), truth))
    return hits / (truth.shape[0] * k)


def _best(fn: Callable[[], Any], repeat: int = 2) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


# ============================================================================ run
def run_bench(args: argparse.Namespace) -> int:
    from .files import DataError
    from .common import UsageError

    try:
        efs = [int(e) for e in str(args.ef).split(",") if e.strip()]
    except ValueError:
        raise UsageError(f"--ef must be comma-separated integers, got {args.ef!r}") from None
    if not efs or min(efs) < 1:
        raise UsageError(f"--ef must be positive integers, got {args.ef!r}")
    wanted = [p.strip() for p in str(args.peers).split(",") if p.strip() and p.strip() != "hnsw_numba"]
    unknown = sorted(set(wanted) - set(PEERS))
    if unknown:
        raise UsageError(f"unknown peer(s) {', '.join(unknown)}; known: {', '.join(PEERS)}")
    k = args.k
    quiet = args.quiet
    train, test, truth, metric = _load(args.dataset, args.limit, args.queries, k)
    n, dim = train.shape
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))
    say(f"bench: {args.dataset}: {n:,} x {dim} ({metric}), {test.shape[0]:,} queries, m {args.m}, ef_construction {args.ef_construction}")
    if truth is None:
        say("bench: computing ground truth by brute force")
        truth = _exact(metric, train, test, k)
    libs: list[type] = [_Ours]
    versions = {"hnsw_numba": _Ours.version()}
    for name in wanted:
        cls = PEERS[name]
        try:
            __import__(cls.module)
        except ImportError:
            say(f"bench: {name} is not installed; skipped (pip install {'faiss-cpu' if name == 'faiss' else name})")
            continue
        libs.append(cls)
        versions[name] = _peer_version(cls.module)
    single_q = test[: max(0, min(args.single, test.shape[0]))]
    results: list[dict] = []
    for cls in libs:
        if cls is _Ours:  # compile (or load the cache) outside the timing
            warm = _Ours(metric, dim, 64, args.m, args.ef_construction, args.threads)
            warm.build(train[:64])
            warm.batch(test[:2], min(k, 64), 8)
            warm.single(test[:2], min(k, 64), 8)
        lib = cls(metric, dim, n, args.m, args.ef_construction, args.threads)
        say(f"bench: building {cls.name}")
        t = time.perf_counter()
        lib.build(train)
        build = time.perf_counter() - t
        row = {"library": cls.name, "version": versions[cls.name], "build_s": build, "ef": []}
        for ef in efs:
            found = np.asarray(lib.batch(test, k, ef))
            tb = _best(lambda: lib.batch(test, k, ef))
            entry = {"ef": ef, f"recall@{k}": _recall(found, truth, k), "batch_qps": test.shape[0] / tb}
            if single_q.shape[0]:
                ts = _best(lambda: lib.single(single_q, k, ef))
                entry["single_qps"] = single_q.shape[0] / ts
            row["ef"].append(entry)
        results.append(row)
        del lib
    report = {
        "dataset": args.dataset, "train": n, "queries": int(test.shape[0]), "dim": dim, "metric": metric,
        "m": args.m, "ef_construction": args.ef_construction, "k": k, "threads": args.threads,
        "machine": f"{platform.machine()}, Python {platform.python_version()}", "results": results,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(_table(report))
    return 0


def _table(rep: dict) -> str:
    k = rep["k"]
    base = next((r for r in rep["results"] if r["library"] == "hnswlib"), None)
    ref = {e["ef"]: e for e in base["ef"]} if base else {}
    lines = [
        f"# {rep['dataset']}: {rep['train']:,} x {rep['dim']} ({rep['metric']}), {rep['queries']:,} queries, "
        f"m {rep['m']}, ef_construction {rep['ef_construction']}; ratios: speed relative to hnswlib (>1 faster)",
        f"| library | version | build s | ef | recall@{k} | batch q/s | single q/s | build ratio | batch ratio | single ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rep["results"]:
        for i, e in enumerate(r["ef"]):
            b = ref.get(e["ef"])
            ratio = lambda key: f"{e[key] / b[key]:.2f}x" if b and key in e and key in b and b[key] else "-"  # noqa: E731
            first = i == 0
            build_ratio = f"{base['build_s'] / r['build_s']:.2f}x" if base and first else ""
            single = f"{e['single_qps']:,.0f}" if "single_qps" in e else "-"
            cells = [
                r["library"] if first else "", r["version"] if first else "",
                f"{r['build_s']:.2f}" if first else "", str(e["ef"]), f"{e[f'recall@{k}']:.4f}",
                f"{e['batch_qps']:,.0f}", single, build_ratio, ratio("batch_qps"), ratio("single_qps"),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
