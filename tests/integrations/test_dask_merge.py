"""``hdask.merge_topk``: typed errors for bad parts or k, and k columns padded as searches pad."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("dask.array")

import hnsw_numba as hn  # noqa: E402
import hnsw_numba.dask as hdask  # noqa: E402


def test_merge_topk_pads_to_k_columns() -> None:
    a = (np.array([[7, 3], [1, 2]]), np.array([[0.9, 0.1], [0.2, 0.3]], np.float32))
    b = (np.array([[5], [4]]), np.array([[0.5], [0.1]], np.float32))
    keys, dists = hdask.merge_topk([a, b], 5)
    np.testing.assert_array_equal(keys, [[3, 5, 7, -1, -1], [4, 1, 2, -1, -1]])
    np.testing.assert_array_equal(dists, np.array([[0.1, 0.5, 0.9, np.inf, np.inf], [0.1, 0.2, 0.3, np.inf, np.inf]], np.float32))
    text = (np.array([["x", "y"]], object), np.array([[0.2, 0.1]], np.float32))
    keys, dists = hdask.merge_topk([text], 3)
    assert keys.tolist() == [["y", "x", None]] and dists[0, 2] == np.inf


@pytest.mark.parametrize("parts, k, error", [
    ([], 2, hn.InvalidParameterError),
    ([(np.zeros((2, 2), np.int64), np.zeros((2, 2)))], 0, hn.InvalidParameterError),
    ([(np.zeros((2, 2), np.int64), np.zeros((2, 2)))], 1.5, hn.InvalidParameterError),
    ([(np.zeros((2, 2), np.int64), np.zeros((2, 2))), (np.zeros((3, 2), np.int64), np.zeros((3, 2)))], 2, hn.DimensionMismatchError),
    ([(np.zeros((2, 2), np.int64), np.zeros((2, 3)))], 2, hn.DimensionMismatchError),
    ([(np.zeros(2, np.int64), np.zeros(2))], 2, hn.DimensionMismatchError),
    ([np.zeros((2, 2))], 2, hn.InvalidParameterError),
])
def test_merge_topk_refuses_bad_input(parts, k, error) -> None:
    with pytest.raises(error) as info:
        hdask.merge_topk(parts, k)
    assert isinstance(info.value, ValueError)


def test_merge_topk_pads_ints_past_int64_with_minus_one() -> None:
    big = 2**70
    part = (np.array([[big, big + 1]], object), np.array([[0.3, 0.1]], np.float32))
    keys, _ = hdask.merge_topk([part], 3)
    assert keys.tolist() == [[big + 1, big, -1]]
