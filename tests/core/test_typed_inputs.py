"""Bad arguments to the core's stores, filters and quantization raise typed errors (an
HnswError subclass that is also the matching built-in) and change nothing."""

from __future__ import annotations

import numpy as np
import pytest

import hnsw_numba as hn
from hnsw_numba.core.filters import Filter

NOT_BOOLS = ["false", "no", 1, 0.0, None]


@pytest.fixture
def index(rng):
    x = rng.standard_normal((60, 8)).astype(np.float32)
    idx = hn.Index(8, metric="l2", seed=0)
    idx.add(x)
    return idx, x


@pytest.mark.parametrize("value", NOT_BOOLS)
def test_from_array_check_takes_a_bool(value) -> None:
    x = np.ones((5, 4), np.float32)
    x[1, 2] = np.nan
    with pytest.raises(hn.InvalidParameterError, match="^check must be a bool"):
        hn.InMemoryVectorStore.from_array(x, check=value)
    with pytest.raises(hn.InvalidVectorError, match="vector 1"):
        hn.InMemoryVectorStore.from_array(x)
    assert hn.InMemoryVectorStore.from_array(x, check=np.False_).dim == 4


@pytest.mark.parametrize("value", NOT_BOOLS)
def test_enable_walk_copy_strict_takes_a_bool(rng, value) -> None:
    store = hn.InMemoryVectorStore.from_array(rng.standard_normal((10, 4)).astype(np.float32))
    with pytest.raises(hn.InvalidParameterError, match="^strict must be a bool"):
        store.enable_walk_copy(strict=value)
    assert not store.walk_copy
    assert store.enable_walk_copy(strict=np.True_) and store.walk_copy


@pytest.mark.parametrize("since", ["0", 1.0, True, -1, 1])
def test_filter_since_is_a_count_of_renumberings(index, since) -> None:
    idx, _ = index  # never compacted: 0 is the only count
    with pytest.raises(hn.InvalidParameterError, match="^since must be"):
        Filter(idx, [1, 2, 3], since=since)
    assert len(Filter(idx, [1, 2, 3], since=np.int64(0))) == 3


@pytest.mark.parametrize("bad", [np.zeros((2, 8), np.int8), None, [1, 2, 3]], ids=["ndarray", "None", "list"])
def test_dequantize_refuses_what_is_no_qi8(bad) -> None:
    with pytest.raises(hn.InvalidVectorError, match="takes a Qi8 or Qi8Batch"):
        hn.dequantize(bad)
    q = hn.quantize_qi8(np.arange(8, dtype=np.float32))
    np.testing.assert_allclose(hn.dequantize(q), np.arange(8), atol=q.scale)


@pytest.mark.parametrize("pred, builtin", [(lambda key: np.array([True, False]), ValueError), (lambda a, b: True, TypeError)],
                         ids=["returns-an-array", "two-arguments"])
def test_a_predicate_without_a_truth_value_or_of_two_arguments(index, pred, builtin) -> None:
    idx, x = index
    before = idx.search(x[:3], k=5)
    for call in (lambda: idx.search(x[0], k=3, filter=pred), lambda: idx.search(x[:2], k=3, filter=pred),
                 lambda: Filter(idx, pred)):
        with pytest.raises(hn.InvalidParameterError, match="filter predicate") as info:
            call()
        assert isinstance(info.value, builtin) and isinstance(info.value.__cause__, builtin)
    after = idx.search(x[:3], k=5)
    assert np.array_equal(before[0], after[0]) and len(idx) == 60


def test_a_predicate_raising_keeps_its_error(index) -> None:
    idx, x = index

    def missing(key):
        raise KeyError(key)

    with pytest.raises(KeyError) as info:
        idx.search(x[0], k=3, filter=missing)
    assert not isinstance(info.value, hn.HnswError)

    def refuses(key):
        raise ValueError("no such label")

    with pytest.raises(hn.InvalidParameterError, match="no such label") as info:  # chained, named in the message
        idx.search(x[0], k=3, filter=refuses)
    assert str(info.value.__cause__) == "no such label"


def test_a_per_query_filter_list_names_the_position_of_a_non_filter(index) -> None:
    idx, x = index
    with pytest.raises(hn.InvalidParameterError, match=r"^filter\[1\] is None: one filter per query"):
        idx.search(x[:3], k=2, filter=[[1], None, [2]])
    with pytest.raises(hn.InvalidParameterError, match=r"^filter\[0\] is 1.5"):
        idx.search(x[:2], k=2, filter=(1.5, {3}))
    with pytest.raises(hn.InvalidKeyError, match="keys must be int or str"):  # keys with a list among them: a key list
        idx.search(x[:2], k=2, filter=[1, [2]])
    keys, _ = idx.search(x[:3], k=2, filter=[[1], {2}, np.array([3])])
    assert keys[:, 0].tolist() == [1, 2, 3]
