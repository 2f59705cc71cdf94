"""Compile budget: one specialisation per entry point per store type.

The metric is a runtime code and every store type has its own row class, so an entry point
that reads vectors (it takes ``rows``) may hold at most one compiled signature per row class
-- four in all (F32Rows, F16Rows, BF16Rows, Qi8Rows) whatever the metrics, layouts and call
paths -- and one that only walks the graph may hold one. A second signature for the same row
class (an ``A``-layout or read-only array, an int32 that became an int64 on some path, a
metric object instead of its code) would cost another full compilation of the kernel (about
1-2 s each, and as much disk cache) and fails here.

Every vector entry point (knn batch, single and one-row, the filtered walks, brute force,
insert, update, repair, ...) may hold 4 signatures and every graph-only one (integrity, the
health walks, the int-key hash kernels, the renumbering kernels, ...) 1; exercising 3 metrics
per store type must not add any.

The count runs in a fresh subprocess, so the result does not depend on which tests ran before
in this process. It uses the test session's cache directory: signatures loaded from the
disk cache count exactly like compiled ones.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from conftest import ROOT

ROW_CLASSES = 4  # F32Rows, F16Rows, BF16Rows, Qi8Rows
#: Entry points that do not read vectors: one signature each.
GRAPH_ONLY_BUDGET = 1

SCRIPT = textwrap.dedent(
    """
    import importlib, inspect, json, pkgutil, tempfile
    import numpy as np
    import hnsw_numba as hn
    from numba.core.registry import CPUDispatcher

    rng = np.random.default_rng(0)
    dim, n = 8, 120
    x = rng.standard_normal((n, dim)).astype(np.float32)
    kinds = ["float32", "float16", "bfloat16", "qi8"]
    metrics = {False: (hn.L2(), hn.Cosine(), hn.InnerProduct()), True: (hn.L2Qi8(), hn.CosineQi8(), hn.InnerProductQi8())}
    for kind in kinds:
        for metric in metrics[kind == "qi8"]:
            def new_store(cap):
                return hn.InMemoryQi8VectorStore(dim, cap) if kind == "qi8" else hn.InMemoryVectorStore(dim, cap, dtype=kind)
            idx = hn.Hnsw(metric, hn.HnswConfig(dim=dim, max_nodes=n + 20, m=4, ef_construction=16, seed=0))
            store = new_store(n + 20)
            idx.insert_batch(store, np.arange(n - 10), x[: n - 10], num_threads=2)
            idx.insert_batch(store, [f"s{i}" for i in range(5)], x[n - 10 : n - 5], num_threads=1)
            idx.insert(store, 10**6, x[-1])
            idx.set(store, 3, x[4])
            idx.delete(5)
            idx.set(store, 5, x[6])  # resurrect
            idx.delete(7)
            idx.search(store, x[0], 3)
            idx.search(store, hn.quantize_qi8(x[1]), 3)
            idx.search(store, x[0], 3, filter=lambda k: isinstance(k, int) and k % 2 == 0)  # graph walk with a mask
            idx.search(store, x[0], 3, filter=[1, 2, 3])  # exact: very selective
            idx.search_batch(store, x[:9], 4, ef=8, num_threads=2)
            idx.search_batch_ids(store, x[:9].astype(np.float64), 4, exact=True)
            idx.repair(store)
            idx.stats()
            idx.check_integrity()
            idx.resize(n + 40)
            store.resize(n + 40)
            idx.insert_batch(store, np.arange(500, 510), x[:10] + 1)
            idx.compact(store)
            idx.compact(store, reorder=True)
            idx.search_batch(store, x[:3], 2)
            if hasattr(idx, "knn_graph"):
                try:
                    idx.knn_graph(store, 3)
                except ImportError:  # scipy missing
                    pass
        with tempfile.TemporaryDirectory() as d:  # a memory-mapped load must not add signatures
            hn.save(d + "/ix", idx, store)
            idx2, store2 = hn.load(d + "/ix", metric, mmap=True)
            idx2.search_batch(store2, x[:3], 2)
            idx2.search(store2, x[0], 2, exact=True)

    out = {}
    for info in pkgutil.walk_packages(hn.__path__, "hnsw_numba."):
        if info.name.rsplit(".", 1)[-1].startswith("__"):
            continue  # __main__ runs the CLI
        try:
            mod = importlib.import_module(info.name)
        except ImportError:  # optional integrations (dask, ...) without their package
            continue
        for name, obj in vars(mod).items():
            if isinstance(obj, CPUDispatcher) and obj.py_func.__module__ == mod.__name__ and obj._cache.__class__.__name__ != "NullCache":
                params = list(inspect.signature(obj.py_func).parameters)
                pos = params.index("rows") if "rows" in params else -1
                out[mod.__name__ + "." + name] = {
                    "rows_pos": pos,
                    "sigs": [[str(t) for t in sig] for sig in obj.signatures],
                }
    print(json.dumps(out))
    """
)


def count_signatures() -> dict:
    env = dict(os.environ, HNSW_NUMBA_CACHE="1")
    res = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=3000, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-4000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_one_specialisation_per_entry_point_per_store_type() -> None:
    found = count_signatures()
    # the kernels that read vectors, as the package declares them
    must_exist = {"hnsw_numba.kernels.search.knn_kernel", "hnsw_numba.kernels.search.knn_one_kernel", "hnsw_numba.kernels.insert.insert_kernel", "hnsw_numba.kernels.insert.update_kernel",
                  "hnsw_numba.kernels.bruteforce.bruteforce_kernel", "hnsw_numba.kernels.maintenance.repair_kernel"}
    assert must_exist <= set(found), sorted(found)
    report = []
    for name, info in sorted(found.items()):
        sigs = info["sigs"]
        if info["rows_pos"] >= 0:
            row_types = [s[info["rows_pos"]].split("(")[0] for s in sigs]
            dup = {t for t in row_types if row_types.count(t) > 1}
            ok = len(sigs) <= ROW_CLASSES and not dup
            if name in must_exist:
                ok = ok and len(sigs) == ROW_CLASSES  # every store type was exercised
        else:
            ok = len(sigs) <= GRAPH_ONLY_BUDGET
        report.append((ok, name, len(sigs), sigs))
    bad = [r for r in report if not r[0]]
    assert not bad, "\n".join(f"{name}: {k} signatures\n  " + "\n  ".join(map(str, sigs)) for _, name, k, sigs in bad)
    total = sum(r[2] for r in report)
    budget = ROW_CLASSES * sum(found[n]["rows_pos"] >= 0 for n in found) + GRAPH_ONLY_BUDGET * sum(found[n]["rows_pos"] < 0 for n in found)
    assert total <= budget


COLD_SCRIPT = textwrap.dedent(
    """
    import json, time
    import numpy as np
    from numba.core import event
    import hnsw_numba as hn

    compiles, stack = [], []

    class Recorder(event.Listener):
        def on_start(self, ev):
            d = ev.data
            name = getattr(d["dispatcher"], "py_func", d["dispatcher"])
            stack.append(getattr(name, "__module__", "") + "." + getattr(name, "__qualname__", str(name)))
            compiles.append([stack[-1], stack[-2] if len(stack) > 1 else "", [str(a) for a in d["args"]]])

        def on_end(self, ev):
            stack.pop()

    x = np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32)
    t = time.perf_counter()
    with event.install_listener("numba:compile", Recorder()):
        idx = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=8, max_nodes=64, m=4, ef_construction=16, seed=0))
        store = hn.InMemoryVectorStore(8, 64)
        idx.insert_batch(store, np.arange(63), x[:63], num_threads=1)
        idx.set(store, 0, x[63])
        idx.search(store, x[0], 3)
        idx.search_batch(store, x[:2], 3, num_threads=1)
        idx.search_batch(store, x[:2], 3, exact=True, num_threads=1)
        idx.check_integrity()
    print(json.dumps({"seconds": time.perf_counter() - t, "compiles": compiles}))
    """
)

#: Literal specialisations compiled on purpose: the query paths' level-0 beam search, where
#: the constant level removes the upper-level branches from the hottest loop (compiled once,
#: for whichever of the batch and single-query kernels compiles first).
INTENDED_LITERALS = {("hnsw_numba.kernels.search.search_layer", "hnsw_numba.kernels.search.knn_kernel"),
                     ("hnsw_numba.kernels.search.search_layer", "hnsw_numba.kernels.search.knn_one_kernel")}


def test_cold_compile_has_no_duplicate_helper_specialisations(tmp_path) -> None:
    """A cold f32 compile builds each helper once: no literal-argument or index-type twins.

    Each extra specialisation of a helper costs its whole front end and LLVM pipeline again
    (0.1-1.3 s). They come from counters initialised as ``n = 0`` (typed ``Literal[int](0)``
    on the first pass of type inference, then compiled again as int64) and from ids passed
    as int32 here and int64 there; without them the f32 paths' first compile takes 13 s
    instead of 18 s.
    """
    # every kernel compiles in this process, where the listener sees it (no child compiles ahead)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"), HNSW_NUMBA_CACHE="1", HNSW_NUMBA_COMPILE_AHEAD="0")
    res = subprocess.run([sys.executable, "-c", COLD_SCRIPT], env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-4000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    print(f"cold compile of the f32 paths: {out['seconds']:.1f} s, {len(out['compiles'])} compilations")
    ours = [c for c in out["compiles"] if c[0].startswith("hnsw_numba.")]
    literal = {(name, caller) for name, caller, args in ours if any("Literal" in a for a in args)}
    assert literal <= INTENDED_LITERALS, sorted(literal - INTENDED_LITERALS)
    literal_compiles = [name for name, _, args in ours if any("Literal" in a for a in args)]
    assert len(literal_compiles) == len(set(literal_compiles)), literal_compiles
    # Distance overloads are ours too; they show as numba's overload templates (…impl).
    # The same helper must not compile for the same row class with two kinds of ids (one
    # signature compiling twice is Numba keying overloads by the caller's flags: jit.py).
    seen: dict[tuple, set] = {}
    for name, caller, args in out["compiles"]:
        if "_dist_" in name or "_decode_row" in name:
            seen.setdefault((name, args[1].split("(")[0]), set()).add(tuple(args))
    twins = {k: v for k, v in seen.items() if len(v) > 1}
    assert not twins, twins
