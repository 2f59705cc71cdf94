"""The one helper module of the benchmarks: data sets, ground truth, recall, timing, peers, tables.

Run a benchmark from the repository root as ``python benchmarks/bench_x.py``: Python puts
a script's own directory (``benchmarks/``) first on ``sys.path``, so ``from common import
...`` works without editing ``sys.path``. ``hnsw_numba`` itself is imported as installed
(``pip install -e ".[bench]"``) or from the checkout with ``PYTHONPATH=.``.

Everything measured is built on the package's public functions -- ``hnsw_numba.recall``,
``exact_neighbors``, ``load_ann_benchmarks``, ``best_of`` and the adapters of
``hnsw-numba bench`` (:mod:`hnsw_numba.cli.bench`) -- so the benchmarks and the command
line compute recall and ground truth the same way.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def _use_source_keyed_cache() -> None:
    """Point Numba's cache at .numba_cache/<hash of the sources> (as tests/conftest.py does).

    Numba invalidates a cached function only when its own file changes; an edited callee in
    another module would otherwise be benchmarked as stale machine code. Must run before
    hnsw_numba (and so numba) is imported.
    """
    import hashlib

    if "NUMBA_CACHE_DIR" in os.environ:
        return
    h = hashlib.sha256()
    for p in sorted((ROOT / "hnsw_numba").rglob("*.py")):
        h.update(p.relative_to(ROOT / "hnsw_numba").as_posix().encode())
        h.update(p.read_bytes())
    os.environ["NUMBA_CACHE_DIR"] = str(ROOT / ".numba_cache" / h.hexdigest()[:16])


_use_source_keyed_cache()

from hnsw_numba.cli.bench import (FaissAdapter, HnswlibAdapter, HnswNumbaAdapter, HnswNumbaReorderedAdapter, HnswNumbaWalkCopyAdapter,  # noqa: E402
                                   HnswNumbaWalkCopyReorderedAdapter, USearchAdapter)
from hnsw_numba.evaluation import best_of, exact_neighbors, load_ann_benchmarks, recall  # noqa: E402

__all__ = ["ROOT", "DEV_SET", "RESULTS", "Dataset", "load_hdf5", "synthetic_clustered", "exact_neighbors", "recall",
           "best_of", "available", "machine", "Table"]

DEV_SET = ROOT.parent / "shared" / "data" / "words-minilm-384-angular-dev.hdf5"
RESULTS = Path(__file__).resolve().parent / "results"
ADAPTERS = (HnswNumbaAdapter, HnswNumbaReorderedAdapter, HnswNumbaWalkCopyAdapter, HnswNumbaWalkCopyReorderedAdapter, HnswlibAdapter,
            FaissAdapter, USearchAdapter)


@dataclass
class Dataset:
    name: str
    train: np.ndarray
    test: np.ndarray
    neighbors: np.ndarray  # exact ground truth (row numbers of train), best first
    metric: str  # "l2" | "cosine" | "ip"


def load_hdf5(path: str | os.PathLike) -> Dataset:
    """An ann-benchmarks HDF5 file (train / test / neighbors, attrs['distance'])."""
    ds = load_ann_benchmarks(path)
    return Dataset(ds.name, ds.train, ds.test, ds.neighbors, ds.metric)


def synthetic_clustered(n: int, dim: int, n_queries: int, seed: int = 0, centers: int = 1000) -> Dataset:
    """Seeded clustered L2 data with its exact 100 nearest neighbours."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centers, dim)).astype(np.float32) * 4
    spread = rng.uniform(0.5, 1.5, centers).astype(np.float32)
    lab = rng.integers(0, centers, n + n_queries)
    x = c[lab] + rng.standard_normal((n + n_queries, dim)).astype(np.float32) * spread[lab, None]
    train, test = np.ascontiguousarray(x[:n]), np.ascontiguousarray(x[n:])
    return Dataset(f"synthetic-clustered-{n}x{dim}", train, test, exact_neighbors(train, test, 100, "l2")[0], "l2")


def available(names: list[str]) -> list[type]:
    """The adapters (hnsw_numba first, then peers) among ``names`` whose library imports."""
    out = []
    for cls in ADAPTERS:
        if cls.name not in names:
            continue
        try:
            __import__(getattr(cls, "module", cls.name))
        except ImportError:
            continue
        out.append(cls)
    return out


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


#: Distributions whose versions a result names: ours, the peers, and what our speed rests on.
VERSIONED = ("numba", "llvmlite", "numpy", "hnswlib", "faiss-cpu", "usearch")


def versions(names: tuple[str, ...] = VERSIONED) -> str:
    """``"numba 0.68.1, numpy 2.4.6, ..."`` for the installed distributions among ``names``:
    a peer's release moves the ratios a result reports."""
    out = []
    for name in names:
        try:
            out.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return ", ".join(out)


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)

    def add(self, *cells: object) -> None:
        self.rows.append([c if isinstance(c, str) else f"{c:.4g}" if isinstance(c, float) else str(c) for c in cells])

    def markdown(self) -> str:
        lines = ["| " + " | ".join(self.headers) + " |", "|" + "---|" * len(self.headers)]
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        return "\n".join(lines)
