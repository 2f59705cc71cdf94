"""Writing hnswlib's format: byte-identical re-saves, round trips both ways, refusals, atomicity.

Files written by hnswlib 0.8.0 come from tests/data/hnswlib and, when present,
../shared/fixtures/hnswlib; the C++ library itself (the ``hnswlib`` package of the test
extra) reads our files and writes fresh ones where it is installed.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED, build, clustered

import hnsw_numba as hn
from hnsw_numba.io.hnswlib_write import HnswlibWriteError, hnswlib_file_size, save_hnswlib

DATA = Path(__file__).resolve().parent.parent / "data" / "hnswlib"
SHARED_FIX = SHARED / "fixtures" / "hnswlib"
METRICS = {"l2": hn.L2, "ip": hn.InnerProduct, "cosine": hn.Cosine}


def _files() -> list:
    cases = [pytest.param(DATA / f"{name}.bin", info["space"], id=f"tiny-{name}")
             for name, info in json.loads((DATA / "manifest.json").read_text())["fixtures"].items()]
    if SHARED_FIX.exists():
        m = json.loads((SHARED_FIX / "manifest.json").read_text())
        cases += [pytest.param(SHARED_FIX / f"{name}.bin", info.get("space", "l2"), id=f"shared-{name}")
                  for name, info in [*m["fixtures"].items(), ("tiny", m["extras"]["tiny"]), ("empty", {})]]
    return cases


def _same_graph(a: hn.Hnsw, b: hn.Hnsw) -> None:
    """The observable graph: levels, live links of every level, tombstones, keys, entry point."""
    n = a.node_count
    assert b.node_count == n and b.config.m == a.config.m and b.dim == a.dim
    ga, gb = a.graph_arrays, b.graph_arrays
    assert ga.header[0] == gb.header[0] and ga.header[1] == gb.header[1]
    np.testing.assert_array_equal(ga.levels[:n], gb.levels[:n])
    np.testing.assert_array_equal(ga.tombstones[:n], gb.tombstones[:n])
    assert [a.key(i) for i in range(n)] == [b.key(i) for i in range(n)]
    for g in (ga, gb):
        assert ((g.links0[:n, 0] & 0xFFFF) <= 2 * a.config.m).all()
    c0 = ga.links0[:n, 0] & 0xFFFF
    np.testing.assert_array_equal(c0, gb.links0[:n, 0] & 0xFFFF)
    for i in range(n):
        assert ga.links0[i, 1 : 1 + c0[i]].tolist() == gb.links0[i, 1 : 1 + c0[i]].tolist()
        for lev in range(int(ga.levels[i])):
            pa, pb = ga.upper_start[i] + lev * (a.config.m + 1), gb.upper_start[i] + lev * (a.config.m + 1)
            ca = ga.upper_links[pa] & 0xFFFF
            assert ga.upper_links[pa : pa + 1 + ca].tolist() == gb.upper_links[pb : pb + 1 + ca].tolist()


# ---------------------------------------------------------------------------- hnswlib -> us -> file
@pytest.mark.parametrize("path,space", _files())
def test_resave_of_an_hnswlib_file_is_byte_identical(path: Path, space: str, tmp_path: Path) -> None:
    index, store = hn.load_hnswlib(space, None, path)
    out = tmp_path / "again.bin"
    save_hnswlib(out, index, store)
    assert out.read_bytes() == path.read_bytes()
    assert hnswlib_file_size(index) == path.stat().st_size
    # a materialized (writable) copy writes the same graph: stale link slots are zeroed there
    copy, cstore = index.materialize(store)
    save_hnswlib(out, copy, cstore, max_elements=store.source_capacity)
    again, astore = hn.load_hnswlib(space, None, out)
    _same_graph(index, again)
    np.testing.assert_array_equal(astore.vectors[: index.node_count], store.vectors[: index.node_count])


# ---------------------------------------------------------------------------- us -> file -> us
@pytest.mark.parametrize("metric", [hn.L2(), hn.InnerProduct(), hn.Cosine()], ids=lambda m: m.name)
def test_native_build_round_trips(metric: hn.Metric, rng, tmp_path: Path) -> None:
    data = clustered(rng, 600, 12)
    keys = rng.choice(2**40, 600, replace=False) + 2**32  # labels > 32 bits, not in NodeId order
    idx, store = build(metric, data, keys=keys, m=6, extra=50)
    entry = int(idx.graph_arrays.header[0])
    for nid in [entry, *range(0, 600, 7)]:
        if not idx.is_deleted(nid):
            idx.delete(idx.key(nid))  # the entry point among the deleted: hnswlib keeps it
    out = tmp_path / "ours.bin"
    save_hnswlib(out, idx, store)
    assert out.stat().st_size == hnswlib_file_size(idx)
    back, bstore = hn.load_hnswlib(metric, 12, out)
    _same_graph(idx, back)
    assert back.graph_arrays.tombstones[entry] == 1 and bstore.source_capacity == 650
    q = clustered(rng, 30, 12)
    k1, d1 = idx.search_batch(store, q, 10, ef=200)
    k2, d2 = back.search_batch(bstore, q, 10, ef=200)
    np.testing.assert_array_equal(k1, k2)
    np.testing.assert_array_equal(d1, d2)


def test_huge_labels_and_empty_index(tmp_path: Path, small_data) -> None:
    data, _ = small_data
    keys = [2**64 - 1 - i for i in range(50)]  # above int64: the key map holds Python ints
    idx, store = build(hn.L2(), data[:50], keys=keys, extra=0)
    buf = io.BytesIO()
    save_hnswlib(buf, idx, store)
    back, _ = hn.load_hnswlib("l2", None, buf.getvalue())
    assert [back.key(i) for i in range(50)] == keys
    empty = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=4, max_nodes=10, m=2, ef_construction=10))
    buf = io.BytesIO()
    save_hnswlib(buf, empty, hn.InMemoryVectorStore(4, 10))
    if SHARED_FIX.exists():
        assert buf.getvalue() == (SHARED_FIX / "empty.bin").read_bytes()
    assert len(hn.load_hnswlib("l2", 4, buf.getvalue())[0]) == 0


# ---------------------------------------------------------------------------- refusals
def test_refuses_what_hnswlib_cannot_read(small_data, tmp_path: Path) -> None:
    data, _ = small_data
    target = tmp_path / "x.bin"
    target.write_bytes(b"old")
    cases = [build(hn.L2(), data[:20], keys=[f"k{i}" for i in range(20)]),  # str keys
             build(hn.L2(), data[:20], keys=[2**64 + i for i in range(20)]),  # beyond uint64
             build(hn.L2(), data[:20], dtype=np.float16)]  # float16 without convert=True
    for idx, store in cases:
        with pytest.raises(HnswlibWriteError) as exc:
            save_hnswlib(target, idx, store)
        assert isinstance(exc.value, hn.HnswError) and isinstance(exc.value, ValueError)
        assert target.read_bytes() == b"old"
    idx, store = cases[0]
    with pytest.raises(hn.InvalidParameterError):
        save_hnswlib(target, idx, store, max_elements=5)  # fewer than the elements
    with pytest.raises(hn.DimensionMismatchError):
        save_hnswlib(target, idx, hn.InMemoryVectorStore(7, 30))  # not this index's store
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["x.bin"]


@pytest.mark.parametrize("dtype", [np.float16, "bfloat16", "qi8"])
def test_convert_writes_widened_vectors(dtype, small_data) -> None:
    data, queries = small_data
    if dtype == "qi8":
        idx = hn.Hnsw(hn.L2Qi8(), hn.HnswConfig(dim=data.shape[1], max_nodes=300, m=8, ef_construction=64, seed=3))
        store = hn.InMemoryQi8VectorStore(data.shape[1], 300)
        idx.insert_batch(store, np.arange(300), data[:300])
        stored = np.stack([store.vector(i).dequantize() for i in range(300)])
    else:
        idx, store = build(hn.L2(), data[:300], dtype=dtype, extra=0)
        stored = np.stack([store.vector(i).astype(np.float32) for i in range(300)])
    buf = io.BytesIO()
    save_hnswlib(buf, idx, store, convert=True)
    back, bstore = hn.load_hnswlib("l2", None, buf.getvalue())
    np.testing.assert_allclose(bstore.vectors[:300], stored, rtol=1e-6, atol=1e-6)
    _same_graph(idx, back)


def test_interrupted_write_leaves_the_old_file(small_data, tmp_path: Path, monkeypatch) -> None:
    data, _ = small_data
    idx, store = build(hn.L2(), data[:100])
    target = tmp_path / "keep.bin"
    save_hnswlib(target, idx, store)
    old = target.read_bytes()
    idx.insert(store, 1000, data[100])
    import hnsw_numba.io.hnswlib_write as w

    real = w._upper_region

    def boom(*args):
        real(*args)
        raise KeyboardInterrupt  # after the header went to the temporary file

    monkeypatch.setattr(w, "_upper_region", boom)
    with pytest.raises(KeyboardInterrupt):
        save_hnswlib(target, idx, store)
    assert target.read_bytes() == old and os.listdir(tmp_path) == ["keep.bin"]


# ---------------------------------------------------------------------------- C++ hnswlib
@pytest.mark.parametrize("space", ["l2", "ip", "cosine"])
def test_cpp_hnswlib_reads_our_files_and_we_read_its(space: str, rng, tmp_path: Path) -> None:
    hnswlib = pytest.importorskip("hnswlib")
    data = clustered(rng, 800, 16)
    q = clustered(rng, 40, 16)
    labels = np.arange(800, dtype=np.uint64) * 3 + 7
    idx, store = build(METRICS[space](), data, keys=labels.astype(np.int64), m=8, extra=100)
    for k in labels[::9].tolist():
        idx.delete(k)
    save_hnswlib(tmp_path / "ours.bin", idx, store)
    theirs = hnswlib.Index(space=space, dim=16)
    theirs.load_index(str(tmp_path / "ours.bin"))
    theirs.set_ef(200)
    assert theirs.get_max_elements() == 900 and theirs.element_count == 800
    hl, hd = theirs.knn_query(q, k=10, num_threads=1)
    ok, od = idx.search_batch(store, q, 10, ef=200)
    np.testing.assert_array_equal(hl, ok.astype(np.uint64))
    np.testing.assert_allclose(hd, od, rtol=1e-5, atol=1e-5)  # the same graph walked; float sums in another order
    np.testing.assert_array_equal(theirs.get_items(labels[1:20:3]), store.rows().data[1:20:3])

    # the other way: a file hnswlib writes, loaded and saved again by us
    theirs.add_items(q[:5], ids=[10**6 + i for i in range(5)], num_threads=1)
    theirs.save_index(str(tmp_path / "theirs.bin"))
    mine, mstore = hn.load_hnswlib(space, 16, tmp_path / "theirs.bin")
    save_hnswlib(tmp_path / "again.bin", mine, mstore)
    assert (tmp_path / "again.bin").read_bytes() == (tmp_path / "theirs.bin").read_bytes()
    hl, hd = theirs.knn_query(q, k=10, num_threads=1)
    ml, md = mine.search_batch(mstore, q, 10, ef=200)
    np.testing.assert_array_equal(hl, ml.astype(np.uint64))


def test_a_quantized_cosine_index_writes_a_file_its_loader_takes(tmp_path: Path) -> None:
    """Qi8 rows of unit vectors read back off unit length by up to sqrt(dim) half-steps
    (1.045 at 4,097-d): written as they were, the loader refused the file ([unit-vectors])."""
    dim = 4097
    x = np.zeros((12, dim), np.float64)
    for i in range(12):
        x[i, i] = 0.8  # one dominant component, the rest at ~1.5 quantization steps
        x[i, i + 1 :] = 0.8 / 255 * 1.52
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    index = hn.Index(dim, metric="cosine", dtype="qi8", seed=0)
    index.add(x)
    assert np.linalg.norm(index.get([0]), axis=1)[0] > 1.01  # the case: stored off unit length
    path = tmp_path / "q.bin"
    save_hnswlib(str(path), *index.native, convert=True)
    loaded, store = hn.load_hnswlib(hn.Cosine(), dim, str(path))
    rows = store.rows().data[:12]
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)
    assert [h.key for h in loaded.search(store, x[3], 1, exact=True)] == [3]
