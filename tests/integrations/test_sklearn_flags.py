"""``HnswTransformer.kneighbors(return_distance=...)`` takes a bool only, as every flag of the library.

A truthy string ("no") or an int is refused with InvalidParameterError (a ValueError and a
TypeError); Python and NumPy bools pick the return form.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("scipy")

import hnsw_numba as hn  # noqa: E402
from hnsw_numba.sklearn import HnswTransformer  # noqa: E402


@pytest.fixture(scope="module")
def fitted() -> tuple[HnswTransformer, np.ndarray]:
    x = np.random.default_rng(0).standard_normal((40, 6))
    return HnswTransformer(n_neighbors=3, random_state=0, n_jobs=1).fit(x), x


@pytest.mark.parametrize("flag", ["no", "False", 0, 1, None, np.array([True]), 1.0], ids=repr)
@pytest.mark.parametrize("with_x", [False, True], ids=["fitted", "queries"])
def test_return_distance_that_is_no_bool_is_refused(fitted, flag, with_x: bool) -> None:
    """Fails on the truthiness read: "no", 1 and 1.0 returned (distances, indices), 0 and None the indices."""
    est, x = fitted
    with pytest.raises(hn.InvalidParameterError, match="return_distance must be a bool") as info:
        est.kneighbors(x[:5] if with_x else None, return_distance=flag)
    assert isinstance(info.value, ValueError) and isinstance(info.value, TypeError)


@pytest.mark.parametrize("flag", [True, False, np.True_, np.False_], ids=repr)
def test_return_distance_bools_pick_the_form(fitted, flag) -> None:
    est, x = fitted
    out = est.kneighbors(x[:5], return_distance=flag)
    if flag:
        dist, ids = out
        assert dist.shape == ids.shape == (5, 3)
    else:
        assert isinstance(out, np.ndarray) and out.shape == (5, 3) and out.dtype == np.int64
