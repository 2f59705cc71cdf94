"""``set`` of a live key rewrites its row in place while searches read it without a lock.

Each test stops a ``set`` half way through its row write (the store's ``write`` writes part
of the row, then waits), runs a search (or ``get_vectors``) in another thread against the
torn row, and lets the write finish once the search has answered or waits for ``alloc``
(which every row rewrite holds). Every answer must carry the distance to the key's old
vector or to its new one, never the torn row's (brute-force oracle); ``get_vectors`` must
return one of the two vectors.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

import numpy as np
import pytest

import hnsw_numba as hn
from hnsw_numba.core.store_base import decode_rows

N, DIM, KEY = 200, 16, 7
STORES = ("float32", "float16", "bfloat16", "qi8", "walk")
WAIT = 20.0  # seconds: a safety net only, the events decide


class SpyLock:
    """``alloc`` that sets ``blocked`` when another thread has to wait for it."""

    def __init__(self, lock: Any, blocked: threading.Event) -> None:
        self.lock, self.blocked = lock, blocked

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if self.lock.acquire(False):
            return True
        self.blocked.set()
        return self.lock.acquire(blocking, timeout)

    def release(self) -> None:
        self.lock.release()

    def locked(self) -> bool:
        return self.lock.locked()

    __enter__ = acquire

    def __exit__(self, *exc: object) -> None:
        self.release()


def make_index(kind: str) -> tuple[hn.Hnsw, Any, np.ndarray]:
    rng = np.random.default_rng(11)
    x = rng.standard_normal((N, DIM)).astype(np.float32)
    metric = hn.L2Qi8() if kind == "qi8" else hn.L2()
    index = hn.Hnsw(metric, hn.HnswConfig(dim=DIM, max_nodes=N, m=8, ef_construction=64, seed=5))
    if kind == "qi8":
        store = hn.InMemoryQi8VectorStore(DIM, N)
    else:
        store = hn.InMemoryVectorStore(DIM, N, dtype="float32" if kind == "walk" else kind, walk_copy=kind == "walk")
    index.insert_batch(store, np.arange(N), x, num_threads=1)
    return index, store, x


def torn_write(store: Any, half: threading.Event, release: threading.Event) -> Callable[..., None]:
    """A ``write`` that stores the start of the row (a Qi8 row: its codes, with the old
    scale and zero point, as the column order writes them), then waits for ``release``."""
    write = store.write

    def patched(node_ids: np.ndarray, encoded: Any) -> None:
        parts = store.split_encoded(encoded)
        nid = int(np.asarray(node_ids)[0])
        first = getattr(store, store.COLUMNS[0][0])
        cut = DIM if store.kind == "qi8" else DIM // 2
        first[nid, :cut] = parts[0][0, :cut]
        half.set()
        assert release.wait(WAIT)
        write(node_ids, encoded)

    return patched


def during_torn_set(index: hn.Hnsw, store: Any, new: np.ndarray, read: Callable[[], Any], *, on_rows: bool = False) -> tuple[Any, np.ndarray]:
    """``read()`` in a thread while ``set(KEY, new)`` is stopped half way through its row.

    The write resumes once the read returned or waits for ``alloc``, or (``on_rows``) when
    the read asks the store for its rows a second time: a search running again, which then
    sees the finished row. Returns the read's result and the torn row's float32 vector.
    """
    half, release, progress = threading.Event(), threading.Event(), threading.Event()
    state = index.state
    alloc = state.alloc
    state.alloc = SpyLock(alloc, progress)
    store.write = torn_write(store, half, release)
    setter = threading.Thread(target=index.set, args=(store, KEY, new))
    out: dict[str, Any] = {}
    if on_rows:
        rows, calls = store.rows, []

        def counted() -> Any:
            if threading.current_thread() is reader:
                calls.append(1)
                if len(calls) == 2:
                    release.set()
                    setter.join(WAIT)
            return rows()

        store.rows = counted

    def run() -> None:
        try:
            out["value"] = read()
        finally:
            progress.set()

    reader = threading.Thread(target=run)
    try:
        setter.start()
        assert half.wait(WAIT)
        torn = decode_rows(store, np.array([KEY]))[0].copy()
        reader.start()
        assert progress.wait(WAIT)
        release.set()
        reader.join(WAIT)
        setter.join(WAIT)
    finally:
        release.set()
        del store.write
        if on_rows:
            del store.rows
        state.alloc = alloc
    assert not reader.is_alive() and not setter.is_alive()
    return out["value"], torn


def l2(q: np.ndarray, v: np.ndarray) -> float:
    return float(((q.astype(np.float64) - v) ** 2).sum())


def check_distance(d: float, q: np.ndarray, old: np.ndarray, new: np.ndarray, torn: np.ndarray) -> None:
    d_old, d_new, d_torn = l2(q, old), l2(q, new), l2(q, torn)
    assert min(abs(d_torn - d_old), abs(d_torn - d_new)) > 1.0  # the torn row is a third vector
    assert min(abs(d - d_old), abs(d - d_new)) <= 1e-3 * max(1.0, d), (d, d_old, d_new, d_torn)


def stored(store: Any) -> np.ndarray:
    return decode_rows(store, np.array([KEY]))[0].copy()


def key_distance(keys: Any, dists: Any) -> float:
    keys, dists = list(keys), list(dists)
    assert KEY in keys
    return float(dists[keys.index(KEY)])


def search_case(kind: str, how: str, on_rows: bool = False) -> None:
    index, store, x = make_index(kind)
    q = x[KEY] + np.float32(0.05)
    new = x[KEY] + np.float32(3.0)
    old = stored(store)
    queries = np.stack([x[3], q, x[50]])
    mask = np.ones(N, bool)
    mask[::3] = False
    mask[KEY] = True
    # a new Filter per search: its copy of the allowed rows (exact plans) is taken during the write;
    # a kept one answers through the call its first search left on it (core.kept_exact, core.kept_walk)
    kept = hn.Filter(index, mask)
    reads = {
        "single": lambda: index.search(store, q, N, ef=N),
        "batch": lambda: index.search_batch(store, queries, N, ef=N, num_threads=2),
        "exact": lambda: index.search(store, q, N, exact=True),
        "exact_batch": lambda: index.search_batch(store, queries, N, exact=True, num_threads=2),
        "filter_graph": lambda: index.search(store, q, N, filter=mask, ef=N, plan="graph"),
        "filter_exact": lambda: index.search(store, q, N, filter=mask, plan="exact"),
        "filter_exact_copy": lambda: index.search(store, q, N, filter=hn.Filter(index, mask), plan="exact"),
        "filter_exact_kept": lambda: index.search(store, q, N, filter=kept, plan="exact"),
        "filter_graph_kept": lambda: index.search(store, q, N, filter=kept, ef=N, plan="graph"),
        "filter_batch": lambda: index.search_batch(store, queries, N, filter=mask, ef=N, plan="graph", num_threads=2),
        "filter_exact_batch": lambda: index.search_batch(store, queries, N, filter=hn.Filter(index, mask), plan="exact", num_threads=2),
    }
    reads[how]()  # compiled and bound before the write starts
    result, torn = during_torn_set(index, store, new, reads[how], on_rows=on_rows)
    new = stored(store)
    if isinstance(result, tuple):  # a batch: the query next to the key is row 1
        d = key_distance(result[0][1], result[1][1])
    else:
        d = key_distance(result.keys, result.distances)
    check_distance(d, q, old, new, torn)


@pytest.mark.parametrize("kind", STORES)
@pytest.mark.parametrize("how", ["single", "batch", "exact", "exact_batch"])
def test_search_never_answers_a_torn_row(kind: str, how: str) -> None:
    search_case(kind, how)


@pytest.mark.parametrize("kind", ["float32", "qi8", "walk"])
@pytest.mark.parametrize("how", ["filter_graph", "filter_graph_kept", "filter_exact", "filter_exact_copy", "filter_exact_kept", "filter_batch", "filter_exact_batch"])
def test_filtered_search_never_answers_a_torn_row(kind: str, how: str) -> None:
    search_case(kind, how)


@pytest.mark.parametrize("kind", ["float32", "qi8"])
def test_search_that_runs_again_sees_the_finished_row(kind: str) -> None:
    search_case(kind, "single", on_rows=True)


@pytest.mark.parametrize("kind", STORES)
def test_get_vectors_never_returns_a_torn_row(kind: str) -> None:
    index, store, x = make_index(kind)
    old = stored(store)
    new = x[KEY] + np.float32(3.0)
    index.get_vectors(store, [KEY, 3])
    got, torn = during_torn_set(index, store, new, lambda: index.get_vectors(store, [3, KEY]))
    new = stored(store)
    assert not np.array_equal(torn, old) and not np.array_equal(torn, new)
    assert np.array_equal(got[1], old) or np.array_equal(got[1], new)
    assert np.array_equal(got[0], stored_row(store, 3))


def test_hnswlib_get_items_never_returns_a_torn_row() -> None:
    from hnsw_numba.hnswlib import Index

    rng = np.random.default_rng(11)
    x = rng.standard_normal((N, DIM)).astype(np.float32)
    compat = Index(space="l2", dim=DIM)
    compat.init_index(max_elements=N, ef_construction=64, M=8, random_seed=5)
    compat.add_items(x, np.arange(N), num_threads=1)
    index, store = compat.native
    old = stored(store)
    compat.get_items([KEY, 3])
    got, torn = during_torn_set(index, store, x[KEY] + np.float32(3.0), lambda: compat.get_items([3, KEY]))
    new = stored(store)
    assert not np.array_equal(torn, old) and not np.array_equal(torn, new)
    assert np.array_equal(got[1], old) or np.array_equal(got[1], new)


def stored_row(store: Any, nid: int) -> np.ndarray:
    return decode_rows(store, np.array([nid]))[0]


def test_rewrites_number_their_rows() -> None:
    index, store, x = make_index("float32")
    rw = index.state.row_writes
    assert rw.count == 0
    index.set(store, KEY, x[KEY] + 1)
    index.set(store, 3, x[3] + 1)
    assert rw.count == 4 and rw.seq[KEY] == 2 and rw.seq[3] == 4
    assert rw.rewritten(1, np.array([KEY, 3, 4, -1], np.int32)).tolist() == [True, True, False, False]
    assert rw.rewritten(3, np.array([KEY, 3], np.int32)).tolist() == [False, True]  # 3: the second rewrite was running
    assert rw.rewritten(4, np.array([KEY, 3], np.int32)).tolist() == [False, False]


@pytest.mark.parametrize("kind", ["float32", "qi8"])
def test_knn_graph_never_searches_with_a_torn_row(kind: str) -> None:
    # knn_graph searches with every item's stored vector: the key's row, read while a set
    # tears it, would give its graph row the distances of a vector never stored
    pytest.importorskip("scipy")
    index, store, x = make_index(kind)
    old = stored(store)
    new = x[KEY] + np.float32(3.0)
    index.knn_graph(store, 5, ef=N)  # compiled before the write starts
    graph, torn = during_torn_set(index, store, new, lambda: index.knn_graph(store, N - 1, ef=N, num_threads=1))
    new = stored(store)
    row = graph.getrow(KEY)
    assert row.nnz == N - 1
    others = decode_rows(store, row.indices.astype(np.int32))
    got = row.data.astype(np.float64)
    for v in (old, new, torn):
        want = ((others.astype(np.float64) - v) ** 2).sum(axis=1)
        if v is torn:
            assert np.abs(got - want).max() > 1.0  # the torn row is a third vector
        elif np.allclose(got, want, rtol=1e-3, atol=1e-3):
            return
    pytest.fail("the key's graph row matches neither its old nor its new vector")


@pytest.mark.parametrize("how", ["single", "filtered"])
def test_a_compaction_during_the_settling_makes_the_search_run_again(monkeypatch, how: str) -> None:
    # A search whose answer holds a rewritten row computes that answer's distances again
    # under alloc (after its reruns): a compaction between the answer and that step moves
    # the rows of its NodeIds, so the step read other items' vectors. The search must
    # notice the compaction after the step, not before it, and run again.
    from hnsw_numba.core import filtered, single
    from hnsw_numba.core.rowwrites import RERUNS

    path = single if how == "single" else filtered

    index, store, x = make_index("float32")
    for key in range(0, N, 3):
        if key != KEY:
            index.delete(key)
    q = x[KEY] + np.float32(0.05)
    mask = np.ones(N, bool)
    mask[1::3] = False
    mask[KEY] = True
    search = (lambda: index.search(store, q, 10)) if how == "single" else (lambda: index.search(store, q, 10, filter=mask, plan="graph"))
    search()  # bound and compiled before the patches
    rows, touched = store.rows, []

    def rows_then_rewrite() -> Any:  # the search reads its rows, then KEY's row is rewritten (same vector)
        if not touched:
            touched.append(1)
            index.set(store, KEY, x[KEY])
        return rows()

    real, compacted = path.settle_found, []

    def compact_then_settle(state, store_, query, prep, s0, found, reruns, again):
        if not compacted:
            compacted.append(1)
            worker = threading.Thread(target=index.compact, args=(store,))
            worker.start()
            worker.join(WAIT)
            reruns = RERUNS  # straight to the distances computed under alloc
        return real(state, store_, query, prep, s0, found, reruns, again)

    monkeypatch.setattr(store, "rows", rows_then_rewrite)
    monkeypatch.setattr(path, "settle_found", compact_then_settle)
    hits = search()
    assert compacted and touched
    for key, d in zip(hits.keys, hits.distances):
        want = l2(q, index.get_vectors(store, [key])[0])
        assert abs(d - want) <= 1e-3 * max(1.0, want), (key, d, want)
