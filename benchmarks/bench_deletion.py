"""Deletion health: recall after heavy churn, against a fresh build and hnswlib.

Usage: python benchmarks/bench_deletion.py [FILE.hdf5] [--ef 64] [--seed 0]

On the dev words set (cosine): build all items, delete a random 50%, then re-insert half
of the deleted keys with new vectors (each moved half-way towards another random item,
as an updated embedding would). The final contents are 75% of the keys. Recall@10 at
``ef`` against the exact neighbours of the final contents, for:

- hnsw_numba after the churn (``delete`` + ``set``, which resurrects on the same NodeId),
- the same after ``repair()``, and after ``compact()``,
- hnsw_numba built fresh over the final contents,
- hnswlib doing the same churn (``mark_deleted``; ``add_items(..., replace_deleted=True)``
  on the deleted labels, which un-deletes and updates them), and hnswlib fresh.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from common import DEV_SET, RESULTS, Table, exact_neighbors, load_hdf5, machine, recall


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", nargs="?", default=str(DEV_SET))
    ap.add_argument("--ef", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--m", type=int, default=16)
    ap.add_argument("--efc", type=int, default=200)
    a = ap.parse_args(argv)

    import hnswlib

    import hnsw_numba as hn

    ds = load_hdf5(a.dataset)
    if ds.metric != "cosine":
        raise SystemExit("this benchmark uses a cosine (angular) data set")
    x, queries = unit(ds.train), unit(ds.test)
    n, dim = x.shape
    rng = np.random.default_rng(a.seed)
    deleted = rng.choice(n, n // 2, replace=False)
    back = deleted[: len(deleted) // 2]
    partner = rng.integers(0, n, back.shape[0])
    new_vecs = unit(x[back] + x[partner])
    final = x.copy()
    final[back] = new_vecs
    gone = np.setdiff1d(deleted, back)
    live = np.setdiff1d(np.arange(n), gone)
    truth = live[exact_neighbors(final[live], queries, 10, "cosine")[0]]
    print(f"# {ds.name}: {n} x {dim}; delete {len(deleted)}, re-insert {len(back)} with new vectors; "
          f"final {len(live)} items; recall@10 at ef={a.ef}")

    def lost(index) -> int:
        return int(index.stats()["unreachable_live"])

    def ours_recall(index, store) -> float:
        keys, _ = index.search_batch(store, queries, 10, ef=a.ef)
        return recall(keys, truth, 10)

    rows: list[tuple[str, float, float, int | None]] = []  # name, recall, seconds, live items no walk reaches
    cfg = hn.HnswConfig(dim=dim, max_nodes=n, m=a.m, ef_construction=a.efc, seed=a.seed)
    index, store = hn.Hnsw(hn.Cosine(), cfg), hn.InMemoryVectorStore(dim, n)
    index.insert_batch(store, np.arange(n), x)
    t = time.perf_counter()
    for key in deleted.tolist():
        index.delete(key)
    for key, v in zip(back.tolist(), new_vecs):
        index.set(store, key, v)
    rows.append(("hnsw_numba after churn (delete + set)", ours_recall(index, store), time.perf_counter() - t, lost(index)))
    t = time.perf_counter()
    index.repair(store)
    rows.append(("hnsw_numba after churn + repair()", ours_recall(index, store), time.perf_counter() - t, lost(index)))
    t = time.perf_counter()
    index.compact(store)
    rows.append(("hnsw_numba after churn + repair() + compact()", ours_recall(index, store), time.perf_counter() - t, lost(index)))

    index2, store2 = hn.Hnsw(hn.Cosine(), cfg), hn.InMemoryVectorStore(dim, n)
    index2.insert_batch(store2, np.arange(n), x)
    for key in deleted.tolist():
        index2.delete(key)
    for key, v in zip(back.tolist(), new_vecs):
        index2.set(store2, key, v)
    t = time.perf_counter()
    index2.compact(store2)
    rows.append(("hnsw_numba after churn + compact() (no repair)", ours_recall(index2, store2), time.perf_counter() - t, lost(index2)))
    del index2, store2

    fresh, fstore = hn.Hnsw(hn.Cosine(), cfg), hn.InMemoryVectorStore(dim, n)
    t = time.perf_counter()
    fresh.insert_batch(fstore, live, final[live])
    rows.append(("hnsw_numba fresh build of the final contents", ours_recall(fresh, fstore), time.perf_counter() - t, lost(fresh)))

    def hnswlib_recall(h) -> float:
        h.set_ef(a.ef)
        labels, _ = h.knn_query(queries, k=10)
        return recall(labels, truth, 10)

    h = hnswlib.Index(space="cosine", dim=dim)
    h.init_index(max_elements=n, M=a.m, ef_construction=a.efc, random_seed=a.seed, allow_replace_deleted=True)
    h.add_items(x, np.arange(n))
    t = time.perf_counter()
    for key in deleted.tolist():
        h.mark_deleted(key)
    h.add_items(new_vecs, back, replace_deleted=True)
    rows.append(("hnswlib after churn (mark_deleted + add_items(replace_deleted=True))", hnswlib_recall(h), time.perf_counter() - t, None))
    hf = hnswlib.Index(space="cosine", dim=dim)
    hf.init_index(max_elements=n, M=a.m, ef_construction=a.efc, random_seed=a.seed)
    t = time.perf_counter()
    hf.add_items(final[live], live)
    rows.append(("hnswlib fresh build of the final contents", hnswlib_recall(hf), time.perf_counter() - t, None))

    base = {"hnsw_numba": rows[4][1], "hnswlib": rows[6][1]}
    tab = Table(["index", f"recall@10 (ef={a.ef})", "vs own fresh build", "time of the step s", "live items no walk reaches"])
    for name, rec, secs, unreached in rows:
        ref = base["hnswlib" if name.startswith("hnswlib") else "hnsw_numba"]
        tab.add(name, f"{rec:.4f}", f"{rec - ref:+.4f}", f"{secs:.2f}", "-" if unreached is None else f"{unreached:,}")
    md = (
        f"{ds.name}: {n} x {dim} (cosine); delete a random 50% ({len(deleted)}), re-insert half of those "
        f"({len(back)}) with new vectors; final {len(live)} items; M={a.m}, efc={a.efc}, seed {a.seed}\n"
        f"machine: {machine()}; date {time.strftime('%Y-%m-%d')}\n"
        "Command: `python benchmarks/bench_deletion.py`\n\n" + tab.markdown() + "\n"
    )
    print(md)
    out = RESULTS / "deletion.md"
    out.write_text(md)
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
