"""Hits: the result of one search reads like a list of Hit."""

from __future__ import annotations

import pickle

import pytest

import hnsw_numba as hn
from conftest import build
from naive import exact_knn
from hnsw_numba.core.hits import Hits

RAW = [(7, 0.25, 3), (2, 0.5, 0), (9, 1.0, 5)]


def test_reads_like_a_list_of_hit() -> None:
    h = Hits(list(RAW))
    expected = [hn.Hit(*t) for t in RAW]
    assert len(h) == 3 and bool(h) and not Hits([])
    assert h == expected and expected == h  # list == Hits falls back to Hits.__eq__
    assert list(h) == expected and all(type(x) is hn.Hit for x in h)
    assert h[0] == hn.Hit(7, 0.25, 3) and type(h[0]) is hn.Hit
    assert h[-1].key == 9 and h[1].distance == 0.5 and h[2].node_id == 5
    with pytest.raises(IndexError):
        h[3]
    assert isinstance(h[1:], Hits) and h[1:] == expected[1:] and h[::-1] == expected[::-1]
    assert list(reversed(h)) == expected[::-1]
    assert hn.Hit(2, 0.5, 0) in h and hn.Hit(2, 0.5, 1) not in h
    assert h.index(hn.Hit(9, 1.0, 5)) == 2 and h.count(hn.Hit(7, 0.25, 3)) == 1
    assert h.keys == [7, 2, 9] and h.distances == [0.25, 0.5, 1.0] and h.node_ids == [3, 0, 5]
    assert repr(h) == repr(expected)


def test_equality_and_hashing() -> None:
    h = Hits(list(RAW))
    assert h == Hits(list(RAW)) and h != Hits(RAW[:2])
    assert h != tuple(hn.Hit(*t) for t in RAW)  # like a list: not equal to a tuple
    assert h != [hn.Hit(7, 0.25, 3)] and h != "abc" and h != None  # noqa: E711
    with pytest.raises(TypeError):
        hash(h)


def test_pickles() -> None:
    h = Hits(list(RAW))
    back = pickle.loads(pickle.dumps(h))
    assert type(back) is Hits and back == h


def test_search_returns_hits_for_int_and_str_keys(small_data) -> None:
    data, queries = small_data
    idx, store = build(hn.L2(), data[:300])
    sidx, sstore = build(hn.L2(), data[:300], keys=[f"k{i}" for i in range(300)])
    exact = exact_knn("l2", data[:300], queries[:1], 5)[0][0]
    for ix, st, key in ((idx, store, int), (sidx, sstore, lambda i: f"k{i}")):
        for kwargs in ({}, {"exact": True}, {"filter": lambda k: True}):
            hits = ix.search(st, queries[0], 5, ef=64, **kwargs)
            assert isinstance(hits, Hits) and len(hits) == 5
            assert hits.keys == [key(i) for i in exact]
            assert hits.node_ids == exact.tolist()
            assert hits.distances == sorted(hits.distances)
            assert [h.key for h in hits] == hits.keys
    # fewer live items than k: a shorter result, no padding
    small, sst = build(hn.L2(), data[:3])
    assert len(small.search(sst, queries[0], 10)) == 3
