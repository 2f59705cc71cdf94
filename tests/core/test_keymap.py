"""The key map: compiled int table, switch to a dict for str keys, batch lookups."""

from __future__ import annotations

import numpy as np
import pytest

import hnsw_numba as hn
from hnsw_numba.core.inthash import IntHash
from hnsw_numba.core.keymap import KeyMap, key_batch, normalize_key, normalize_keys


def test_inthash_against_dict(rng) -> None:
    h = IntHash(4)
    ref: dict[int, int] = {}
    for batch in range(20):  # grows through several rehashes
        keys = np.unique(rng.integers(-(2**63), 2**63 - 1, 500, dtype=np.int64))
        keys = np.array([k for k in keys.tolist() if k not in ref], np.int64)
        vals = np.arange(len(ref), len(ref) + keys.shape[0], dtype=np.int32)
        h.insert(keys, vals)
        ref.update(zip(keys.tolist(), vals.tolist()))
    assert len(h) == len(ref)
    probe = np.array(list(ref)[::7] + [1, 2, 3, -5], np.int64)
    expect = [ref.get(k, -1) for k in probe.tolist()]
    np.testing.assert_array_equal(h.lookup(probe), expect)
    assert h.nbytes <= 12 * 4 * len(ref)  # load factor between 1/4 and 1/2


def test_sequential_and_colliding_keys() -> None:
    h = IntHash(16)
    keys = np.arange(0, 64 * 1024, 1024, dtype=np.int64)  # same low bits
    h.insert(keys, np.arange(64, dtype=np.int32))
    np.testing.assert_array_equal(h.lookup(keys), np.arange(64))
    assert (h.lookup(keys + 1) == -1).all()


def test_keymap_switches_to_dict_for_str() -> None:
    km = KeyMap(10)
    _, ints = normalize_keys(np.array([5, 7, -3]), 3)
    km.add(None, np.arange(3, dtype=np.int32), ints)
    assert km.is_int and km.get(7) == 1 and km.get("7") == -1 and km.get(2**70) == -1
    km.add(["a"], np.array([3], np.int32), None)
    assert not km.is_int and km.get(7) == 1 and km.get("a") == 3 and len(km) == 4
    np.testing.assert_array_equal(km.get_many([5, "a", "zz"]), [0, 3, -1])
    assert km.keys_for(np.array([[3, -1]])).tolist() == [["a", None]]


def test_numpy_str_keys_are_plain_strs() -> None:
    """Keys from a NumPy str array are stored as the plain strs saves and pickles hold."""
    lst, ints = normalize_keys(np.array(["a", "bc"]), 2)
    assert ints is None and lst == ["a", "bc"] and all(type(k) is str for k in lst)
    assert type(normalize_key(np.str_("x"))) is str
    with pytest.raises(hn.InvalidKeyError, match="1-D array of keys"):
        key_batch(np.array([[1, 2]]))


def test_index_key_lookup_paths(small_data) -> None:
    data, _ = small_data
    idx = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=data.shape[1], max_nodes=100, m=4, seed=0))
    store = hn.InMemoryVectorStore(data.shape[1], 100)
    idx.insert_batch(store, np.arange(10, 60, dtype=np.int16), data[:50])
    assert idx.node_id(np.int64(12)) == 2 and 12 in idx and 9 not in idx
    with pytest.raises(hn.KeyExistsError):
        idx.insert_batch(store, [70, 12], data[50:52])
    idx.insert(store, "x", data[60])
    assert idx.node_id(12) == 2 and idx.node_id("x") == 50


def test_batches_of_int_keys_past_int64_pad_with_minus_one() -> None:
    """Keys past int64 keep the map in object mode: its batches padded with None, which the
    documented ``keys == -1`` test of padding never found."""
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    for keys in ([2**63, 6], np.array([2**64 - 1, 6], np.uint64)):
        index = hn.Index(4, metric="l2")
        index.add(keys, x)
        got, _ = index.search(x[:1], k=4)
        assert got[0, 2:].tolist() == [-1, -1] and (got == -1).tolist() == [[False, False, True, True]]
    index.add("s", x[0] + 1)  # a str key: None from here on
    assert index.search(x[:1], k=4)[0][0, 3] is None


class _ShortKeys:
    """A key sequence whose len() (3) promises more keys than it yields (2)."""

    def __len__(self) -> int:
        return 3

    def __iter__(self):
        return iter([10, 11])


def test_a_key_sequence_shorter_than_its_len_is_refused_before_any_change() -> None:
    """Its len() passed the count check: insert_batch raised an IndexError after handing out
    NodeIds (two tombstoned keys left behind), Index.set a bare ValueError."""
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    idx = hn.Hnsw(hn.L2(), hn.HnswConfig(4, 10, seed=0))
    store = hn.InMemoryVectorStore(4, 10)
    idx.insert_batch(store, [1, 2], x[:2], num_threads=1)
    with pytest.raises(hn.InvalidKeyError, match="expected 3 keys, got 2"):
        idx.insert_batch(store, _ShortKeys(), x)
    assert (len(idx), idx.node_count, idx.deleted_count) == (2, 2, 0)
    index = hn.Index(4, "l2")
    index.add([1, 2], x[:2])
    with pytest.raises(hn.InvalidKeyError):
        index.set(_ShortKeys(), x)
    assert sorted(index.keys()) == [1, 2] and index.native[0].node_count == 2
