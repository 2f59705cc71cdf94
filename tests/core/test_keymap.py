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


def test_int_keys_longer_than_a_save_can_hold_are_refused_up_front(tmp_path) -> None:
    """An int key of more than MAX_INT_KEY_DIGITS digits is an InvalidKeyError wherever a key enters or is
    looked up, the index unchanged; past Python's 4,300-digit str() limit the message gives the digit count
    instead of a bare ValueError. MAX_INT_KEY_DIGITS digits save and load (the loader's bound is the same
    constant); numbering past them is refused."""
    from hnsw_numba.core import keymap
    from hnsw_numba.io import checks

    x = np.random.default_rng(0).standard_normal((4, 4)).astype(np.float32)
    index = hn.Index(4, "l2")
    index.add([0, 1], x[:2])
    over, far = 10**4000, 10**4300 + 7  # 4,001 and 4,301 digits
    for call in (lambda: index.add(over, x[2]), lambda: index.add([2, over], x[2:4]), lambda: index.add(far, x[2]),
                 lambda: index.set(far, x[2]), lambda: index.remove(far), lambda: index.get(far),
                 lambda: index.search(x[0], k=1, filter=[0, far]), lambda: index.native[0].rename_deleted([far], [5])):
        with pytest.raises(hn.InvalidKeyError, match="at most 4,000 decimal digits") as info:
            call()
        assert isinstance(info.value, ValueError) and ("4,001 digits" in str(info.value) or "4,301 digits" in str(info.value))
    assert sorted(index.keys()) == [0, 1] and far not in index
    top = over - 1
    index.add(top, x[2])
    with pytest.raises(hn.InvalidKeyError, match="4,001 digits"):  # the next number has one digit more
        index.add(x[3])
    index.save(tmp_path / "i.zip")
    assert sorted(hn.open(tmp_path / "i.zip").keys()) == [0, 1, top]
    assert checks.MAX_INT_KEY_DIGITS is keymap.MAX_INT_KEY_DIGITS == 4000


def test_stored_and_printed_keys_past_the_digit_limit() -> None:
    """A pickle can hold an int key no insert takes: the load check refuses it. Messages give such a key's
    digit count: hnswlib's label check raised a bare ValueError formatting it."""
    from hnsw_numba.core import keymap
    from hnsw_numba.io.hnswlib_write import HnswlibWriteError, hnswlib_labels

    far = 10**4300 + 7
    assert keymap.stored_key_problem(np.array([1, far], object)) == "an int key has 4,301 digits (at most 4,000)"
    with pytest.raises(HnswlibWriteError, match="an int of 4,301 digits is outside"):
        hnswlib_labels(np.array([1, far], object))
    ints = np.random.default_rng(3).integers(1, 13_000, 200).tolist()
    assert all(keymap.int_digits(k) == len(str(k)) for k in [1, 9, 10, 99, 100] + [10**(b % 4000) - (b & 1) for b in ints])


def _unordered_batches(keys: list) -> list:
    return [set(keys), frozenset(keys), dict.fromkeys(keys).keys()]


def test_a_set_of_keys_is_refused_wherever_keys_pair_with_rows() -> None:
    """A set's order is its hash order (for str keys, another in each process): taken as a
    batch, it paired keys with rows at random. Every batch of keys raises InvalidKeyError for
    one and changes nothing; a filter, whose keys have no order, takes it."""
    x = np.random.default_rng(5).standard_normal((6, 4)).astype(np.float32)
    idx = hn.Index(4, metric="l2", seed=1)
    idx.add(["a", "b", "c"], x[:3])
    native, store = idx.native
    before = idx.get(["a", "b", "c"])
    for bad in _unordered_batches(["d", "e", "f"]):
        with pytest.raises(hn.InvalidKeyError, match="must be a sequence"):
            idx.add(bad, x[3:])
        with pytest.raises(hn.InvalidKeyError, match="must be a sequence"):
            idx.set(bad, x[3:])
        with pytest.raises(hn.InvalidKeyError, match="must be a sequence"):
            native.insert_batch(store, bad, x[3:], grow=True)
    for bad in _unordered_batches(["a", "b"]):
        for call in (idx.get, idx.remove, native.delete_batch, lambda k: native.get_vectors(store, k),
                     lambda k: idx.set(k, x[:2])):
            with pytest.raises(hn.InvalidKeyError, match="must be a sequence"):
                call(bad)
    idx.remove(["c"])
    with pytest.raises(hn.InvalidKeyError, match="must be a sequence"):
        native.rename_deleted({"c"}, {"z"})
    assert sorted(idx.keys()) == ["a", "b"] and len(idx) == 2 and native.deleted_count == 1
    np.testing.assert_array_equal(idx.get(["a", "b"]), before[:2])
    assert sorted(idx.search(x[0], 3, filter={"a", "b"}).keys) == ["a", "b"]
    with pytest.raises(hn.InvalidKeyError, match="must be a sequence"):
        key_batch({1, 2})
    assert key_batch((k for k in [2, 1]))[1].tolist() == [2, 1]  # an iterator is read in its order


def test_masked_keys_are_refused_and_unmasked_ones_read_as_their_data() -> None:
    """np.asarray drops a mask: remove(masked_array([10, 11], mask=[0, 1])) removed 11 too,
    and masked keys were added under their hidden values."""
    x = np.random.default_rng(6).standard_normal((20, 4)).astype(np.float32)
    idx = hn.Index(4, metric="l2", seed=1)
    idx.add(x[:15])
    keys = np.ma.masked_array([10, 11], mask=[False, True])
    for call in (idx.remove, idx.get, idx.native[0].delete_batch, lambda k: idx.add(k, x[15:17]),
                 lambda k: idx.set(k, x[15:17])):
        with pytest.raises(hn.InvalidKeyError, match=r"keys: a masked array with 1 masked entry \(the first in entry 1\)"):
            call(keys)
    assert len(idx) == 15 and 10 in idx and 11 in idx
    text = np.ma.masked_array(np.array(["p", "q"], object), mask=[True, False])
    with pytest.raises(hn.InvalidKeyError, match="masked array"):
        normalize_keys(text, 2)
    idx.remove(np.ma.masked_array([10, 11], mask=False))  # nothing masked: its data
    assert 10 not in idx and 11 not in idx
    ints, n = key_batch(np.ma.masked_array([3, 4], mask=[False, False]))[1:]
    assert type(ints) is np.ndarray and ints.tolist() == [3, 4] and n == 2
