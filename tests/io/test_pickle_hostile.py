"""Pickles holding data an index cannot search: refused on unpickling with IndexFormatError.

A pickle carries no checksum. Each case here is crafted from a valid pickle's state (plain
arrays and dicts, no code) with one field changed, and unpickled the way ``pickle.loads``
does it: ``cls.__new__`` then ``__setstate__``.
"""

from __future__ import annotations

import copyreg
import pickle
from typing import Any, Callable

import numpy as np
import pytest

import hnsw_numba as hn
from hnsw_numba.core.store_base import ColumnStore

DIM, N = 8, 120


class _Crafted:
    """Unpickles as ``cls.__new__(cls)`` followed by ``__setstate__(state)``."""

    def __init__(self, cls: type, state: Any) -> None:
        self.cls, self.state = cls, state

    def __reduce__(self) -> tuple:
        return (copyreg._reconstructor, (self.cls, object, None), self.state)


def _states(metric: str = "l2", dtype: str = "f32") -> tuple[hn.Index, dict, type, dict]:
    x = np.random.default_rng(5).standard_normal((N, DIM)).astype(np.float32)
    ix = hn.Index(DIM, metric=metric, dtype=dtype, m=5, ef_construction=32, seed=5)
    ix.add(x)
    ix.remove([3, 4])
    state = ix.__getstate__()
    data, (kind, rows) = state["index"], state["store"]
    return ix, data, kind, rows


def _unpickle_index(data: dict, kind: type, rows: dict) -> hn.Index:
    return pickle.loads(pickle.dumps(_Crafted(hn.Index, {"index": data, "store": (kind, rows)})))


def _set(name: str, pos: tuple, value: Any) -> Callable[[dict], None]:
    def edit(d: dict) -> None:
        d[name] = d[name].copy()
        d[name][pos] = value
    return edit


GRAPH_EDITS = [
    # (case, edit of the index state, message fragment)
    ("neighbour past the node count", _set("links0", (7, 1), N + 40), "out of range"),
    ("negative neighbour", _set("links0", (9, 2), -5), "out of range"),
    ("link count above 2m", _set("links0", (11, 0), 0x7FFFFFFF), "more than"),
    ("upper offset past the words", lambda d: d["upper_start"].__setitem__(int(np.argmax(d["levels"])), 10**9), "outside"),
    ("level 32", _set("levels", (5,), 32), "level"),
    ("tombstone 255", _set("tombstones", (6,), 255), "tombstones"),
    ("header node count 2**31", _set("header", (2,), 2**31), "header"),
    ("entry point past the end", _set("header", (0,), N + 1), "entry point"),
    ("duplicate key", _set("keys", (8,), 9), "twice"),
    ("negative key", _set("keys", (8,), -1), "negative"),
    ("config m changed", lambda d: d["config"].__setitem__("m", 149), "header"),
    ("config not a dict", lambda d: d.__setitem__("config", "x"), "config"),
    ("links0 as int64", lambda d: d.__setitem__("links0", d["links0"].astype(np.int64)), "links0"),
    ("pickle version 2", lambda d: d.__setitem__("version", 2), "version 2"),
    ("dropped_ceiling -1", lambda d: d.__setitem__("dropped_ceiling", -1), "dropped_ceiling"),
]


@pytest.mark.parametrize("case,edit,fragment", GRAPH_EDITS, ids=[c[0] for c in GRAPH_EDITS])
def test_a_pickled_graph_that_cannot_be_walked_is_refused(case: str, edit, fragment: str) -> None:
    """Fails before the checks: every case but the version unpickled without a check
    (searches then read past the arrays: a pickle with one flipped byte crashed the fuzz
    worker with SIGSEGV), a bare ValueError for ``m`` and the version.
    """
    _, data, kind, rows = _states()
    edit(data)
    with pytest.raises(hn.IndexFormatError, match=fragment):
        _unpickle_index(data, kind, rows)
    with pytest.raises(hn.IndexFormatError, match=fragment):  # an Hnsw pickled on its own
        pickle.loads(pickle.dumps(_Crafted(hn.Hnsw, data)))


def _column(name: str, pos: tuple, value: Any) -> Callable[[dict], None]:
    def edit(rows: dict) -> None:
        col = rows["columns"][name] = rows["columns"][name].copy()
        col[pos] = value
    return edit


STORE_EDITS = [
    # (case, metric, dtype, edit of the store state, message fragment)
    ("NaN vector", "l2", "f32", _column("data", (10, 3), np.nan), "vector 10 cannot be searched"),
    ("inf in float16 bits", "l2", "f16", _column("data", (10, 3), 0x7C00), "vector 10 cannot be searched"),
    ("walk copy differs from the vectors", "l2", "f32+f16", _column("walk", (10, 3), 0x3C00), "vector 10 cannot be searched"),
    ("Qi8 scale 0", "l2", "qi8", _column("scale", (10,), 0.0), "Qi8 scale"),
    ("written flag 7", "l2", "f32", _column("written", (10,), 7), "written"),
    ("column of another dtype", "l2", "f32", lambda r: r["columns"].__setitem__("data", r["columns"]["data"].astype(np.float64)), "data"),
    ("columns of unequal rows", "l2", "f32", lambda r: r["columns"].__setitem__("written", r["columns"]["written"][:-3]), "written"),
    ("walk_copy not a bool", "l2", "f32+f16", lambda r: r["attrs"].__setitem__("walk_copy", "yes"), "walk_copy"),
    ("live row not written", "l2", "f32", _column("written", (N - 1,), 0), "live node"),
    ("cosine row of norm 3", "cosine", "f32", lambda r: r["columns"]["data"].__setitem__(12, r["columns"]["data"][12] * 3), "norm"),
    ("store of another dim", "l2", "f32", lambda r: (r["attrs"].__setitem__("dim", DIM + 1),
                                                      r["columns"].__setitem__("data", np.zeros((N, DIM + 1), np.float32))), "dim"),
]


@pytest.mark.parametrize("case,metric,dtype,edit,fragment", STORE_EDITS, ids=[c[0] for c in STORE_EDITS])
def test_a_pickled_store_that_cannot_be_searched_is_refused(case: str, metric: str, dtype: str, edit, fragment: str) -> None:
    """Fails before the checks: each unpickled (a walk copy edited away from its vectors
    answered with recall 1/5; a live row marked unwritten was dropped by the next pickle).
    """
    _, data, kind, rows = _states(metric, dtype)
    rows["columns"] = dict(rows["columns"])
    edit(rows)
    with pytest.raises(hn.IndexFormatError, match=fragment):
        _unpickle_index(data, kind, rows)


@pytest.mark.parametrize("metric,dtype", [("l2", "f32"), ("cosine", "f16"), ("ip", "bf16"), ("cosine", "qi8"), ("l2", "f32+f16")])
def test_valid_pickles_still_round_trip(metric: str, dtype: str) -> None:
    ix, data, kind, rows = _states(metric, dtype)
    q = np.random.default_rng(6).standard_normal((5, DIM)).astype(np.float32)
    for copy in (pickle.loads(pickle.dumps(ix)), _unpickle_index(data, kind, rows)):
        assert copy.search(q, k=5)[0].tolist() == ix.search(q, k=5)[0].tolist()
        copy.add(q[0])
        copy.native[0].check_integrity()


def test_a_malformed_index_state_is_a_format_error() -> None:
    """The outer state of an ``hn.Index`` is checked too: every malformed one raises
    IndexFormatError, and an Hnsw bound to another index's store is refused.

    Fails before the check: KeyError, AttributeError, ValueError, TypeError, or the pair bound.
    """
    index, data, kind, rows = _states()
    for state in ({"index": data}, {"index": data, "store": None}, {"index": data, "store": (dict, rows)},
                  {"index": data, "store": (kind, rows, 1)}, [data, (kind, rows)],
                  {"index": index.native[0], "store": hn.InMemoryVectorStore(8, 4)},
                  {"index": data, "store": (ColumnStore, rows)}):  # the abstract base: no bare NotImplementedError
        with pytest.raises(hn.IndexFormatError):
            hn.Index.__new__(hn.Index).__setstate__(state)
    assert len(_unpickle_index(data, kind, rows)) == len(index)


def test_a_malformed_hnswlib_shim_state_changes_nothing(tmp_path) -> None:
    """``hnsw_numba.hnswlib.Index`` restores only its own state: fields of the wrong type, a
    missing field or a path in place of the file's bytes raise InvalidParameterError, and
    the object keeps what it held.

    Fails before the check: a str was opened as a local file, and a failed restore had reset the index.
    """
    import hnsw_numba.hnswlib as shim

    x = np.random.default_rng(3).standard_normal((50, 4)).astype(np.float32)
    p = shim.Index("l2", 4)
    p.init_index(60)
    p.add_items(x)
    p.save_index(str(tmp_path / "p.bin"))
    state = p.__getstate__()[0]
    missing = dict(state)
    del missing["ef"]
    for bad in (dict(state, ef="x"), dict(state, num_threads=None), dict(state, max_elements=-2), missing,
                dict(state, hnswlib_file=str(tmp_path / "p.bin")), dict(state, allow_replace_deleted=1)):
        with pytest.raises(hn.InvalidParameterError):
            p.__setstate__(bad)
        assert p.get_current_count() == 50 and p.ef == state["ef"]
    q = pickle.loads(pickle.dumps(p))
    np.testing.assert_array_equal(q.knn_query(x[:5], k=1)[0][:, 0], np.arange(5))
    p.set_num_threads(-2)  # "<= 0: all cores", as hnswlib takes it: a state the object can have round-trips
    assert pickle.loads(pickle.dumps(p)).num_threads == -2
    small = pickle.loads(pickle.dumps(p))
    small.__setstate__(dict(state, max_elements=2))  # below the file's 50 items: the items bound it
    assert small.get_max_elements() == 50
