"""The sketch's integer dot products (``kernels/codedot.py``) against NumPy's int64 sums."""

from __future__ import annotations

import re

import numba
import numpy as np
import pytest

from hnsw_numba.kernels.codedot import QUERY_LIMIT, VNNI, code_dots, make_dot4, split_query
from hnsw_numba.kernels.sketch import quantize_query


def _exact(codes: np.ndarray, q16: np.ndarray) -> np.ndarray:
    return codes.astype(np.int64) @ q16.astype(np.int64)


def _halves(q16: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    qh, ql = np.empty(q16.shape[0], np.int8), np.empty(q16.shape[0], np.int8)
    split_query(q16, qh, ql)
    return qh, ql


def test_split_query_recombines_every_value() -> None:
    q16 = np.arange(-QUERY_LIMIT, QUERY_LIMIT + 1, dtype=np.int16)
    qh, ql = _halves(q16)
    assert np.array_equal(128 * qh.astype(np.int32) + ql, q16)
    assert ql.min() >= 0  # vpdpbusd: unsigned codes times signed bytes, both halves signed bytes


def test_quantize_query_fits_the_split() -> None:
    rng = np.random.default_rng(0)
    for d in (3, 8, 128, 384, 2000):
        q = rng.standard_normal(d).astype(np.float32)
        q16 = np.empty(d, np.int16)
        sq, _ = quantize_query(q, q16)
        assert sq > 0.0 and np.abs(q16).max() <= QUERY_LIMIT
        assert np.abs(q16.astype(np.int64)).sum() * 255 < 2**31  # no int32 overflow of a row's sum


@pytest.mark.parametrize("vnni", [False, pytest.param(True, marks=pytest.mark.skipif(not VNNI, reason="no AVX-512 VNNI"))])
def test_dot4_equals_the_exact_sums(vnni: bool) -> None:
    dot4 = make_dot4(vnni)

    @numba.njit
    def run(codes, qh, ql, n, out):
        for c in range(0, codes.shape[0] - 3, 4):
            dot4(codes, c, qh, ql, n, out, c)

    rng = np.random.default_rng(1)
    for d, n in ((64, 64), (128, 128), (384, 384), (200, 192)):  # n: the columns read, a multiple of 64
        codes = rng.integers(0, 256, (12, d), dtype=np.uint8)
        q16 = rng.integers(-QUERY_LIMIT, QUERY_LIMIT + 1, d).astype(np.int16)
        out = np.full(12, -7, np.int32)
        run(codes, *_halves(q16), n, out)
        assert np.array_equal(out, _exact(codes[:, :n], q16[:n])), (vnni, d)


@pytest.mark.parametrize("vnni", [False, pytest.param(True, marks=pytest.mark.skipif(not VNNI, reason="no AVX-512 VNNI"))])
def test_dot4_wraps_partial_sums_back_to_the_exact_total(vnni: bool) -> None:
    """128 sum(u qh) leaves the int32 range here (qh = -128), the whole sum does not."""
    dot4 = make_dot4(vnni)

    @numba.njit
    def run(codes, qh, ql, n, out):
        dot4(codes, 0, qh, ql, n, out, 0)

    d = 576
    codes = np.zeros((4, d), np.uint8)
    codes[:, :514] = 255
    codes[:, 514] = 5  # the codes sum to 131,075: times -16,384 past int32, times -16,383 within
    q16 = np.full(d, -QUERY_LIMIT, np.int16)
    qh, ql = _halves(q16)
    exact = _exact(codes, q16)
    assert int(codes[0].sum(dtype=np.int64)) * 128 * int(qh[0]) < -(2**31) <= exact[0]
    out = np.zeros(4, np.int32)
    run(codes, qh, ql, d, out)
    assert np.array_equal(out, exact)


def test_code_dots_over_any_rows_and_dimension() -> None:
    rng = np.random.default_rng(2)
    for d in (1, 7, 64, 100, 385):
        codes = rng.integers(0, 256, (23, d), dtype=np.uint8)
        q16 = rng.integers(-QUERY_LIMIT, QUERY_LIMIT + 1, d).astype(np.int16)
        qh, ql = _halves(q16)
        for c0, c1 in ((0, 23), (3, 10), (5, 6), (8, 8)):
            dots = np.full(c1 - c0 + 2, 99, np.int32)
            code_dots(codes, c0, c1, q16, qh, ql, dots)
            assert np.array_equal(dots[: c1 - c0], _exact(codes[c0:c1], q16)), (d, c0, c1)
            assert (dots[c1 - c0 :] == 99).all()  # nothing written past the rows asked for


@pytest.mark.skipif(not VNNI, reason="no AVX-512 VNNI")
def test_code_dots_compiles_to_vpdpbusd() -> None:
    codes = np.zeros((8, 128), np.uint8)
    q16 = np.zeros(128, np.int16)
    code_dots(codes, 0, 8, q16, *_halves(q16), np.zeros(8, np.int32))
    twin = code_dots.python_twin  # called from Python above: the twin holds the code
    asm = "\n".join(twin.inspect_asm(sig) for sig in twin.signatures)
    assert re.search(r"vpdpbusd\s+.*zmm", asm)


def test_features_are_those_numba_compiles_for(monkeypatch) -> None:
    """VNNI follows NUMBA_CPU_FEATURES when set (a cache built for another CPU, a portable build)."""
    from numba.core import config

    import hnsw_numba.kernels.codedot as codedot

    monkeypatch.setattr(config, "CPU_FEATURES", "+avx2,+fma,-avx512vnni")
    assert codedot._target_features() == {"+avx2", "+fma", "-avx512vnni"}
    monkeypatch.setattr(config, "CPU_FEATURES", None)
    from numba.core.codegen import get_host_cpu_features

    assert codedot._target_features() == set(get_host_cpu_features().split(","))
