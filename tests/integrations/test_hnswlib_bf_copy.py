"""``hnsw_numba.hnswlib.BFIndex`` refuses pickling and copying, as hnswlib's ``BFIndex`` does.

A shallow copy would share the store, label array, label dict and locks with the original:
adds to either write the same row. Every route (``pickle``, ``copy.copy``,
``copy.deepcopy``) raises one TypeError that is also the library's InvalidParameterError,
and the original is left as it was.
"""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

import hnsw_numba as hn
import hnsw_numba.hnswlib as hnswlib

DIM = 8


@pytest.mark.parametrize("route", [copy.copy, copy.deepcopy, pickle.dumps], ids=["copy", "deepcopy", "pickle"])
@pytest.mark.parametrize("initialised", [True, False], ids=["initialised", "empty"])
def test_a_bfindex_does_not_copy_or_pickle(route, initialised: bool) -> None:
    """Fails on the shared copy: copy.copy returned an object sharing the original's rows;
    deepcopy and pickle raised "cannot pickle '_thread.lock' object"."""
    x = np.random.default_rng(0).standard_normal((30, DIM)).astype(np.float32)
    bf = hnswlib.BFIndex("l2", DIM)
    if initialised:
        bf.init_index(40)
        bf.add_items(x)
    with pytest.raises(TypeError, match="cannot pickle 'hnsw_numba.hnswlib.BFIndex' object") as info:
        route(bf)
    assert isinstance(info.value, hn.InvalidParameterError)
    if initialised:  # the original still answers, and takes new items
        bf.add_items(np.full((1, DIM), 9.0, np.float32), [500])
        assert bf.get_current_count() == 31
        assert bf.knn_query(x[:3], k=1)[0].ravel().tolist() == [0, 1, 2]
        assert bf.knn_query(np.full((1, DIM), 9.0, np.float32), k=1)[0].ravel().tolist() == [500]
