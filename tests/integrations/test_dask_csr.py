"""``hdask.to_csr`` and ``hdask.knn_graph(build=False)``: neighbour ids must be columns of the matrix."""

from __future__ import annotations

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
pytest.importorskip("scipy")

import dask  # noqa: E402

import hnsw_numba as hn  # noqa: E402
import hnsw_numba.dask as hdask  # noqa: E402


def lazy(a: np.ndarray):
    return da.from_array(a, chunks=a.shape)


@pytest.mark.parametrize("ids, n_cols", [
    ([[1, 10**9], [0, 1]], None),   # a key of another index: toarray() of such a matrix writes outside its buffer
    ([[1, 2**32 + 1], [0, 1]], None),  # wraps to 1 as an int32 column index
    ([[1, 40], [0, 41]], None),
    ([[1], [0]], 1),                # n_cols narrower than the ids
    ([[1, -2], [0, 1]], None),      # only -1 pads
])
def test_to_csr_refuses_ids_outside_its_columns(ids, n_cols) -> None:
    ind = np.array(ids, np.int64)
    dist = np.ones(ind.shape, np.float32)
    with pytest.raises(hn.InvalidParameterError, match="outside") as info:
        hdask.to_csr(lazy(ind), lazy(dist), n_cols)
    assert isinstance(info.value, ValueError)


def test_to_csr_keeps_padding_and_checks_its_arguments() -> None:
    ind = np.array([[1, -1], [0, 2], [1, 0]], np.int64)
    dist = np.array([[0.5, np.inf], [0.5, 1.0], [0.25, 1.0]], np.float32)
    g = hdask.to_csr(lazy(ind), lazy(dist))
    g.check_format(full_check=True)
    assert g.shape == (3, 3) and g.nnz == 5
    np.testing.assert_array_equal(g.toarray(), [[0, 0.5, 0], [0.5, 0, 1.0], [1.0, 0.25, 0]])
    assert hdask.to_csr(lazy(ind), lazy(dist), n_cols=np.int64(7)).shape == (3, 7)
    for n_cols in (-1, 2.0, "3", True):
        with pytest.raises(hn.InvalidParameterError, match="n_cols"):
            hdask.to_csr(lazy(ind), lazy(dist), n_cols)
    with pytest.raises(hn.DimensionMismatchError):
        hdask.to_csr(lazy(ind), lazy(dist[:, :1]))
    with pytest.raises(hn.DimensionMismatchError):
        hdask.to_csr(lazy(ind[:, 0]), lazy(dist[:, 0]))
    with pytest.raises(hn.InvalidParameterError, match="integers"):
        hdask.to_csr(lazy(ind.astype(np.float64)), lazy(dist))


@pytest.mark.parametrize("keys, rows, match", [
    (None, 50, "holds 50 items, data has 5 rows"),     # the data's first rows: neighbours' keys past 5
    (None, 3, "holds 3 items, data has 5 rows"),       # read from the metadata, before any task
    (np.arange(10, 15), 5, "has no key 0 for data row 0"),
], ids=["more", "fewer", "shifted"])
def test_knn_graph_over_another_saved_index_is_refused(tmp_path, keys, rows, match) -> None:
    """``build=False`` over a single saved index that is not the index of ``data`` (keys
    ``0 .. n-1``) raises: its keys are not row numbers of ``data``."""
    x = np.random.default_rng(5).standard_normal((50, 4)).astype(np.float32)
    index = hn.Index(4, metric="l2")
    index.add(x[:rows]) if keys is None else index.add(keys, x[:rows])
    index.save(tmp_path / "other.zarr")
    with dask.config.set(scheduler="synchronous"):
        with pytest.raises(hn.InvalidParameterError, match=match):
            dask.compute(*hdask.knn_graph(lazy(x[:5]), 2, target=tmp_path / "other.zarr", build=False))
        if rows == 50:  # the index of all 50 rows is that of its own data
            g = hdask.to_csr(*hdask.knn_graph(lazy(x), 3, target=tmp_path / "other.zarr", build=False))
            g.check_format(full_check=True)
            assert g.shape == (50, 50) and g.nnz == 150
    hdask.clear_cache()
