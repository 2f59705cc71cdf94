"""Large arrays on transparent huge pages: the same zero-filled arrays as NumPy's, advised
``MADV_HUGEPAGE`` and aligned to 2 MiB, and the index's walked arrays allocated there through
construction, growth, renumbering and a load."""

from __future__ import annotations

import mmap
import os
import sys

import numpy as np
import pytest

import hnsw_numba as hn
from conftest import build, clustered
from hnsw_numba.core import hugepages
from naive import exact_knn

ADVISES = sys.platform.startswith("linux") and hasattr(mmap, "MADV_HUGEPAGE")
#: a kernel built without transparent huge pages refuses the advice (the arrays are still ours)
THP = os.path.exists("/sys/kernel/mm/transparent_hugepage/enabled")
needs_advice = pytest.mark.skipif(not (ADVISES and THP), reason="no transparent huge pages on this platform")


def vm_flags(address: int) -> list[str]:
    """The VmFlags of this process's mapping holding ``address`` (``hg``: huge pages asked for)."""
    with open("/proc/self/smaps") as f:
        inside = False
        for line in f:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                lo, hi = (int(x, 16) for x in head.split("-"))
                inside = lo <= address < hi
            elif inside and head == "VmFlags:":
                return line.split()[1:]
    raise AssertionError(f"no mapping holds {address:#x}")


@pytest.mark.parametrize("shape, dtype", [(3 << 20, np.uint8), ((40_000, 33), np.int32), ((5_000, 100), np.float32), (1 << 20, np.uint16)])
def test_zeros_is_numpys_array(shape, dtype) -> None:
    a = hugepages.zeros(shape, dtype)
    want = np.zeros(shape, dtype)
    assert a.shape == want.shape and a.dtype == want.dtype
    assert a.flags.c_contiguous and a.flags.writeable and a.flags.aligned
    assert not a.any()
    a.reshape(-1)[::4097] = 1  # written through, read back
    assert int(a.sum()) == want.reshape(-1)[::4097].size


def test_small_arrays_and_the_switched_off_process_stay_numpys(monkeypatch) -> None:
    for n in (1000, hugepages.HUGE_MIN // 4 - 1):
        a = hugepages.zeros(n, np.float32)
        assert not hugepages.on_huge_pages(a) and a.base is None
    assert hugepages.on_huge_pages(hugepages.zeros(hugepages.HUGE_MIN // 4, np.float32)) == ADVISES
    assert hugepages.full((10, 3), -1, np.int8).tolist() == [[-1] * 3] * 10
    monkeypatch.setenv("HNSW_NUMBA_HUGE_PAGES", "0")
    big = hugepages.zeros((1_000_000, 4), np.float32)
    assert not hugepages.on_huge_pages(big) and big.base is None and not big.any()
    store = hn.InMemoryVectorStore(16, 100_000)
    assert not hugepages.on_huge_pages(store.data)


@needs_advice
def test_large_arrays_start_on_a_huge_page_and_are_advised() -> None:
    a = hugepages.zeros((1_000_000, 16), np.float32)
    assert hugepages.on_huge_pages(a)
    assert a.ctypes.data % hugepages.HUGE_PAGE == 0
    assert "hg" in vm_flags(a.ctypes.data)
    # the part past the last whole page is left to small pages: nothing advised beyond it
    end = a.ctypes.data + a.nbytes
    assert "hg" not in vm_flags(end - end % hugepages.HUGE_PAGE + 4096)
    f = hugepages.full((700_000,), 7, np.int32)
    assert hugepages.on_huge_pages(f) and (f == 7).all()


@needs_advice
def test_a_nearly_full_last_page_is_advised_whole() -> None:
    a = hugepages.zeros(int(hugepages.HUGE_PAGE * 2.95), np.uint8)
    end = a.ctypes.data + a.nbytes
    assert "hg" in vm_flags(end - 1)


@needs_advice
def test_the_index_walks_arrays_on_huge_pages_through_growth_renumbering_and_load(tmp_path) -> None:
    rng = np.random.default_rng(11)
    data = clustered(rng, 12_000, 24)
    queries = data[rng.choice(12_000, 40, replace=False)] + rng.normal(0, 0.05, (40, 24)).astype(np.float32)
    idx, store = build(hn.L2(), data[:6_000], extra=24_000)  # room for 30,000: 2.9 MiB of rows, 2.0 MiB of links
    assert hugepages.on_huge_pages(store.data) and hugepages.on_huge_pages(idx.graph_arrays.links0)
    store.resize(60_000)
    idx.resize(60_000)
    idx.insert_batch(store, np.arange(6_000, 12_000), data[6_000:])
    assert hugepages.on_huge_pages(store.data) and hugepages.on_huge_pages(idx.graph_arrays.links0)
    idx.compact(store, reorder=True)
    assert hugepages.on_huge_pages(idx.graph_arrays.links0)
    hn.save(str(tmp_path / "ix"), idx, store)
    loaded, lstore = hn.load(str(tmp_path / "ix"), hn.L2())
    assert hugepages.on_huge_pages(lstore.data) and hugepages.on_huge_pages(loaded.graph_arrays.links0)
    truth, _ = exact_knn(hn.L2(), data, queries, 10)
    for ix, st in ((idx, store), (loaded, lstore)):
        keys, _ = ix.search_batch(st, queries, 10, ef=200)
        assert hn.recall(keys, truth) >= 0.95
        assert [h.key for h in ix.search(st, queries[0], 10, ef=200)] == keys[0].tolist()
