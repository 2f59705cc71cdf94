"""k-NN graph: hnsw_numba's knn_graph vs pynndescent, and HnswTransformer vs exact.

Usage: python benchmarks/bench_knn.py [FILE.hdf5] [--k 15] [--repeat 2]

On the train set of an ann-benchmarks file (default: the words dev set, cosine) it times,
in one process, build + k-NN graph for
  * hnsw_numba: ``Hnsw(...).insert_batch`` + ``knn_graph(store, k)`` at the default ef,
  * pynndescent: ``NNDescent(X, n_neighbors=k + 1)`` + ``.neighbor_graph`` (it lists the
    point itself first, so k + 1), default parameters,
  * scikit-learn's exact ``KNeighborsTransformer`` vs ``HnswTransformer`` (fit_transform),
and the recall of each graph against the exact k-NN graph (self excluded). Both ANN
libraries are Numba-compiled: each is warmed up on a small subset first, so compilation is
excluded for both; index construction is included for both. Wall and CPU (all threads of
the process) times are the best of ``--repeat`` runs, alternating the libraries: on a
shared machine the CPU time is the steadier measure of the work done.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from common import DEV_SET, RESULTS, Table, exact_neighbors, load_hdf5, machine, recall

import hnsw_numba as hn  # noqa: E402


def exact_graph(x: np.ndarray, k: int, metric: str) -> np.ndarray:
    """Exact k-NN row ids, self excluded."""
    return without_self(exact_neighbors(x, x, k + 1, metric)[0], k)


def without_self(ind: np.ndarray, k: int) -> np.ndarray:
    """The first ``k`` of each row other than the row itself (found by id: a tie may list it later)."""
    keep = ind != np.arange(ind.shape[0])[:, None]
    order = np.argsort(~keep, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(ind, order, 1)


def graph_recall(ids: np.ndarray, truth: np.ndarray) -> float:
    return recall(ids, truth)


def hnsw_graph(x: np.ndarray, k: int, metric: str, m: int, efc: int, ef: int | None = None):
    met = hn.Cosine() if metric == "cosine" else hn.L2()
    idx = hn.Hnsw(met, hn.HnswConfig(dim=x.shape[1], max_nodes=x.shape[0], m=m, ef_construction=efc, seed=1))
    store = hn.InMemoryVectorStore(x.shape[1], x.shape[0])
    idx.insert_batch(store, np.arange(x.shape[0]), x, progress=False)
    t = time.perf_counter()
    g = idx.knn_graph(store, k, ef=ef, progress=False)
    graph_only[0] = time.perf_counter() - t
    built[0] = (idx, store)
    return g.indices.reshape(x.shape[0], k)


graph_only = [float("nan")]  # wall seconds of the last knn_graph call (without the build)
built: list = [None]  # the last (index, store) built


def nnd_graph(x: np.ndarray, k: int, metric: str):
    from pynndescent import NNDescent

    ind, _ = NNDescent(x, metric="cosine" if metric == "cosine" else "euclidean", n_neighbors=k + 1, random_state=None).neighbor_graph
    return without_self(ind, k)


def timed(fn):
    """(wall seconds, CPU seconds of every thread of this process, result)."""
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - t, time.process_time() - c, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file", nargs="?", default=str(DEV_SET))
    ap.add_argument("--k", type=int, default=15)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args(argv)
    ds = load_hdf5(a.file)
    x, k = ds.train, a.k
    import pynndescent
    import sklearn

    truth = exact_graph(x, k, ds.metric)
    small = x[:2000]
    hnsw_graph(small, k, ds.metric, 16, 200)  # compile / load kernels
    nnd_graph(small, k, ds.metric)  # compile pynndescent's kernels
    default_name = "build m=16 efc=200 (index defaults) + knn_graph, default ef"
    existing = {  # an index that exists anyway (built for search): its graph alone
        "knn_graph on that existing index, default ef (build excluded)": None,
        "knn_graph on that existing index, ef=32 (build excluded)": 32,
    }
    configs = {
        default_name: (16, 200, None),
        "build m=16 efc=40 (graph-only build) + knn_graph, ef=32": (16, 40, 32),
    }
    wall: dict[str, float] = {}
    cpu: dict[str, float] = {}
    only: dict[str, float] = {}
    rec: dict[str, float] = {}
    load = [os.getloadavg()[0]]
    for _ in range(a.repeat):
        runs = [(name, lambda c=c: hnsw_graph(x, k, ds.metric, *c)) for name, c in configs.items()]
        for name, fn in [*runs, ("pynndescent (defaults)", lambda: nnd_graph(x, k, ds.metric))]:
            graph_only[0] = np.nan
            w, c, ids = timed(fn)
            only[name] = np.fmin(only.get(name, np.nan), graph_only[0])
            wall[name] = min(wall.get(name, np.inf), w)
            cpu[name] = min(cpu.get(name, np.inf), c)
            rec[name] = graph_recall(ids, truth)
            if name == default_name:
                idx, store = built[0]
                for ename, ef in existing.items():
                    w, c, g = timed(lambda: idx.knn_graph(store, k, ef=ef, progress=False))
                    wall[ename] = min(wall.get(ename, np.inf), w)
                    cpu[ename] = min(cpu.get(ename, np.inf), c)
                    only[ename] = wall[ename]
                    rec[ename] = graph_recall(g.indices.reshape(-1, k), truth)
    load.append(os.getloadavg()[0])

    ref_name = "pynndescent (defaults)"
    table = Table(["method", "wall s", "CPU s", "of which knn_graph (wall s)", "recall vs exact graph", "wall / pynndescent", "CPU / pynndescent"])
    for name in wall:
        table.add(name, f"{wall[name]:.2f}", f"{cpu[name]:.2f}", "-" if np.isnan(only[name]) else f"{only[name]:.2f}", f"{rec[name]:.4f}",
                  f"{wall[name] / wall[ref_name]:.2f}", f"{cpu[name] / cpu[ref_name]:.2f}")

    # scikit-learn transformers on the same data (fit_transform = build + graph incl. self).
    from sklearn.neighbors import KNeighborsTransformer

    from hnsw_numba.sklearn import HnswTransformer

    sk_metric = "cosine" if ds.metric == "cosine" else "euclidean"
    t_exact, _, ref = timed(lambda: KNeighborsTransformer(n_neighbors=k, metric=sk_metric, n_jobs=-1).fit_transform(x))
    t_ours, _, ours = timed(lambda: HnswTransformer(n_neighbors=k, metric=sk_metric, n_jobs=-1, ef=100).fit_transform(x))
    same = sum(len(set(ours.indices[ours.indptr[i] : ours.indptr[i + 1]]) & set(ref.indices[ref.indptr[i] : ref.indptr[i + 1]]))
               for i in range(x.shape[0])) / ref.nnz
    sk = Table(["transformer (fit_transform)", "seconds", "neighbours identical to exact"])
    sk.add("KNeighborsTransformer (exact, brute force)", f"{t_exact:.2f}", "1")
    sk.add("HnswTransformer ef=100", f"{t_ours:.2f}", f"{same:.4f}")

    text = (
        f"# k-NN graph: hnsw_numba vs pynndescent\n\n"
        f"`python benchmarks/bench_knn.py` — {Path(a.file).name} train set ({x.shape[0]:,} x {x.shape[1]}, "
        f"{ds.metric}), k={k}, self excluded, best of {a.repeat} alternating runs in one process "
        f"(1-minute load average {load[0]:.1f} before, {load[1]:.1f} after, on 2 cores shared with other jobs).\n"
        f"machine: {machine()}; pynndescent {pynndescent.__version__}, scikit-learn {sklearn.__version__}; "
        f"date {time.strftime('%Y-%m-%d')}\n\n"
        "pynndescent's time is `NNDescent(n_neighbors=k + 1)` + `neighbor_graph` (its graph is "
        "its index). Our `knn_graph` rows time the self-join on an index that exists anyway "
        "(built for search with the defaults m=16, ef_construction=200); the `build ... +` rows "
        "add the index build, i.e. the cost of a k-NN graph from raw data. Numba compilation is "
        "excluded for both libraries (each warmed up on 2,000 rows first). A ratio < 1 means "
        "hnsw_numba is faster. `knn_graph` starts each item's search at its own node; its "
        f"default ef is max(k + 1, 16) = {max(k + 1, 16)}.\n\n"
        f"{table.markdown()}\n\n"
        f"{sk.markdown()}\n"
    )
    print(text)
    (RESULTS / "knn.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
