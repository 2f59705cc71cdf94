"""Opening hnswlib files: load time, memory, and search speed vs native.

Usage: python benchmarks/bench_legacy.py [--n 1000000] [--dim 16] [--m 8] [--efc 64]
                                         [--native-n 200000] [--dir /tmp/hnsw_legacy_bench]

1. Files: seeded clustered data (``common.synthetic_clustered``), indexed by the real
   hnswlib (2 threads) and saved; a copy of the big file gets its labels permuted (the
   worst case for the label table; the graph is unchanged). Cached in ``--dir``.
2. Load: ``load_hnswlib`` of the ``--n`` file in a fresh process (Numba cache warm, page
   cache warm), against ``np.fromfile`` of the same bytes. Memory added beyond the
   mapping = growth of the process's anonymous memory (``/proc/self/smaps_rollup``),
   after loading and after a first search (which adds the visited-tag array).
3. Search (1 thread, k=10, variants interleaved, best of 9): the mapped file vs the same graph materialized
   into ordinary arrays, vs hnswlib on the file, and vs an index built natively by
   hnsw_numba on the same ``--native-n`` vectors with the same M / ef_construction.
4. Layout choices: the same search with level 0 copied (C-contiguous) instead of viewed,
   and with the honest strided ``(N, dim)`` vector view instead of the row-start view.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from common import RESULTS, Table, exact_neighbors, machine, recall, synthetic_clustered

import hnsw_numba as hn  # noqa: E402
from hnsw_numba.legacy import load_hnswlib  # noqa: E402

K = 10
LOAD_PROBE = r"""
import gc, json, sys, time, tracemalloc
import numpy as np
from hnsw_numba.legacy import load_hnswlib
import hnsw_numba as hn

def anon():
    for line in open("/proc/self/smaps_rollup"):
        if line.startswith("Anonymous:"):
            return int(line.split()[1]) * 1024

path, dim, tiny, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
ti, ts = load_hnswlib(hn.L2(), None, tiny)  # loads the kernels from the Numba cache
ti.search_batch(ts, np.zeros((1, ti.dim), np.float32), 3, num_threads=1)
q = np.random.default_rng(0).standard_normal((100, dim)).astype(np.float32)
def timed(fn, repeat=3):  # (best wall, best CPU) seconds of `repeat` calls
    wall = cpu = float("inf")
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        wall, cpu = min(wall, time.perf_counter() - t), min(cpu, time.process_time() - c)
        del out
    return wall, cpu

if mode == "fromfile":
    print(json.dumps(dict(zip(("wall", "cpu"), timed(lambda: np.fromfile(path, np.uint8))))))
    sys.exit()
if mode == "hnswlib":
    import hnswlib

    def load():
        p = hnswlib.Index(space="l2", dim=dim)
        p.load_index(path)
        return p

    print(json.dumps(dict(zip(("wall", "cpu"), timed(load)))))
    sys.exit()
if mode == "peak":
    tracemalloc.start()
    index, store = load_hnswlib(hn.L2(), dim, path)
    cur, peak = tracemalloc.get_traced_memory()
    print(json.dumps({"traced_current": cur, "traced_peak": peak}))
    sys.exit()
gc.collect()
a0 = anon()
index, store = load_hnswlib(hn.L2(), dim, path)
gc.collect()
a1 = anon()
index.search_batch(store, q, 10, ef=32, num_threads=1)
a2 = anon()
a = index.graph_arrays
own = sum(x.nbytes for x in (a.levels, a.upper_start, a.header)) + index.key_map.nbytes()
locks = a.locks.nbytes
del index, store, a
wall, cpu = timed(lambda: load_hnswlib(hn.L2(), dim, path))
print(json.dumps({"wall": wall, "cpu": cpu, "anon_after_load": a1 - a0, "anon_after_search": a2 - a0,
                  "owned_arrays": own, "locks_calloc": locks}))
"""


COLD_PROBE = r"""
import json, sys, time
import numpy as np
import hnsw_numba as hn
from hnsw_numba.legacy import load_hnswlib
x = np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32)
native = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=8, max_nodes=64, m=4, seed=0))
st = hn.InMemoryVectorStore(8, 64)
native.insert_batch(st, np.arange(64), x, num_threads=1)
t = time.perf_counter(); native.search_batch(st, x[:2], 3, num_threads=1); t_native = time.perf_counter() - t
t = time.perf_counter(); native.check_integrity(); t_native_check = time.perf_counter() - t
t = time.perf_counter(); index, store = load_hnswlib("l2", 8, sys.argv[1]); t_load = time.perf_counter() - t
t = time.perf_counter(); index.search_batch(store, x[:2], 3, num_threads=1); t_legacy = time.perf_counter() - t
print(json.dumps({"native_search": t_native, "native_check": t_native_check, "legacy_load": t_load, "legacy_search": t_legacy}))
"""


def cold_compile() -> dict:
    """First-call times with an empty Numba cache: the mapped file's extra specialisations."""
    import tempfile

    tiny = str(Path(__file__).resolve().parent.parent / "tests" / "data" / "hnswlib" / "l2.bin")
    with tempfile.TemporaryDirectory() as cache:
        out = subprocess.run([sys.executable, "-c", COLD_PROBE, tiny], capture_output=True, text=True, check=True,
                             env=dict(os.environ, NUMBA_CACHE_DIR=cache))
    return json.loads(out.stdout.strip().splitlines()[-1])


def huge_page_share(path: Path) -> float:
    """Fraction of this process's mapping of ``path`` that is mapped with 2 MiB pages."""
    import re

    text = Path("/proc/self/smaps").read_text()
    for block in re.split(r"\n(?=[0-9a-f]+-[0-9a-f]+ )", text):
        if block.splitlines()[0].endswith(str(path)):
            rss = int(re.search(r"^Rss:\s+(\d+)", block, re.M).group(1))
            pmd = int(re.search(r"^FilePmdMapped:\s+(\d+)", block, re.M).group(1))
            return pmd / max(rss, 1)
    return float("nan")


def build_hnswlib(path: Path, x: np.ndarray, m: int, efc: int) -> float:
    import hnswlib

    if path.exists():
        return float("nan")
    t = time.perf_counter()
    p = hnswlib.Index(space="l2", dim=x.shape[1])
    p.init_index(max_elements=x.shape[0], M=m, ef_construction=efc, random_seed=1)
    p.add_items(x, np.arange(x.shape[0]), num_threads=2)
    p.save_index(str(path) + ".tmp")
    os.replace(str(path) + ".tmp", path)
    return time.perf_counter() - t


def shuffled_copy(src: Path, dst: Path, seed: int = 0) -> None:
    """The same file with its labels permuted (a valid hnswlib file, worst case for the label table)."""
    if dst.exists():
        return
    data = np.fromfile(src, np.uint8)
    h = np.frombuffer(data[:96].tobytes(), "<u8")
    n, s, lo = int(h[2]), int(h[3]), int(h[4])
    blocks = data[96 : 96 + n * s].reshape(n, s)
    labels = np.random.default_rng(seed).permutation(n).astype("<u8") * 3 + 5
    blocks[:, lo : lo + 8] = labels.view(np.uint8).reshape(n, 8)
    data.tofile(str(dst) + ".tmp")
    os.replace(str(dst) + ".tmp", dst)


def probe(path: Path, dim: int, mode: str) -> dict:
    tiny = str(Path(__file__).resolve().parent.parent / "tests" / "data" / "hnswlib" / "l2.bin")
    out = subprocess.run([sys.executable, "-c", LOAD_PROBE, str(path), str(dim), tiny, mode],
                         capture_output=True, text=True, check=True, env=dict(os.environ))
    return json.loads(out.stdout.strip().splitlines()[-1])


def interleaved(variants: dict, queries: np.ndarray, truth: np.ndarray, efs, table: Table, repeat: int = 9) -> None:
    """QPS of every variant from the process's CPU time (one search thread; other jobs on
    the machine steal wall time, not CPU time), runs interleaved round-robin, best of
    ``repeat``; ratios against the first variant."""
    nq = len(queries)
    rec, best = {}, {}
    for ef in efs:
        for name, run in variants.items():
            keys = run(queries, ef)  # warm-up (and compile)
            rec[name, ef] = recall(np.asarray(keys, np.int64), truth, K)
            best[name, ef] = float("inf")
        for _ in range(repeat):
            for name, run in variants.items():
                t = time.process_time()
                run(queries, ef)
                best[name, ef] = min(best[name, ef], time.process_time() - t)
    first = next(iter(variants))
    for name in variants:
        for ef in efs:
            table.add(name, ef, f"{rec[name, ef]:.3f}", f"{nq / best[name, ef]:,.0f}", f"{best[first, ef] / best[name, ef]:.2f}")


def ours(index, store):
    return lambda q, ef: index.search_batch(store, q, K, ef=ef, num_threads=1)[0]


def strided(index, vectors):
    """Search with the vectors as the honest layout-A (N, dim) view (bypassing the store check)."""
    from hnsw_numba.kernels.layout import F32Rows
    from hnsw_numba.kernels.search import knn_kernel

    rows = F32Rows(vectors)
    g = index.graph_arrays

    def run(q, ef):
        q = index.prepare_queries(q)
        ids = np.full((q.shape[0], K), -1, np.int32)
        dists = np.full((q.shape[0], K), np.inf, np.float32)
        knn_kernel(g, rows, index.metric.code, q, K, max(ef, K), np.empty(0, np.uint8), index.state.visited.acquire(),
                   np.zeros(1, np.int64), 4, ids, dists, np.empty(0, np.int32))
        return index.key_map.keys_for(ids)

    return run


def theirs(path: Path, dim: int):
    import hnswlib

    p = hnswlib.Index(space="l2", dim=dim)
    p.load_index(str(path))
    p.set_num_threads(1)

    def run(q, ef):
        p.set_ef(ef)
        return p.knn_query(q, k=K)[0].astype(np.int64)

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--native-n", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--m", type=int, default=8)
    ap.add_argument("--efc", type=int, default=64)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--hd-n", type=int, default=50_000, help="vectors of the dim-128 layout experiment")
    ap.add_argument("--dir", type=Path, default=Path("/tmp/hnsw_legacy_bench"))
    args = ap.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    efs = (16, 32, 64, 128)

    tag = f"{args.n}x{args.dim}"
    data_file = args.dir / f"data-{tag}.npz"
    if data_file.exists():
        z = np.load(data_file)
        train, test, truth = z["train"], z["test"], z["truth"]
    else:
        ds = synthetic_clustered(args.n, args.dim, args.queries, seed=0)
        train, test, truth = ds.train, ds.test, ds.neighbors[:, :K]
        np.savez(data_file, train=train, test=test, truth=truth)
    big = args.dir / f"hnswlib-{tag}-M{args.m}.bin"
    t_build = build_hnswlib(big, train, args.m, args.efc)
    shuffled = args.dir / f"hnswlib-{tag}-M{args.m}-shuffled.bin"
    shuffled_copy(big, shuffled)
    size = big.stat().st_size
    print(f"file {big}: {size:,} bytes (hnswlib build {t_build:.1f} s)", flush=True)

    # -- load and memory (fresh processes) ---------------------------------------
    ff = probe(big, args.dim, "fromfile")
    hl = probe(big, args.dim, "hnswlib")
    files = (("labels 0..N-1 (added by 2 threads: not in id order)", big), ("arbitrary labels (3 perm(N) + 5)", shuffled))
    loads = {name: probe(p, args.dim, "load") for name, p in files}
    peaks = {name: probe(p, args.dim, "peak") for name, p in files}
    lt = Table(["file", "load_hnswlib s (CPU s)", "np.fromfile s (CPU s)", "hnswlib load_index s (CPU s)",
                "anon. memory after load", "after 1st search", "owned arrays", "transient peak (traced)"])
    for name, r in loads.items():
        pk = peaks[name]
        lt.add(name, f"{r['wall']:.3f} ({r['cpu']:.3f})", f"{ff['wall']:.3f} ({ff['cpu']:.3f})",
               f"{hl['wall']:.3f} ({hl['cpu']:.3f})",
               f"{r['anon_after_load'] / 2**20:.1f} MiB ({100 * r['anon_after_load'] / size:.1f}%)",
               f"{r['anon_after_search'] / 2**20:.1f} MiB ({100 * r['anon_after_search'] / size:.1f}%)",
               f"{r['owned_arrays'] / 2**20:.1f} MiB ({100 * r['owned_arrays'] / size:.1f}%)",
               f"{pk['traced_peak'] / 2**20:.1f} MiB ({100 * pk['traced_peak'] / size:.1f}%)")
    print(lt.markdown(), flush=True)
    cold = cold_compile()
    print(cold, flush=True)

    # -- search: mapped vs materialized vs hnswlib (big file) ---------------------
    index, store = load_hnswlib(hn.L2(), args.dim, big)
    copy, cstore = index.materialize(store)
    a = index.graph_arrays
    links_copy = np.ascontiguousarray(a.links0)
    links_copy.flags.writeable = False
    alt = hn.Hnsw.from_parts(index.metric, index.config, a._replace(links0=links_copy), index.key_map, read_only=True)

    # the same bytes in another file: how much of a mapping gets 2 MiB pages depends on
    # the page cache's state (folio sizes), which differs between the two
    fresh = args.dir / "fresh-copy.bin"
    np.fromfile(big, np.uint8).tofile(fresh)
    findex, fstore = load_hnswlib(hn.L2(), args.dim, fresh)
    pmd = {name: huge_page_share(path) for name, path in (("file", big), ("fresh", fresh))}

    st = Table(["index", "ef", "recall@10", "queries/s", "ratio to materialized"])
    interleaved({
        "same graph, materialized (in-memory arrays)": ours(copy, cstore),
        f"mapped file A ({pmd['file']:.0%} on 2 MiB pages)": ours(index, store),
        f"mapped file B, a fresh copy of A ({pmd['fresh']:.0%} on 2 MiB pages)": ours(findex, fstore),
        "hnswlib 0.8.0 on file A": theirs(big, args.dim),
        "A, level 0 copied (C) instead of viewed": ours(alt, store),
        "A, vectors as a layout-A (N, dim) view": strided(index, store.vectors),
    }, test, truth, efs, st)
    print(st.markdown(), pmd, flush=True)
    del copy, cstore, alt, findex, fstore
    fresh.unlink()

    # -- the vector layout at a higher dimension -----------------------------------
    hd = synthetic_clustered(args.hd_n, 128, 1000, seed=1)
    hd_file = args.dir / f"hnswlib-{args.hd_n}x128-M16.bin"
    build_hnswlib(hd_file, hd.train, 16, 100)
    hidx, hstore = load_hnswlib(hn.L2(), 128, hd_file)
    hcopy, hcstore = hidx.materialize(hstore)
    ht = Table(["index", "ef", "recall@10", "queries/s", "ratio to materialized"])
    interleaved({
        "same graph, materialized (in-memory arrays)": ours(hcopy, hcstore),
        f"mapped hnswlib file ({args.hd_n:,} x 128, M=16)": ours(hidx, hstore),
        "mapped, vectors as a layout-A (N, dim) view": strided(hidx, hstore.vectors),
        "hnswlib 0.8.0 on the file": theirs(hd_file, 128),
    }, hd.test, hd.neighbors[:, :K], (32, 128), ht)
    print(ht.markdown(), flush=True)
    del hidx, hstore, hcopy, hcstore

    # -- native build on a subset --------------------------------------------------
    nn = min(args.native_n, args.n)
    sub = args.dir / f"hnswlib-{nn}x{args.dim}-M{args.m}.bin"
    build_hnswlib(sub, train[:nn], args.m, args.efc)
    sub_truth = args.dir / f"truth-{nn}x{args.dim}.npy"
    if not sub_truth.exists():
        np.save(sub_truth, exact_neighbors(train[:nn], test, K, "l2")[0])
    t_sub = np.load(sub_truth)
    lidx, lstore = load_hnswlib(hn.L2(), args.dim, sub)
    t = time.perf_counter()
    native = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=args.dim, max_nodes=nn, m=args.m, ef_construction=args.efc, seed=1))
    nstore = hn.InMemoryVectorStore(args.dim, nn)
    native.insert_batch(nstore, np.arange(nn), train[:nn], num_threads=2, progress=False)
    t_native = time.perf_counter() - t
    nt = Table(["index", "ef", "recall@10", "queries/s", "ratio to native"])
    interleaved({
        f"built natively by hnsw_numba (insert {t_native:.0f} s, 2 threads)": ours(native, nstore),
        f"mapped hnswlib file ({huge_page_share(sub):.0%} on 2 MiB pages)": ours(lidx, lstore),
        "hnswlib 0.8.0 on the file": theirs(sub, args.dim),
    }, test, t_sub, efs, nt)
    print(nt.markdown(), flush=True)

    from hnsw_numba.kernels.search import knn_kernel

    sigs = len(knn_kernel.signatures)
    text = f"""# Opening hnswlib files

machine: {machine()}; date {time.strftime('%Y-%m-%d')}; shared with other jobs (search: CPU time, best of 9 runs, variants interleaved)

`python benchmarks/bench_legacy.py --n {args.n} --dim {args.dim} --m {args.m} --efc {args.efc} --native-n {nn} --hd-n {args.hd_n}`

Data: {args.n:,} clustered float32 vectors of dim {args.dim}, {args.queries:,} queries, L2; indexed by hnswlib
(M={args.m}, ef_construction={args.efc}); file {size:,} bytes.

## Load time and memory ({args.n:,} elements)

Best of 3 loads in a fresh process (wall and CPU seconds; other jobs share the machine), warm
Numba and page caches; hnswlib's `load_index` of the same file (no validation) for comparison.
Memory is the growth of the process's anonymous
memory (what the mapping does not account for); "owned arrays" are the arrays the loader
allocates (levels, upper-level offsets, label table); the per-node lock array
({next(iter(loads.values()))['locks_calloc'] / 2**20:.1f} MiB) is calloc'ed and never touched, so it has no resident pages.
The transient peak is tracemalloc's, during validation.

{lt.markdown()}

## Search, same graph ({args.n:,} elements, 1 thread, k=10)

Queries/s from CPU time (1 search thread); the ratio is against the same graph copied into
ordinary in-memory arrays (what `materialize()` returns), > 1 = faster.

{st.markdown()}

## The vector layout at dim 128 ({args.hd_n:,} elements, M=16, 1 thread, k=10)

{ht.markdown()}

## Search vs an index built natively ({nn:,} elements, 1 thread, k=10)

hnswlib and hnsw_numba build different graphs from the same vectors, M and ef_construction, so
compare speed at equal recall as well as at equal ef.

{nt.markdown()}

## Compilation

A mapped file's arrays are read-only (and level 0 is strided), so the kernels it uses compile
once more than a native index's; the disk cache keeps them. First calls with an empty cache
(`tests/data/hnswlib/l2.bin`): native search {cold['native_search']:.1f} s, native integrity check
{cold['native_check']:.1f} s; then the mapped file: load (compiles the integrity kernel it runs)
{cold['legacy_load']:.1f} s, search {cold['legacy_search']:.1f} s. Search kernel specialisations compiled
in this benchmark run: {sigs} (native, mapped file, and the two layout experiments above).

## Choices these numbers support

* Vectors are passed to the kernels as a C-contiguous view whose rows start at each vector
  (row stride = hnswlib's element size): the honest `(N, dim)` strided view is layout `A`,
  whose distance loops LLVM does not vectorise (the "layout-A" rows: 2.2x slower at dim 128,
  ~20% slower at dim 16).
* Level 0 is viewed, not copied: a copy would cost {4 * (2 * args.m + 1) / (size / args.n):.0%} of the file in memory and
  is no faster (the "level 0 copied" rows; hnswlib keeps a node's links next to its vector, so
  one prefetched block serves both); the read-only vectors already make the mapped file its
  own specialisation, so the strided view adds no compilation.
* Page size matters (random access over the whole file): files A and B hold the same bytes,
  but {pmd['file']:.0%} vs {pmd['fresh']:.0%} of their mappings are on 2 MiB pages, and their rows differ
  accordingly. The loader maps with `MADV_HUGEPAGE` and populates through that mapping, so pages
  the kernel reads for it come in 2 MiB folios; pages already in the page cache keep their
  size (evicting the file first, e.g. `vmtouch -e FILE`, lets the next load map it with huge
  pages). Fully huge-page backed, the mapped file searches as fast as hnswlib on it and a
  little faster than the materialized arrays (a node's links sit next to its vector).
"""
    (RESULTS / "legacy.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
