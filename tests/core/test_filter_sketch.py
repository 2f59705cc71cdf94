"""The exact plan's int8 sketch (estimates with per-row error bounds, the open rows re-scored
with the scan's kernel) against the one-core scan and the brute-force oracle, and the bound
shown necessary: without it the estimates alone answer differently."""

from __future__ import annotations

import numpy as np
import pytest

import hnsw_numba as hn
import hnsw_numba.core.block_search as block_search
import hnsw_numba.core.filtered as filtered
import hnsw_numba.core.filters as filters
from hnsw_numba.core.block_search import sketch_for
from hnsw_numba.core.filters import as_float32
from hnsw_numba.core.sketch import Sketch, WideSketch, build_sketch
from hnsw_numba.kernels.layout import F32Rows, IP_CODE, L2_CODE, PREP_NONE
from hnsw_numba.kernels.shortlist import exact_one_kernel
from hnsw_numba.kernels.sketch import T_ERR, T_LO, T_SCALE, T_SU, sketch_one_kernel
from naive import exact_knn

pytestmark = pytest.mark.usefixtures("rules_each_call")  # the rules change between searches of one Filter

METRICS = {
    ("l2", False): hn.L2, ("cosine", False): hn.Cosine, ("ip", False): hn.InnerProduct,
    ("l2", True): hn.L2Qi8, ("cosine", True): hn.CosineQi8, ("ip", True): hn.InnerProductQi8,
}
DELETED = (2, 10, 12, 40)
NO_KEYS = np.empty(0, np.int64)


def hard_rows(scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Rows a sketch estimates badly: near duplicates (the estimates' order is their rounding's),
    exact duplicates (ties), constant rows (a scale of 0), dim 37 (no multiple of 16)."""
    r = np.random.default_rng(7)
    x = r.standard_normal((240, 37)).astype(np.float32)
    x[1:30] = x[0] + r.standard_normal((29, 37)).astype(np.float32) * 1e-4
    x[30:34] = x[0]
    x[34:38] = np.float32(0.25)
    x[38] = 0.0
    x *= np.float32(scale)
    q = r.standard_normal((5, 37)).astype(np.float32) * np.float32(scale)
    q[0] = x[0] * np.float32(1.001)
    q[1] = np.float32(0.25 * scale)
    return x, q


def paths(idx, store, f, queries, k):
    """(scan hits, sketch hits) of every query through the kept Filter ``f``."""
    out = []
    for rows in (10**18, 1):
        filtered.SKETCH_ROWS = dict.fromkeys(filtered.SKETCH_ROWS, rows)
        out.append([idx.search(store, q, k, filter=f, plan="exact") for q in queries])
    return out


def same_answer(a, b) -> None:
    """The scan's distances bit for bit, its keys but for the order of (and choice among) ties."""
    assert b.distances == a.distances
    if b.distances:
        last = b.distances[-1]
        assert sorted(kb for kb, d in zip(b.keys, b.distances) if d < last) == sorted(ka for ka, d in zip(a.keys, a.distances) if d < last)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16", "qi8"])
@pytest.mark.parametrize("metric", ["l2", "cosine", "ip"])
def test_sketch_returns_the_scans_top_k_and_distances(monkeypatch, dtype, metric) -> None:
    monkeypatch.setattr(filtered, "BLAS_ROWS", 10**18)
    monkeypatch.setattr(filtered, "SKETCH_ROWS", dict(filtered.SKETCH_ROWS))
    qi8 = dtype == "qi8"
    scales = (1.0, 1e-12, 1e12) if dtype in ("float32", "qi8") else (1.0, 1e-3)  # half types: their range
    for scale in scales:
        for offset in (0.0, 30.0) if metric == "l2" else (0.0,):
            x, queries = hard_rows(scale)
            x += np.float32(offset * scale)
            queries += np.float32(offset * scale)
            n, dim = x.shape
            m = METRICS[(metric, qi8)]()
            idx = hn.Hnsw(m, hn.HnswConfig(dim=dim, max_nodes=n, m=8, ef_construction=32, seed=1))
            store = hn.InMemoryQi8VectorStore(dim, n) if qi8 else hn.InMemoryVectorStore(dim, n, dtype=dtype)
            idx.insert_batch(store, np.arange(n), x, num_threads=1)
            idx.delete_batch(list(DELETED))
            allowed = [key for key in range(n) if key % 3 != 1 or key < 40]
            f = hn.Filter(idx, allowed)
            live = np.array([key for key in allowed if key not in DELETED])
            for k in (1, 8, live.shape[0] + 5):  # k past the allowed live rows: all of them
                scan, sketch = paths(idx, store, f, queries, k)
                assert f.sketch is not None and f.sketch.block is f.block[4]
                truth_d = exact_knn(m, idx.get_vectors(store, live), queries, k)[1]
                for a, b, td in zip(scan, sketch, truth_d):
                    same_answer(a, b)
                    assert len(b.keys) == min(k, live.shape[0])
                    assert not set(DELETED) & set(b.keys)
                    tol = 1e-2 * (1.0 if metric == "cosine" else max(1.0, (scale * (1.0 + offset)) ** 2 * dim))  # rounded rows
                    np.testing.assert_allclose(b.distances, td, rtol=2e-2 if qi8 or dtype != "float32" else 1e-4, atol=tol)


def test_more_rows_within_the_bound_than_the_first_attempt_keeps(monkeypatch) -> None:
    """More tied rows stay within T than the kernel's first attempt has room for (KEPT + CHUNK):
    the answer is still the scan's."""
    from hnsw_numba.kernels.sketch import CHUNK, KEPT

    monkeypatch.setattr(filtered, "SKETCH_ROWS", dict(filtered.SKETCH_ROWS))
    rng = np.random.default_rng(5)
    n = KEPT + CHUNK + 500
    x = rng.standard_normal((n, 8)).astype(np.float32)
    x[: KEPT + CHUNK + 200] = x[0]  # ties with every distance equal
    idx, store = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=8, max_nodes=n, m=8, ef_construction=16, seed=1)), hn.InMemoryVectorStore(8, n)
    idx.insert_batch(store, np.arange(n), x, num_threads=1)
    f = hn.Filter(idx, np.arange(n))
    queries = np.stack([x[0] + np.float32(0.01), rng.standard_normal(8).astype(np.float32)])
    scan, sketch = paths(idx, store, f, queries, 5)
    assert f.sketch is not None
    for a, b in zip(scan, sketch):
        same_answer(a, b)
    assert sketch[0].distances == [scan[0].distances[0]] * 5


@pytest.mark.parametrize("vnni", [False, True])
def test_sketch_from_rows_times_dimensions_where_vnni_sums(monkeypatch: pytest.MonkeyPatch, vnni: bool) -> None:
    """With ``vpdpbusd`` sums (``SKETCH_ELEMS`` set) a kept Filter of fewer than ``SKETCH_ROWS``
    rows reads the sketch once rows x dimensions reach ``SKETCH_ELEMS``; without them (empty)
    it scans. The answers are the scan's either way."""
    monkeypatch.setattr(filtered, "SKETCH_ELEMS", {F32Rows: 40 * 96} if vnni else {})
    rng = np.random.default_rng(4)
    x = rng.standard_normal((120, 96)).astype(np.float32)
    idx = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=96, max_nodes=120, m=8, ef_construction=32, seed=4))
    store = hn.InMemoryVectorStore(96, 120)
    idx.insert_batch(store, np.arange(120), x, num_threads=1)
    q = rng.standard_normal(96).astype(np.float32)
    for rows in (39, 40):
        assert rows < filtered.SKETCH_ROWS[F32Rows]
        allowed = np.arange(rows)
        f = hn.Filter(idx, allowed)
        hits = idx.search(store, q, 5, filter=f, plan="exact")
        assert (f.sketch is not None) == (vnni and rows == 40)
        assert hits.keys == [int(i) for i in exact_knn(hn.L2(), x, q[None], 5, allowed=allowed)[0][0]]


def test_sketch_follows_the_store() -> None:
    """The sketch is made again with the block when the store changes."""
    rng = np.random.default_rng(2)
    n = filtered.SKETCH_ROWS[F32Rows] + 100
    x = rng.standard_normal((n, 16)).astype(np.float32)
    idx = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=16, max_nodes=n, m=8, ef_construction=32, seed=2))
    store = hn.InMemoryVectorStore(16, n)
    idx.insert_batch(store, np.arange(n), x, num_threads=1)
    f = hn.Filter(idx, np.arange(n))
    q = rng.standard_normal(16).astype(np.float32)
    idx.search(store, q, 3, filter=f, plan="exact")
    sketch = f.sketch
    assert sketch is not None and sketch.codes.shape == (n, 16)
    idx.set(store, 3, q + 0.001)
    assert idx.search(store, q, 1, filter=f, plan="exact").keys == [3]
    assert f.sketch is not sketch
    assert sketch_for(f, store, store.rows(), f.current()) is f.sketch


@pytest.mark.parametrize("dtype", ["float16", "qi8"])
def test_sketch_terms_bound_the_residual(dtype) -> None:
    """x = lo + s u + e for the float32 form of every row, |e| within the stored bound."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((50, 21)).astype(np.float32) * np.float32(10.0)
    x[3] = 7.0  # constant: s = 0
    if dtype == "qi8":
        store = hn.InMemoryQi8VectorStore(21, 50)
        idx = hn.Hnsw(hn.L2Qi8(), hn.HnswConfig(dim=21, max_nodes=50, m=4, ef_construction=16, seed=0))
        idx.insert_batch(store, np.arange(50), x, num_threads=1)
        rows = type(store.rows())(*(a[:50] for a in store.rows()))
    else:
        rows = hn.InMemoryVectorStore.from_array(np.ascontiguousarray(x.astype(np.float16).view(np.uint16)), dtype="float16").rows()
    s = build_sketch(rows)
    wide = as_float32(rows).astype(np.float64)
    approx = s.terms[T_LO][:, None] + s.terms[T_SCALE][:, None] * s.codes
    resid = np.linalg.norm(wide - approx, axis=1)
    assert (resid <= s.terms[T_ERR]).all()
    assert s.terms[T_SCALE][3] == 0.0 and resid[3] == 0.0
    assert (resid <= s.terms[T_SCALE] * np.sqrt(21)).all()  # within half a step per element, and some


@pytest.mark.parametrize("metric", [L2_CODE, IP_CODE])
def test_without_the_bound_the_estimates_answer_differently(metric) -> None:
    """Near-duplicate rows: the estimates order them by their rounding, not their distances.
    With the bound the kernel answers as the scan; with the bound's terms zeroed it does not."""
    rng = np.random.default_rng(11)
    base = rng.standard_normal(40).astype(np.float32)
    x = base + rng.standard_normal((300, 40)).astype(np.float32) * np.float32(1e-3)
    block = F32Rows(np.ascontiguousarray(x))
    ids = np.arange(300, dtype=np.int32)
    tomb = np.zeros(300, np.uint8)
    s = build_sketch(block)
    dropped = s.terms.copy()
    dropped[T_ERR] = 0.0
    dropped[T_SU] = 0.0
    differs = 0
    for q in (base + rng.standard_normal((10, 40)).astype(np.float32) * np.float32(1e-3)):
        scan = exact_one_kernel(block, metric, q, 40, PREP_NONE, ids, tomb, np.empty(0, np.float32), np.empty(0), 0.0, 5, NO_KEYS)
        assert sketch_one_kernel(block, metric, q, 40, PREP_NONE, ids, tomb, s.codes, s.terms, 5, NO_KEYS, 0, 300, False) == scan
        differs += sketch_one_kernel(block, metric, q, 40, PREP_NONE, ids, tomb, s.codes, dropped, 5, NO_KEYS, 0, 300, False) != scan
    assert differs >= 5


def test_sketch_of_a_store_with_a_walk_copy_reads_the_vectors(monkeypatch) -> None:
    """A float32 store that walks a float16 copy: the sketch is made from the float32 rows (the
    exact paths' vectors), and answers as the scan over them."""
    monkeypatch.setattr(filtered, "BLAS_ROWS", 10**18)
    monkeypatch.setattr(filtered, "SKETCH_ROWS", dict(filtered.SKETCH_ROWS))
    x, queries = hard_rows(1.0)
    n, dim = x.shape
    idx = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=dim, max_nodes=n, m=8, ef_construction=32, seed=1))
    store = hn.InMemoryVectorStore(dim, n, walk_copy=True)
    idx.insert_batch(store, np.arange(n), x, num_threads=1)
    f = hn.Filter(idx, np.arange(0, n, 2))
    scan, sketch = paths(idx, store, f, queries, 6)
    assert isinstance(f.sketch.block, F32Rows) and f.sketch.block.data.dtype == np.float32
    for a, b in zip(scan, sketch):
        same_answer(a, b)


def no_block(monkeypatch, parts: int = 0) -> None:
    """Filters get no block (their sketch is made from the store's rows, on its first search);
    with ``parts`` a sketch of more than 50 rows is read in that many parts."""
    monkeypatch.setattr(filters, "BLOCK_BYTES", 0)
    monkeypatch.setattr(block_search, "SKETCH_AFTER", 1)
    monkeypatch.setattr(filtered, "BLAS_ROWS", 10**18)
    monkeypatch.setattr(filtered, "SKETCH_ROWS", dict(filtered.SKETCH_ROWS))
    if parts:
        monkeypatch.setattr(block_search, "SKETCH_SPLIT_ROWS", 50)
        monkeypatch.setattr(block_search, "resolve_threads", lambda *a: parts)


def store_of(dtype: str, metric: str, x: np.ndarray, deleted=DELETED):
    n, dim = x.shape
    qi8 = dtype == "qi8"
    idx = hn.Hnsw(METRICS[(metric, qi8)](), hn.HnswConfig(dim=dim, max_nodes=n, m=8, ef_construction=32, seed=1))
    store = hn.InMemoryQi8VectorStore(dim, n) if qi8 else hn.InMemoryVectorStore(dim, n, dtype="float32" if dtype == "walk" else dtype, walk_copy=dtype == "walk")
    idx.insert_batch(store, np.arange(n), x, num_threads=1)
    idx.delete_batch(list(deleted))
    return idx, store


def wide_case(dtype: str, metric: str) -> tuple:
    """``(idx, store, x, queries, allowed keys, the live ones)``: the hard rows (shifted away
    from the origin for L2) with most rows allowed."""
    x, queries = hard_rows(1.0)
    if metric == "l2":
        x += np.float32(30.0)
        queries += np.float32(30.0)
    idx, store = store_of(dtype, metric, x)
    allowed = [key for key in range(x.shape[0]) if key % 3 != 1 or key < 40]
    return idx, store, x, queries, allowed, [key for key in allowed if key not in DELETED]


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16", "qi8", "walk"])
@pytest.mark.parametrize("metric", ["l2", "cosine", "ip"])
def test_sketch_without_a_block_returns_the_scans_answer(monkeypatch, dtype, metric) -> None:
    """A filter too large for a block: the sketch of the store's rows, its open rows re-scored
    from the store by NodeId, answers as the gathering scan (distances bit for bit), whole and
    in three parts merged."""
    no_block(monkeypatch)
    idx, store, x, queries, allowed, live = wide_case(dtype, metric)
    f = hn.Filter(idx, allowed)
    for k in (1, 8, len(live) + 5):  # k past the allowed live rows: all of them
        scan, sketch = paths(idx, store, f, queries, k)
        assert type(f.sketch) is WideSketch and f.block is None
        assert isinstance(f.sketch.block, F32Rows if dtype == "walk" else type(store.rows()))  # a walk copy's sketch: the float32 rows
        monkeypatch.setattr(block_search, "SKETCH_SPLIT_ROWS", 50)
        monkeypatch.setattr(block_search, "resolve_threads", lambda *a: 3)
        split = [idx.search(store, q, k, filter=f, plan="exact") for q in queries]
        monkeypatch.setattr(block_search, "SKETCH_SPLIT_ROWS", 10**18)
        for a, b, c in zip(scan, sketch, split):
            same_answer(a, b)
            same_answer(a, c)
            assert len(b.keys) == len(c.keys) == min(k, len(live))
            assert not set(DELETED) & set(b.keys + c.keys)


@pytest.mark.parametrize("wide", [False, True])
def test_a_split_sketch_merges_to_the_whole_answer(monkeypatch, wide) -> None:
    """Read in parts (more parts than cores, parts with fewer rows than k), a sketch answers
    as in one part: the same keys and distances."""
    if wide:
        no_block(monkeypatch)
    monkeypatch.setattr(filtered, "BLAS_ROWS", 10**18)
    monkeypatch.setattr(filtered, "SKETCH_ROWS", dict.fromkeys(filtered.SKETCH_ROWS, 1))
    rng = np.random.default_rng(5)
    x = rng.standard_normal((400, 16)).astype(np.float32)
    idx, store = store_of("float32", "l2", x)
    f = hn.Filter(idx, np.arange(0, 400, 2))
    queries = rng.standard_normal((6, 16)).astype(np.float32)
    for k in (1, 10, 250):
        one = [idx.search(store, q, k, filter=f, plan="exact") for q in queries]
        assert type(f.sketch) is (WideSketch if wide else Sketch)
        monkeypatch.setattr(block_search, "SKETCH_SPLIT_ROWS", 50)
        for parts in (2, 7):
            monkeypatch.setattr(block_search, "resolve_threads", lambda *a: parts)
            split = [idx.search(store, q, k, filter=f, plan="exact") for q in queries]
            assert [s.raw for s in split] == [o.raw for o in one]
        monkeypatch.setattr(block_search, "SKETCH_SPLIT_ROWS", 10**18)


def test_sketch_without_a_block_follows_the_store(monkeypatch) -> None:
    """The sketch of the store's rows is made again when the store is written: a `set` of an
    allowed row moves it in the answer. It is made on the SKETCH_AFTER-th search of one version
    of the store (the scan before), and a write starts the count again."""
    no_block(monkeypatch)
    monkeypatch.setattr(block_search, "SKETCH_AFTER", 3)
    monkeypatch.setattr(filtered, "SKETCH_ROWS", dict.fromkeys(filtered.SKETCH_ROWS, 1))
    rng = np.random.default_rng(2)
    x = rng.standard_normal((300, 16)).astype(np.float32)
    idx, store = store_of("float32", "l2", x, ())
    f = hn.Filter(idx, np.arange(0, 300, 3))
    q = rng.standard_normal(16).astype(np.float32)
    first = idx.search(store, q, 3, filter=f, plan="exact")
    assert type(f.sketch) is not WideSketch
    idx.search(store, q, 3, filter=f, plan="exact")
    assert type(f.sketch) is not WideSketch
    assert idx.search(store, q, 3, filter=f, plan="exact").raw == first.raw
    sketch = f.sketch
    assert type(sketch) is WideSketch and sketch.codes.shape == (100, 16)
    assert idx.search(store, q, 3, filter=f, plan="exact").raw == first.raw and f.sketch is sketch
    idx.set(store, 9, q + np.float32(0.001))  # an allowed row moved next to the query
    for _ in range(3):
        hits = idx.search(store, q, 3, filter=f, plan="exact")
        assert hits.keys == [9] + [key for key in first.keys if key != 9][:2]
    assert type(f.sketch) is WideSketch and f.sketch is not sketch
    assert f.sketch.codes[3].tolist() != sketch.codes[3].tolist()  # row 9 is the filter's fourth
    idx.set(store, 9, x[9] + np.float32(100.0))  # and far again
    for _ in range(3):
        assert 9 not in idx.search(store, q, 3, filter=f, plan="exact").keys


def test_sketch_without_a_block_keeps_to_its_budget(monkeypatch) -> None:
    """A filter whose sketch would exceed SKETCH_BYTES gets none: the scan answers."""
    no_block(monkeypatch)
    monkeypatch.setattr(filtered, "SKETCH_ROWS", dict.fromkeys(filtered.SKETCH_ROWS, 1))
    monkeypatch.setattr(block_search, "SKETCH_BYTES", 100 * (16 + 48) - 1)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((200, 16)).astype(np.float32)
    idx, store = store_of("float32", "ip", x, ())
    q = rng.standard_normal(16).astype(np.float32)
    f = hn.Filter(idx, np.arange(0, 200, 2))
    a = idx.search(store, q, 5, filter=f, plan="exact")
    assert f.sketch is None and f.block is None
    g = hn.Filter(idx, np.arange(0, 198, 2))
    b = idx.search(store, q, 5, filter=g, plan="exact")
    assert type(g.sketch) is WideSketch
    assert a.keys == b.keys or 198 in a.keys


@pytest.mark.parametrize("dtype", ["float32", "qi8"])
@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_a_batch_without_a_block_reads_the_sketch(monkeypatch, dtype, metric) -> None:
    """An exact batch through a kept Filter too large for a block is answered through the
    sketch of the store's rows, one query per thread: each query as its single call answers
    (distances bit for bit); without a sketch (over its budget) the gathering scan answers the
    same."""
    no_block(monkeypatch)
    monkeypatch.setattr(filtered, "SKETCH_ROWS", dict.fromkeys(filtered.SKETCH_ROWS, 1))
    sketched = []
    batch = filtered.sketch_batch
    monkeypatch.setattr(filtered, "sketch_batch", lambda *a: sketched.append(a[3].shape[0]) or batch(*a))
    idx, store, x, queries, allowed, live = wide_case(dtype, metric)
    for k in (1, 8, len(live) + 5):
        f = hn.Filter(idx, allowed)
        keys, dists = idx.search_batch(store, queries, k, filter=f, plan="exact", num_threads=2)
        assert type(f.sketch) is WideSketch and sketched[-1] == len(queries)
        for i, q in enumerate(queries):
            one = idx.search(store, q, k, filter=f, plan="exact")
            n = len(one.keys)
            assert n == min(k, len(live)) and dists[i, :n].tolist() == one.distances and np.all(keys[i, n:] == -1)
            same_answer(one, hn.Hits(list(zip(keys[i, :n].tolist(), dists[i, :n].tolist(), keys[i, :n].tolist()))))
    monkeypatch.setattr(block_search, "SKETCH_BYTES", 0)
    f = hn.Filter(idx, allowed)
    calls = len(sketched)
    keys2, dists2 = idx.search_batch(store, queries, 8, filter=f, plan="exact")
    assert f.sketch is None and len(sketched) == calls
    np.testing.assert_array_equal(dists2, idx.search_batch(store, queries, 8, filter=np.isin(np.arange(x.shape[0]), allowed), plan="exact")[1])


def test_sketch_answers_as_the_scan_where_distances_underflow() -> None:
    """Vectors of norm ~1e-22: L2 distances below float32's smallest normal, where the scan's
    rounding is absolute, not relative; the sketch's bound covers it, so a kept Filter's exact
    answer (through its sketch) is the unfiltered exact scan's."""
    differ = 0
    for seed in range(6):
        rng = np.random.default_rng(seed)
        n, dim = 700, 7
        x = (rng.standard_normal((n, dim)) * 1e-22).astype(np.float32)
        idx = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=dim, max_nodes=n, m=8, ef_construction=32, seed=1))
        store = hn.InMemoryVectorStore(dim, n)
        idx.insert_batch(store, np.arange(n), x, num_threads=1)
        f = hn.Filter(idx, list(range(n)))
        for _ in range(10):
            q = (rng.standard_normal(dim) * 1e-22).astype(np.float32)
            kept = idx.search(store, q, 5, filter=f, plan="exact")
            assert f.sketch is not None
            differ += kept.distances != idx.search(store, q, 5, exact=True).distances
    assert differ == 0
