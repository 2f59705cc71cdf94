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
from typing import Callable

import numpy as np

__all__ = ["run_bench", "PEERS", "HnswNumbaAdapter", "HnswNumbaReorderedAdapter", "HnswNumbaWalkCopyAdapter",
           "HnswNumbaWalkCopyReorderedAdapter", "HnswlibAdapter", "FaissAdapter", "USearchAdapter", "load_bench_data"]


# ============================================================================ adapters
# Every adapter builds with m / ef_construction as given (``build``), answers a batch of
# queries with a given ef (``batch``: the result's keys), one call per query (``single``),
# and returns one prepared single-query call (``single_call``: per-call overhead). Each
# searches with a beam of max(ef, k), as hnsw_numba, hnswlib and usearch do by themselves.
class HnswNumbaAdapter:
    """hnsw_numba behind the adapters' common interface."""

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

    def single_call(self, v: np.ndarray, k: int, ef: int) -> Callable[[], object]:
        search, store = self.index.search, self.store
        return lambda: search(store, v, k, ef=ef)


class HnswNumbaReorderedAdapter(HnswNumbaAdapter):
    """hnsw_numba renumbered once built (``compact(reorder=True)``, as for a read-mostly
    index); the renumbering counts as part of the build."""

    name = "hnsw_numba+reorder"
    module = "hnsw_numba"

    def build(self, x: np.ndarray) -> None:
        super().build(x)
        self.index.compact(self.store, num_threads=self.threads, reorder=True)


class HnswNumbaWalkCopyAdapter(HnswNumbaAdapter):
    """hnsw_numba over a float32 store with a float16 walk copy (``walk_copy=True``):
    walks read the copy, answers are re-scored on the float32 vectors."""

    name = "hnsw_numba+f16walk"
    module = "hnsw_numba"

    def __init__(self, metric: str, dim: int, n: int, m: int, efc: int, threads: int | None) -> None:
        import hnsw_numba as hn

        super().__init__(metric, dim, n, m, efc, threads)
        self.store = hn.InMemoryVectorStore(dim, n, walk_copy=True)


class HnswNumbaWalkCopyReorderedAdapter(HnswNumbaWalkCopyAdapter):
    """hnsw_numba over a float32 store with a float16 walk copy, renumbered once built (as
    ``hnsw-numba build --dtype f32+f16`` prepares an index); the renumbering counts as part of the build."""

    name = "hnsw_numba+f16walk+reorder"
    module = "hnsw_numba"

    def build(self, x: np.ndarray) -> None:
        super().build(x)
        self.index.compact(self.store, num_threads=self.threads, reorder=True)


class HnswlibAdapter:
    """hnswlib (``hnswlib.Index``)."""

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

    def single_call(self, v: np.ndarray, k: int, ef: int) -> Callable[[], object]:
        self.index.set_ef(ef)
        knn = self.index.knn_query
        return lambda: knn(v, k=k, num_threads=1)


class FaissAdapter:
    """faiss ``IndexHNSWFlat`` (cosine: normalised vectors, inner product)."""

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
        self.index.hnsw.efSearch = max(ef, k)  # faiss searches with efSearch as set
        return self.index.search(self._prep(q), k)[1]

    def single(self, q: np.ndarray, k: int, ef: int) -> None:
        self.index.hnsw.efSearch = max(ef, k)
        q = self._prep(q)
        search = self.index.search
        for i in range(q.shape[0]):
            search(q[i : i + 1], k)

    def single_call(self, v: np.ndarray, k: int, ef: int) -> Callable[[], object]:
        self.index.hnsw.efSearch = max(ef, k)
        search, q = self.index.search, self._prep(v[None])
        return lambda: search(q, k)


class USearchAdapter:
    """usearch ``Index`` (f32 vectors)."""

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

    def single_call(self, v: np.ndarray, k: int, ef: int) -> Callable[[], object]:
        self.index.expansion_search = ef
        search = self.index.search
        return lambda: search(v, k)


PEERS = {cls.name: cls for cls in (HnswlibAdapter, FaissAdapter, USearchAdapter)}


def _peer_version(module: str) -> str:
    from importlib import metadata

    for dist in {"hnswlib": ("hnswlib",), "faiss": ("faiss-cpu", "faiss-gpu", "faiss"), "usearch": ("usearch",)}[module]:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return "?"


# ============================================================================ data
def load_bench_data(path: str, limit: int | None, nq: int | None, k: int):
    """train, test, ground truth (k columns, or None when it must be computed) and metric of an ann-benchmarks file."""
    from ..evaluation import load_ann_benchmarks
    from ..io.vectors import is_hdf5
    from .files import DataError

    try:  # asked first: without h5py an HDF5 file cannot be told from another file
        import h5py  # noqa: F401
    except ImportError:
        raise DataError(f"{path}: bench reads ann-benchmarks HDF5 files, which needs h5py; install it: "
                        "pip install 'hnsw_numba[hdf5]'") from None
    if os.path.isfile(path) and not is_hdf5(path):
        raise DataError(f"{path}: not an HDF5 file (bench reads ann-benchmarks files: train, test, neighbors)")
    ds = load_ann_benchmarks(path, limit=limit, n_queries=nq)
    if k > ds.train.shape[0]:
        raise DataError(f"{path}: k={k} is more than the {ds.train.shape[0]} train rows")
    truth = ds.neighbors[:, :k] if ds.neighbors is not None and ds.neighbors.shape[1] >= k else None
    return ds.train, ds.test, truth, ds.metric


# ============================================================================ run
def run_bench(args: argparse.Namespace) -> int:
    """``hnsw-numba bench``: print the table (or JSON) of every library's build time, recall and q/s."""
    from ..core.config import MAX_EF
    from ..evaluation import best_of, exact_neighbors, recall
    from .common import UsageError, first_use

    try:
        efs = [int(e) for e in str(args.ef).split(",") if e.strip()]
    except ValueError:
        raise UsageError(f"--ef must be comma-separated integers, got {args.ef!r}") from None
    if not efs or min(efs) < 1 or max(efs) > MAX_EF:
        raise UsageError(f"--ef must be integers in [1, {MAX_EF}], got {args.ef!r}")
    wanted = [p.strip() for p in str(args.peers).split(",") if p.strip() and p.strip() != "hnsw_numba"]
    unknown = sorted(set(wanted) - set(PEERS))
    if unknown:
        raise UsageError(f"unknown peer(s) {', '.join(unknown)}; known: {', '.join(PEERS)}")
    k = args.k
    quiet = args.quiet
    train, test, truth, metric = load_bench_data(args.dataset, args.limit, args.queries, k)
    n, dim = train.shape
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))
    say(f"bench: {args.dataset}: {n:,} x {dim} ({metric}), {test.shape[0]:,} queries, m {args.m}, ef_construction {args.ef_construction}")
    if truth is None:
        say("bench: computing ground truth by brute force")
        truth = exact_neighbors(train, test, k, metric, num_threads=args.threads)[0]
    libs: list[type] = [HnswNumbaAdapter]
    versions = {"hnsw_numba": HnswNumbaAdapter.version()}
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
        if cls is HnswNumbaAdapter:  # compile (or load the cache) outside the timing
            with first_use("bench", "float32", quiet):
                warm = HnswNumbaAdapter(metric, dim, 64, args.m, args.ef_construction, args.threads)
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
            tb = best_of(lambda lib=lib: lib.batch(test, k, ef), args.repeat)
            entry = {"ef": ef, f"recall@{k}": recall(found, truth, k), "batch_qps": test.shape[0] / tb}
            if single_q.shape[0]:
                ts = best_of(lambda lib=lib: lib.single(single_q, k, ef), args.repeat)
                entry["single_qps"] = single_q.shape[0] / ts
            row["ef"].append(entry)
        results.append(row)
        del lib
    report = {
        "dataset": args.dataset, "train": n, "queries": int(test.shape[0]), "dim": dim, "metric": metric,
        "m": args.m, "ef_construction": args.ef_construction, "k": k, "threads": args.threads, "repeat": args.repeat,
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
