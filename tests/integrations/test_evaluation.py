"""Evaluation helpers: exact_neighbors against a float64 oracle, recall by hand, tune_ef on a small index."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import hnsw_numba as hn
from conftest import build, clustered, shared_path
from naive import exact_knn
from hnsw_numba.evaluation import best_of, load_ann_benchmarks
from hnsw_numba.io.vectors import VectorSource


# ============================================================================ exact_neighbors
def oracle(data: np.ndarray, queries: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Every distance in float64, fully sorted (ties to the lower row): tests/naive.py."""
    return exact_knn(metric, data, queries, k)


@pytest.fixture(scope="module")
def xq() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(21)
    return rng.standard_normal((413, 12)).astype(np.float32), rng.standard_normal((37, 12)).astype(np.float32)


@pytest.mark.parametrize("metric", ["l2", "cosine", "ip"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("chunk,query_chunk", [(None, None), (1, 1), (5, 3), (64, 10), (413, 37), (1000, 100)])
def test_exact_neighbors_equals_the_oracle(xq, metric, dtype, chunk, query_chunk) -> None:
    x, q = xq
    want_i, want_d = oracle(x, q, 10, metric)
    got_i, got_d = hn.exact_neighbors(x, q, 10, metric, dtype=dtype, chunk=chunk, query_chunk=query_chunk)
    assert got_i.dtype == np.int64 and got_d.dtype == dtype and got_i.shape == (37, 10)
    np.testing.assert_array_equal(got_i, want_i)
    # the oracle normalises cosine vectors in float32 as the index does; float64 here normalises in float64
    tol = 1e-5 if dtype == np.float32 else (1e-6 if metric == "cosine" else 1e-12)
    np.testing.assert_allclose(got_d, want_d, rtol=tol, atol=tol)


def test_metric_objects_and_threads_agree(xq) -> None:
    x, q = xq
    by_name = hn.exact_neighbors(x, q, 7, "cosine")
    for kwargs in ({"metric": hn.Cosine()}, {"metric": hn.CosineQi8()}, {"metric": "cosine", "num_threads": 1}):
        i, d = hn.exact_neighbors(x, q, 7, **kwargs)
        np.testing.assert_array_equal(i, by_name[0])
        np.testing.assert_array_equal(d, by_name[1])


def test_distances_are_the_index_distances(small_data) -> None:
    data, queries = small_data
    for metric in (hn.L2(), hn.Cosine(), hn.InnerProduct()):
        index, store = build(metric, data)
        keys, dists = index.search_batch(store, queries, 10, exact=True)
        i, d = hn.exact_neighbors(data, queries, 10, metric)
        assert hn.recall(i, keys) == 1.0
        np.testing.assert_allclose(d, dists, rtol=1e-5, atol=1e-5)


def test_fewer_rows_than_k_pad(xq) -> None:
    x, q = xq
    i, d = hn.exact_neighbors(x[:4], q[:3], 6, "l2", chunk=3)
    assert (i[:, 4:] == -1).all() and np.isinf(d[:, 4:]).all()
    np.testing.assert_array_equal(i[:, :4], oracle(x[:4], q[:3], 4, "l2")[0])


def test_ties_go_to_the_lower_row() -> None:
    x = np.repeat(np.eye(3, dtype=np.float32), 4, axis=0)  # every row four times
    i, _ = hn.exact_neighbors(x, np.eye(3, dtype=np.float32), 4, "l2", chunk=5)
    np.testing.assert_array_equal(i, [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]])


def duplicates(n: int = 20_000) -> tuple[np.ndarray, np.ndarray]:
    """``n`` copies of one row with six distinct rows among them, and queries at the copy, at the
    distinct rows and elsewhere: every copy ties at the k-th score of most queries."""
    rng = np.random.default_rng(5)
    x = np.repeat(rng.standard_normal((1, 8)).astype(np.float32), n, axis=0)
    where = [0, 3, 777, n // 2, n - 2, n - 1]
    x[where] = rng.standard_normal((len(where), 8)).astype(np.float32)
    q = np.concatenate([x[[1, 3, 777, n - 1]], x[[1]] + 0.01, rng.standard_normal((19, 8)).astype(np.float32)])
    return x, q


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("pairs,chunk", [(None, None), (100, None), (1000, 7000), (1, 3000)])
def test_exact_duplicates_give_the_oracle(dtype, pairs, chunk, monkeypatch) -> None:
    from hnsw_numba import exact

    x, q = duplicates()
    if pairs is not None:  # the shortlist merged in many small ranges of rows, across blocks too
        monkeypatch.setattr(exact, "_MERGE_PAIRS", pairs, raising=False)
    want_i, want_d = oracle(x, q, 10, "l2")
    got_i, got_d = hn.exact_neighbors(x, q, 10, "l2", dtype=dtype, chunk=chunk)
    np.testing.assert_array_equal(got_i, want_i)
    np.testing.assert_allclose(got_d, want_d, rtol=1e-5, atol=1e-6)


def test_the_merge_of_a_shortlist_of_ties_stays_bounded(monkeypatch) -> None:
    """Every copy is shortlisted: the arrays the merge allocates stay a fraction of a score block
    (the merge's pieces made small), not a multiple of it."""
    import tracemalloc

    from hnsw_numba import exact

    x, q = duplicates()
    monkeypatch.setattr(exact, "_MERGE_PAIRS", 1024, raising=False)
    score_bytes = q.shape[0] * x.shape[0] * 4  # one block, one product: every query against every row
    tracemalloc.start()
    try:
        got_i, _ = hn.exact_neighbors(x, q, 10, "l2", num_threads=1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(got_i, oracle(x, q, 10, "l2")[0])
    # the block, its centred copy, the scores, one copy for the k-th scores, the shortlist's mask
    assert peak < 3 * x.nbytes + 3 * score_bytes, (peak, x.nbytes, score_bytes)


def test_single_query_and_every_kind_of_data(xq, tmp_path) -> None:
    import h5py

    x, q = xq
    want = oracle(x, q[:1], 5, "ip")[0]
    np.save(tmp_path / "x.npy", x)
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f["x"] = x
    with h5py.File(tmp_path / "x.h5", "r") as f:
        for data in (x, x.tolist(), np.load(tmp_path / "x.npy", mmap_mode="r"), tmp_path / "x.npy",
                     str(tmp_path / "x.h5") + ":x", f["x"], VectorSource(x)):
            i, _ = hn.exact_neighbors(data, q[0], 5, "ip", chunk=100)
            np.testing.assert_array_equal(i, want)


class Tracker:
    """An array-like that records how many rows every read asks for."""

    def __init__(self, x: np.ndarray) -> None:
        self.x, self.shape, self.dtype, self.reads = x, x.shape, x.dtype, []

    def __getitem__(self, rows: slice) -> np.ndarray:
        self.reads.append(rows.stop - rows.start)
        return self.x[rows]


def test_data_is_read_in_chunks(xq) -> None:
    x, q = xq
    t = Tracker(x)
    i, _ = hn.exact_neighbors(t, q, 3, "l2", chunk=50)
    assert max(t.reads) == 50 and sum(t.reads) == x.shape[0]  # each row read once, 50 at a time
    np.testing.assert_array_equal(i, oracle(x, q, 3, "l2")[0])


def test_exact_neighbors_bad_input(xq) -> None:
    x, q = xq
    bad_q = q.copy()
    bad_q[3, 1] = np.nan
    with pytest.raises(hn.InvalidVectorError, match="queries: row 3"):
        hn.exact_neighbors(x, bad_q, 3)
    bad_x = x.copy()
    bad_x[200, 0] = np.inf
    with pytest.raises(hn.InvalidVectorError, match="row 200 contains NaN or inf"):
        hn.exact_neighbors(bad_x, q, 3, chunk=64)
    with pytest.raises(hn.DimensionMismatchError):
        hn.exact_neighbors(x, q[:, :5], 3)
    for kwargs in ({"k": 0}, {"k": 3, "metric": "hamming"}, {"k": 3, "dtype": np.float16}, {"k": 3, "chunk": 0},
                   {"k": 3, "query_chunk": -1}, {"k": 3, "num_threads": 0}):
        with pytest.raises(hn.InvalidParameterError):
            hn.exact_neighbors(x, q, **kwargs)


def test_exact_neighbors_ragged_rows_raise_typed_errors(xq) -> None:
    x, q = xq
    ragged = [[1.0] * 12, [1.0, 2.0]]
    with pytest.raises(hn.InvalidVectorError, match="queries"):
        hn.exact_neighbors(x, ragged, 3)
    with pytest.raises(hn.InvalidVectorError, match="data"):
        hn.exact_neighbors(ragged, q, 3)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("chunk", [None, 700])
@pytest.mark.parametrize("centre,spread", [(1000.0, 0.1), (40.0, 1e-3), (-0.9, 1e-3)])
def test_exact_neighbors_of_data_far_from_the_origin(centre, spread, chunk, dtype) -> None:
    """L2 through ``|x|^2 - 2 x.q`` cancels for data far from the origin: the answer is still
    the float64 oracle's (``-0.9``: that fraction of the largest value the index accepts)."""
    from hnsw_numba.core.store_base import value_limit

    dim = 8
    if abs(centre) < 1:
        centre, spread = centre * value_limit(dim), spread * value_limit(dim)
    rng = np.random.default_rng(7)
    x = (centre + rng.standard_normal((2000, dim)) * spread).astype(np.float32)
    q = (centre + rng.standard_normal((40, dim)) * spread).astype(np.float32)
    want_i, want_d = oracle(x, q, 10, "l2")
    got_i, got_d = hn.exact_neighbors(x, q, 10, "l2", dtype=dtype, chunk=chunk)
    np.testing.assert_array_equal(got_i, want_i)
    np.testing.assert_allclose(got_d, want_d, rtol=1e-5)


def test_exact_neighbors_refuses_what_the_index_refuses(xq) -> None:
    x, q = xq
    huge = x.copy()
    huge[300] *= 1e30  # float32 distances to it overflow
    for metric in ("l2", "ip"):
        with pytest.raises(hn.InvalidVectorError, match="data: row 300 has a component beyond"):
            hn.exact_neighbors(huge, q, 3, metric, chunk=64)
        with pytest.raises(hn.InvalidVectorError, match="queries: row 300 has a component beyond"):
            hn.exact_neighbors(x, huge, 3, metric, dtype=np.float64)
        with pytest.raises(hn.InvalidVectorError):
            build({"l2": hn.L2(), "ip": hn.InnerProduct()}[metric], huge)
    i, _ = hn.exact_neighbors(x * 1e30, q, 3, "cosine")  # normalised first, as the index does
    np.testing.assert_array_equal(i, oracle(x, q, 3, "cosine")[0])


def test_ground_truth_of_the_dev_set() -> None:
    ds = load_ann_benchmarks(shared_path("data", "words-minilm-384-angular-dev.hdf5"))
    i, d = hn.exact_neighbors(ds.train, ds.test, 100, ds.metric, dtype=np.float64)
    assert hn.recall(i, ds.neighbors) > 0.999  # the file's own truth (ties may order differently)
    assert (np.diff(d, axis=1) >= 0).all()


# ============================================================================ recall
def test_recall_by_hand() -> None:
    truth = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    assert hn.recall(truth, truth) == 1.0
    assert hn.recall(np.array([[4, 3, 9, 9], [0, 0, 0, 0]]), truth) == 0.25  # duplicates count once
    assert hn.recall(np.array([[1, 2, -1, -1], [5, -1, -1, -1]]), truth) == (0.5 + 0.25) / 2
    assert hn.recall(np.array([[3, 9], [8, 6]]), truth, k=2) == (0.0 + 0.5) / 2  # recall@2: truth's first two
    assert hn.recall(np.array([[9, 9, 9, 1]]), np.array([[1, 2, 3, 4]]), k=3) == 0.0  # found's first three only


def test_recall_with_padded_truth() -> None:
    truth = np.array([[1, 2, -1], [-1, -1, -1]])  # fewer true neighbours than k; none at all
    assert hn.recall(np.array([[2, 7, 8], [-1, -1, -1]]), truth) == (0.5 + 1.0) / 2


def test_recall_with_str_keys_and_hits(small_data) -> None:
    assert hn.recall([["a", "b", None]], [["b", "c", "d"]]) == pytest.approx(1 / 3)
    assert hn.recall(np.array([["a", None]], dtype=object), np.array([["a", "z"]], dtype=object)) == 0.5
    assert hn.recall([["a"], ["b", "c"]], [["a", "x"], ["c", "b"]]) == (0.5 + 1.0) / 2  # ragged rows
    data, queries = small_data
    index, store = build(hn.L2(), data, keys=[f"k{i}" for i in range(len(data))])
    truth, _ = index.search_batch(store, queries[:5], 5, exact=True)
    hits = [index.search(store, v, 5, exact=True) for v in queries[:5]]
    assert hn.recall(hits, truth) == 1.0
    assert hn.recall(hits[0], truth[0]) == 1.0  # one query's results


def test_recall_fast_path_equals_the_set_definition() -> None:
    rng = np.random.default_rng(5)
    found = rng.integers(-1, 30, (200, 12))
    truth = rng.integers(-1, 30, (200, 10))
    want = np.mean([len({a for a in f[:10] if a != -1} & {b for b in t if b != -1}) / max(len({b for b in t if b != -1}), 1)
                    if any(b != -1 for b in t) else 1.0 for f, t in zip(found.tolist(), truth.tolist())])
    assert hn.recall(found, truth) == pytest.approx(want)
    assert hn.recall(found.tolist(), truth.tolist()) == pytest.approx(want)  # the per-row path


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
@pytest.mark.parametrize("k", [None, 5], ids=["vectorised", "per-row"])
def test_recall_of_array_subclasses(k) -> None:
    """2-D array_like of any ndarray subclass scores as the plain array (np.matrix rows stay 2-D)."""
    found, truth = np.array([[1, 2], [3, 4]]), np.array([[2, 3], [3, 9]])
    want = hn.recall(found, truth, k)
    assert want == 0.5
    assert hn.recall(np.asmatrix(found), np.asmatrix(truth), k) == want
    assert hn.recall(np.asmatrix(found), truth, k) == hn.recall(found, np.asmatrix(truth), k) == want
    text = np.asmatrix(np.array([["a", "b"]], dtype=object))
    assert hn.recall(text, np.asmatrix(np.array([["b", "c"]], dtype=object)), k) == 0.5


def test_recall_bad_input() -> None:
    with pytest.raises(hn.DimensionMismatchError):
        hn.recall(np.zeros((3, 2), int), np.zeros((4, 2), int))
    assert hn.recall(np.zeros((3, 2), int), np.zeros((3, 2), int), k=5) == 1.0  # scored out of the 2 listed, as lists are
    with pytest.raises(hn.InvalidParameterError):
        hn.recall(np.zeros((3, 2), int), np.zeros((3, 2), int), k=0)
    with pytest.raises(hn.InvalidParameterError):
        hn.recall(np.zeros((0, 2), int), np.zeros((0, 2), int))
    with pytest.raises(hn.DimensionMismatchError):  # rows against one query's truth (before: a TypeError)
        hn.recall(np.zeros((3, 2), int), np.zeros(2, int))
    assert hn.recall([[1, 5]], np.array([[1.0, -1.0]], np.float32)) == 1.0  # float truth padded with -1.0


# ============================================================================ tune_ef
@pytest.fixture(scope="module")
def weak_index():
    """An index with few links on hard data, so recall grows over a range of ef (0.55 at ef 10, 1.0 at 512)."""
    rng = np.random.default_rng(9)
    data = clustered(rng, 3000, 24, centers=30)
    queries = clustered(rng, 150, 24, centers=30)
    index, store = build(hn.L2(), data, m=8, efc=32, seed=2)
    truth = index.search_batch(store, queries, 10, exact=True)[0]
    return index, store, queries, truth


def recall_at(weak, ef: int) -> float:
    index, store, queries, truth = weak
    return hn.recall(index.search_batch(store, queries, 10, ef=ef)[0], truth)


def test_tune_ef_returns_the_smallest_ef_meeting_the_target(weak_index) -> None:
    index, store, queries, truth = weak_index
    start = recall_at(weak_index, 10)
    assert start < 0.97, start  # the test needs room above ef = k
    for target in (0.9, 0.95, 0.97):
        ef = hn.tune_ef(index, store, queries, 10, target, sample=None)
        if ef == 10:
            assert start >= target
            continue
        assert recall_at(weak_index, ef) >= target > recall_at(weak_index, ef - 1)
        assert hn.tune_ef(index, store, queries, 10, target, truth=truth, sample=None) == ef  # given truth: same


def test_tune_ef_is_monotone_in_the_target(weak_index) -> None:
    index, store, queries, _ = weak_index
    efs = [hn.tune_ef(index, store, queries, 10, t, sample=100, seed=1) for t in (0.6, 0.8, 0.9, 0.95, 0.98, 0.99)]
    assert efs == sorted(efs) and efs[-1] > 2 * efs[0], efs


def test_tune_ef_with_candidates_and_unreachable_targets(weak_index) -> None:
    index, store, queries, truth = weak_index
    ef = hn.tune_ef(index, store, queries, 10, 0.95, efs=[512, 10, 40, 128], sample=None)
    reached = [e for e in (10, 40, 128, 512) if recall_at(weak_index, e) >= 0.95]
    assert ef == reached[0]
    with pytest.raises(hn.RecallTargetError) as ei:
        hn.tune_ef(index, store, queries, 10, 0.999999, efs=[10, 12], sample=None)
    e = ei.value
    assert isinstance(e, ValueError) and e.best_ef in (10, 12) and e.best_recall == pytest.approx(recall_at(weak_index, e.best_ef))
    again = pickle.loads(pickle.dumps(e))
    assert (again.best_ef, again.best_recall, str(again)) == (e.best_ef, e.best_recall, str(e))
    with pytest.raises(hn.RecallTargetError, match="no ef up to 16"):
        hn.tune_ef(index, store, queries, 10, 0.999999, max_ef=16, sample=None)
    for kwargs in ({"target_recall": 0}, {"target_recall": 1.5}, {"efs": [0, 5]}, {"efs": 5}, {"efs": ["x"]}, {"sample": "x"},
                   {"max_ef": "x"}, {"max_ef": 10**7}, {"seed": "x"}):  # every argument checked before any search
        with pytest.raises(hn.InvalidParameterError):
            hn.tune_ef(index, store, queries, 10, **({"target_recall": 0.9} | kwargs))
    with pytest.raises(hn.DimensionMismatchError):
        hn.tune_ef(index, store, queries, 10, 0.9, truth=truth[:5])


def test_tune_ef_reads_queries_as_search_does(weak_index) -> None:
    """Queries search refuses (ragged rows, objects, numeric text, complex numbers) raise
    InvalidVectorError before any search, as search does."""
    index, store, queries, _ = weak_index
    bad = ([[1.0] * 24, [1.0, 2.0]], [[1.0] * 23 + [object()]], np.full((3, 24), "0.5"), queries[:3] + 1j)
    for q in bad:
        with pytest.raises(hn.InvalidVectorError):
            index.search_batch(store, q, 10)
        with pytest.raises(hn.InvalidVectorError):
            hn.tune_ef(index, store, q, 10, 0.9, sample=None)


# ============================================================================ timing and files
def test_best_of() -> None:
    calls = []
    assert best_of(lambda: calls.append(1), 4) >= 0 and len(calls) == 4
    with pytest.raises(hn.InvalidParameterError):
        best_of(lambda: None, 0)


def test_load_ann_benchmarks(tmp_path) -> None:
    import h5py

    rng = np.random.default_rng(2)
    x, q = rng.standard_normal((50, 4)), rng.standard_normal((6, 4))
    truth = oracle(x, q, 5, "l2")[0]
    with h5py.File(tmp_path / "a.hdf5", "w") as f:
        f["train"], f["test"], f["neighbors"] = x, q, truth.astype(np.int32)
        f.attrs["distance"] = "euclidean"
    ds = load_ann_benchmarks(tmp_path / "a.hdf5")
    assert (ds.name, ds.metric, ds.train.dtype, ds.neighbors.dtype) == ("a", "l2", np.float32, np.int64)
    np.testing.assert_array_equal(ds.neighbors, truth)
    part = load_ann_benchmarks(tmp_path / "a.hdf5", limit=20, n_queries=3)
    assert part.train.shape == (20, 4) and part.test.shape == (3, 4) and part.neighbors is None
    with h5py.File(tmp_path / "b.hdf5", "w") as f:
        f["train"], f["test"] = x, q
    with pytest.raises(hn.VectorFileError, match="b.hdf5: no 'distance' attribute"):
        load_ann_benchmarks(tmp_path / "b.hdf5")


def test_tune_ef_counts_tied_duplicates_as_found() -> None:
    """With exact duplicates the brute force lists the lowest keys of each tie and the walk
    others as near: at an exhaustive ef, 22 % of the keys matched and tune_ef reported 0.9
    unreachable."""
    rng = np.random.default_rng(5)
    base = rng.standard_normal((100, 8)).astype(np.float32)
    data = np.repeat(base, 8, axis=0)  # every row 8 times
    idx, store = build(hn.L2(), data, m=8)
    ef = hn.tune_ef(idx, store, base[:40] + 0.01, k=10, target_recall=0.9)
    keys, dists = idx.search_batch(store, base[:40] + 0.01, 10, ef=ef)
    true_d = idx.search_batch(store, base[:40] + 0.01, 10, exact=True)[1]
    assert (dists <= true_d[:, -1:] * (1 + 1e-5) + 1e-7).mean() >= 0.9


def test_tune_ef_and_recall_inputs() -> None:
    rng = np.random.default_rng(6)
    data = rng.standard_normal((300, 8)).astype(np.float32)
    idx, store = build(hn.L2(), data, m=8)
    q = data[:20] + 0.01
    assert hn.tune_ef(idx, store, q, 5, np.float32(0.9), efs=iter([5, 10, 40])) in (5, 10, 40)  # an iterator, a NumPy float
    index = hn.Index.from_native(idx, store)
    for call in (lambda: hn.tune_ef(index, store, q, 5), lambda: hn.knn_join(index, store, q, 5)):
        with pytest.raises(hn.InvalidParameterError, match="must be an Hnsw"):
            call()
    with pytest.raises(hn.DimensionMismatchError):
        hn.tune_ef(idx, store, q[:2], 1, truth=[[1], [2, 3]])
    # k past the truth's width: scored out of the keys it lists, for arrays as for lists
    assert hn.recall(np.array([[1, 2, 3]]), np.array([[1, 2]]), k=3) == hn.recall([[1, 2, 3]], [[1, 2]], k=3) == 1.0


def test_a_limit_past_the_rows_of_a_file_without_neighbours(tmp_path) -> None:
    """``bench --limit N`` recomputes the ground truth, yet N at or past the file's rows asked
    for its ``neighbors`` (and the file had none)."""
    h5py = pytest.importorskip("h5py")
    x = np.random.default_rng(0).standard_normal((50, 4)).astype(np.float32)
    with h5py.File(tmp_path / "a.hdf5", "w") as f:
        f["train"], f["test"] = x, x[:5]
        f.attrs["distance"] = "euclidean"
    for limit in (49, 50, 500):
        assert load_ann_benchmarks(tmp_path / "a.hdf5", limit=limit).neighbors is None
    with pytest.raises(hn.VectorFileError):
        load_ann_benchmarks(tmp_path / "a.hdf5")


def test_recall_of_uint64_labels_past_int64() -> None:
    """hnswlib's labels are uint64; 2**64 - 1 read as int64 is -1, the padding: a query whose
    true neighbour it was scored 1.0 though another label was found."""
    truth = np.array([[2**64 - 1, 2**63]], np.uint64)
    found = np.array([[5, 2**63]], np.uint64)
    assert hn.recall(found, truth) == hn.recall(found.tolist(), truth.tolist()) == 0.5
    assert hn.recall(truth, truth) == 1.0
    assert hn.recall(np.array([[1, 2]], np.uint64), np.array([[2, 3]], np.uint64)) == 0.5


def test_exact_neighbors_names_a_query_past_float32s_range() -> None:
    """A finite float64 1e39 was reported as NaN or inf (it is inf once float32)."""
    x = np.random.default_rng(0).standard_normal((20, 4))
    q = x[:5].copy()
    q[3, 1] = 1e39
    with pytest.raises(hn.InvalidVectorError, match="row 3 has a value beyond float32's range"):
        hn.exact_neighbors(x, q, 2)
    q[3, 1] = np.nan
    with pytest.raises(hn.InvalidVectorError, match="row 3 contains NaN or inf"):
        hn.exact_neighbors(x, q, 2)


def test_exact_neighbors_checks_its_results_against_the_allocation_limit(xq, monkeypatch) -> None:
    """k had no bound: k = 10**7 over 100 rows allocated 240 MB of padding past a 1 MB limit,
    10**12 raised NumPy's bare MemoryError."""
    x, q = xq
    monkeypatch.setenv("HNSW_NUMBA_MAX_BYTES", "1000000")
    for k in (10**7, 10**12):
        with pytest.raises(hn.CapacityError):
            hn.exact_neighbors(x, q[:2], k)
    assert hn.exact_neighbors(x, q[:2], 5)[0].shape == (2, 5)


@pytest.mark.parametrize("case", ["data scaled by 1e-4", "queries far from the data"])
def test_tune_ef_reaches_its_target_by_recall_at_any_scale(case) -> None:
    """A walk result counted as found when no farther than the k-th true distance plus
    1e-5 relative and 1e-7 absolute: on data scaled by 1e-4 the 1e-7 swamps every distance,
    on queries 5000 units away 1e-5 spans many neighbours; the ef returned then missed its
    target by hn.recall against the very truth tune_ef uses."""
    rng = np.random.default_rng(0)
    base, qb = rng.standard_normal((5000, 16)), rng.standard_normal((100, 16))
    x, q = (base * 1e-4, qb * 1e-4) if case.startswith("data") else (base, qb + 5000 * np.eye(16)[0])
    idx = hn.Index(16, metric="l2", m=8, ef_construction=64, seed=1)
    idx.add(np.arange(5000), x.astype(np.float32), num_threads=1)
    index, store = idx.native
    q = q.astype(np.float32)
    truth = index.search_batch(store, q, 10, exact=True)[0]
    for target in (0.9, 0.99):
        ef = idx.tune_ef(q, 10, target)
        assert hn.recall(index.search_batch(store, q, 10, ef=ef)[0], truth) >= target, (target, ef)


def test_tune_ef_on_ordinary_data_counts_by_key(weak_index) -> None:
    """Without ties at the k-th distance, tune_ef's recall is hn.recall's: its ef reaches
    the target and ef - 1 does not."""
    index, store, queries, truth = weak_index
    ef = hn.tune_ef(index, store, queries, 10, 0.9, sample=None)
    assert recall_at(weak_index, ef) >= 0.9 > recall_at(weak_index, ef - 1)


def test_recall_names_a_search_pair_and_keys_it_cannot_hash() -> None:
    """A search's (keys, distances) pair, exact_neighbors' (indices, distances) pair, rows of
    rows and unhashable keys raised a bare TypeError (unhashable type: 'list')."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((100, 4)).astype(np.float32)
    idx = hn.Index(4, metric="l2")
    idx.add(np.arange(100), x)
    found, truth = idx.search(x[:2], 5), hn.exact_neighbors(x, x[:2], 5)
    assert hn.recall(found[0], truth[0]) == 1.0
    for args, name in (((found, truth[0]), "found"), ((found[0], truth), "truth"), ((found, truth), "found")):
        with pytest.raises(hn.InvalidParameterError, match=rf"\(keys, distances\) pair as {name}: pass the keys"):
            hn.recall(*args)
    with pytest.raises(hn.InvalidParameterError, match="found row 0 holds an unhashable key"):
        hn.recall([[{1}, 2]], [[1, 2]])
    with pytest.raises(hn.DimensionMismatchError, match="truth row 1 holds rows, not keys"):
        hn.recall([[1], [2]], [[1], [[2, 3]]])
    with pytest.raises(hn.DimensionMismatchError, match="found row 0 is not a row of keys"):
        hn.recall([1, [2]], [[1], [2]])


def test_recall_reads_ragged_rows_held_in_a_1d_object_array() -> None:
    """np.array(list_of_rows, dtype=object) over rows of different lengths is 1-D: it was
    read as one query's keys (each an array: unhashable)."""
    rag = np.empty(2, object)
    rag[0], rag[1] = np.array([1, 2]), [3]
    assert hn.recall(rag, rag) == 1.0
    assert hn.recall([[1, 9], [3]], rag) == hn.recall([[1, 9], [3]], [[1, 2], [3]]) == 0.75
    assert hn.recall(rag, [[1, 2], [4]]) == 0.5
    assert hn.recall(np.array(["a", "b"], object), np.array(["b", "c"], object)) == 0.5  # one query's str keys


def test_clustered_embeddings_checks_its_seed() -> None:
    """A negative or non-int seed reached NumPy's default_rng: a bare ValueError or TypeError."""
    from hnsw_numba.datasets import clustered_embeddings

    for seed in (-1, 1.5, "x", True, [1]):
        with pytest.raises(hn.InvalidParameterError, match="seed"):
            clustered_embeddings(10, 4, seed=seed)
    a, b = clustered_embeddings(10, 4, seed=np.int64(3))[0], clustered_embeddings(10, 4, seed=3)[0]
    np.testing.assert_array_equal(a, b)
    assert clustered_embeddings(10, 4, seed=None)[0].shape == (10, 4)
