"""Numbered adds never hand out a removed item's number again: not after a compaction, and not
in a copy of the index (save and open, pickle, deepcopy, the low-level save and pickle).

A compaction forgets the removed items' keys; ``IndexState.dropped_ceiling`` keeps one past
the NodeIds and int keys they had, and saves and pickles carry it.
"""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

import hnsw_numba as hn


def compacted_index() -> tuple[hn.Index, np.ndarray]:
    """Items 0..9 numbered, the last three removed, then compacted: the next number is 10."""
    x = np.random.default_rng(3).standard_normal((12, 4)).astype(np.float32)
    index = hn.Index(4, "l2", m=4, ef_construction=16, seed=1)
    index.add(x[:10])
    index.remove([7, 8, 9])
    index.compact()
    return index, x


def copy_of(index: hn.Index, how: str, path) -> hn.Index:
    native, store = index.native
    if how == "save":
        index.save(path)
        return hn.open(path)
    if how == "pickle":
        return pickle.loads(pickle.dumps(index))
    if how == "deepcopy":
        return copy.deepcopy(index)
    if how == "save low-level":
        hn.save(path, native, store)
        return hn.Index.from_native(*hn.load(path))
    if how == "save_index":
        hn.save_index(native, path)
        return hn.Index.from_native(hn.load_index(None, path), copy.deepcopy(store))
    if how == "pickle low-level":
        return hn.Index.from_native(pickle.loads(pickle.dumps(native)), copy.deepcopy(store))
    assert how == "materialize"
    return hn.Index.from_native(*native.materialize(store))


@pytest.mark.parametrize("how", ["save", "pickle", "deepcopy", "save low-level", "save_index", "pickle low-level", "materialize"])
def test_a_copy_numbers_past_the_items_a_compaction_removed(tmp_path, how: str) -> None:
    """Fails before saves and pickles kept the bound: the copy numbered its next item 7, the
    number of a removed item (the original numbers it 10)."""
    index, x = compacted_index()
    again = copy_of(index, how, tmp_path / "ix")
    assert sorted(again.keys()) == list(range(7))
    assert again.add(x[10]) == 10 and index.add(x[10]) == 10
    assert again.native[0].state.dropped_ceiling == 10
    np.testing.assert_array_equal(again.add(x[10:12]), [11, 12])


def test_a_compaction_of_the_low_level_index_records_the_bound() -> None:
    """A compaction through ``Hnsw.compact`` (no ``hn.Index`` around it) records it too: an
    ``Index`` over the index afterwards numbers past the removed items."""
    x = np.random.default_rng(3).standard_normal((12, 4)).astype(np.float32)
    native = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=4, max_nodes=16, m=4, ef_construction=16, seed=1))
    store = hn.InMemoryVectorStore(4, 16)
    native.insert_batch(store, [0, 1, 2, 3, 40, 5], x[:6])
    native.delete_batch([40, 5])
    native.compact(store)
    assert hn.Index.from_native(native, store).add(x[6]) == 41
    assert native.state.dropped_ceiling == 41


def test_numbered_adds_go_on_after_a_compaction_of_the_native_pair() -> None:
    """``h.compact(store)`` on an ``hn.Index``'s own pair: the Index had read the keys of the
    NodeIds below the old count, so those the compaction shrank below were never read again,
    and every numbered add after the first tried the same number (KeyExistsError)."""
    x = np.random.default_rng(4).standard_normal((40, 4)).astype(np.float32)
    index = hn.Index(4, "l2", m=4, ef_construction=16, seed=1)
    index.add(x[:30])
    assert index.add(x[30]) == 30  # the Index has read the keys of NodeIds below 30
    index.remove(list(range(0, 30, 2)))
    native, store = index.native
    native.compact(store)  # 16 NodeIds
    assert index.add(x[31:33]).tolist() == [31, 32]
    assert index.add(x[33:35]).tolist() == [33, 34] and index.add(x[35]) == 35
    assert sorted(index.keys()) == list(range(1, 30, 2)) + list(range(30, 36))


def test_compactions_without_removed_items_change_nothing() -> None:
    index, x = compacted_index()
    native = index.native[0]
    native.state.dropped_ceiling = 0  # as a file or pickle from before the bound was kept
    index.compact(reorder=True)  # nothing removed: nothing forgotten
    assert native.state.dropped_ceiling == 0


def edit_graph_attribute(path, edit) -> None:
    """Change the graph group's ``hnsw_numba`` attribute, its arrays' digests (which cover
    it) recomputed: what an older or a crafted file holds."""
    zarr = pytest.importorskip("zarr")
    from hnsw_numba.io import chunks

    graph = zarr.open_group(str(path), mode="r+")["graph"]
    meta = dict(graph.attrs["hnsw_numba"])
    edit(meta)
    graph.update_attributes({"hnsw_numba": meta})
    bound = chunks.bound_attrs(graph.attrs.asdict())
    for name, arr in graph.arrays():
        x = np.ascontiguousarray(arr[:])
        crcs = chunks.chunk_crcs(x, arr.chunks[0])
        arr.update_attributes({chunks.DIGEST_ATTR: chunks.digest(f"graph/{name}", x.dtype, x.shape, crcs, bound)})


def test_files_and_pickles_without_the_bound_load_as_before(tmp_path) -> None:
    """A file or pickle written before ``dropped_ceiling`` was kept loads with 0: numbering
    goes on past the NodeIds and int keys it holds, as it did."""
    index, x = compacted_index()
    index.save(tmp_path / "ix")
    edit_graph_attribute(tmp_path / "ix", lambda meta: meta.pop("dropped_ceiling"))
    assert hn.open(tmp_path / "ix").add(x[10]) == 7
    state = index.native[0].__getstate__()
    del state["dropped_ceiling"]
    native = hn.Hnsw.__new__(hn.Hnsw)
    native.__setstate__(state)
    assert native.state.dropped_ceiling == 0


@pytest.mark.parametrize("bad", [-1, "10", 2.5, True, None])
def test_a_bad_bound_in_a_file_is_a_format_error(tmp_path, bad) -> None:
    index, _ = compacted_index()
    index.save(tmp_path / "ix")
    edit_graph_attribute(tmp_path / "ix", lambda meta: meta.update(dropped_ceiling=bad))
    with pytest.raises(hn.IndexFormatError, match="dropped_ceiling"):
        hn.open(tmp_path / "ix")


def test_numbering_goes_on_past_int64() -> None:
    """Numbered adds after a key at 2**63 - 2 (or past 2**64) go on as uint64 (or Python
    ints): keys are bounded only by their decimal form (``MAX_INT_KEY_DIGITS``).

    Fails before: an OverflowError from np.arange, or keys that wrapped to negative.
    """
    x = np.random.default_rng(6).standard_normal((8, 4)).astype(np.float32)
    index = hn.Index(4, "l2", m=4, ef_construction=16, seed=1)
    index.add(2**63 - 2, x[0])
    keys = index.add(x[1:4])
    assert [int(k) for k in keys] == [2**63 - 1, 2**63, 2**63 + 1]
    assert index.search(x[2], 1)[0].key == 2**63
    index.add(2**64 + 5, x[4])
    assert [int(k) for k in index.add(x[5:7])] == [2**64 + 6, 2**64 + 7]
    assert index.add(x[7]) == 2**64 + 8 and len(index) == 8
