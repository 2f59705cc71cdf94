"""Vector types: recall, memory and batch speed of f16 / bf16 / Qi8 / f32 with a float16 walk copy against f32.

Usage::

    python benchmarks/bench_dtypes.py [FILE.hdf5] [--m 16] [--efc 200] [--ef 64]
        [--types float32,float16,bfloat16,qi8,float32+float16] [--repeat 7] [--tile 4] [--out FILE]

Builds one index per store type on the same data (cosine data uses ``Cosine()`` for the float
stores and ``CosineQi8()`` for Qi8; same seed, so the level draws are identical), then reports

* recall@10 at ``ef`` against the file's exact (float32) ground truth, and its difference to
  the f32 index;
* bytes per stored vector, twice: from the store's own ``nbytes`` accounting, and measured as
  the memory NumPy allocated (``tracemalloc``) while creating and filling a fresh store;
* batch search queries/s (all cores) at ``ef`` as a ratio to f32. The query set is tiled
  ``--tile`` times so one timing lasts long enough; the store types are timed round-robin
  ``--repeat`` times and the best time of each is kept, so a busy machine slows all of them
  alike. Beside the wall-clock ratio, the ratio of queries per CPU-second (process CPU time
  of the same runs) is reported: it does not count time the threads spent preempted by
  other work on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import time
import tracemalloc
from pathlib import Path

import numpy as np

from common import DEV_SET, RESULTS, Table, load_hdf5, machine, recall

import hnsw_numba as hn  # noqa: E402  (after common set the cache directory)

FLOAT_METRICS = {"l2": hn.L2, "cosine": hn.Cosine, "ip": hn.InnerProduct}
QI8_METRICS = {"l2": hn.L2Qi8, "cosine": hn.CosineQi8, "ip": hn.InnerProductQi8}
TARGET_RECALL_GAP = {"float32": 0.0, "float16": 0.01, "bfloat16": 0.01, "qi8": 0.03, "float32+float16": 0.01}
TARGET_QPS_RATIO = {"float32": 1.0, "float16": 0.8, "bfloat16": 0.8, "qi8": 1.0, "float32+float16": 1.0}


def make(kind: str, metric: str, dim: int, n: int, m: int, efc: int) -> tuple[hn.Hnsw, object]:
    """A fresh (index, store) pair for store type ``kind``."""
    met = QI8_METRICS[metric]() if kind == "qi8" else FLOAT_METRICS[metric]()
    idx = hn.Hnsw(met, hn.HnswConfig(dim=dim, max_nodes=n, m=m, ef_construction=efc, seed=100))
    return idx, new_store(kind, dim, n)


def new_store(kind: str, dim: int, n: int):
    if kind == "qi8":
        return hn.InMemoryQi8VectorStore(dim, n)
    if kind == "float32+float16":  # float32 vectors and the float16 copy the walks read
        return hn.InMemoryVectorStore(dim, n, walk_copy=True)
    return hn.InMemoryVectorStore(dim, n, dtype=kind)


def measured_bytes_per_vector(kind: str, idx: hn.Hnsw, x: np.ndarray) -> float:
    """NumPy bytes allocated by a fresh store holding ``x`` (encoded as the index encodes it)."""
    enc_in = idx.metric.prepare(x)  # cosine: normalised first, as insert_batch does
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        store = new_store(kind, x.shape[1], x.shape[0])
        store.write(np.arange(x.shape[0], dtype=np.int32), store.encode(enc_in))
        used = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    del store
    return used / x.shape[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", nargs="?", default=str(DEV_SET))
    ap.add_argument("--types", default="float32,float16,bfloat16,qi8,float32+float16")
    ap.add_argument("--m", type=int, default=16)
    ap.add_argument("--efc", type=int, default=200)
    ap.add_argument("--ef", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--tile", type=int, default=4, help="timed batch = the test set repeated this often")
    ap.add_argument("--out", default=str(RESULTS / "dtypes.md"))
    a = ap.parse_args(argv)

    ds = load_hdf5(a.dataset)
    n, dim = ds.train.shape
    kinds = a.types.split(",")
    print(f"# {ds.name}: {n} x {dim} ({ds.metric}), {ds.test.shape[0]} queries; M={a.m} efc={a.efc} ef={a.ef}")
    print(f"# machine: {machine()}", flush=True)
    timed_queries = np.ascontiguousarray(np.tile(ds.test, (a.tile, 1)))

    built: dict[str, tuple] = {}
    rows: dict[str, dict] = {}
    for kind in kinds:
        warm_idx, warm_store = make(kind, ds.metric, dim, 300, a.m, a.efc)  # compile / load outside timings
        warm_idx.insert_batch(warm_store, np.arange(300), ds.train[:300])
        warm_idx.search_batch(warm_store, ds.test[:10], 10, ef=a.ef)
        idx, store = make(kind, ds.metric, dim, n, a.m, a.efc)
        t = time.perf_counter()
        idx.insert_batch(store, np.arange(n), ds.train, num_threads=a.threads)
        build = time.perf_counter() - t
        found = idx.search_batch(store, ds.test, 10, ef=a.ef, num_threads=a.threads)[0]
        rec = recall(np.asarray(found), ds.neighbors, 10)
        built[kind] = (idx, store)
        rows[kind] = {
            "build": build,
            "recall": rec,
            "nbytes": store.nbytes / store.max_nodes,
            "measured": measured_bytes_per_vector(kind, idx, ds.train),
            "best": float("inf"),
            "best_cpu": float("inf"),
        }
        print(f"{kind}: build {build:.2f}s recall@10={rec:.4f} bytes/vector nbytes={rows[kind]['nbytes']:.1f} "
              f"measured={rows[kind]['measured']:.1f}", flush=True)

    for _ in range(a.repeat):  # round-robin: load on the shared machine hits every type alike
        for kind in kinds:
            idx, store = built[kind]
            t, c = time.perf_counter(), time.process_time()
            idx.search_batch(store, timed_queries, 10, ef=a.ef, num_threads=a.threads)
            rows[kind]["best"] = min(rows[kind]["best"], time.perf_counter() - t)
            rows[kind]["best_cpu"] = min(rows[kind]["best_cpu"], time.process_time() - c)

    ref = rows.get("float32")
    tab = Table(["store", "recall@10", "Δ recall vs f32", "target", "bytes/vector (nbytes)", "bytes/vector (measured)",
                 "vs f32", "batch q/s", "q/s ratio vs f32", "target", "q/CPU-s ratio", "build s"])
    for kind in kinds:
        r = rows[kind]
        qps = timed_queries.shape[0] / r["best"]
        if ref:
            ref_qps = timed_queries.shape[0] / ref["best"]
            gap, mem, ratio = r["recall"] - ref["recall"], r["measured"] / ref["measured"], qps / ref_qps
            cpu_ratio = ref["best_cpu"] / r["best_cpu"]
            cells = [f"{gap:+.4f}", f"≥ −{TARGET_RECALL_GAP[kind]:.2f}", f"{mem:.3f}×", f"{ratio:.2f}×",
                     f"≥ {TARGET_QPS_RATIO[kind]:.1f}×", f"{cpu_ratio:.2f}×"]
        else:
            cells = ["-"] * 6
        tab.add(kind, f"{r['recall']:.4f}", cells[0], cells[1], f"{r['nbytes']:.1f}", f"{r['measured']:.1f}",
                cells[2], f"{qps:.0f}", cells[3], cells[4], cells[5], f"{r['build']:.2f}")
    md = (
        f"{ds.name}: {n} x {dim} ({ds.metric}), {ds.test.shape[0]} queries (timed batch: x{a.tile} = "
        f"{timed_queries.shape[0]}), M={a.m}, ef_construction={a.efc}, ef={a.ef}, k=10\n"
        f"machine: {machine()}; date {time.strftime('%Y-%m-%d')}\n"
        "recall@10 against the file's exact float32 ground truth; bytes/vector from `store.nbytes / max_nodes` and "
        "measured with tracemalloc while filling a fresh store (both include the 1-byte written flag); "
        f"q/s = best of {a.repeat} round-robin timings of the whole batch on all cores; q/CPU-s uses the process CPU "
        "time of the same runs (insensitive to preemption by other processes).\n"
    )
    md += "\n" + tab.markdown() + "\n"
    load = os.getloadavg()
    md += (
        f"\nLoad average during the run: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1 / 5 / 15 min) on "
        f"{os.cpu_count()} cores: absolute q/s vary with other work on the machine, the ratios (same run, "
        "round-robin) much less. Targets: recall within 0.01 (f16, bf16, f32 + f16 walk copy) / 0.03 (Qi8) "
        "of f32; q/s at least 0.8x (f16, bf16) / 1.0x (Qi8, f32 + f16 walk copy) of f32.\n"
    )
    print("\n" + md)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(md)
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
