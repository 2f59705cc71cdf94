"""Shared helpers for the benchmarks: data sets, timing, peers, tables."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

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

DEV_SET = ROOT.parent / "shared" / "data" / "words-minilm-384-angular-dev.hdf5"
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Dataset:
    name: str
    train: np.ndarray
    test: np.ndarray
    neighbors: np.ndarray  # exact ground truth, best first
    metric: str  # "l2" | "cosine" | "ip"


def load_hdf5(path: str | os.PathLike) -> Dataset:
    """Read an ann-benchmarks HDF5 file (train / test / neighbors, attrs['distance'])."""
    import h5py

    with h5py.File(path, "r") as f:
        dist = f.attrs.get("distance", "euclidean")
        if isinstance(dist, bytes):
            dist = dist.decode()
        metric = {"angular": "cosine", "euclidean": "l2", "dot": "ip"}.get(dist, dist)
        return Dataset(
            Path(path).stem,
            np.ascontiguousarray(f["train"][:], np.float32),
            np.ascontiguousarray(f["test"][:], np.float32),
            np.asarray(f["neighbors"][:]),
            metric,
        )


def synthetic_clustered(n: int, dim: int, n_queries: int, seed: int = 0, centers: int = 1000) -> Dataset:
    """Seeded clustered L2 data with exact ground truth (computed in float32 blocks)."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centers, dim)).astype(np.float32) * 4
    spread = rng.uniform(0.5, 1.5, centers).astype(np.float32)
    lab = rng.integers(0, centers, n + n_queries)
    x = c[lab] + rng.standard_normal((n + n_queries, dim)).astype(np.float32) * spread[lab, None]
    train, test = np.ascontiguousarray(x[:n]), np.ascontiguousarray(x[n:])
    return Dataset(f"synthetic-clustered-{n}x{dim}", train, test, exact_knn(train, test, 100), "l2")


def exact_knn(train: np.ndarray, test: np.ndarray, k: int) -> np.ndarray:
    """Exact squared-L2 k-NN (blocked matrix products)."""
    tn = (train.astype(np.float32) ** 2).sum(1)
    out = np.empty((test.shape[0], k), np.int64)
    for s in range(0, test.shape[0], 100):
        q = test[s : s + 100]
        d = tn[None, :] - 2 * q @ train.T
        part = np.argpartition(d, k, axis=1)[:, :k]
        order = np.take_along_axis(d, part, 1).argsort(1)
        out[s : s + 100] = np.take_along_axis(part, order, 1)
    return out


def recall_at(found: np.ndarray, truth: np.ndarray, k: int = 10) -> float:
    """Recall@k of ``found`` against ``truth`` (the installed ``hnsw-numba bench`` helper)."""
    from hnsw_numba.cli.bench import _recall

    return _recall(found, truth, k)


def best_of(fn: Callable[[], object], repeat: int = 3) -> float:
    """Minimum wall time of ``repeat`` calls (the least disturbed by a shared machine)."""
    from hnsw_numba.cli.bench import _best

    return _best(fn, repeat)


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
