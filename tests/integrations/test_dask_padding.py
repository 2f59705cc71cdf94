"""The Dask fan-out pads as the saved index's ``search_batch`` pads (its docstring's promise).

Key -1 for int keys, past int64 too (in an object array); None for str keys.
"""

from __future__ import annotations

import numpy as np
import pytest

da = pytest.importorskip("dask.array")

import dask  # noqa: E402

import hnsw_numba as hn  # noqa: E402
import hnsw_numba.dask as hdask  # noqa: E402

DIM, K = 4, 8

KINDS = {
    "int64": (list(range(6)), np.int64, -1),
    "past int64": ([2**63 + i for i in range(6)], object, -1),
    "str": ([f"k{i}" for i in range(6)], object, None),
    "ints and strs": ([0, 1, 2, "a", "b", 2**64], object, None),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_fan_out_pads_as_search_batch(tmp_path, kind: str) -> None:
    keys, dtype, pad = KINDS[kind]
    x = np.random.default_rng(0).standard_normal((len(keys), DIM)).astype(np.float32)
    h = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=DIM, max_nodes=20, m=4, ef_construction=20, seed=1))
    s = hn.InMemoryVectorStore(DIM, 20)
    h.insert_batch(s, keys, x)
    hn.save(tmp_path / "ix.zarr", h, s)
    q = np.random.default_rng(1).standard_normal((5, DIM)).astype(np.float32)
    got_keys, got_d = dask.compute(*hdask.search(tmp_path / "ix.zarr", da.from_array(q, chunks=2), K), scheduler="sync")
    want_keys, want_d = h.search_batch(s, q, K)
    assert got_keys.dtype == want_keys.dtype == np.dtype(dtype)
    assert got_keys.tolist() == want_keys.tolist()
    np.testing.assert_array_equal(got_d, want_d)
    pads = got_keys[:, len(keys):].ravel().tolist()
    assert pads and all(p is pad if pad is None else p == pad for p in pads)
