"""The small kernels against slow pure-Python references."""

from __future__ import annotations


import numba
import numpy as np
import pytest
from numba import njit

from hnsw_numba.kernels.heap import bounded_insert, heap_pop, heap_push, sort_pairs
from hnsw_numba.core.metrics import L2_CODE
from hnsw_numba.kernels.layout import F32Rows
from hnsw_numba.kernels.select import select_heuristic


@njit(cache=True)
def _heap_roundtrip(values):
    d = np.empty(values.shape[0] + 1, np.float32)
    i = np.empty(values.shape[0] + 1, np.int32)
    size = 0
    for j in range(values.shape[0]):
        size = heap_push(d, i, size, values[j], j)
    out = np.empty(values.shape[0], np.float32)
    for j in range(values.shape[0]):
        out[j] = d[0]
        size = heap_pop(d, i, size)
    return out


def test_heap_pops_in_descending_order(rng) -> None:
    v = rng.standard_normal(257).astype(np.float32)
    np.testing.assert_array_equal(_heap_roundtrip(v), np.sort(v)[::-1])


@njit(cache=True)
def _sort(d, i, n):
    sort_pairs(d, i, n)


def test_sort_pairs(rng) -> None:
    d = rng.standard_normal(40).astype(np.float32)
    i = np.arange(40, dtype=np.int32)
    ref = np.argsort(d, kind="stable")
    _sort(d, i, 40)
    assert np.all(np.diff(d) >= 0) and sorted(i.tolist()) == list(range(40))
    np.testing.assert_array_equal(np.sort(ref), np.sort(i))


@njit(cache=True)
def _bounded(values, ids, ef):
    d = np.empty(ef, np.float32)
    i = np.empty(ef, np.int32)
    n = np.int64(0)
    sizes = np.empty(values.shape[0], np.int64)
    for j in range(values.shape[0]):
        n = bounded_insert(d, i, n, np.int64(ef), values[j], ids[j])
        sizes[j] = n
    return d[:n].copy(), i[:n].copy(), sizes


def test_bounded_insert_keeps_the_best_ef_sorted(rng) -> None:
    """Against a sorted list of (distance, insertion order): ties keep insertion order, the worst falls off."""
    for ef in (1, 2, 7, 32):
        # rounded to quarters so that equal distances (ties at the bound too) occur
        v = (np.round(rng.standard_normal(300) * 4) / 4).astype(np.float32)
        ids = rng.permutation(300).astype(np.int32)
        d, i, sizes = _bounded(v, ids, ef)
        ref: list[tuple[float, int, int]] = []
        for j, (dist, key) in enumerate(zip(v.tolist(), ids.tolist())):
            ref = sorted(ref + [(dist, j, key)])[:ef]
            assert sizes[j] == len(ref)
        assert d.tolist() == [r[0] for r in ref]
        assert i.tolist() == [r[2] for r in ref]


def _own_machine_code(dispatcher, sig) -> str:
    """The assembly of the compiled function itself (without its Python wrapper)."""
    asm = dispatcher.inspect_asm(sig)
    name = dispatcher.overloads[sig].fndesc.mangled_name
    start = asm.index(name + ":")
    return asm[start : asm.index(".Lfunc_end", start)]


@pytest.mark.skipif(bool(numba.config.BOUNDSCHECK), reason="bounds checks add raising paths, each releasing the arrays")
def test_heap_helpers_take_no_reference_counts() -> None:
    """heap_pop and bounded_insert run once per candidate of every walk: their code takes and
    drops no reference counts. An early return leaves Numba's atomic take-and-drop pair
    around each call (LLVM's pruning pass gives up on two release sites)."""
    d, i = np.zeros(8, np.float32), np.zeros(8, np.int32)
    heap_pop(d, i, np.int64(3))
    bounded_insert(d, i, np.int64(3), np.int64(5), np.float32(1.0), np.int32(2))
    for f in (heap_pop.python_twin, bounded_insert.python_twin):  # the calls above compiled them
        assert f.signatures
        for sig in f.signatures:
            code = _own_machine_code(f, sig)
            assert "NRT_incref" not in code and "NRT_decref" not in code, f.py_func.__name__


@njit(cache=True)
def _select(rows, cand_d, cand_i, m):
    out = np.empty(m, np.int32)
    n = select_heuristic(L2_CODE, rows, cand_d, cand_i, cand_d.shape[0], m, out)
    return out[:n]


def naive_select(x: np.ndarray, base: np.ndarray, cands: list[int], m: int) -> list[int]:
    """hnswlib getNeighborsByHeuristic2, literally."""
    if len(cands) < m:
        return cands
    kept: list[int] = []
    for e in cands:
        if len(kept) >= m:
            break
        de = ((x[e] - base) ** 2).sum()
        if all(((x[r] - x[e]) ** 2).sum() >= de for r in kept):
            kept.append(e)
    return kept


def test_heuristic_matches_reference(rng) -> None:
    x = rng.standard_normal((60, 5)).astype(np.float32)
    base = rng.standard_normal(5).astype(np.float32)
    d = ((x - base) ** 2).sum(1).astype(np.float32)
    order = np.argsort(d).astype(np.int32)
    for m in (3, 6, 12, 70):
        got = _select(F32Rows(x), d[order], order, m).tolist()
        assert got == naive_select(x, base, order.tolist(), m)


def test_sort_pairs_puts_the_newest_of_equal_distances_first() -> None:
    """Equal distances by NodeId descending, as hnswlib's heuristic takes its candidates:
    a node joining a full list of its exact duplicates then wins a place in it."""
    d = np.array([0.5, 0.0, 0.0, 0.2, 0.0], np.float32)
    i = np.array([9, 3, 7, 4, 5], np.int32)
    _sort(d, i, 5)
    np.testing.assert_array_equal(d, np.float32([0.0, 0.0, 0.0, 0.2, 0.5]))
    assert i.tolist() == [7, 5, 3, 4, 9]

