"""Distance kernels of every (store type x metric) against a float64 NumPy reference.

Error model (u = 2**-24, the unit roundoff of the float32 accumulation; n = dim;
gamma(m) = m u / (1 - m u), the classical bound of an m-term float sum, which also covers
the kernels' vectorised / re-associated order):

* kernel arithmetic, checked against float64 over the *stored* values v (f16 / bf16 widen
  exactly; Qi8 v = scale * (code - zero)):
    - inner product / cosine  |got - ref| <= gamma(n + 3) * sum|q_k v_k| + u |ref|
    - L2, float stores        |got - ref| <= gamma(n + 2) * ref      (decoding is exact)
    - L2, Qi8                 |got - ref| <= gamma(n + 4) * sum (|q_k - v_k| + |v_k|)**2
                              (scale * (code - zero) is rounded once more)
    - IP between two Qi8 rows: the centred integer dot is exact, leaving 4 roundings:
                              |got - ref| <= gamma(4) * sa sb sum|(xa - za)(xb - zb)| + u |ref|
  plus an absolute ``TINY`` per term for float32 underflow (products below 2**-126 lose
  their relative accuracy; each term errs by at most 2**-150).
* storage rounding, checked against float64 over the *original* input x, on top of the
  above: per component |v_k - x_k| <= e_k with
    - float32  e_k = 2**-24 |x_k|   (the data is already float32: e_k = 0 here)
    - float16  e_k = 2**-11 |x_k| + 2**-25   (10 stored mantissa bits; subnormal spacing 2**-24)
    - bfloat16 e_k = 2**-8  |x_k| + 2**-134  (7 stored mantissa bits; f32's exponent range)
    - Qi8      e_k = scale / 2              (the documented rounding of quantize_qi8)
  so IP moves by at most sum|q_k| e_k and L2 by at most sum e_k (2 |q_k - x_k| + e_k).

Adversarial values: +-0, float32 / f16 / bf16 subnormals, f16's max 65504, bf16's largest
and smallest values, int8 codes -128 / 127 with zero points -128 / 127 (|code - zero| = 255),
all-zero vectors under cosine (distance exactly 1) and float32 overflow (L2 saturates to inf).
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import hnsw_numba as hn
from hnsw_numba.kernels.jit import helper
from hnsw_numba.kernels.distances import bf16_to_f32, decode_row, dist_pair, dist_query, dist_query4, dist_query_as4, f16_to_f32
from hnsw_numba.core.metrics import IP_CODE, L2_CODE
from hnsw_numba.kernels.layout import Qi8Rows

U = 2.0**-24
TINY = 2.0**-149  # one float32 subnormal step: bound of an underflowed term (x2 margin over 2**-150)
BF16 = np.dtype(ml_dtypes.bfloat16)
KINDS = ["float32", "float16", "bfloat16", "qi8"]
METRICS = {"l2": (hn.L2(), hn.L2Qi8()), "ip": (hn.InnerProduct(), hn.InnerProductQi8()),
           "cosine": (hn.Cosine(), hn.CosineQi8())}
STORAGE_REL = {"float32": 0.0, "float16": 2.0**-11, "bfloat16": 2.0**-8}
STORAGE_ABS = {"float32": 0.0, "float16": 2.0**-25, "bfloat16": 2.0**-134}


# -- kernels under test (the same @overload implementations the index compiles) -----------
@helper
def _query_all(metric, rows, q, out):
    for i in range(out.shape[0]):
        out[i] = dist_query(metric, rows, i, q)


@helper
def _query4_all(metric, rows, q, order, out):
    # four rows per call, in a shuffled order (wrapping around at the end)
    n = order.shape[0]
    for t in range(0, n, 4):
        a, b, c, d = order[t], order[(t + 1) % n], order[(t + 2) % n], order[(t + 3) % n]
        r0, r1, r2, r3 = dist_query4(metric, rows, a, b, c, d, q)
        out[a] = r0
        out[b] = r1
        out[c] = r2
        out[d] = r3


@helper
def _query_as4_all(metric, rows, q, out):
    for i in range(out.shape[0]):
        out[i] = dist_query_as4(metric, rows, i, q)


@helper
def _pair_all(metric, rows, b, out):
    for i in range(out.shape[0]):
        out[i] = dist_pair(metric, rows, i, b)


@helper
def _decode_all(rows, out):
    for i in range(out.shape[0]):
        decode_row(rows, i, out[i])


@helper
def _widen_f16(bits, out):
    for i in range(bits.shape[0]):
        out[i] = f16_to_f32(bits[i])


@helper
def _widen_bf16(bits, out):
    for i in range(bits.shape[0]):
        out[i] = bf16_to_f32(bits[i])


# -- helpers ----------------------------------------------------------------------------
def gamma(m: int) -> float:
    return m * U / (1 - m * U)


def metric_for(kind: str, name: str) -> hn.Metric:
    return METRICS[name][1 if kind == "qi8" else 0]


def make_store(kind: str, x: np.ndarray):
    """A store holding ``x`` (already prepared), with its rows and the stored values in float64."""
    n, dim = x.shape
    if kind == "qi8":
        store = hn.InMemoryQi8VectorStore(dim, n)
        store.write(np.arange(n, dtype=np.int32), store.encode(x))
    else:  # unchecked: the kernels' arithmetic is tested past the magnitudes a store takes too
        rows = x.astype(np.float32) if kind == "float32" else x.astype(hn.InMemoryVectorStore(dim, 1, dtype=kind).dtype).view(np.uint16)
        store = hn.InMemoryVectorStore.from_array(np.ascontiguousarray(rows), dtype=kind, check=False)
    return store, store.rows(), stored_values(store.rows(), kind)


def stored_values(rows, kind: str) -> np.ndarray:
    if kind == "qi8":
        return rows.scale.astype(np.float64)[:, None] * (rows.codes.astype(np.float64) - rows.zero.astype(np.float64)[:, None])
    if kind == "float32":
        return rows.data.astype(np.float64)
    return rows.bits.view(np.float16 if kind == "float16" else BF16).astype(np.float64)


def storage_error(kind: str, x: np.ndarray, rows) -> np.ndarray:
    """Per-component bound e of |stored - x| (float64, shape of x)."""
    if kind == "qi8":
        # scale / 2, plus the float32 rounding of the scale itself (relative 2**-24, or one
        # subnormal step for tiny scales) times |code - zero| <= 255
        s = rows.scale.astype(np.float64)[:, None]
        return np.broadcast_to(s / 2 + 255 * (U * s + TINY), x.shape)
    return STORAGE_REL[kind] * np.abs(x) + STORAGE_ABS[kind]


def amplitude(kind: str, rows) -> np.ndarray | float:
    """How much an underflowed float32 term can be scaled up afterwards (Qi8: by the scale)."""
    return np.maximum(rows.scale.astype(np.float64), 1.0) if kind == "qi8" else 1.0


def kernel_query(metric: hn.Metric, rows, q: np.ndarray, n: int) -> np.ndarray:
    out = np.empty(n, np.float32)
    _query_all(metric.code, rows, np.ascontiguousarray(q, np.float32), out)
    return out.astype(np.float64)


def kernel_query4(metric: hn.Metric, rows, q: np.ndarray, n: int) -> np.ndarray:
    out = np.empty(n, np.float32)
    order = np.random.default_rng(n).permutation(n)
    _query4_all(metric.code, rows, np.ascontiguousarray(q, np.float32), order, out)
    return out.astype(np.float64)


def kernel_pair(metric: hn.Metric, rows, b: int, n: int) -> np.ndarray:
    out = np.empty(n, np.float32)
    _pair_all(metric.code, rows, b, out)
    return out.astype(np.float64)


def arithmetic_bound(kind: str, code: int, q: np.ndarray, v: np.ndarray, ref: np.ndarray, amp=1.0) -> np.ndarray:
    """Bound of |dist_query - float64 over the stored values| for the stored rows ``v`` (n, d)."""
    d = v.shape[1]
    if code == IP_CODE:
        return gamma(d + 3) * np.abs(q * v).sum(1) + U * np.abs(ref) + d * TINY * amp
    if kind == "qi8":
        return gamma(d + 4) * ((np.abs(q - v) + np.abs(v)) ** 2).sum(1) + d * TINY * (1 + 2 * (np.abs(q - v) + np.abs(v)).max(1))
    return gamma(d + 2) * ref + d * TINY


def pair_bound(kind: str, code: int, rows, v: np.ndarray, b: int, ref: np.ndarray) -> np.ndarray:
    """Bound of |dist_pair(i, b) - float64 over the stored values| for every row i."""
    d = v.shape[1]
    if kind != "qi8":
        return arithmetic_bound(kind, code, v[b], v, ref)
    if code == IP_CODE:  # exact integer dot, then 4 roundings
        cz = rows.codes.astype(np.float64) - rows.zero.astype(np.float64)[:, None]
        mag = rows.scale.astype(np.float64) * float(rows.scale[b]) * np.abs(cz * cz[b]).sum(1)
        return gamma(4) * mag + U * np.abs(ref) + TINY
    # both rows decoded with one rounding each, then subtracted and squared
    t = np.abs(v - v[b]) + np.abs(v) + np.abs(v[b])
    return gamma(d + 5) * (t**2).sum(1) + d * TINY * (1 + 2 * t.max(1))


def check_query(kind: str, metric: hn.Metric, x: np.ndarray, queries: np.ndarray) -> None:
    """dist_query against both references: the stored values and the original input."""
    xp = metric.prepare(x)
    store, rows, v = make_store(kind, xp)
    e = storage_error(kind, xp.astype(np.float64), rows)
    for q in metric.prepare(queries):
        q64 = q.astype(np.float64)
        got = kernel_query(metric, rows, q, x.shape[0])
        ref = metric_ref(metric.code, q64, v)
        bound = arithmetic_bound(kind, metric.code, q64, v, ref, amplitude(kind, rows))
        assert np.all(np.abs(got - ref) <= bound), (kind, metric, np.max(np.abs(got - ref) - bound))
        # the four-rows-at-once kernel of the graph walk obeys the same bound
        got4 = kernel_query4(metric, rows, q, x.shape[0])
        assert np.all(np.abs(got4 - ref) <= bound), (kind, metric, "x4", np.max(np.abs(got4 - ref) - bound))
        ref_x = metric_ref(metric.code, q64, xp.astype(np.float64))
        if metric.code == IP_CODE:
            storage = (np.abs(q64) * e).sum(1)
        else:
            storage = (e * (2 * np.abs(q64 - xp) + e)).sum(1)
        assert np.all(np.abs(got - ref_x) <= bound + storage), (kind, metric, np.max(np.abs(got - ref_x) - bound - storage))


def metric_ref(code: int, q: np.ndarray, v: np.ndarray) -> np.ndarray:
    if code == L2_CODE:
        return ((q - v) ** 2).sum(-1)
    return 1.0 - (q * v).sum(-1)


def check_pairs(kind: str, metric: hn.Metric, x: np.ndarray) -> None:
    """dist_pair of every row against a few others, against float64 over the stored values."""
    store, rows, v = make_store(kind, metric.prepare(x))
    n, d = v.shape
    for b in sorted({0, n // 2, n - 1}):
        got = kernel_pair(metric, rows, b, n)
        ref = metric_ref(metric.code, v[b], v)
        bound = pair_bound(kind, metric.code, rows, v, b, ref)
        assert np.all(np.abs(got - ref) <= bound), (kind, metric, b, np.max(np.abs(got - ref) - bound))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("metric_name", ["l2", "ip"])
def test_one_row_as_four_equals_every_lane_bit_for_bit(kind, metric_name) -> None:
    """A walk's entry is scored by ``dist_query_as4`` and its neighbours by ``dist_query4``:
    the two must agree to the last bit at every lane, or an exact duplicate of the entry
    would not tie with it (``dist_query``'s own loop rounds L2 differently from 4-d up)."""
    metric = metric_for(kind, metric_name)
    rng = np.random.default_rng(5)
    for dim in (1, 3, 4, 7, 16, 33, 64, 100, 384):
        _, rows, _ = make_store(kind, metric.prepare(rng.standard_normal((12, dim)).astype(np.float32)))
        q = metric.prepare(rng.standard_normal((1, dim)).astype(np.float32))[0]
        one = np.empty(12, np.float32)
        _query_as4_all(metric.code, rows, q, one)
        for shift in range(4):  # every row in every lane
            four = np.empty(12, np.float32)
            _query4_all(metric.code, rows, q, np.roll(np.arange(12), shift), four)
            assert one.view(np.uint32).tolist() == four.view(np.uint32).tolist(), (dim, shift)


# -- the f16 / bf16 widening intrinsics -----------------------------------------------------
def test_half_widening_is_exact_for_every_bit_pattern() -> None:
    bits = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    for widen, dtype in ((_widen_f16, np.float16), (_widen_bf16, BF16)):
        got = np.empty(bits.shape[0], np.float32)
        widen(bits, got)
        want = bits.view(dtype).astype(np.float32)
        nan = np.isnan(want)
        assert np.array_equal(np.isnan(got), nan)
        # bit-exact, so -0.0 stays -0.0 and subnormals / infinities survive
        assert np.array_equal(got[~nan].view(np.uint32), want[~nan].view(np.uint32)), dtype


# -- random data ------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("metric_name", ["l2", "ip", "cosine"])
@pytest.mark.parametrize("dim", [1, 37, 384])
def test_random_vectors_match_float64(kind, metric_name, dim) -> None:
    rng = np.random.default_rng(dim)
    scale = rng.uniform(0.01, 100, (60, 1))  # per-vector magnitudes spanning 4 decades
    x = (rng.standard_normal((60, dim)) * scale).astype(np.float32)
    queries = (rng.standard_normal((4, dim)) * 3).astype(np.float32)
    metric = metric_for(kind, metric_name)
    check_query(kind, metric, x, queries)
    check_pairs(kind, metric, x)


@pytest.mark.parametrize("kind", KINDS)
def test_decode_row_gives_the_stored_values(kind) -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((20, 29)).astype(np.float32)
    _, rows, v = make_store(kind, x)
    out = np.empty(x.shape, np.float32)
    _decode_all(rows, out)
    # exact for the float types; for Qi8 the float32 scale * (code - zero) of Qi8.dequantize
    want = hn.Qi8Batch(rows.codes, rows.scale, rows.zero).dequantize() if kind == "qi8" else v.astype(np.float32)
    np.testing.assert_array_equal(out, want)


# -- adversarial values -----------------------------------------------------------------------
def adversarial(kind: str) -> np.ndarray:
    """Rows of edge values that every store type can hold (its own extremes included)."""
    sub32 = np.float32(1e-40)  # float32 subnormal (bf16 holds it approximately)
    rows = [
        [0.0, -0.0, 0.0, -0.0, 0.0, -0.0],
        [sub32, -sub32, 2 * sub32, 0.0, -0.0, 1e-45],
        [np.finfo(np.float32).tiny, -np.finfo(np.float32).tiny, 1.0, -1.0, 0.5, 0.0],
        [6e-8, -6e-8, 1e-7, 6.1e-5, -6.1e-5, 0.0],  # float16 subnormals and its smallest normal
        [65504.0, -65504.0, 1.0, -1.0, 0.0, 2.0**-24],  # float16's largest finite value
        [2.0**-133, -(2.0**-126), 3.0e38 if kind == "bfloat16" else 1.0, 0.0, 1.0, -1.0],  # bf16 extremes
        [1.0, 1.0 + 2**-8, 1.0 + 2**-11, 1.0 - 2**-12, -1.0, 3.0],  # ties and near ties of the roundings
    ]
    return np.asarray(rows, np.float32)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("metric_name", ["l2", "ip", "cosine"])
def test_adversarial_values_match_float64(kind, metric_name) -> None:
    metric = metric_for(kind, metric_name)
    x = adversarial(kind)
    if metric.code == L2_CODE:
        x = x[np.abs(x).max(1) < 1e30]  # (3e38)**2 overflows float32: see the overflow test
    queries = np.asarray([[-0.0] * 6, [1e-40, 0, 0, 0, 0, -1e-40], [1.0, -1.0, 0.5, 0.0, 2.0, -65504.0],
                          [1e-30, 1e-30, 1e-30, 1e-30, 1e-30, 1e-30]], np.float32)
    check_query(kind, metric, x, queries)
    check_pairs(kind, metric, x)


@pytest.mark.parametrize("kind", KINDS)
def test_zero_vectors_under_cosine_are_at_distance_exactly_one(kind) -> None:
    metric = metric_for(kind, "cosine")
    x = np.zeros((3, 16), np.float32)
    x[1] = np.linspace(-1, 1, 16)
    _, rows, _ = make_store(kind, metric.prepare(x))
    q0 = metric.prepare(np.zeros(16, np.float32))
    assert np.all(kernel_query(metric, rows, q0, 3) == 1.0)  # zero query: 1 - 0 for everyone
    q1 = metric.prepare(x[1])
    assert kernel_query(metric, rows, q1, 3)[[0, 2]].tolist() == [1.0, 1.0]  # zero rows
    assert kernel_pair(metric, rows, 0, 3).tolist()[1:] == [1.0, 1.0]
    # and through the index: a zero vector is found, at distance 1
    idx = hn.Hnsw(metric, hn.HnswConfig(dim=16, max_nodes=3, m=4))
    store = hn.InMemoryQi8VectorStore(16, 3) if kind == "qi8" else hn.InMemoryVectorStore(16, 3, dtype=kind)
    idx.insert_batch(store, [0, 1, 2], x)
    hits = idx.search(store, np.zeros(16, np.float32), 3)
    assert sorted(h.key for h in hits) == [0, 1, 2] and all(h.distance == 1.0 for h in hits)


@pytest.mark.parametrize("code", [L2_CODE, IP_CODE])
def test_qi8_int8_extremes(code) -> None:
    """Codes -128 / 127 against zero points 127 / -128: |code - zero| = 255 in every column."""
    rng = np.random.default_rng(5)
    d = 300
    codes = rng.choice(np.array([-128, 127], np.int8), (8, d))
    codes[0] = -128
    codes[1] = 127
    zero = np.array([127, -128, 127, -128, 0, -1, 127, -128], np.int8)
    scale = np.array([1e-3, 2.5e-2, 1.0, 3.0, 7e-3, 1e2, 1e-6, 5e-1], np.float32)
    rows = Qi8Rows(np.ascontiguousarray(codes), scale, zero)
    v = stored_values(rows, "qi8")
    metric = hn.L2Qi8() if code == L2_CODE else hn.InnerProductQi8()
    q = (rng.standard_normal(d) * 50).astype(np.float32)
    got = kernel_query(metric, rows, q, 8)
    ref = metric_ref(code, q.astype(np.float64), v)
    assert np.all(np.abs(got - ref) <= arithmetic_bound("qi8", code, q.astype(np.float64), v, ref, amplitude("qi8", rows)))
    for b in range(8):
        got = kernel_pair(metric, rows, b, 8)
        ref = metric_ref(code, v[b], v)
        assert np.all(np.abs(got - ref) <= pair_bound("qi8", code, rows, v, b, ref)), b


def test_qi8_integer_dot_is_exact_over_many_blocks() -> None:
    """Columns beyond one int32 block (16384): 255**2 * 40000 would overflow int32."""
    from hnsw_numba.kernels.distances import QI8_BLOCK

    d = 2 * QI8_BLOCK + 7232
    codes = np.empty((2, d), np.int8)
    codes[0] = -128
    codes[1] = 127
    rows = Qi8Rows(codes, np.array([1.0, 1.0], np.float32), np.array([127, -128], np.int8))
    got = kernel_pair(hn.InnerProductQi8(), rows, 1, 2)[0]
    exact = 1.0 - (-255.0 * 255.0) * d  # 1 + 255**2 d, far beyond 2**31
    assert abs(got - exact) <= 4 * U * abs(exact)


@pytest.mark.parametrize("kind", ["float32", "bfloat16"])
def test_float32_overflow_saturates_to_inf_not_nan(kind) -> None:
    """L2 of values near float32's (and bf16's) largest: the float32 sum overflows to +inf."""
    x = np.asarray([[3.0e38, -3.0e38, 1.0], [1.0, 2.0, 3.0]], np.float32)
    _, rows, _ = make_store(kind, x)
    got = kernel_query(hn.L2(), rows, np.zeros(3, np.float32), 2)
    assert got[0] == np.inf and got[1] == 14.0
    assert kernel_pair(hn.L2(), rows, 1, 2)[0] == np.inf


# -- vectorisation ----------------------------------------------------------------------------
def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


@pytest.mark.skipif(not {"avx2", "f16c", "fma"} <= _cpu_flags(), reason="x86-64 with AVX2 / F16C / FMA only")
def test_conversions_and_integer_dot_vectorise() -> None:
    """The widening of f16 / bf16 / int8 and the Qi8 integer dot compile to packed SIMD code."""
    import re

    x = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    packed = {
        "float16": [r"vcvtph2ps\w*\s+.*%[xyz]mm"],  # one instruction widens 8 / 16 halves
        "bfloat16": [r"vpmovzxwd\s", r"vpslld\s"],  # zero-extend and shift, packed
        "qi8": [r"vpmovsxbd\s", r"vcvtdq2ps\s"],  # asymmetric: int8 -> int32 -> float32, packed
    }
    for kind, patterns in packed.items():
        _, rows, _ = make_store(kind, x)
        kernel_query(hn.L2(), rows, x[0], 4)
        kernel_pair(hn.InnerProduct(), rows, 0, 4)
        query_all = _query_all.python_twin  # called from Python above: the twin holds the code
        asm = "\n".join(query_all.inspect_asm(sig) for sig in query_all.signatures if type(rows).__name__ in str(sig[1]))
        for pat in patterns + [r"vfmadd\d+ps\s"]:
            assert re.search(pat, asm), (kind, pat)
        if kind == "qi8":
            pair_all = _pair_all.python_twin
            pair_asm = "\n".join(pair_all.inspect_asm(sig) for sig in pair_all.signatures if "Qi8Rows" in str(sig[1]))
            assert re.search(r"vpmaddwd\s|vpdpwssd\s", pair_asm)  # int16 x int16 -> int32 pairs
