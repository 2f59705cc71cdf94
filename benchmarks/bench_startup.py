"""Start-up costs next to hnswlib: import, warm start, cold start, each in fresh processes.

Usage: python benchmarks/bench_startup.py [--n 10000] [--dim 128] [--repeat 5] [--python PATH]

Every figure is a fresh interpreter (``python -c ...``) timed from its first statement,
hnsw_numba and hnswlib alternating, the median of ``--repeat`` runs:

1. import: ``import hnsw_numba`` alone, then the same plus ``hn.Hnsw`` (what a first call
   needs: NumPy, Numba and the kernels' modules); hnswlib: ``import numpy, hnswlib``.
2. warm build: import, build n x dim float32 (L2, M = 16, ef_construction = 200, all
   cores), answer one query. Numba's disk cache is filled beforehand.
3. warm load: import, load the n-vector index saved by each library, answer one query.
4. cold build: as 2 with an empty Numba cache (every float32 kernel the build and the first
   answer need is compiled); hnswlib has no such step, its warm figure is the reference.

``--python`` runs the fresh processes with another interpreter, e.g. a virtual environment
holding only the required dependencies and hnswlib (what ``pip install hnsw_numba`` gives: no
SciPy, whose import Numba's set-up adds when it is installed); they import this checkout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import RESULTS, ROOT, Table, machine

IMPORT_OURS = """
import time; t0 = time.perf_counter()
import hnsw_numba as hn
t1 = time.perf_counter()
hn.Hnsw
t2 = time.perf_counter()
import json; print(json.dumps({"import": t1 - t0, "ready": t2 - t0}))
"""

IMPORT_HNSWLIB = """
import time; t0 = time.perf_counter()
import numpy, hnswlib
import json; print(json.dumps({"import": time.perf_counter() - t0, "ready": time.perf_counter() - t0}))
"""

# argv: n dim [path]; the data are generated after the clock stops being read for import
BUILD_OURS = """
import sys, time; t0 = time.perf_counter()
import numpy as np
import hnsw_numba as hn
hn.Hnsw
t1 = time.perf_counter()
n, dim = int(sys.argv[1]), int(sys.argv[2])
x = np.random.default_rng(0).standard_normal((n, dim), dtype=np.float32)
t2 = time.perf_counter()
index = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=dim, max_nodes=n, m=16, ef_construction=200))
store = hn.InMemoryVectorStore(dim, n)
index.insert_batch(store, np.arange(n), x, progress=False)
hits = index.search(store, x[0], 10)
t3 = time.perf_counter()
assert hits[0].key == 0
if len(sys.argv) > 3:
    hn.save(sys.argv[3], index, store)
import json; print(json.dumps({"import": t1 - t0, "total": (t1 - t0) + (t3 - t2)}))
"""

BUILD_HNSWLIB = """
import sys, time; t0 = time.perf_counter()
import numpy as np
import hnswlib
t1 = time.perf_counter()
n, dim = int(sys.argv[1]), int(sys.argv[2])
x = np.random.default_rng(0).standard_normal((n, dim), dtype=np.float32)
t2 = time.perf_counter()
p = hnswlib.Index(space="l2", dim=dim)
p.init_index(max_elements=n, M=16, ef_construction=200)
p.add_items(x, np.arange(n))
labels, _ = p.knn_query(x[0], k=10)
t3 = time.perf_counter()
assert labels[0][0] == 0
if len(sys.argv) > 3:
    p.save_index(sys.argv[3])
import json; print(json.dumps({"import": t1 - t0, "total": (t1 - t0) + (t3 - t2)}))
"""

LOAD_OURS = """
import sys, time; t0 = time.perf_counter()
import numpy as np
import hnsw_numba as hn
index, store = hn.load(sys.argv[1], hn.L2())
hits = index.search(store, np.zeros(index.dim, np.float32), 10)
import json; print(json.dumps({"total": time.perf_counter() - t0}))
"""

LOAD_HNSWLIB = """
import sys, time; t0 = time.perf_counter()
import numpy as np
import hnswlib
p = hnswlib.Index(space="l2", dim=int(sys.argv[2]))
p.load_index(sys.argv[1])
labels, _ = p.knn_query(np.zeros(int(sys.argv[2]), np.float32), k=10)
import json; print(json.dumps({"total": time.perf_counter() - t0}))
"""


def run(code: str, env: dict, *args: object, python: str = sys.executable) -> dict:
    """Run ``code`` in a fresh interpreter; its last output line is a JSON dict of seconds."""
    out = subprocess.run([python, "-c", code, *map(str, args)], env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def medians(runs: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--python", default=sys.executable, help="interpreter of the fresh processes")
    ap.add_argument("--out", default="startup.md", help="file name under benchmarks/results")
    a = ap.parse_args(argv)
    env = dict(os.environ)  # common.py has set NUMBA_CACHE_DIR (a cache keyed by the sources)
    if a.python != sys.executable:  # another environment imports this checkout
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))

    def run_(code: str, env: dict, *args: object) -> dict:
        return run(code, env, *args, python=a.python)

    t = Table(["measurement (fresh process, median)", "hnsw_numba s", "hnswlib s", "ratio", "target"])
    with tempfile.TemporaryDirectory() as tmp:
        # Bytecode is written once and reused, as after ``pip install`` (which compiles it): a
        # process that compiles our modules from source each time pays about 35 ms more.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "pycache")
        ours_path, theirs_path = Path(tmp) / "index.zarr", Path(tmp) / "index.bin"
        run_(BUILD_OURS, env, a.n, a.dim, ours_path)  # fills the cache, writes the saved index
        run_(BUILD_HNSWLIB, env, a.n, a.dim, theirs_path)
        run_(LOAD_OURS, env, ours_path)  # fills the cache for the load path
        rows: dict[str, tuple[list, list]] = {"import": ([], []), "build": ([], []), "load": ([], [])}
        for _ in range(a.repeat):
            rows["import"][0].append(run_(IMPORT_OURS, env))
            rows["import"][1].append(run_(IMPORT_HNSWLIB, env))
            rows["build"][0].append(run_(BUILD_OURS, env, a.n, a.dim))
            rows["build"][1].append(run_(BUILD_HNSWLIB, env, a.n, a.dim))
            rows["load"][0].append(run_(LOAD_OURS, env, ours_path))
            rows["load"][1].append(run_(LOAD_HNSWLIB, env, theirs_path, a.dim))
        cold = []
        for i in range(min(a.repeat, 3)):
            cold_env = dict(env, NUMBA_CACHE_DIR=str(Path(tmp) / f"cold-{i}"))
            cold.append(run_(BUILD_OURS, cold_env, a.n, a.dim))
    imp = [medians(r) for r in rows["import"]]
    build, ref, cold_m = medians(rows["build"][0]), medians(rows["build"][1]), medians(cold)
    ours_load, theirs_load = medians(rows["load"][0]), medians(rows["load"][1])
    t.add("import hnsw_numba (hnswlib: numpy + hnswlib)", f"{imp[0]['import']:.3f}", f"{imp[1]['import']:.3f}",
          f"{imp[0]['import'] / imp[1]['import']:.2f}x", "<= 0.4 s")
    t.add("import + hn.Hnsw (NumPy, Numba, kernel modules)", f"{imp[0]['ready']:.3f}", f"{imp[1]['ready']:.3f}",
          f"{imp[0]['ready'] / imp[1]['ready']:.2f}x", "-")
    t.add(f"warm: import + build {a.n:,} x {a.dim} + first answer", f"{build['total']:.2f}", f"{ref['total']:.2f}",
          f"{build['total'] / ref['total']:.2f}x", "<= 1.3x")
    t.add(f"warm: import + load {a.n:,} x {a.dim} + first answer", f"{ours_load['total']:.2f}",
          f"{theirs_load['total']:.2f}", f"{ours_load['total'] / theirs_load['total']:.2f}x", "<= 1.3x")
    t.add(f"cold (empty Numba cache): import + build {a.n:,} x {a.dim} + first answer", f"{cold_m['total']:.2f}",
          f"{ref['total']:.2f}", f"{cold_m['total'] / ref['total']:.2f}x", "<= 6 s")
    md = (f"fresh processes, medians of {a.repeat} (cold: {len(cold)}); L2 float32, M = 16, ef_construction = 200, "
          f"all cores; interpreter {a.python}; machine: {machine()}; date {time.strftime('%Y-%m-%d')}\n\n" + t.markdown() + "\n")
    print(md)
    (RESULTS / a.out).write_text(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
