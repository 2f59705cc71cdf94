"""The arrays a lock-free search holds while the index and its store grow: its rows are one
state of the store, and no node it can meet lies past them or past its graph arrays. Also the
allocation limit every growth is checked against (``HNSW_NUMBA_MAX_BYTES``)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import hnsw_numba as hn
from conftest import clustered
from hnsw_numba.core import filtered
from hnsw_numba.core.graph import Graph
from hnsw_numba.kernels.layout import H_DELETED, H_NODES, H_UPPER_USED, Qi8Rows


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


class _GrowsAfterRows(hn.InMemoryVectorStore):
    """A float32 store whose armed ``rows()`` runs ``hook`` (another thread's growth and
    inserts) before it returns the rows it read, which then sit in a longer buffer whose
    rows past their end hold ``bait``: a kernel reading past them reads the bait."""

    hook = None
    bait = None

    def rows(self):
        rows = super().rows()
        hook, self.hook = self.hook, None
        if hook is None:
            return rows
        n = rows.data.shape[0]
        buf = np.concatenate([rows.data, np.repeat(self.bait[None, :], 8 * n, axis=0)])
        thread = threading.Thread(target=hook)
        thread.start()
        thread.join()
        return type(rows)(buf[:n])


@pytest.mark.parametrize("exact", [False, True])
def test_a_batch_search_reads_the_graph_before_the_rows(exact) -> None:
    """An unfiltered batch search read the store's rows, then the graph's arrays: a growth
    between them paired the grown graph with the old rows, and the nodes inserted next lay
    past their end (the walk and the exact scan read beyond the rows and answered the new
    keys with the distance of whatever memory followed). The arrays it reads now are those
    of before the rows, whose every NodeId has a row."""
    rng = np.random.default_rng(5)
    data = clustered(rng, 24, 8)
    query = data[3] + np.float32(0.05)
    near = query + 0.01 * rng.standard_normal((40, 8)).astype(np.float32)
    index = hn.Index(8, metric="l2", m=4, ef_construction=16, capacity=24, seed=1)
    store = _GrowsAfterRows(8, 24)
    index = hn.Index.from_native(index.native[0], store)
    index.add(np.arange(24), data)
    store.bait = query
    store.hook = lambda: index.add(np.arange(100, 140), near)  # grows the index and store 24 -> 64
    keys, dists = index.search(query[None, :], 5, exact=exact, num_threads=1)
    assert index.capacity >= 64 and len(index) == 64
    got = index.get(keys[0].tolist())
    want = ((got - query) ** 2).sum(1)
    np.testing.assert_allclose(dists[0], want, rtol=1e-5, atol=1e-6)
    assert set(keys[0].tolist()) <= set(range(24))


def test_a_filtered_search_walks_the_graph_its_filter_covers(monkeypatch) -> None:
    """A single filtered search compiles its filter, then checks its binding against the
    store's rows and the graph: a growth in between bound the grown graph, which the walk
    read with the filter's mask of the old capacity, past the mask's end at the nodes
    inserted next (whether it allowed them was whatever memory followed the mask). The walk
    reads the graph the filter was compiled for, which the bound rows cover."""
    walks = []
    real = filtered._entry

    def spy(dispatcher, args):
        entry = real(dispatcher, args)
        if dispatcher is not filtered.knn_filter_one_kernel:
            return entry

        def walk(*a):
            walks.append((a[0].links0.shape[0], a[13].shape[0], a[1][0].shape[0]))  # graph, mask, rows
            return entry(*a)
        return walk

    monkeypatch.setattr(filtered, "_entry", spy)
    rng = np.random.default_rng(6)
    data = clustered(rng, 24, 8)
    query = data[4] + np.float32(0.05)
    near = query + 0.01 * rng.standard_normal((40, 8)).astype(np.float32)
    store = _GrowsAfterRows(8, 24)
    index = hn.Index.from_native(hn.Index(8, metric="l2", m=4, ef_construction=16, capacity=24, seed=1).native[0], store)
    index.add(np.arange(24), data)
    allowed = list(range(0, 24, 2))
    assert index.search(query, 3, filter=allowed, plan="graph")  # binds the entry point
    store.bait = query
    store.hook = lambda: index.add(np.arange(100, 140), near)  # grows the index and store 24 -> 64
    hits = index.search(query, 3, filter=allowed, plan="graph")
    assert len(index) == 64 and index.capacity >= 64
    assert walks and all(mask >= graph and rows >= graph for graph, mask, rows in walks)
    assert [h.key for h in hits] and {h.key for h in hits} <= set(allowed)


class _GrowsAfterArrays(Graph):
    """A graph whose armed ``arrays`` read runs ``hook`` (another thread's growth and more)
    once it has the arrays: its reader holds the arrays of before the growth."""

    hook = None

    @property
    def arrays(self):
        arrays = self.__dict__["arrays"]
        hook, self.hook = self.hook, None
        if hook is not None:
            thread = threading.Thread(target=hook)
            thread.start()
            thread.join()
        return arrays

    @arrays.setter
    def arrays(self, value) -> None:
        self.__dict__["arrays"] = value


def test_a_filter_compiles_against_one_state_of_the_graph() -> None:
    """A Filter read the graph's arrays, then its node count apart: a growth in between gave
    the old arrays the grown graph's count, and the allowed keys inserted next had NodeIds
    past the mask (IndexError while compiling). The count is the arrays' own."""
    rng = np.random.default_rng(7)
    data = clustered(rng, 24, 8)
    near = data[5] + 0.01 * rng.standard_normal((40, 8)).astype(np.float32)
    index = hn.Index(8, metric="l2", m=4, ef_construction=16, capacity=24, seed=1)
    index.add(np.arange(24), data)
    graph = index.native[0].state.graph
    graph.__class__ = _GrowsAfterArrays
    allowed = [1, 5, 9, *range(100, 140, 3)]
    graph.hook = lambda: index.add(np.arange(100, 140), near)  # grows the index and store 24 -> 64
    f = hn.Filter(index, allowed)
    c = f.compiled
    assert len(index) == 64 and c.node_count <= c.graph.links0.shape[0] and c.mask.shape[0] == c.graph.links0.shape[0]
    hits = index.search(data[5], 5, filter=f)
    assert {h.key for h in hits} <= set(allowed) and 5 in {h.key for h in hits}
    assert {h.key for h in hits} & set(range(100, 140))


def test_len_reads_the_counts_of_one_arrays() -> None:
    """``len`` takes no lock. It read the node count and the deleted count through the
    graph apart: a growth between them paired the old arrays' node count (24) with the new
    arrays' deleted count (30), and ``len`` raised ValueError on -6. Both are one header's."""
    data = clustered(np.random.default_rng(8), 64, 8)
    index = hn.Index(8, metric="l2", m=4, ef_construction=16, capacity=24, seed=1)
    index.add(np.arange(24), data[:24])
    graph = index.native[0].state.graph
    graph.__class__ = _GrowsAfterArrays

    def grow_and_remove() -> None:
        index.add(np.arange(24, 64), data[24:])  # grows the index and store 24 -> 64
        index.remove(list(range(30)))

    graph.hook = grow_and_remove
    n = len(index)
    assert n in (24, 34) and len(index) == 34


def test_a_growth_gives_the_graph_upper_lists_of_its_own() -> None:
    """Growth copied every per-node array but kept ``upper_links`` when it was long enough
    (an insert whose levels did not fit had lengthened it): the replaced arrays, which
    lock-free searches still walk, shared it with the new ones, and the nodes inserted next
    were linked into the upper lists those searches descend, NodeIds past the end of their
    arrays and rows (the race harness, bounds-checked: IndexError in knn_one_kernel)."""
    data = clustered(np.random.default_rng(9), 200, 8)
    index = hn.Index(8, metric="l2", m=4, ef_construction=16, capacity=24, seed=1)
    index.add(np.arange(24), data[:24])
    state = index.native[0].state
    with state.lock.exclusive():  # what an insert whose levels do not fit runs
        state.graph.grow_upper(4 * state.graph.arrays.upper_links.shape[0])
    old = state.graph.arrays
    used = int(old.header[H_UPPER_USED])
    before = old.upper_links[:used].copy()
    index.add(np.arange(24, 200), data[24:])  # grows the index and store 24 -> 200
    np.testing.assert_array_equal(old.upper_links[:used], before)
    assert state.graph.capacity >= 200 and state.graph.arrays.upper_links is not old.upper_links
    assert index.search(data[150], 1)[0].key == 150


# ============================================================================ the allocation limit
@pytest.mark.parametrize("value", ["4G", "-5", "1e9", "lots"])
def test_a_max_bytes_that_is_not_a_byte_count_is_refused(monkeypatch, value) -> None:
    """HNSW_NUMBA_MAX_BYTES is an integer number of bytes: anything else is a typed error
    naming the variable and the value."""
    monkeypatch.setenv("HNSW_NUMBA_MAX_BYTES", value)
    with pytest.raises(hn.InvalidParameterError, match=rf"HNSW_NUMBA_MAX_BYTES.*'{value}'") as info:
        hn.Index(8)
    assert isinstance(info.value, hn.HnswError) and isinstance(info.value, ValueError)


def test_a_small_max_bytes_is_reported_in_a_readable_unit(monkeypatch) -> None:
    """Sizes below a GiB are given in bytes, KiB or MiB, not as 0.0 GiB."""
    monkeypatch.setenv("HNSW_NUMBA_MAX_BYTES", "1000000")
    with pytest.raises(hn.CapacityError, match=r"MiB, more than the 976\.6 KiB available"):
        hn.Index(64, capacity=100_000)
    from hnsw_numba.core.limits import readable_bytes

    assert [readable_bytes(v) for v in (0, 512, 1536, 3 * 2**20, 2**31)] == [
        "0 bytes", "512 bytes", "1.5 KiB", "3.0 MiB", "2.0 GiB"]
    monkeypatch.setenv("HNSW_NUMBA_MAX_BYTES", "0")  # 0: the machine's memory, as unset
    assert len(hn.Index(8)) == 0
