"""Lock-free reads of the key map (``keys``, ``in``, ``node_id``, ``key``, ``is_deleted``)
that a compaction overlaps answer for one generation of the index.

Each test patches a method the read calls so that, the first time the reading thread
calls it, a whole compaction runs in another thread before (or after) the original call:
the read then meets the old key map with the new graph (or the reverse) on every run,
where a real race needs luck.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

import hnsw_numba as hn
from hnsw_numba.core.graph import Graph
from hnsw_numba.core.keymap import KeyMap
from hnsw_numba.core.state import IndexState

N, DIM = 300, 8


def built(str_keys: bool = False) -> tuple[hn.Hnsw, Any, list]:
    """300 items; the even keys of the first 200 deleted (so the live ones move down)."""
    rng = np.random.default_rng(11)
    data = rng.standard_normal((N, DIM)).astype(np.float32)
    keys = [f"k{i}" for i in range(N)] if str_keys else list(range(N))
    idx = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=DIM, max_nodes=N, m=6, ef_construction=32, seed=2))
    store = hn.InMemoryVectorStore(DIM, N)
    idx.insert_batch(store, keys, data)
    idx.delete_batch(keys[0:200:2])
    return idx, store, keys


def compaction_in(monkeypatch, owner: type, name: str, idx: hn.Hnsw, store: Any, *, reorder: bool = False,
                  before: bool = False) -> list:
    """Patch ``owner.name`` (a method or a property): its first call from this thread runs a
    compaction in another thread, ``before`` or after the original call. Returns a list that
    receives the compaction's result (or its error)."""
    orig = owner.__dict__[name]
    call = orig.fget if isinstance(orig, property) else orig
    reader = threading.get_ident()
    ran: list = []

    def compact() -> None:
        def work() -> None:
            try:
                ran.append(idx.compact(store, num_threads=1, reorder=reorder))
            except Exception as exc:  # reported by the test's assertion on ``ran``
                ran.append(exc)
        t = threading.Thread(target=work)
        t.start()
        t.join()

    def hooked(self: Any, *args: Any) -> Any:
        fire = threading.get_ident() == reader and not ran
        if fire and before:
            compact()
        out = call(self, *args)
        if fire and not before:
            compact()
        return out

    monkeypatch.setattr(owner, name, property(hooked) if isinstance(orig, property) else hooked)
    return ran


def compacted(ran: list) -> None:
    assert len(ran) == 1 and isinstance(ran[0], np.ndarray), ran


@pytest.mark.parametrize("reorder", [False, True])
@pytest.mark.parametrize("str_keys", [False, True])
def test_keys_overlapping_a_compaction_lists_every_live_key_once(monkeypatch, reorder: bool, str_keys: bool) -> None:
    """The compaction lands between reading the key map and the live NodeIds.

    Fails before the read ran again: the old key map's keys of the new NodeIds came back,
    50 removed keys among them and 50 live ones missing.
    """
    idx, store, keys = built(str_keys)
    live = [k for k in keys if k in idx]
    ran = compaction_in(monkeypatch, IndexState, "live_ids", idx, store, reorder=reorder, before=True)
    got = list(idx.keys())
    compacted(ran)
    assert len(got) == len(set(got)) == len(live)
    assert set(got) == set(live)
    if not reorder:
        assert got == live  # NodeId order, which compaction keeps
    assert got == [idx.key(i) for i in range(len(idx))]


@pytest.mark.parametrize("reorder", [False, True])
@pytest.mark.parametrize("which", ["removed", "live"])
def test_in_overlapping_a_compaction(monkeypatch, reorder: bool, which: str) -> None:
    """The compaction lands between the key's look-up and its tombstone's.

    Fails before the read ran again: a removed key was reported present (its old NodeId's
    tombstone read in the new graph, which has none). A live key stays present.
    """
    idx, store, keys = built()
    key = 10 if which == "removed" else 251  # 251 is live and moves from NodeId 251 to 151
    ran = compaction_in(monkeypatch, KeyMap, "get", idx, store, reorder=reorder)
    got = key in idx
    compacted(ran)
    assert got is (which == "live")


def test_index_keys_and_in_overlapping_a_compaction(monkeypatch) -> None:
    """``hn.Index.keys`` and ``in`` read through ``Hnsw``: the same answers (fails before as above)."""
    rng = np.random.default_rng(4)
    index = hn.Index(DIM, metric="l2", m=6, ef_construction=32, capacity=N, seed=2)
    index.add(rng.standard_normal((N, DIM)).astype(np.float32))
    index.remove(list(range(0, 200, 2)))
    live = [k for k in range(N) if not (k < 200 and k % 2 == 0)]
    native, store = index.native
    ran = compaction_in(monkeypatch, IndexState, "live_ids", native, store, before=True)
    assert list(index.keys()) == live
    compacted(ran)
    index.remove(list(range(201, 231, 2)))  # something to compact again
    ran = compaction_in(monkeypatch, KeyMap, "get", native, store)
    assert 201 not in index
    compacted(ran)


def test_node_id_overlapping_a_compaction_is_the_new_one(monkeypatch) -> None:
    """Fails before the read ran again: the key's old NodeId came back after the compaction
    had installed the new numbering, where it names another key."""
    idx, store, _ = built()
    ran = compaction_in(monkeypatch, KeyMap, "get", idx, store)
    nid = idx.node_id(251)
    compacted(ran)
    assert nid == 151 and idx.key(nid) == 251


def test_key_overlapping_a_compaction_checks_the_new_range(monkeypatch) -> None:
    """The compaction lands between the range check and the key's read.

    Fails before the read ran again: NodeId 250, past the 200 NodeIds left, passed the old
    range check and read the new key array's fill value, key 0 (a live key's, again).
    """
    idx, store, _ = built()
    ran = compaction_in(monkeypatch, Graph, "node_count", idx, store)
    with pytest.raises(hn.KeyNotFoundError, match="out of range"):
        idx.key(250)
    compacted(ran)


def test_is_deleted_overlapping_a_compaction_checks_the_new_range(monkeypatch) -> None:
    """Fails before the read ran again: NodeId 250 passed the old range check and the new
    graph's tombstone past its nodes (0) said live."""
    idx, store, _ = built()
    ran = compaction_in(monkeypatch, Graph, "node_count", idx, store)
    with pytest.raises(hn.KeyNotFoundError, match="out of range"):
        idx.is_deleted(250)
    compacted(ran)
