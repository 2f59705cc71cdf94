"""Errors name the parameter and the value the caller passed, not an internal one."""

from __future__ import annotations

import numpy as np
import pytest

import hnsw_numba as hn
from hnsw_numba.core.config import MAX_EF


@pytest.mark.parametrize("ef", ["x", 0, None, 2.5])
def test_index_names_ef(ef) -> None:
    with pytest.raises(hn.InvalidParameterError, match="^ef must be"):
        hn.Index(8, ef=ef)
    assert hn.Index(8, ef=np.int64(7)).ef == 7


def test_tune_ef_names_the_callers_k(rng) -> None:
    x = rng.standard_normal((40, 8)).astype(np.float32)
    index = hn.Index(8, metric="l2", seed=0)
    index.add(x)
    with pytest.raises(hn.InvalidParameterError, match=f"got {MAX_EF}$"):  # the brute force asks for k + 1
        index.tune_ef(x[:5], k=MAX_EF)
    assert index.tune_ef(x[:5], k=3, target_recall=0.5, efs=[64, 8]) == 8  # the smallest that reaches it
