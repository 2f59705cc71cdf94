"""``hnsw_numba.hnswlib``: hnswlib 0.8's Python API (Index, BFIndex) over the native index.

The behaviours hnswlib's own Python tests exercise (add / query / save / load, deletes and
undeletes, replace_deleted, resize, get_items, metadata, pickling, filters, BFIndex), checked
here against the brute-force oracle and, where the ``hnswlib`` package is installed,
against C++ hnswlib itself.
"""

from __future__ import annotations

import pickle
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import clustered

import hnsw_numba as hn
import hnsw_numba.hnswlib as hnswlib
from hnsw_numba.hnswlib_errors import HnswlibError

DIM = 12


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return clustered(np.random.default_rng(11), 900, DIM)


def oracle(space: str, x: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact (rows, distances) in hnswlib's definitions, float64."""
    x, q = x.astype(np.float64), q.astype(np.float64)
    if space == "l2":
        d = ((q[:, None, :] - x[None]) ** 2).sum(-1)
    elif space == "ip":
        d = 1 - q @ x.T
    else:
        d = 1 - (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (x / np.linalg.norm(x, axis=1, keepdims=True)).T
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(d, order, 1)


def make(data: np.ndarray, space: str = "l2", n: int = 600, cap: int | None = None, **kw) -> hnswlib.Index:
    p = hnswlib.Index(space=space, dim=DIM)
    p.init_index(max_elements=cap or n, ef_construction=100, M=8, **kw)
    p.add_items(data[:n])
    p.set_ef(200)
    return p


# ---------------------------------------------------------------------------- search
@pytest.mark.parametrize("space", ["l2", "ip", "cosine"])
def test_knn_query_matches_exact_in_hnswlib_units(space: str, data: np.ndarray) -> None:
    p = make(data, space)
    q = data[600:640]
    labels, dists = p.knn_query(q, k=10)
    assert labels.dtype == np.uint64 and dists.dtype == np.float32 and labels.shape == (40, 10)
    rows, exact = oracle(space, data[:600], q, 10)
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(labels.tolist(), rows.tolist())]) >= 0.97
    everything, full = oracle(space, data[:600], q, 600)
    by_row = np.empty_like(full)
    np.put_along_axis(by_row, everything, full, 1)
    np.testing.assert_allclose(dists, np.take_along_axis(by_row, labels.astype(np.int64), 1), atol=2e-4, rtol=1e-4)
    one_l, one_d = p.knn_query(q[3], k=10)  # one row: the single-query path, same answer
    np.testing.assert_array_equal(one_l, labels[3:4])
    np.testing.assert_allclose(one_d, dists[3:4], rtol=1e-6)
    assert one_l.shape == (1, 10) and one_l.dtype == np.uint64
    np.testing.assert_array_equal(p.knn_query(q[3:4].astype(np.float64).tolist(), k=10)[0], labels[3:4])


def test_fewer_than_k_raises_hnswlibs_runtime_error(data: np.ndarray) -> None:
    p = make(data, n=5)
    for q in (data[0], data[:3]):
        with pytest.raises(RuntimeError, match="Cannot return the results in a contiguous 2D array"):
            p.knn_query(q, k=6)
    p.mark_deleted(0)
    with pytest.raises(HnswlibError):
        p.knn_query(data[:2], k=5)
    assert p.knn_query(data[:2], k=0)[0].shape == (2, 0)
    with pytest.raises(RuntimeError):
        p.knn_query(data[:2, :5], k=1)  # wrong dimension: refused, not misread


def test_one_row_with_labels_past_int64(data: np.ndarray) -> None:
    p = hnswlib.Index("l2", DIM)
    p.init_index(20, M=8, ef_construction=40)
    p.add_items(data[:20], ids=np.arange(20, dtype=np.uint64) + np.uint64(2**63))
    one_l, one_d = p.knn_query(data[3], k=4)  # keys past int64: the single path hands over to the batch path
    rows_l, rows_d = p.knn_query(data[3:5], k=4)
    assert one_l.dtype == np.uint64 and one_l.shape == (1, 4) and int(one_l[0, 0]) == 2**63 + 3
    np.testing.assert_array_equal(one_l, rows_l[:1])
    np.testing.assert_allclose(one_d, rows_d[:1], rtol=1e-6)
    q = hnswlib.Index("l2", DIM)  # a list mixing labels past int64 with small ones stays exact
    q.init_index(5)
    q.add_items(data[:3], ids=[2**63 + 1, 2**63 + 2, 3])
    assert sorted(q.get_ids_list()) == [3, 2**63 + 1, 2**63 + 2]


def test_filter_is_a_predicate_on_labels(data: np.ndarray) -> None:
    p = hnswlib.Index("l2", DIM)
    p.init_index(600, M=8, ef_construction=100)
    p.add_items(data[:600], ids=np.arange(600) * 10)
    labels, _ = p.knn_query(data[:600:7], k=3, filter=lambda label: label % 20 == 0)
    assert (labels % 20 == 0).all()
    rows, _ = oracle("l2", data[:600:2], data[:600:7], 1)
    np.testing.assert_array_equal(labels[:, 0], rows[:, 0] * 20)
    with pytest.raises(RuntimeError):
        p.knn_query(data[:4], k=2, filter=lambda label: label == 10)

    def unknown_even(label: int) -> bool:  # hnswlib passes the predicate's exception on
        if label % 20 == 0:
            raise LookupError(label)
        return True

    with pytest.raises(LookupError):
        p.knn_query(data[0], k=3, filter=unknown_even)


# ---------------------------------------------------------------------------- items and labels
def test_add_items_labels_updates_and_capacity(data: np.ndarray) -> None:
    p = hnswlib.Index("l2", DIM)
    p.init_index(10, M=8)
    p.add_items(data[:4])  # labels 0..3
    p.add_items(data[4:6], ids=[100, 2])  # 2 exists: updated in place
    p.add_items(data[6:8])  # default labels continue after every row added: 6, 7
    assert sorted(p.get_ids_list()) == [0, 1, 2, 3, 6, 7, 100] and p.element_count == 7
    np.testing.assert_array_equal(p.get_items([2, 100, 7]), data[[5, 4, 7]])
    assert p.knn_query(data[5], k=1)[0][0, 0] == 2
    p.add_items(data[8:10], ids=[50, 50])  # a label twice in a batch: the last row wins
    np.testing.assert_array_equal(p.get_items([50]), data[9:10])
    with pytest.raises(hn.CapacityError) as exc:  # 8 + 3 > 10: nothing is added
        p.add_items(data[10:13], ids=[200, 201, 202])
    assert isinstance(exc.value, RuntimeError) and "exceeds the specified limit" in str(exc.value)
    assert p.element_count == 8 and 200 not in p.get_ids_list()
    with pytest.raises(RuntimeError):
        p.add_items(data[:2, :5])
    with pytest.raises(RuntimeError):
        p.add_items(data[:2], ids=[1, 2, 3])
    for ids in ([-1], [2**64], [-1.5], np.array([-1])):  # hnswlib: OverflowError for the lists (it wraps the array)
        with pytest.raises(OverflowError) as info:
            p.add_items(data[:1], ids=ids)
        assert isinstance(info.value, (TypeError, RuntimeError, hn.InvalidKeyError))
    with pytest.raises(OverflowError):
        p.get_items([-1])
    with pytest.raises(ValueError):
        p.add_items(np.full((1, DIM), np.nan))


@pytest.mark.parametrize("replace", [False, True])
def test_a_bad_row_anywhere_changes_nothing(data: np.ndarray, replace: bool) -> None:
    """A batch of new labels, updates and (with replace_deleted) reused places whose last row
    holds NaN raises before any of it is applied."""
    p = hnswlib.Index("l2", DIM)
    p.init_index(100, M=8, allow_replace_deleted=replace)
    p.add_items(data[:50])
    p.mark_deleted(7)
    before = (sorted(p.get_ids_list()), p.get_items(list(range(7)) + list(range(8, 50))))
    rows = data[50:53].copy()
    rows[2, 3] = np.nan
    with pytest.raises(hn.InvalidVectorError, match="vector 2"):
        p.add_items(rows, ids=[500, 5, 501], replace_deleted=replace)
    assert sorted(p.get_ids_list()) == before[0] and 500 not in p.get_ids_list()
    np.testing.assert_array_equal(p.get_items(list(range(7)) + list(range(8, 50))), before[1])
    p.unmark_deleted(7)  # still deleted, not given to label 500
    np.testing.assert_array_equal(p.get_items([7]), data[7:8])


def test_get_items_forms_and_errors(data: np.ndarray) -> None:
    p = make(data, "cosine", n=50)
    got = p.get_items([3, 7])
    assert got.dtype == np.float32 and got.shape == (2, DIM)
    np.testing.assert_allclose(got, data[[3, 7]] / np.linalg.norm(data[[3, 7]], axis=1, keepdims=True), rtol=1e-5, atol=1e-6)
    lst = p.get_items(np.array([[3], [7]]), return_type="list")  # knn_query's (n, 1) labels
    assert isinstance(lst, list) and isinstance(lst[0], list) and np.allclose(lst, got)
    assert p.get_items().shape == (0,) and p.get_items(return_type="list") == []
    with pytest.raises(ValueError):
        p.get_items(3)
    with pytest.raises(ValueError):
        p.get_items([3], return_type="tuple")
    p.mark_deleted(7)
    for ids in ([3, 7], [999]):
        with pytest.raises(RuntimeError, match="Label not found"):
            p.get_items(ids)


def test_ragged_labels_raise_typed_runtime_errors(data: np.ndarray) -> None:
    """Ragged label lists raise the shim's InvalidKeyError (a RuntimeError, as hnswlib's label
    errors, and a ValueError) and change nothing."""
    p = make(data, n=20)
    b = hnswlib.BFIndex("l2", DIM)
    b.init_index(30)
    b.add_items(data[:20])
    ragged = [[1], [2, 3]]
    for call in (lambda: p.add_items(data[20:22], ragged), lambda: p.mark_deleted(ragged), lambda: p.get_items(ragged),
                 lambda: b.add_items(data[20:22], ragged), lambda: b.delete_vector(ragged)):
        with pytest.raises(hn.InvalidKeyError) as info:
            call()
        assert isinstance(info.value, RuntimeError) and isinstance(info.value, ValueError)
    assert (p.get_current_count(), p.element_count, b.get_current_count()) == (20, 20, 20)
    np.testing.assert_array_equal(p.get_items([1, 2, 3]), data[1:4])


def test_metadata_before_and_after_init(data: np.ndarray) -> None:
    p = hnswlib.Index(space="ip", dim=DIM)
    assert repr(p) == f"<hnsw_numba.hnswlib.Index(space='ip', dim={DIM})>"
    assert (p.space, p.dim, p.M, p.ef_construction, p.max_elements, p.element_count, p.ef) == ("ip", DIM, 0, 0, 0, 0, 10)
    for call in (p.get_max_elements, p.get_current_count, lambda: p.knn_query(data[0]), lambda: p.add_items(data[:1])):
        with pytest.raises(RuntimeError):
            call()
    p.init_index(max_elements=100, M=6, ef_construction=3, random_seed=5)
    assert (p.M, p.ef_construction, p.max_elements, p.get_max_elements()) == (6, 6, 100, 100)  # max(efc, M)
    with pytest.raises(RuntimeError, match="already initiated"):
        p.init_index(10)
    p.ef = 33
    p.num_threads = 3
    assert p.ef == 33 and p.num_threads == 3
    with pytest.raises(AttributeError):
        p.dim = 5
    for bad in ("cosinus", "L2"):
        with pytest.raises(RuntimeError, match="Space name must be one of"):
            hnswlib.Index(bad, 4)
    assert issubclass(hnswlib.Index, object) and hnswlib.Index("l2", 4).num_threads >= 1


# ---------------------------------------------------------------------------- deletes
def test_mark_unmark_deleted_and_save_load(data: np.ndarray, tmp_path: Path) -> None:
    p = make(data)
    gone = list(range(0, 600, 3))
    for label in gone:
        p.mark_deleted(label)
    with pytest.raises(RuntimeError, match="already deleted"):
        p.mark_deleted(0)
    with pytest.raises(RuntimeError, match="Label not found"):
        p.mark_deleted(10_000)
    labels, _ = p.knn_query(data[:600], k=5)
    assert not set(gone) & set(labels.ravel().tolist())
    p.save_index(str(tmp_path / "d.bin"))
    r = hnswlib.Index("l2", DIM)
    r.load_index(str(tmp_path / "d.bin"), max_elements=400)  # below the count: the file's capacity
    assert r.ef == 10 and r.element_count == 600 and r.get_max_elements() == 600
    r.load_index(str(tmp_path / "d.bin"), max_elements=700)
    assert r.get_max_elements() == 700
    r.set_ef(200)
    np.testing.assert_array_equal(r.knn_query(data[:600], k=5)[0], labels)
    for label in gone:
        r.unmark_deleted(label)
    with pytest.raises(RuntimeError, match="not deleted"):
        r.unmark_deleted(0)
    labels, _ = r.knn_query(data[:600], k=1)
    assert np.mean(labels[:, 0] == np.arange(600)) >= 0.99
    r.add_items(data[600:610])  # default labels continue after the loaded elements
    assert r.get_ids_list()[-1] == 609


def test_bool_flags_are_read_as_hnswlibs_binding_reads_them(data: np.ndarray, tmp_path) -> None:
    """A str was taken by its truth: allow_replace_deleted="False" allowed replacements and
    replace_deleted="False" replaced a deleted item; hnswlib's binding refuses a str or a
    list there (TypeError) and reads a number or None by its truth."""
    for bad in ("False", [1]):
        q = hnswlib.Index(space="l2", dim=DIM)
        with pytest.raises(TypeError):
            q.init_index(10, allow_replace_deleted=bad)
        with pytest.raises(hnswlib.HnswlibError):  # nothing was initialised
            q.add_items(data[:1])
    p = make(data, n=5, cap=6, allow_replace_deleted=1)
    p.mark_deleted(2)
    with pytest.raises(TypeError):
        p.add_items(data[5:6], [100], replace_deleted="False")
    assert 100 not in p.get_ids_list() and p.get_current_count() == 5
    p.add_items(data[5:6], [100], replace_deleted=None)  # no replacement: a new place
    assert p.get_current_count() == 6
    p.save_index(str(tmp_path / "f.bin"))
    r = hnswlib.Index(space="l2", dim=DIM)
    with pytest.raises(TypeError):
        r.load_index(str(tmp_path / "f.bin"), allow_replace_deleted="no")
    r.load_index(str(tmp_path / "f.bin"), allow_replace_deleted=np.float32(1))
    r.add_items(data[6:7], [200], replace_deleted=np.True_)
    assert 200 in r.get_ids_list() and r.get_current_count() == 6
    from decimal import Decimal
    from fractions import Fraction

    for truth in (np.array(True), np.array([False]), Fraction(1, 2), Decimal(0)):  # hnswlib takes them by their truth
        hnswlib.Index(space="l2", dim=DIM).init_index(10, allow_replace_deleted=truth)
    with pytest.raises(TypeError):
        hnswlib.Index(space="l2", dim=DIM).init_index(10, allow_replace_deleted=np.array([1, 2]))


def test_replace_deleted_reuses_places(data: np.ndarray) -> None:
    p = make(data, n=400, allow_replace_deleted=True)  # full
    old = list(range(0, 400, 2))
    with pytest.raises(RuntimeError, match="disabled"):
        make(data, n=10).add_items(data[:1], ids=[5], replace_deleted=True)
    for label in old:
        p.mark_deleted(label)
    with pytest.raises(RuntimeError, match="exceeds the specified limit"):
        p.add_items(data[400:401], ids=[1000])  # no replace: a new place is needed
    new = np.arange(1000, 1200)
    p.add_items(data[400:600], ids=new, replace_deleted=True)
    assert p.element_count == 400 and p.get_current_count() == 400
    ids = set(p.get_ids_list())
    assert set(new) <= ids and not set(old) & ids and len(ids) == 400
    np.testing.assert_array_equal(p.get_items(new[:5]), data[400:405])
    with pytest.raises(RuntimeError, match="Label not found"):
        p.get_items([0])
    labels, _ = p.knn_query(data[400:600], k=1)
    assert np.mean(labels[:, 0] == new) >= 0.97
    live = np.concatenate([data[1:400:2], data[400:600]])
    rows, _ = oracle("l2", live, data[700:750], 10)
    names = np.concatenate([np.arange(1, 400, 2), new])
    found, _ = p.knn_query(data[700:750], k=10)
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found.tolist(), names[rows].tolist())]) >= 0.95
    p.mark_deleted(1001)
    with pytest.raises(RuntimeError, match="Can't use addPoint to update deleted elements"):
        p.add_items(data[:1], ids=[1001])
    p.add_items(data[:1], ids=[1001], replace_deleted=True)  # its own place again
    assert p.element_count == 400 and p.knn_query(data[0], k=1)[0][0, 0] == 1001


def test_resize_index(data: np.ndarray) -> None:
    p = make(data, n=300)
    with pytest.raises(RuntimeError):
        p.add_items(data[300:301])
    with pytest.raises(RuntimeError, match="Cannot resize"):
        p.resize_index(299)
    p.resize_index(600)
    p.add_items(data[300:600])
    assert p.get_max_elements() == 600 and p.element_count == 600
    labels, _ = p.knn_query(data[:600], k=1)
    assert np.mean(labels[:, 0] == np.arange(600)) >= 0.99
    p.resize_index(600)


def test_bad_files_raise_typed_runtime_errors(data: np.ndarray, tmp_path: Path) -> None:
    p = hnswlib.Index("l2", DIM)
    with pytest.raises(FileNotFoundError) as missing:
        p.load_index(str(tmp_path / "nothing.bin"))
    assert isinstance(missing.value, RuntimeError) and isinstance(missing.value, hn.HnswError)
    make(data, n=50).save_index(str(tmp_path / "ok.bin"))
    raw = (tmp_path / "ok.bin").read_bytes()
    (tmp_path / "cut.bin").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(hn.LegacyFormatError) as cut:
        p.load_index(str(tmp_path / "cut.bin"))
    assert isinstance(cut.value, RuntimeError) and cut.value.check == "level0-truncated"
    with pytest.raises(RuntimeError, match="dim-mismatch"):
        hnswlib.Index("l2", DIM + 1).load_index(str(tmp_path / "ok.bin"))  # hnswlib would misread it
    assert p.element_count == 0  # nothing was loaded


# ---------------------------------------------------------------------------- copies
def test_pickle_and_copy_keep_everything(data: np.ndarray) -> None:
    p = hnswlib.Index("cosine", DIM)
    p.num_threads = 2
    p0 = pickle.loads(pickle.dumps(p))  # not initialised yet
    assert p0.num_threads == 2 and p0.element_count == 0
    p.init_index(700, M=8, ef_construction=50, allow_replace_deleted=True)
    p.ef = 150
    p.add_items(data[:500])
    p.mark_deleted(4)
    for q in (pickle.loads(pickle.dumps(p)), hnswlib.Index(p), hnswlib.Index(index=p), hnswlib.Index(p.__getstate__()[0])):
        assert (q.ef, q.M, q.ef_construction, q.max_elements, q.element_count, q.num_threads) == (150, 8, 50, 700, 500, 2)
        for a, b in zip(q.knn_query(data[500:540], k=5), p.knn_query(data[500:540], k=5)):
            np.testing.assert_array_equal(a, b)
        q.add_items(data[500:510])  # labels continue at 500, and the copy is independent
        assert q.element_count == 510 and p.element_count == 500
        q.add_items(data[:1], ids=[900], replace_deleted=True)  # the flag came along
        assert q.element_count == 510 and 4 not in q.get_ids_list()


def test_native_is_one_call_away(data: np.ndarray) -> None:
    p = make(data, n=100, cap=101)
    index, store = p.native
    assert (index, store) == p.to_native() and isinstance(index, hn.Hnsw) and len(index) == 100
    index.insert(store, "a str key", data[100])  # the native API takes it from here
    assert index.search(store, data[100], 1)[0].key == "a str key"


# ---------------------------------------------------------------------------- threads
def test_searches_while_adding_and_deleting(data: np.ndarray) -> None:
    p = make(data, n=300, cap=900)
    deleted: set = set()
    stop, errors = threading.Event(), []

    def search() -> None:
        while not stop.is_set():
            gone = set(deleted)
            labels, _ = p.knn_query(data[:40], k=5, num_threads=1)
            one, _ = p.knn_query(data[7], k=5)
            errors.extend(set(labels.ravel().tolist() + one.ravel().tolist()) & gone)

    threads = [threading.Thread(target=search) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for r in range(6):
            p.add_items(data[300 + 100 * r : 400 + 100 * r], num_threads=-1)
            for label in range(50 * r, 50 * r + 50, 2):
                p.mark_deleted(label)
                deleted.add(label)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors and p.element_count == 900
    p.native[0].check_integrity()


# ---------------------------------------------------------------------------- BFIndex
@pytest.mark.parametrize("space", ["l2", "ip", "cosine"])
def test_bfindex_is_exact(space: str, data: np.ndarray, tmp_path: Path) -> None:
    bf = hnswlib.BFIndex(space=space, dim=DIM)
    bf.init_index(max_elements=400)
    bf.add_items(data[:300], ids=np.arange(300) + 5000)
    bf.delete_vector(5007)
    bf.delete_vector(123456)  # unknown: ignored, as hnswlib does
    assert bf.get_current_count() == 299 and bf.get_max_elements() == 400
    keep = np.array([i for i in range(300) if i != 7])
    rows, dists = oracle(space, data[keep], data[300:340], 8)
    labels, d = bf.knn_query(data[300:340], k=8)
    np.testing.assert_array_equal(labels, keep[rows] + 5000)
    np.testing.assert_allclose(d, dists, atol=2e-4, rtol=1e-4)
    fl, _ = bf.knn_query(data[300:340], k=3, filter=lambda label: label % 2 == 1)
    assert (fl % 2 == 1).all()
    bf.save_index(str(tmp_path / "bf.bin"))
    again = hnswlib.BFIndex(space=space, dim=DIM)
    again.load_index(str(tmp_path / "bf.bin"))
    for a, b in zip(again.knn_query(data[300:340], k=8), (labels, d)):
        np.testing.assert_array_equal(a, b)
    again.add_items(data[:1], ids=[5001])  # the look-up is rebuilt: an existing label is overwritten
    assert again.get_current_count() == 299
    with pytest.raises(RuntimeError):
        again.knn_query(data[:1], k=300)


def _bf_file(path: Path, rows: np.ndarray, labels: list[int], cap: int) -> None:
    """hnswlib's brute-force file: (max_elements, bytes per record, count), then vector + u64 label records."""
    import struct

    with open(path, "wb") as f:
        f.write(struct.pack("<QQQ", cap, 4 * DIM + 8, len(labels)))
        for row, label in zip(rows, labels):
            f.write(np.asarray(row, "<f4").tobytes() + struct.pack("<Q", label))
        f.write(bytes((cap - len(labels)) * (4 * DIM + 8)))


@pytest.mark.parametrize("space", ["cosine", "l2"])
def test_bfindex_refuses_nan_rows_and_queries(space: str, data: np.ndarray) -> None:
    """Cosine normalised before the check: a NaN row was stored as a zero vector and a NaN
    query answered (distance 1 to everything), where l2 and Index refuse both."""
    p = hnswlib.BFIndex(space=space, dim=DIM)
    p.init_index(10)
    p.add_items(data[:5], np.arange(5))
    bad = data[5:6].copy()
    bad[0, 1] = np.nan
    with pytest.raises(hn.InvalidVectorError):
        p.add_items(bad, [99])
    with pytest.raises(hn.InvalidVectorError):
        p.knn_query(np.full(DIM, np.nan, np.float32), k=2)
    assert p.get_current_count() == 5


def test_knn_query_checks_num_threads_for_one_query_too(data: np.ndarray) -> None:
    """The one-query path never looked at num_threads: None, 1.0 or "four" passed for one
    float32 row and raised for two (hnswlib raises TypeError for each)."""
    p = make(data, n=50)
    for bad in (None, 1.0, "four"):
        for q in (data[0], data[:1], data[:2]):
            with pytest.raises(TypeError):
                p.knn_query(q, k=1, num_threads=bad)
    assert p.knn_query(data[0], k=1, num_threads=np.int64(1))[0][0, 0] == 0


def test_bfindex_refused_file_leaves_the_index_as_it_was(data: np.ndarray, tmp_path: Path) -> None:
    """A file with a NaN vector, or one label on two records (a delete would leave one
    behind), is refused; the index keeps its items (the NaN file emptied it to 4 rows)."""
    bf = hnswlib.BFIndex("l2", DIM)
    bf.init_index(100)
    bf.add_items(data[:50], ids=np.arange(1000, 1050))
    before = bf.knn_query(data[:5], k=3)
    nan = data[1].copy()
    nan[2] = np.nan
    _bf_file(tmp_path / "nan.bin", [data[0], nan], [10, 11], 4)
    _bf_file(tmp_path / "dup.bin", data[:3], [10, 11, 10], 4)
    for name in ("nan.bin", "dup.bin"):
        with pytest.raises(ValueError):
            bf.load_index(str(tmp_path / name))
        assert (bf.get_max_elements(), bf.get_current_count()) == (100, 50)
        for a, b in zip(bf.knn_query(data[:5], k=3), before):
            np.testing.assert_array_equal(a, b)


def test_hnswlib_habits_held(data: np.ndarray) -> None:
    """What ported code relies on: wrong types raise TypeError, an ef past MAX_EF searches,
    a restored copy numbers on from its element count, and a list mixing labels past int64
    with small ones reads the right rows (NumPy would round it through float64)."""
    p = make(data, n=20, cap=30)
    for call in (lambda: p.set_ef(1.5), lambda: p.resize_index(30.0), lambda: p.knn_query(data[0], k=2.0),
                 lambda: p.get_items([1], return_type=None), lambda: hnswlib.Index("l2", 4.0)):
        with pytest.raises(TypeError):
            call()
    p.set_ef(2_000_000)
    assert p.ef == 2_000_000 and p.knn_query(data[3], k=1)[0].tolist() == [[3]]
    p.add_items(data[20:21], [1])  # an update: the count stays 20
    for copy in (pickle.loads(pickle.dumps(p)), hnswlib.Index(p)):
        copy.add_items(data[21:22])
        assert 20 in copy.get_ids_list() and 21 not in copy.get_ids_list()  # hnswlib's copy goes on at 20
    p.add_items(data[22:24], [2**63 + 1, 2**63])
    np.testing.assert_array_equal(p.get_items([7, 2**63 + 1]), data[[7, 22]])
    with pytest.raises(RuntimeError, match="Label not found"):
        p.get_items([7, 2**63 + 2])


# ---------------------------------------------------------------------------- C++ hnswlib
@pytest.mark.parametrize("space", ["l2", "cosine"])
def test_files_go_both_ways_with_cpp_hnswlib(space: str, data: np.ndarray, tmp_path: Path) -> None:
    real = pytest.importorskip("hnswlib")
    p = make(data, space, cap=700)
    for label in range(0, 600, 5):
        p.mark_deleted(label)
    p.save_index(str(tmp_path / "ours.bin"))
    r = real.Index(space=space, dim=DIM)
    r.load_index(str(tmp_path / "ours.bin"))
    r.set_ef(200)
    ours, theirs = p.knn_query(data[600:700], k=10), r.knn_query(data[600:700], k=10, num_threads=1)
    np.testing.assert_array_equal(ours[0], theirs[0])
    np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-5, atol=1e-6)
    r.add_items(data[600:650])
    r.save_index(str(tmp_path / "theirs.bin"))
    back = hnswlib.Index(space, DIM)
    back.load_index(str(tmp_path / "theirs.bin"))
    back.set_ef(200)
    np.testing.assert_array_equal(back.knn_query(data[650:700], k=10)[0], r.knn_query(data[650:700], k=10, num_threads=1)[0])
    bf = real.BFIndex(space="l2", dim=DIM)
    bf.init_index(100)
    bf.add_items(data[:60])
    bf.save_index(str(tmp_path / "bf.bin"))
    mine = hnswlib.BFIndex("l2", DIM)
    mine.load_index(str(tmp_path / "bf.bin"))
    np.testing.assert_array_equal(mine.knn_query(data[60:70], k=4)[0], bf.knn_query(data[60:70], k=4)[0])


def test_a_load_between_a_call_and_its_lock_is_not_lost(data: np.ndarray, tmp_path: Path, monkeypatch) -> None:
    """add_items read the index before taking the lock: a load_index in between made the
    add land in the replaced index (returned normally, label absent)."""
    import hnsw_numba.hnswlib as shim

    other = make(data, n=50, cap=60)
    other.save_index(str(tmp_path / "other.bin"))
    p = make(data, n=20, cap=30)
    rows, armed = shim.input_rows, [True]

    def load_first(*a):
        if armed[0]:
            armed[0] = False
            p.load_index(str(tmp_path / "other.bin"), max_elements=100)
        return rows(*a)

    monkeypatch.setattr(shim, "input_rows", load_first)
    p.add_items(data[60:61], [777])
    assert 777 in p.get_ids_list() and p.element_count == 51


def test_fewer_answers_than_k_with_labels_past_int64_is_hnswlibs_runtime_error(data: np.ndarray) -> None:
    """With labels of 2**63 and more the keys are Python ints, padded with -1: too few answers
    are hnswlib's RuntimeError, not an OverflowError from casting the -1 to uint64."""
    p = hnswlib.Index("l2", DIM)
    p.init_index(10)
    p.add_items(data[:2], np.array([2**63 + 5, 3], np.uint64))
    for flt in (None, lambda label: label > 2**63):
        with pytest.raises(RuntimeError, match="contiguous 2D array"):
            p.knn_query(data[0], k=3, filter=flt)
    labels, _ = p.knn_query(data[0], k=1, filter=lambda label: label > 2**63)
    assert labels.tolist() == [[2**63 + 5]]


# ---------------------------------------------------------------------------- labels hnswlib cannot carry, strings, state
@pytest.mark.parametrize("key", ["a str key", 2**70])
def test_native_keys_no_label_can_be_raise_typed_runtime_errors(key: object, data: np.ndarray) -> None:
    """A key added through ``native`` that is no uint64 label is a typed RuntimeError wherever
    the shim would hand it out as a label; searches that never reach it still answer."""
    p = make(data, n=20, cap=30)
    index, store = p.native
    index.insert(store, key, data[20])
    for call in (lambda: p.knn_query(data[20], k=2), lambda: p.knn_query(data[20:22], k=2),
                 lambda: p.knn_query(data[20], k=2, filter=lambda label: True), p.get_ids_list):
        with pytest.raises(hn.InvalidKeyError, match="cannot be an hnswlib label") as info:
            call()
        assert isinstance(info.value, RuntimeError)
    labels, _ = p.knn_query(data[20], k=2, filter=lambda label: label != key)
    assert labels.dtype == np.uint64 and labels.shape == (1, 2) and p.get_current_count() == 21


@pytest.mark.parametrize("key", ["a str key", 2**70])
def test_pickling_native_keys_no_label_can_be_is_save_indexs_runtime_error(key: object, data: np.ndarray, tmp_path: Path) -> None:
    p = make(data, n=20, cap=30)
    index, store = p.native
    index.insert(store, key, data[20])
    for call in (lambda: pickle.dumps(p), lambda: p.save_index(str(tmp_path / "x.bin")), p.__getstate__):
        with pytest.raises(hn.HnswError, match="hnswlib labels are uint64|outside hnswlib's uint64 labels") as info:
            call()
        assert isinstance(info.value, RuntimeError)
    assert p.get_current_count() == 21 and not (tmp_path / "x.bin").exists()


def test_numeric_string_labels_read_as_hnswlib_reads_them(data: np.ndarray) -> None:
    """hnswlib converts labels through NumPy, which parses strings as ``int()`` does; a string
    that is no integer in [0, 2**64) is refused, and nothing is added."""
    x = data[:3]
    for ids, want in ((["10", "11", "12"], [10, 11, 12]), (np.array(["10", "11", "12"]), [10, 11, 12]),
                      ([b"7", b" 8", "+9"], [7, 8, 9]), (np.array(["1", "2", "3"], dtype=object), [1, 2, 3]),
                      (["10", 11, np.uint8(12)], [10, 11, 12]), (["18446744073709551615", "0", "1"], [2**64 - 1, 0, 1])):
        for cls in (hnswlib.Index, hnswlib.BFIndex):
            p = cls("l2", DIM)
            p.init_index(5)
            p.add_items(x, ids)
            assert p.knn_query(x, k=1)[0].ravel().tolist() == want  # each row's nearest is itself
    p = hnswlib.Index("l2", DIM)
    p.init_index(5)
    p.add_items(x, ["10", "11", "12"])
    np.testing.assert_array_equal(p.get_items(["11", b"12"]), x[1:])
    for bad in (["a", "1", "2"], ["1.5", "1", "2"], ["-1", "1", "2"], ["18446744073709551616", "1", "2"], ["", "1", "2"]):
        with pytest.raises(hn.InvalidKeyError) as info:
            p.add_items(x, bad)
        assert isinstance(info.value, RuntimeError) and isinstance(info.value, ValueError)
    b = hnswlib.BFIndex("l2", DIM)
    b.init_index(5)
    b.add_items(x, [10, 11, 12])
    for call in (lambda: p.mark_deleted("10"), lambda: p.unmark_deleted(b"10"), lambda: p.mark_deleted(10.0),
                 lambda: b.delete_vector("10")):
        with pytest.raises(TypeError):  # hnswlib's binding takes an int here, not a str or a float
            call()
    assert sorted(p.get_ids_list()) == [10, 11, 12] and p.knn_query(x, k=3)[0].shape == (3, 3)
    assert b.knn_query(x, k=3)[0].shape == (3, 3)


def test_string_and_float_labels_side_by_side_with_cpp_hnswlib(data: np.ndarray) -> None:
    real = pytest.importorskip("hnswlib")
    x = data[:3]
    for ids in (["10", "11", "12"], np.array(["4", " 5", "6"]), [1.5, 2.7, 3.0], ["a", "1", "2"], ["1.5", "1", "2"],
                ["-1", "1", "2"], [-1, 2, 3], ["1_000", "1", "2"]):
        got = []
        for mod in (real, hnswlib):
            p = mod.Index("l2", DIM)
            p.init_index(5)
            try:
                p.add_items(x, ids)
                got.append(sorted(p.get_ids_list()))
            except (ValueError, OverflowError, RuntimeError):
                got.append("refused")
        assert got[0] == got[1], ids


def test_getstate_is_hnswlibs_one_tuple_and_either_dict_rebuilds(data: np.ndarray) -> None:
    """``Index(p.__getstate__()[0])`` is hnswlib's copy idiom; hnswlib's own state dict rebuilds
    the same index here, and a state that does not load changes nothing."""
    p = make(data, n=100, cap=120, allow_replace_deleted=True)
    p.mark_deleted(5)
    state = p.__getstate__()
    assert isinstance(state, tuple) and len(state) == 1 and isinstance(state[0], dict)
    q = hnswlib.Index(state[0])
    assert (q.element_count, q.max_elements, q.ef, q.M) == (100, 120, 200, 8) and 5 not in q.knn_query(data[5], k=3)[0]
    assert hnswlib.Index(hnswlib.Index("ip", 3).__getstate__()[0]).element_count == 0
    real = pytest.importorskip("hnswlib")
    r = real.Index("cosine", DIM)
    r.init_index(150, M=6, ef_construction=40, allow_replace_deleted=True)
    r.add_items(data[:100], np.arange(100) * 3)
    r.mark_deleted(9)
    r.set_ef(60)
    params = r.__getstate__()[0]
    s = hnswlib.Index(params)
    assert (s.space, s.element_count, s.max_elements, s.ef, s.M, s.ef_construction) == ("cosine", 100, 150, 60, 6, 40)
    assert sorted(s.get_ids_list()) == sorted(r.get_ids_list())
    np.testing.assert_array_equal(s.knn_query(data[100:130], k=5)[0], r.knn_query(data[100:130], k=5, num_threads=1)[0])
    s.add_items(data[100:101], [1000], replace_deleted=True)  # allow_replace_deleted came along
    assert s.element_count == 100 and 9 not in s.get_ids_list()
    for flag in (np.True_, 1):  # hnswlib's binding reads the flags as C++ bools: they restored nothing
        t = hnswlib.Index(dict(params, index_inited=flag, allow_replace_deleted=np.True_))
        assert t.element_count == 100 and sorted(t.get_ids_list()) == sorted(r.get_ids_list())
    with pytest.raises(hn.InvalidParameterError):
        hnswlib.Index(dict(params, index_inited="yes"))
    torn = dict(params, data_level0=params["data_level0"][:-5])
    for bad in (torn, dict(params, M="8"), {k: v for k, v in params.items() if k != "link_lists"}):
        with pytest.raises(hn.HnswError) as info:
            q.__setstate__(bad)
        assert isinstance(info.value, RuntimeError)
    assert q.element_count == 100 and q.space == "l2" and q.knn_query(data[7], k=1)[0].tolist() == [[7]]


def test_get_items_of_no_labels_is_hnswlibs_empty_answer(data: np.ndarray) -> None:
    p = make(data, n=20)
    for ids in ([], (), np.array([], np.uint64), np.array([])):
        got = p.get_items(ids)
        assert got.shape == (0,) and got.dtype == np.float32
        assert p.get_items(ids, return_type="list") == []


def test_values_past_the_limits_are_refused_and_named(data) -> None:
    """BFIndex answered a query past the magnitude limit with arbitrary labels at distance inf
    (add_items and Index.knn_query refuse it); a float64 1e39 was reported as NaN or inf."""
    b = hnswlib.BFIndex("l2", DIM)
    b.init_index(100)
    b.add_items(data[:50])
    with pytest.raises(RuntimeError, match="overflow float32") as exc:
        b.knn_query(np.full(DIM, 1e30, np.float32), k=3)
    assert isinstance(exc.value, hn.InvalidVectorError)
    assert b.knn_query(data[:2], k=3)[0].shape == (2, 3)
    p = hnswlib.Index("l2", DIM)
    p.init_index(100)
    rows = data[:5].astype(np.float64)
    rows[3, 1] = 1e39
    with pytest.raises(RuntimeError, match="vector 3 has a value beyond float32's range") as exc:
        p.add_items(rows)
    assert isinstance(exc.value, hn.InvalidVectorError) and p.get_current_count() == 0
    # as a Python int, a Decimal or text (hnswlib reads all three) it was "cannot read vectors"
    from decimal import Decimal

    for big in (10**40, Decimal("1e39"), "1e39"):
        rows = [[1.0] * DIM, [big] + [0.0] * (DIM - 1)]
        with pytest.raises(RuntimeError, match="vector 1 has a value beyond float32's range"):
            p.add_items(rows)
    assert p.get_current_count() == 0


def test_a_state_with_scalar_fields_is_refused_typed() -> None:
    """``Index(params)`` with a scalar ``element_levels`` raised a bare IndexError."""
    params = {"ser_version": 1, "index_inited": True, "space": "l2", "dim": 4, "ef": 10, "num_threads": 1, "seed": 100,
              "cur_element_count": 2, "size_links_per_element": 4, "element_levels": 0, "link_lists": [],
              "data_level0": []}
    for bad in (0, -1, 2**40, 1.5, True):
        with pytest.raises(hn.InvalidParameterError):
            hnswlib.Index(dict(params, element_levels=bad))


def test_array_valued_space_and_state_fields_are_refused_typed() -> None:
    """An array as ``space`` or ``ser_version`` compared element-wise: a bare ValueError
    ("truth value of an array is ambiguous")."""
    two = np.array(["l2", "ip"])
    for make in (lambda: hnswlib.Index(two, 4), lambda: hnswlib.BFIndex(two, 4)):
        with pytest.raises(hn.InvalidParameterError):
            make()
    p = hnswlib.Index("l2", 4)
    state = p.__getstate__()[0]
    for field in ("space", "ser_version"):
        with pytest.raises(hn.InvalidParameterError):
            hnswlib.Index(dict(state, **{field: np.zeros(2)}))
