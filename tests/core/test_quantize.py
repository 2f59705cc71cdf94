"""Qi8 quantization: the documented rounding scheme, validation, and the Qi8 store in an index."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import hnsw_numba as hn
from conftest import clustered
from naive import recall


def test_roundtrip_error_within_half_a_step(rng) -> None:
    x = rng.standard_normal((200, 48)).astype(np.float32) * rng.uniform(0.01, 50, (200, 1)).astype(np.float32)
    q = hn.quantize_qi8(x)
    assert isinstance(q, hn.Qi8Batch) and q.data.dtype == np.int8 and q.scale.dtype == np.float32
    err = np.abs(hn.dequantize(q) - x)
    assert (err <= q.scale[:, None] * 0.5001 + 1e-7).all()
    # the scheme as documented: range [min(x,0), max(x,0)] onto [-128, 127]
    lo = np.minimum(x.min(1), 0)
    hi = np.maximum(x.max(1), 0)
    np.testing.assert_allclose(q.scale, (hi - lo) / 255, rtol=1e-6)


@pytest.mark.parametrize(
    "v",
    [np.zeros(8), np.full(8, 3.0), np.full(8, -2.5), np.array([0, 0, 0, 1e-30, -1e-30, 0, 0, 0]),
     np.array([1e30, -1e30, 0, 5, 6, 7, 8, 9]), np.arange(8.0) + 1000, np.array([1e-44, -1e-44] * 4)],
    ids=["zeros", "positive-constant", "negative-constant", "tiny", "huge", "offset", "subnormal"],
)
def test_adversarial_vectors(v) -> None:
    q = hn.quantize_qi8(np.asarray(v, np.float32))
    assert isinstance(q, hn.Qi8) and q.scale > 0 and -128 <= q.zero_point <= 127
    back = q.dequantize()
    assert np.isfinite(back).all()
    assert np.abs(back - v.astype(np.float32)).max() <= q.scale * 0.5001 + 1e-6
    if not v.any():
        assert not back.any()  # zero is exact


@pytest.mark.parametrize(
    "make, exc",
    [
        (lambda: hn.Qi8(np.zeros(4, np.int16), 1.0, 0), hn.InvalidVectorError),
        (lambda: hn.Qi8(np.zeros((2, 4), np.int8), 1.0, 0), hn.DimensionMismatchError),
        (lambda: hn.Qi8(np.zeros(4, np.int8), 0.0, 0), hn.InvalidVectorError),
        (lambda: hn.Qi8(np.zeros(4, np.int8), -1.0, 0), hn.InvalidVectorError),
        (lambda: hn.Qi8(np.zeros(4, np.int8), float("nan"), 0), hn.InvalidVectorError),
        (lambda: hn.Qi8(np.zeros(4, np.int8), float("inf"), 0), hn.InvalidVectorError),
        (lambda: hn.Qi8(np.zeros(4, np.int8), 1.0, 128), hn.InvalidVectorError),
        (lambda: hn.Qi8(np.full(4, 127, np.int8), 1e38, -128), hn.InvalidVectorError),  # stands for inf
        (lambda: hn.InMemoryQi8VectorStore(4, 2).write(np.array([0]), (np.zeros((1, 4), np.int8), np.array([1e37]), np.zeros(1))), hn.InvalidVectorError),
        (lambda: hn.Qi8Batch(np.zeros((3, 4), np.int8), np.ones(2, np.float32), np.zeros(3, np.int8)), hn.DimensionMismatchError),
        (lambda: hn.quantize_qi8(np.array([1.0, np.nan])), hn.InvalidVectorError),
        (lambda: hn.quantize_qi8([[1.0, 2.0], [3.0]]), hn.InvalidVectorError),
        (lambda: hn.quantize_qi8(["1.5", "2"]), hn.InvalidVectorError),
        (lambda: hn.quantize_qi8(np.zeros((3, 0), np.float32)), hn.DimensionMismatchError),
    ],
)
def test_bad_qi8_is_a_clear_error(make, exc) -> None:
    with pytest.raises(exc):
        make()


def test_the_largest_scale_keeps_every_value_finite() -> None:
    top = float(np.finfo(np.float32).max) / 255
    q = hn.Qi8(np.array([127, -128, 0, 5], np.int8), top, -128)
    assert np.isfinite(q.dequantize()).all()
    with pytest.raises(hn.InvalidVectorError):
        hn.Qi8(q.data, float(np.nextafter(np.float32(top), np.float32(np.inf))), -128)


@pytest.mark.parametrize("metric", [hn.L2Qi8(), hn.CosineQi8(), hn.InnerProductQi8()], ids=lambda m: m.name)
def test_qi8_index(metric) -> None:
    rng = np.random.default_rng(3)
    data = clustered(rng, 800, 24)
    queries = clustered(rng, 30, 24)
    idx = hn.Hnsw(metric, hn.HnswConfig(dim=24, max_nodes=900, m=8, ef_construction=64, seed=1))
    store = hn.InMemoryQi8VectorStore(24, 900)
    idx.insert_batch(store, np.arange(800), data)
    assert store.nbytes < hn.InMemoryVectorStore(24, 900).nbytes / 2
    found, dists = idx.search_batch(store, queries, 10, ef=64)
    exact, exact_d = idx.search_batch(store, queries, 10, exact=True)
    assert recall(found, exact) >= {"l2_qi8": 0.95, "cosine_qi8": 0.9, "ip_qi8": 0.7}[metric.name]
    # exact distances against the codes agree with float64 over the dequantized vectors
    deq = np.stack([store.vector(i).dequantize() for i in range(800)])
    ref = hn.L2().distance_numpy(queries[:, None], deq[None]) if metric.name == "l2_qi8" else None
    if ref is not None:
        np.testing.assert_allclose(exact_d, np.sort(ref, axis=1)[:, :10], rtol=1e-4, atol=1e-3)
    # a Qi8 query works like its float values
    qk = idx.search(store, hn.quantize_qi8(queries[0]), 5)
    fk = idx.search(store, hn.quantize_qi8(queries[0]).dequantize(), 5)
    assert [h.key for h in qk] == [h.key for h in fk]
    before = store.rows().codes.copy()
    with pytest.raises(hn.InvalidVectorError):
        idx.insert(store, 5000, np.full(24, np.nan))
    np.testing.assert_array_equal(store.rows().codes, before)
    idx.set(store, 3, data[4])
    idx.delete(5)
    idx.resize(1000)
    store.resize(1000)
    idx.insert_batch(store, np.arange(800, 850), data[:50] + 0.5)
    idx.check_integrity()
    with pytest.raises(hn.MetricMismatchError):
        idx.search(hn.InMemoryVectorStore(24, 900), queries[0], 3)
    with pytest.raises(hn.MetricMismatchError):
        hn.Hnsw(hn.L2(), hn.HnswConfig(dim=24, max_nodes=10)).search(store, queries[0], 3)


def test_one_set_of_qi8_rows_off_unit_length_warns_once() -> None:
    """Index.set of a Qi8Batch with rows off unit length on a cosine index warned once for the
    batch check, then again in the insert of its new keys and once more per live key; the
    rows stored are the ones add stores."""
    rng = np.random.default_rng(0)
    base = rng.standard_normal((20, 8)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    off = hn.quantize_qi8(3 * rng.standard_normal((4, 8)).astype(np.float32))
    index = hn.Index(8, metric="cosine", dtype="qi8", capacity=100, seed=1)
    index.add(np.arange(20), hn.quantize_qi8(base))
    ref = hn.Index(8, metric="cosine", dtype="qi8", capacity=100, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", hn.HnswWarning)
        ref.add(np.arange(4), off)
    for keys in ([100, 101, 102, 103], [0, 1, 2, 3], [4, 5, 200, 201]):  # new, live, both
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            index.set(keys, off)
        assert [str(w.message).split(";")[0] for w in caught if issubclass(w.category, hn.HnswWarning)] == [
            "4 Qi8 vector(s) are not unit length (row 0: norm 7.478)"]
        np.testing.assert_array_equal(index.get(keys), ref.get(np.arange(4)))
    for dtype in ("f32", "f16", "f32+f16"):  # a float index stores a Qi8Batch decoded, as add does
        plain = hn.Index(8, metric="cosine", dtype=dtype, capacity=100, seed=1)
        plain.add(np.arange(20), base)
        for rows in (1, 2, 3, 4):
            plain.set(np.arange(rows), hn.Qi8Batch(off.data[:rows], off.scale[:rows], off.zero_point[:rows]))
