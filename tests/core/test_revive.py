"""Deleted NodeIds used again: IntHash removal, KeyMap.rename, Hnsw.undelete / rename_deleted."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import hnsw_numba as hn
from hnsw_numba.kernels.insert import update_kernel
from hnsw_numba.kernels.layout import COUNT_MASK
from conftest import build, clustered
from hnsw_numba.core.inthash import IntHash
from hnsw_numba.core.keymap import KeyMap, normalize_keys


def snapshot(idx: hn.Hnsw, store) -> tuple:
    a = idx.graph_arrays
    return (len(idx), idx.node_count, idx.deleted_count, tuple(np.array(x, copy=True).tobytes() for x in a),
            idx.key_map.node_keys[: idx.node_count].tolist(), store.rows()[0].tobytes())


def exact(idx: hn.Hnsw, store, q: np.ndarray, k: int) -> list:
    """Brute-force oracle over the live keys (squared L2)."""
    n = idx.node_count
    live = [i for i in range(n) if not idx.is_deleted(i)]
    d = ((store.rows().data[live] - q) ** 2).sum(1)
    return [idx.key(live[i]) for i in np.argsort(d, kind="stable")[:k]]


def test_inthash_remove_against_dict(rng) -> None:
    h, ref = IntHash(4), {}
    for _ in range(30):  # inserts, removals and re-inserts of removed keys, through rehashes
        keys = np.unique(rng.integers(-50_000, 50_000, 300, dtype=np.int64))
        keys = np.array([k for k in keys.tolist() if k not in ref], np.int64)
        vals = rng.integers(0, 2**31 - 1, keys.shape[0]).astype(np.int32)
        h.insert(keys, vals)
        ref.update(zip(keys.tolist(), vals.tolist()))
        gone = np.array(list(ref)[:: 3], np.int64)
        assert h.remove(np.concatenate([gone, [10**12]])) == gone.shape[0]  # an absent key is skipped
        for k in gone.tolist():
            del ref[k]
        assert len(h) == len(ref)
    probe = np.arange(-50_000, 50_000, 7, dtype=np.int64)
    np.testing.assert_array_equal(h.lookup(probe), [ref.get(k, -1) for k in probe.tolist()])
    assert h.used <= h.table[0].shape[0] // 2  # removed slots count towards the load factor


def test_keymap_rename_int_dict_and_switch() -> None:
    km = KeyMap(8)
    _, ints = normalize_keys(np.array([10, 11, 12, 13]), 4)
    km.add(None, np.arange(4, dtype=np.int32), ints)
    km.rename(np.array([1, 3], np.int32), None, np.array([20, 11 + 100], np.int64))
    assert km.is_int and [km.get(k) for k in (10, 11, 12, 13, 20, 111)] == [0, -1, 2, -1, 1, 3]
    assert km.node_keys[:4].tolist() == [10, 20, 12, 111] and len(km) == 4
    km.rename(np.array([2], np.int32), ["s"], None)  # to a str key: the map switches to a dict
    assert not km.is_int and km.get("s") == 2 and km.get(12) == -1 and km.get(10) == 0 and len(km) == 4
    km.rename(np.array([2, 0], np.int32), [12, "t"], None)
    assert [km.get(k) for k in ("s", 10, 12, "t", 20)] == [-1, -1, 2, 0, 1]


def test_rename_deleted_reuses_nodeids(small_data) -> None:
    data, queries = small_data
    idx, store = build(hn.L2(), data[:400], extra=0)  # full: a new NodeId would not fit
    gone = list(range(0, 400, 4))
    for k in gone:
        idx.delete(k)
    nids = idx.rename_deleted(gone, list(range(1000, 1100)))
    assert nids.tolist() == gone and idx.node_count == 400 and len(idx) == 300
    assert 0 not in idx and 1000 not in idx and idx.key(0) == 1000  # renamed, still deleted
    with pytest.raises(hn.CapacityError):
        idx.insert(store, 5000, data[400])
    got = idx.insert_batch(store, np.arange(1000, 1100), data[400:500])
    assert got.tolist() == gone and idx.node_count == 400 and len(idx) == 400
    np.testing.assert_array_equal(store.rows().data[gone], data[400:500])
    idx.check_integrity()
    for q in queries[:20]:
        assert [h.key for h in idx.search(store, q, 10, ef=200)] == exact(idx, store, q, 10)
    assert not ({0, 4, 8} & set(np.asarray(idx.search_batch(store, queries, 10)[0]).ravel().tolist()))


def test_rename_deleted_errors_change_nothing(small_data) -> None:
    data, _ = small_data
    idx, store = build(hn.L2(), data[:100], extra=10)
    idx.delete(3)
    idx.delete(4)
    before = snapshot(idx, store)
    for old, new, err in [([5], [500], hn.KeyExistsError),   # old key live
                          ([999], [500], hn.KeyNotFoundError),  # old key absent
                          ([3], [7], hn.KeyExistsError),  # new key live
                          ([3], [4], hn.KeyExistsError),  # new key deleted but present
                          ([3, 3], [500, 501], hn.KeyExistsError),
                          ([3, 4], [500, 500], hn.KeyExistsError),
                          ([3, 4], [500], hn.InvalidParameterError),
                          ([3], [1.5], hn.InvalidKeyError),
                          (3, [500], hn.InvalidParameterError)]:
        with pytest.raises(err):
            idx.rename_deleted(old, new)
        assert snapshot(idx, store) == before


def test_rename_deleted_refuses_keys_insert_refuses(small_data) -> None:
    """New keys follow insert's rules: no negative int (-1 pads results), no lone surrogate
    (a save could not write it); a batch with one such key renames nothing."""
    data, _ = small_data
    idx, store = build(hn.L2(), data[:100], extra=10)
    idx.delete(3)
    idx.delete(4)
    before = snapshot(idx, store)
    for old, new in [([3], [-1]), ([3], [np.int64(-5)]), ([3, 4], np.array([500, -1])), ([3], ["\ud800"]),
                     ([3, 4], ["ok", "a\udfffb"])]:
        with pytest.raises(hn.InvalidKeyError):
            idx.rename_deleted(old, new)
        assert snapshot(idx, store) == before
        with pytest.raises(hn.InvalidKeyError):
            idx.insert(store, new[-1], data[0])  # the same key, refused by insert too
    assert -1 not in idx and idx.key(3) == 3
    with pytest.raises(hn.KeyNotFoundError):
        idx.undelete(-1)


def test_undelete_restores_vector_and_links(small_data) -> None:
    data, queries = small_data
    idx, store = build(hn.L2(), data[:300])
    base = idx.search_batch(store, queries, 5, ef=100)
    for k in range(0, 300, 3):
        idx.delete(k)
    assert idx.undelete(0) == 0 and 0 in idx and idx.deleted_count == 99
    before = snapshot(idx, store)
    for key, err in [(1, hn.KeyExistsError), (10_000, hn.KeyNotFoundError), ("x", hn.KeyNotFoundError)]:
        with pytest.raises(err):
            idx.undelete(key)
        assert snapshot(idx, store) == before
    for k in range(3, 300, 3):
        idx.undelete(k)
    assert idx.deleted_count == 0 and len(idx) == 300
    idx.check_integrity()
    again = idx.search_batch(store, queries, 5, ef=100)
    np.testing.assert_array_equal(again[0], base[0])  # links were kept: the same graph, same answers


def test_rename_and_resurrect_while_searching(rng) -> None:
    data = clustered(rng, 1200, 16)
    idx, store = build(hn.L2(), data[:600], m=8, extra=0)
    replaced: set = set()
    stop = threading.Event()
    errors: list = []

    def searcher() -> None:
        while not stop.is_set():
            dead = set(replaced)
            for q in data[600::50]:
                keys = [h.key for h in idx.search(store, q, 10)]
                if len(keys) != 10 or (set(keys) & dead):
                    errors.append(keys)

    threads = [threading.Thread(target=searcher) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for r in range(6):
            old = list(range(r * 50, r * 50 + 50))
            for k in old:
                idx.delete(k)
            replaced.update(old)  # no search may return these from here on
            idx.rename_deleted(old, [10_000 + k for k in old])
            idx.insert_batch(store, [10_000 + k for k in old], data[600 + r * 50 : 650 + r * 50])
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors
    assert idx.node_count == 600 and len(idx) == 600
    idx.check_integrity()


def test_a_key_being_inserted_again_is_left_alone(monkeypatch) -> None:
    # A deleted key an insert brings back stays deleted until it is relinked. Meanwhile
    # rename_deleted took its NodeId (the insert returned, its key was gone and the new name,
    # never inserted, was live with its vector), and a second insert of the key succeeded too.
    from hnsw_numba.core import mutation

    data = clustered(np.random.default_rng(8), 200, 8)
    idx, store = build(hn.L2(), data)
    idx.delete(7)
    v = data[7] + 0.5
    during: list = []
    relink = mutation.relink_resurrected

    def interleaved(state, rows, nids, efc, claimed):  # what other threads may do while the key is relinked
        for call in (lambda: idx.rename_deleted([7], [9999]), lambda: idx.undelete(7), lambda: idx.insert(store, 7, data[1])):
            with pytest.raises(hn.KeyExistsError, match="being inserted"):
                call()
        during.append(True)
        relink(state, rows, nids, efc, claimed)

    monkeypatch.setattr(mutation, "relink_resurrected", interleaved)
    idx.insert(store, 7, v)
    assert during and 7 in idx and 9999 not in idx and len(idx) == 200
    np.testing.assert_array_equal(idx.get_vectors(store, [7])[0], v)
    monkeypatch.undo()
    nid = idx.node_id(7)
    idx.delete(7)  # the claim is gone: the key can be renamed again
    assert idx.rename_deleted([7], [9999]).tolist() == [nid]


def _set_while_an_insert_relinks(monkeypatch, seed: int, deleted_after: bool = False):
    """Build 100 items, delete key 3 and insert it again; while the insert relinks the key,
    ``set(3, 2 * data[0])`` starts on another thread (and waits for the insert). With
    ``deleted_after`` a delete follows the insert's relinking at once: the key is linked, left
    deleted and its claim released in one step, so set() cannot see it live in between (a
    real delete after the relinking leaves a moment where it can, and set() then updates it
    before the delete). Returns ``(idx, store, data, results, errors)`` of the set, once it has
    finished."""
    from hnsw_numba.core import mutation

    data = clustered(np.random.default_rng(seed), 100, 8)
    idx, store = build(hn.L2(), data)
    idx.delete(3)
    relink = mutation.relink_resurrected
    result: list = []
    errors: list = []

    def call() -> None:
        try:
            result.append(idx.set(store, 3, data[0] * 2))
        except hn.HnswError as exc:
            errors.append(exc)

    t = threading.Thread(target=call)

    def interleaved(state, rows, nids, efc, claimed):
        if t.ident is not None:  # set()'s own relinking, when it brings the key back itself
            return relink(state, rows, nids, efc, claimed)
        t.start()
        t.join(0.05)
        if not deleted_after:
            return relink(state, rows, nids, efc, claimed)
        mutation.run_kernel(state, update_kernel, rows, nids, efc, 1)  # the relinking ...
        with state.alloc:  # ... and the delete after it: still deleted, no insert claiming it
            state.reviving.difference_update(nids.tolist())
            claimed.difference_update(nids.tolist())

    monkeypatch.setattr(mutation, "relink_resurrected", interleaved)
    idx.insert(store, 3, data[0])
    t.join(10)
    return idx, store, data, result, errors


def test_set_waits_for_an_insert_of_the_same_deleted_key(monkeypatch) -> None:
    idx, store, data, result, errors = _set_while_an_insert_relinks(monkeypatch, 9)
    assert not errors and result == [idx.node_id(3)]  # the upsert updated the key once the insert was done
    np.testing.assert_array_equal(idx.get_vectors(store, [3])[0], data[0] * 2)


def test_set_brings_back_a_key_deleted_again_after_the_insert_it_waited_for(monkeypatch) -> None:
    # set() waited for another call's insert of the deleted key; a delete followed that
    # insert, so the key was deleted with no insert claiming it: set() kept waiting for it
    # to come back and raised KeyExistsError ("being inserted by another call") instead of
    # bringing it back itself, as the upsert it is.
    idx, store, data, result, errors = _set_while_an_insert_relinks(monkeypatch, 10, deleted_after=True)
    assert not errors and result == [idx.node_id(3)] and 3 in idx
    np.testing.assert_array_equal(idx.get_vectors(store, [3])[0], data[0] * 2)


def _rename_between(idx: hn.Hnsw, victims: list, new_keys: list) -> callable:
    """A one-shot step that deletes ``victims`` and renames them to ``new_keys`` (a thread
    that runs between a search's walk and its key reads, as the OS may schedule it)."""
    armed = [True]

    def step() -> None:
        if armed[0]:
            armed[0] = False
            for k in victims:
                idx.delete(k)
            idx.rename_deleted(victims, new_keys)

    return step


def test_a_rename_between_a_search_and_its_key_reads_is_not_answered(rng, monkeypatch) -> None:
    """A node found live, deleted and renamed before the search read its key: the answer
    held the new key, which was never live (hnswlib's replace_deleted beside knn_query)."""
    from hnsw_numba.core import batch, single

    data = clustered(rng, 300, 8)
    for str_keys in (True, False):
        idx, store = build(hn.L2(), data[:200], m=8, extra=0)
        if str_keys:  # the single path reads str keys after its kernel (int keys inside it)
            idx = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=8, max_nodes=200, m=8, ef_construction=40, seed=1))
            store = hn.InMemoryVectorStore(8, 200)
            idx.insert_batch(store, [f"k{i}" for i in range(200)], data[:200])
            near = [h.key for h in idx.search(store, data[0], 5)]
            step = _rename_between(idx, near, [f"new{i}" for i in range(5)])
            with_keys = single.with_keys
            monkeypatch.setattr(single, "with_keys", lambda found, state: (step(), with_keys(found, state))[1])
            got = [h.key for h in idx.search(store, data[0], 5)]
            assert not set(got) & {f"new{i}" for i in range(5)} and not set(got) & set(near)
            monkeypatch.undo()
        near, _ = idx.search_batch(store, data[1:2], 5)
        step = _rename_between(idx, near[0].tolist(), [f"b{k}" if str_keys else 10_000 + int(k) for k in near[0]])
        keys_for = type(idx.state.keys).keys_for
        monkeypatch.setattr(type(idx.state.keys), "keys_for", lambda self, ids: (step(), keys_for(self, ids))[1])
        got, _ = idx.search_batch(store, data[1:2], 5)
        monkeypatch.undo()
        assert not set(got[0].tolist()) & set(near[0].tolist()) and all(str(k)[0] not in "b" and k != -1 and
                                                                          (str_keys or k < 10_000) for k in got[0].tolist())


def test_set_racing_a_delete_and_rename_of_its_key_writes_no_other_key(rng, monkeypatch) -> None:
    """set(5, A) looked key 5 up; before it wrote, 5 was deleted, its NodeId renamed to 555
    and 555 inserted with B: the write landed in 555's row."""
    data = clustered(rng, 120, 8)
    idx, store = build(hn.L2(), data[:100], m=8, extra=20)
    a, b = np.full(8, 7.0, np.float32), np.full(8, -3.0, np.float32)
    keys = idx.state.keys
    get, armed = keys.get, [True]

    def get_then_race(key):  # the look-up, then the other thread's turn
        out = get(key)
        if armed[0] and key == 5:
            armed[0] = False
            idx.delete(5)
            idx.rename_deleted([5], [555])
            idx.insert(store, 555, b)
        return out

    monkeypatch.setattr(keys, "get", get_then_race)
    idx.set(store, 5, a)
    monkeypatch.undo()
    np.testing.assert_array_equal(idx.get_vectors(store, [555])[0], b)
    np.testing.assert_array_equal(idx.get_vectors(store, [5])[0], a)


def test_undelete_with_the_store_relinks_after_repair(rng) -> None:
    """repair() drops every link to a deleted node: undeleted after it, the key was live and
    no walk reached it (a search for its own vector at ef 500 answered another key)."""
    x = rng.standard_normal((200, 8)).astype(np.float32)
    idx = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=8, max_nodes=200, m=4, ef_construction=32, seed=0))
    store = hn.InMemoryVectorStore(8, 200)
    idx.insert_batch(store, np.arange(200), x, num_threads=1)
    victims = [17, 42, 99]
    for k in victims:
        idx.delete(k)
    idx.repair(store)
    for k in victims:
        idx.undelete(k, store)
    assert idx.stats()["unreachable_live"] == 0 and idx.deleted_count == 0
    found, _ = idx.search_batch(store, x[victims], 1, ef=64)
    assert found[:, 0].tolist() == victims
    idx.check_integrity()


def test_a_renamed_key_comes_back_only_by_an_insert(small_data) -> None:
    """undelete of a new name rename_deleted gave made it live with the old key's vector."""
    data, _ = small_data
    idx, store = build(hn.L2(), data[:50])
    idx.delete(7)
    idx.rename_deleted([7], ["new"])
    with pytest.raises(hn.InvalidParameterError, match="insert it"):
        idx.undelete("new")
    assert "new" not in idx
    idx.insert(store, "new", data[60])
    assert idx.search(store, data[60], 1)[0].key == "new"
    idx.delete("new")
    assert idx.undelete("new", store) == 7 and "new" in idx  # inserted since: its own vector


def test_numbered_adds_stay_past_keys_renames_gave_and_forgot() -> None:
    """A numbered add after rename_deleted gave an old NodeId int key 4 answered 3, 4, 5: key 4
    resurrected the renamed node (two new items for three rows)."""
    x = np.random.default_rng(0).standard_normal((20, 4)).astype(np.float32)
    index = hn.Index(4, metric="l2")
    index.add("s", x[0])
    index.add(x[1:3])  # numbered: 1, 2 (NodeIds 1, 2)
    index.remove("s")
    index.native[0].rename_deleted(["s"], [4])
    before = index.native[0].node_count
    keys = index.add(x[3:6])
    assert min(keys) > 4 and index.native[0].node_count == before + 3
    index.add(9, x[6])
    index.remove(9)
    index.native[0].rename_deleted([9], ["t"])
    assert min(index.add(x[7:9])) > 9  # a number renamed away is not handed out again


def test_a_renamed_key_stays_refused_after_pickle_and_save(small_data, tmp_path) -> None:
    """The record of renamed, never-inserted NodeIds was lost by pickle and by save/open:
    undelete then brought the new name back with the old key's vector."""
    import pickle

    data, _ = small_data
    idx, store = build(hn.L2(), data[:50])
    idx.delete(5)
    idx.rename_deleted([5], [1000])
    hn.save(tmp_path / "r.zarr", idx, store)
    for copy in (pickle.loads(pickle.dumps(idx)), hn.load(tmp_path / "r.zarr")[0]):
        with pytest.raises(hn.InvalidParameterError, match="insert it"):
            copy.undelete(1000)
    idx.delete(7)
    with pytest.raises(hn.DimensionMismatchError):  # another index's store is refused before anything changes
        idx.undelete(7, hn.InMemoryVectorStore(4, 10))
    assert 7 not in idx and idx.undelete(7, store) == 7 and 7 in idx


def test_a_save_or_pickle_without_the_record_of_renames_refuses_every_undelete(small_data, tmp_path, monkeypatch) -> None:
    """Saves and pickles made before renamed NodeIds were recorded hold no record: read as
    none, undelete brought a renamed key back with the old key's vector. Unknown, every
    deleted NodeId of such a file counts as renamed; a file with an empty record does not."""
    import pickle

    from hnsw_numba.io import graph_payload

    data, _ = small_data
    idx, store = build(hn.L2(), data[:50])
    idx.delete_batch([5, 9])
    idx.rename_deleted([5], [1000])
    real_meta = graph_payload.meta
    monkeypatch.setattr(graph_payload, "meta", lambda *a, renamed, **kw: real_meta(*a, **kw))  # as a writer before the record
    hn.save(tmp_path / "r.zarr", idx, store)
    monkeypatch.undo()
    state = idx.__getstate__()
    del state["renamed"]
    for copy, copy_store in (hn.load(tmp_path / "r.zarr"), (pickle.loads(pickle.dumps(idx)).__class__.__new__(type(idx)), None)):
        if copy_store is None:
            copy.__setstate__(state)
        for key in (1000, 9):
            with pytest.raises(hn.InvalidParameterError, match="insert it with its vector"):
                copy.undelete(key)
        assert copy.search(copy_store or store, data[5], 1)[0].key != 1000
    idx.delete(7)
    hn.save(tmp_path / "s.zarr", idx, store)
    again, again_store = hn.load(tmp_path / "s.zarr")
    with pytest.raises(hn.InvalidParameterError):
        again.undelete(1000)
    assert again.undelete(7, again_store) == 7 and again.undelete(9, again_store) == 9  # recorded: none of these renamed


def test_a_renamed_key_stays_refused_in_a_materialized_copy_and_hnswlibs_format_refuses_it(small_data, tmp_path) -> None:
    """``materialize`` made a new key map without the record of renamed NodeIds, and an
    hnswlib file has no place for it: undelete (or the shim's unmark_deleted after a load or
    a pickle) brought the renamed key back with the old key's vector."""
    import pickle

    import hnsw_numba.hnswlib as shim

    data, _ = small_data
    idx, store = build(hn.L2(), data[:50])
    idx.delete(5)
    idx.rename_deleted([5], [105])
    copy, _ = idx.materialize(store)
    with pytest.raises(hn.InvalidParameterError, match="insert it"):
        copy.undelete(105)
    with pytest.raises(hn.HnswlibWriteError, match="rename_deleted gave"):
        hn.save_hnswlib(tmp_path / "r.bin", idx, store)
    assert not (tmp_path / "r.bin").exists()
    p = shim.Index("l2", data.shape[1])
    p.init_index(60)
    p.add_items(data[:50], np.arange(50))
    p.mark_deleted(5)
    p.native[0].rename_deleted([5], [105])
    with pytest.raises(RuntimeError, match="rename_deleted gave"):
        pickle.dumps(p)
    p.native[0].insert(p.native[1], 105, data[7])  # inserted: its own vector, nothing to refuse
    again = pickle.loads(pickle.dumps(p))
    np.testing.assert_allclose(again.get_items([105])[0], data[7], rtol=1e-6)


def test_a_settled_answer_pairs_each_key_with_its_own_vector(monkeypatch) -> None:
    """Past its reruns a batch overlapping renames kept the nodes live at its end: one deleted,
    renamed and inserted again meanwhile came back under the new key with the old vector's
    distance (1 in ~16,000 searches beside a delete / rename / insert loop, str keys)."""
    from hnsw_numba.core import keymap, renamed

    rng = np.random.default_rng(8)
    x = rng.standard_normal((200, 8)).astype(np.float32)
    idx = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=8, max_nodes=300, m=8, ef_construction=40, seed=1))
    store = hn.InMemoryVectorStore(8, 300)
    idx.insert_batch(store, [f"k{i}" for i in range(200)], x)
    near, _ = idx.search_batch(store, x[:1], 3)
    far = np.full(8, 50.0, np.float32)
    armed = [True]
    keys_for = keymap.KeyMap.keys_for

    def race(self, ids):  # between the walk and the key reads: delete, rename, insert again elsewhere
        if armed[0]:
            armed[0] = False
            idx.delete(near[0, 0])
            idx.rename_deleted([near[0, 0]], ["moved"])
            idx.insert(store, "moved", far)
        return keys_for(self, ids)

    monkeypatch.setattr(renamed, "RERUNS", 0)  # settle at once
    monkeypatch.setattr(keymap.KeyMap, "keys_for", race)
    got, dist = idx.search_batch(store, x[:1], 3)
    monkeypatch.undo()
    want = {k: float(((x[0] - (far if k == "moved" else x[int(k[1:])])) ** 2).sum()) for k in got[0].tolist() if k is not None}
    for k, d in zip(got[0].tolist(), dist[0].tolist()):
        assert k is None or abs(d - want[k]) <= 1e-4 * max(1.0, want[k]), (k, d, want[k])


def oracle(x: np.ndarray, keys: list, q: np.ndarray, metric: str, k: int) -> list:
    """Brute-force k nearest of ``keys`` (rows ``x``) to ``q``: squared L2 or largest inner product."""
    d = ((x - q) ** 2).sum(1) if metric == "l2" else -(x @ q)
    return [keys[i] for i in np.argsort(d, kind="stable")[:k]]


@pytest.mark.parametrize("metric", ["l2", "ip"])
@pytest.mark.parametrize("how", ["set", "insert", "insert_batch"])
def test_keys_brought_back_after_every_item_was_deleted_are_found(metric: str, how: str) -> None:
    """Every item deleted, then three deleted keys inserted again (the entry point's own key
    among them on even seeds): with every neighbour deleted the re-link finds nothing live to
    link to, and the reselected lists of the old neighbours pruned the keys, so searches from
    the deleted entry point missed keys that ``len`` counted (stats() counted none lost)."""
    for seed in range(8):
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((100, 6)).astype(np.float32)
        idx = hn.Hnsw(hn.L2() if metric == "l2" else hn.InnerProduct(), hn.HnswConfig(dim=6, max_nodes=100, m=8, seed=seed))
        store = hn.InMemoryVectorStore(6, 100)
        idx.insert_batch(store, np.arange(100), x, num_threads=1)
        entry = idx.key(idx.stats()["entry_point"])
        idx.delete_batch(np.arange(100))
        keys = [entry] if seed % 2 == 0 else []
        keys += [k for k in rng.permutation(100).tolist() if k != entry][: 3 - len(keys)]
        new = rng.standard_normal((3, 6)).astype(np.float32)
        if how == "insert_batch":
            idx.insert_batch(store, np.array(keys), new, num_threads=1)
        else:
            for k, v in zip(keys, new):
                getattr(idx, how)(store, k, v)
        assert len(idx) == 3 and idx.stats()["unreachable_live"] == 0
        queries = rng.standard_normal((6, 6)).astype(np.float32)
        found, _ = idx.search_batch(store, queries, 2, ef=200)
        assert found.tolist() == [oracle(new, keys, q, metric, 2) for q in queries], seed


def test_stats_counts_a_live_key_the_deleted_entry_point_does_not_reach() -> None:
    """Searches descend from the entry point, deleted or not: stats() counted reachability
    from the highest live node instead, which here is the lost key itself (0 unreachable)."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((60, 4)).astype(np.float32)
    idx = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=4, max_nodes=60, m=4, seed=4))
    store = hn.InMemoryVectorStore(4, 60)
    idx.insert_batch(store, np.arange(60), x, num_threads=1)
    a = idx.graph_arrays
    idx.delete_batch(np.arange(60))
    lost = next(k for k in range(60) if a.levels[k] == 0 and k != idx.stats()["entry_point"])
    idx.undelete(lost)  # the tombstone alone: its links stay
    for u in range(60):  # no level-0 list links to it
        own = [v for v in a.links0[u, 1 : 1 + (a.links0[u, 0] & COUNT_MASK)].tolist() if v != lost]
        a.links0[u, 1 : 1 + len(own)] = own
        a.links0[u, 0] = (a.links0[u, 0] & ~COUNT_MASK) | len(own)
    assert (idx.search_batch(store, x[lost][None], 1, ef=100)[0] < 0).all()
    assert idx.stats()["unreachable_live"] == 1
    idx.repair(store)
    assert idx.stats()["unreachable_live"] == 0
    assert idx.search_batch(store, x[lost][None], 1, ef=100)[0].tolist() == [[lost]]
