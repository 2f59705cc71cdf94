"""What importing hnsw_numba loads: heavy optional modules only when a call needs them.

Each check runs in a fresh interpreter (the test process has imported everything already).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: Modules that `import hnsw_numba` and the float32 index must not load.
HEAVY = ("zarr", "numcodecs", "ml_dtypes", "dask", "distributed", "scipy", "sklearn", "h5py", "tqdm")


def loaded_after(code: str) -> set[str]:
    """Top-level module names (and ``scipy.sparse``) loaded after running ``code`` in a new process."""
    probe = code + "\nimport json, sys\nprint(json.dumps(sorted({m.split('.')[0] for m in sys.modules} | ({'scipy.sparse'} & set(sys.modules)))))\n"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_import_loads_nothing_heavy() -> None:
    mods = loaded_after("import hnsw_numba")
    assert not mods & {*HEAVY, "numba", "scipy.sparse"}


def test_float32_index_path_loads_no_optional_module() -> None:
    # Numba itself imports the top-level scipy package when it is installed (a version
    # check), so only scipy.sparse is excluded here.
    code = """
import numpy as np
import hnsw_numba as hn
hn.HnswConfig, hn.Hnsw, hn.Index, hn.L2, hn.Cosine, hn.InMemoryVectorStore, hn.Hits, hn.knn_join
x = np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32)
index = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=8, max_nodes=50, seed=0))
store = hn.InMemoryVectorStore(8, 50)
index.insert_batch(store, np.arange(50), x, progress=False)
assert index.search(store, x[3], 1)[0].key == 3
idx = hn.Index(8, metric="cosine")
idx.add(x)
assert idx.search(x[5], 1)[0].key == 5
"""
    mods = loaded_after(code)
    assert not mods & ({*HEAVY, "scipy.sparse"} - {"scipy"})


@pytest.mark.parametrize(
    ("code", "needed"),
    [
        ("import numpy as np, hnsw_numba as hn\nhn.InMemoryVectorStore(4, 2, dtype='bfloat16')", "ml_dtypes"),
        ("import hnsw_numba as hn\nhn.save", "zarr"),
        ("import hnsw_numba as hn\nhn.load", "zarr"),
    ],
)
def test_names_load_their_modules_on_first_use(code: str, needed: str) -> None:
    assert needed in loaded_after(code)


def test_running_a_kernel_loads_no_scipy_linalg_and_user_blas_still_works() -> None:
    """Numba probes for BLAS by importing ``scipy.linalg`` when its array implementations load
    (the first kernel run or read from the cache); ours finds the module's file instead. A
    user's own Numba code that needs BLAS still gets it, through Numba's own check."""
    pytest.importorskip("scipy.linalg")
    code = """
import sys
import numpy as np
import hnsw_numba as hn
x = np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32)
index = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=8, max_nodes=50, seed=0))
store = hn.InMemoryVectorStore(8, 50)
index.insert_batch(store, np.arange(50), x, progress=False)
assert index.search(store, x[3], 1)[0].key == 3
assert "scipy.linalg" not in sys.modules
import numba, numba.np.arraymath, numba.np.linalg
assert numba.np.arraymath._HAVE_BLAS
assert numba.np.linalg.ensure_blas.__module__ == "numba.np.linalg"  # Numba's own again

@numba.njit
def gram(a):
    return np.dot(a, a.T)

assert np.allclose(gram(x[:4].astype(np.float64)), x[:4].astype(np.float64) @ x[:4].T.astype(np.float64))
assert "scipy.linalg.cython_blas" in sys.modules
"""
    loaded_after(code)
