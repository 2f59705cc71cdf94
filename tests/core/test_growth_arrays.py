"""The arrays a lock-free search holds while the index and its store grow: its rows are one
state of the store, and no node it can meet lies past them or past its graph arrays."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import hnsw_numba as hn
from conftest import clustered
from hnsw_numba.kernels.layout import H_NODES, Qi8Rows


class _Pause:
    """Calls ``rows()`` from another thread right after a resize assigned its first column."""

    first = ""
    armed = False
    seen: list = []

    def __setattr__(self, name, value) -> None:
        super().__setattr__(name, value)
        if name == self.first and self.armed:
            super().__setattr__("armed", False)
            t = threading.Thread(target=lambda: self.seen.append(self.rows()))
            t.start()
            t.join(0.5)  # a rows() that waits for the resize is collected after it
            self.seen.append(t)


class _PausedQi8(_Pause, hn.InMemoryQi8VectorStore):
    first = "codes"


class _PausedFloat(_Pause, hn.InMemoryVectorStore):
    first = "data"


@pytest.mark.parametrize("kind", ["qi8", "walk copy"])
def test_rows_never_pairs_the_old_and_new_columns_of_a_resize(kind) -> None:
    """A search calls ``rows()`` without the index's lock. Built between two column
    assignments of a resize, the tuple paired the new codes with the old scales (the kernel
    checks the node count against the codes only and read the scales past their end) or a
    new float32 array with the old walk copy."""
    store = _PausedQi8(4, 8) if kind == "qi8" else _PausedFloat(4, 8, walk_copy=True)
    store.seen = []
    assert {a.shape[0] for a in store.rows()} == {8}
    store.armed = True
    store.resize(32)
    thread = store.seen.pop()
    thread.join()
    (rows,) = store.seen
    assert [a.shape[0] for a in rows] == [32] * len(rows)
    assert all(a is b for a, b in zip(rows, store.rows()))


def test_a_growing_store_gives_the_graph_new_arrays() -> None:
    """An index with room for more nodes than its store: ``insert(grow=True)`` grows the
    store alone. A search walking the old rows with the graph's arrays met the nodes
    inserted next, whose rows lie past the end of its arrays; the arrays it holds now keep
    the nodes they had."""
    data = clustered(np.random.default_rng(3), 40, 8)
    idx = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=8, max_nodes=64, m=4, ef_construction=16, seed=1))
    store = hn.InMemoryVectorStore(8, 8)
    idx.insert_batch(store, np.arange(8), data[:8], num_threads=1)
    old = idx.search_one.__self__.state.graph.arrays
    old_rows = store.rows()
    idx.insert_batch(store, np.arange(8, 40), data[8:], num_threads=1, grow=True)
    assert idx.max_nodes == 64 and store.max_nodes >= 40
    assert int(old.header[H_NODES]) == 8 and int(old.links0[:, 1:].max()) < old_rows[0].shape[0]
    assert idx.search(store, data[30], 1)[0].key == 30


def test_arrays_a_search_holds_keep_their_own_upper_lists_when_the_index_grows() -> None:
    """Growth copied every graph array but ``upper_links`` when it had room: a search still
    walking the replaced arrays read the upper lists that later inserts wrote, with NodeIds
    past the end of its ``links0`` and its rows (the race harness's bounds-checked runs
    raised IndexError in ``greedy_descend``)."""
    data = clustered(np.random.default_rng(6), 40, 8)
    idx = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=8, max_nodes=64, m=4, ef_construction=16, seed=2))
    store = hn.InMemoryVectorStore(8, 16)
    idx.insert_batch(store, np.arange(16), data[:16], num_threads=1)
    idx.resize(16)  # upper_links keeps the room of 64 nodes: the growth to 32 needs no more
    old = idx.search_one.__self__.state.graph.arrays
    before = old.upper_links.copy()
    idx.insert_batch(store, np.arange(16, 40), data[16:40], num_threads=1, grow=True)
    assert idx.max_nodes == 40
    np.testing.assert_array_equal(old.upper_links, before)
    assert idx.search_one.__self__.state.graph.arrays.upper_links is not old.upper_links
    assert idx.search(store, data[30], 1)[0].key == 30


class _ShortScales:
    """A Qi8 store whose scale and zero point arrays have fewer rows than its codes."""

    kind = "qi8"
    dim = 4

    def __init__(self, inner: hn.InMemoryQi8VectorStore) -> None:
        self.inner = inner

    def rows(self) -> Qi8Rows:
        r = self.inner.rows()
        return Qi8Rows(r.codes, r.scale[:2].copy(), r.zero[:2].copy())


def test_a_store_whose_arrays_differ_in_length_is_refused() -> None:
    data = clustered(np.random.default_rng(2), 16, 4)
    idx = hn.Hnsw(hn.L2Qi8(), hn.HnswConfig(dim=4, max_nodes=16, m=4, ef_construction=16, seed=1))
    store = hn.InMemoryQi8VectorStore(4, 16)
    idx.insert_batch(store, np.arange(16), data, num_threads=1)
    with pytest.raises(hn.InvalidParameterError, match="one row per NodeId"):
        idx.search(_ShortScales(store), data[3], 1)
    assert idx.search(store, data[3], 1)[0].key == 3
