"""A Filter made from a Filter keeps the renumbering count its mask's NodeIds hold for.

A compaction renumbers NodeIds, so a Filter of a mask raises InvalidParameterError after
one. ``hn.Filter(index, F)`` and a Filter subclass passed to ``search`` (which the search
compiles as ``Filter(index, F)``) raise the same way, instead of reading the old mask over
the new NodeIds.
"""

from __future__ import annotations

import numpy as np
import pytest

import hnsw_numba as hn

N, DIM = 120, 8


class _Tagged(hn.Filter):
    """A user's Filter subclass (a search compiles it through ``Filter(index, it)``)."""


def _even_keys() -> tuple[hn.Index, np.ndarray, np.ndarray]:
    x = np.random.default_rng(0).standard_normal((N, DIM)).astype(np.float32)
    idx = hn.Index(DIM, metric="l2", seed=0)
    idx.add(np.arange(N), x)
    mask = np.zeros(N, bool)
    mask[::2] = True  # NodeId i is key i: the even keys
    return idx, x, mask


def _keys(idx: hn.Index, q: np.ndarray, flt) -> list:
    return sorted(idx.search(q, k=8, filter=flt, plan="exact").keys)


def test_a_filter_of_a_stale_mask_filter_raises() -> None:
    """Fails on the rewrap: ``hn.Filter(idx, F)`` took the count of renumberings after the
    compaction and returned odd keys (key 1 removed, NodeIds >= 2 one lower)."""
    idx, x, mask = _even_keys()
    f = hn.Filter(idx, mask)
    assert all(k % 2 == 0 for k in _keys(idx, x[0], hn.Filter(idx, f)))  # before: the same keys as f
    idx.remove([1])
    idx.compact()
    with pytest.raises(hn.InvalidParameterError, match="renumbered"):
        idx.search(x[0], k=8, filter=f)
    with pytest.raises(hn.InvalidParameterError, match="renumbered"):
        hn.Filter(idx, f)


@pytest.mark.parametrize("plan", ["exact", "auto"])
def test_a_stale_mask_filter_subclass_raises_in_search(plan: str) -> None:
    """Fails on the subclass: its search answered with odd keys the mask never allowed."""
    idx, x, mask = _even_keys()
    g = _Tagged(idx, mask)
    assert all(k % 2 == 0 for k in idx.search(x[0], k=8, filter=g, plan=plan).keys)
    idx.remove([1])
    idx.compact()
    with pytest.raises(hn.InvalidParameterError, match="renumbered"):
        idx.search(x[0], k=8, filter=g, plan=plan)
    with pytest.raises(hn.InvalidParameterError, match="renumbered"):
        idx.search(x[:3], k=8, filter=g, plan=plan)


def test_filters_of_keys_and_of_fresh_masks_rewrap_after_a_compaction() -> None:
    idx, x, mask = _even_keys()
    by_keys = hn.Filter(idx, range(0, N, 2))
    idx.remove([1])
    moved = idx.compact()  # old NodeId -> new (-1: removed)
    fresh = np.zeros(N - 1, bool)
    fresh[moved[mask & (moved >= 0)]] = True  # the mask made again over the new NodeIds
    f = hn.Filter(idx, fresh)
    want = _keys(idx, x[0], f)
    assert want and all(k % 2 == 0 for k in want)
    for flt in (hn.Filter(idx, f), _Tagged(idx, f)):
        assert _keys(idx, x[0], flt) == want
    for flt in (hn.Filter(idx, by_keys), _Tagged(idx, by_keys)):
        assert _keys(idx, x[0], flt) == want
