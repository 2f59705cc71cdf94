"""hnswlib files: loading, searching, read-only behaviour, materialize, and bad files.

Runs on the tiny fixtures of tests/data/hnswlib (tools/make_tiny_hnswlib_fixtures.py) and,
when present, on the ones written by hnswlib 0.8.0 in ../shared/fixtures/hnswlib.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import struct
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED

import hnsw_numba as hn
from hnsw_numba.legacy import HnswlibVectorStore, load_hnswlib

DATA = Path(__file__).resolve().parent.parent / "data" / "hnswlib"
SHARED_FIX = SHARED / "fixtures" / "hnswlib"
HEADER = struct.Struct("<QQQQQQiIQQQdQ")
FIELDS = ["offset_level0", "max_elements", "count", "size_per_element", "label_offset", "offset_data",
          "max_level", "entry_point", "max_m", "max_m0", "m", "mult", "ef_construction"]
METRICS = {"l2": hn.L2, "ip": hn.InnerProduct, "cosine": hn.Cosine}


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def _search_cases() -> list:
    cases = [pytest.param(DATA, name, info, id=f"tiny-{name}")
             for name, info in _manifest(DATA)["fixtures"].items() if info["element_count"]]
    if SHARED_FIX.exists():
        m = _manifest(SHARED_FIX)
        cases += [pytest.param(SHARED_FIX, name, info, id=f"shared-{name}")
                  for name, info in [*m["fixtures"].items(), ("tiny", m["extras"]["tiny"])]]
    else:
        cases.append(pytest.param(SHARED_FIX, "", {}, id="shared", marks=pytest.mark.skip(reason=f"{SHARED_FIX} not available")))
    return cases


def _bad_cases() -> list:
    if not SHARED_FIX.exists():
        return [pytest.param("", {}, id="shared", marks=pytest.mark.skip(reason=f"{SHARED_FIX} not available"))]
    m = _manifest(SHARED_FIX)
    return [pytest.param(name, info, id=name) for name, info in [*m["broken"].items(), *m["hostile"].items()]]


def _hit_rate(found: list, truth: list) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found, truth)]))


def _keys(keys: np.ndarray) -> list:
    """Result keys as lists of Python ints (int64 or object arrays), padding dropped."""
    return [[int(k) for k in row if k is not None and k != -1] for row in keys.tolist()]


def _opt(folder: Path, name: str, part: str) -> np.ndarray | None:
    p = folder / f"{name}.{part}.npy"
    return np.load(p) if p.exists() else None


@pytest.fixture(scope="module")
def tiny_l2():
    return load_hnswlib(hn.L2(), 8, DATA / "l2.bin")


# ---------------------------------------------------------------------------- fixtures
@pytest.mark.parametrize("folder,name,info", _search_cases())
def test_fixture_matches_manifest_and_hnswlib(folder: Path, name: str, info: dict) -> None:
    space, dim, n = info["space"], info["dim"], info["element_count"]
    index, store = load_hnswlib(METRICS[space](), None, folder / f"{name}.bin")  # dim from the file
    assert index.dim == dim and store.dim == dim
    assert index.node_count == n and index.read_only

    labels = np.load(folder / f"{name}.labels.npy")
    assert [index.key(i) for i in range(n)] == labels.tolist()
    stored = store.vectors[:n]
    vectors = np.load(folder / f"{name}.vectors.npy")
    if space == "cosine":
        np.testing.assert_allclose(stored, hn.Cosine().prepare(vectors), atol=1e-6)
        if "stored_vectors_sha256" in info:
            assert hashlib.sha256(np.ascontiguousarray(stored).tobytes()).hexdigest() == info["stored_vectors_sha256"]
    else:
        assert np.array_equal(stored.view(np.uint32), vectors.view(np.uint32))  # bit for bit

    deleted = _opt(folder, name, "deleted")
    deleted = set() if deleted is None else set(deleted.tolist())
    tomb = index.graph_arrays.tombstones[:n]
    assert {int(labels[i]) for i in np.flatnonzero(tomb)} == deleted
    assert len(index) == n - len(deleted)
    if "header" in info:
        header = index.graph_arrays.header
        assert header[0] == info["header"]["enterpoint_node_"] and header[1] == info["header"]["maxlevel_"]
        assert index.config.m == info["header"]["M_"]

    queries = np.load(folder / f"{name}.queries.npy")
    expected = np.load(folder / f"{name}.expected_labels.npy").tolist()
    exact = np.load(folder / f"{name}.exact_labels.npy")
    k = len(expected[0])
    keys, dist = index.search_batch(store, queries, k, ef=200)
    found = _keys(keys)
    assert _hit_rate(found, expected) >= 0.99
    target = info.get("query", info).get("hnswlib_recall_vs_exact")
    assert abs(_hit_rate(found, exact[:, :k].tolist()) - target) <= 0.01
    assert not deleted & {k for row in found for k in row}
    assert np.all(np.diff(dist, axis=1) >= 0)
    index.check_integrity()


@pytest.mark.parametrize("name,info", _bad_cases())
def test_broken_and_hostile_fixtures_raise(name: str, info: dict) -> None:
    with pytest.raises(hn.LegacyFormatError) as exc:
        load_hnswlib(info["load_as"]["space"], info["load_as"]["dim"], SHARED_FIX / name)
    assert exc.value.check == info["expected_check"], str(exc.value)
    assert f"[{info['expected_check']}]" in str(exc.value)


def test_shared_extras() -> None:
    folder = SHARED_FIX
    if not folder.exists():
        pytest.skip(f"{folder} not available")
    index, store = load_hnswlib("l2", 4, folder / "empty.bin")
    assert len(index) == 0 and index.search(store, np.zeros(4, np.float32), 3) == []
    index.check_integrity()
    with pytest.raises(hn.LegacyFormatError, match=r"\[duplicate-label\] label 4 .* ids 1 and 3"):
        load_hnswlib("l2", 4, folder / "quirk_duplicate_labels.bin")


# ---------------------------------------------------------------------------- search API
def test_search_api_on_a_mapped_file() -> None:
    index, store = load_hnswlib("l2", 8, DATA / "deleted.bin")
    q = np.load(DATA / "deleted.queries.npy")
    deleted = set(np.load(DATA / "deleted.deleted.npy").tolist())
    keys, dist = index.search_batch(store, q, 5, ef=64, num_threads=1)
    keys2, dist2 = index.search_batch(store, q, 5, ef=64, num_threads=2)
    assert np.array_equal(keys, keys2) and np.array_equal(dist, dist2)
    hits = index.search(store, q[0], 5, ef=64)
    assert [h.key for h in hits] == keys[0].tolist()
    assert not deleted & set(keys.ravel().tolist())

    allowed = [int(k) for k in np.load(DATA / "deleted.labels.npy")[::3] if int(k) not in deleted]
    fk, _ = index.search_batch(store, q, 5, filter=allowed)
    assert set(fk.ravel().tolist()) <= set(allowed)
    pk, _ = index.search_batch(store, q, 5, filter=lambda key: key % 2 == 0)
    assert all(k % 2 == 0 for k in pk.ravel().tolist())
    ek, ed = index.search_batch(store, q, 5, exact=True)
    live = np.array([i for i in range(index.node_count) if not index.is_deleted(i)])
    x = store.vectors[live].astype(np.float64)
    d = ((q[:, None, :].astype(np.float64) - x[None]) ** 2).sum(-1)
    np.testing.assert_allclose(ed, np.sort(d, axis=1)[:, :5], rtol=1e-4)
    assert list(index.keys()) == [index.key(i) for i in live]


def test_health_and_knn_graph_on_a_mapped_file(tiny_l2) -> None:
    pytest.importorskip("scipy")
    index, store = tiny_l2
    copy, cstore = index.materialize(store)
    assert index.stats()["unreachable_live"] == copy.stats()["unreachable_live"]
    assert index.stats()["level_histogram"] == copy.stats()["level_histogram"]
    got, ref = index.knn_graph(store, 5, ef=64), copy.knn_graph(cstore, 5, ef=64)
    assert (got != ref).nnz == 0 or np.allclose(got.toarray(), ref.toarray(), rtol=1e-5)


@pytest.mark.parametrize("name", ["deleted", "cosine", "l2", "ip"])  # labels: 0..N-1 in order, permuted, increasing, random
def test_label_lookups(name: str) -> None:
    info = _manifest(DATA)["fixtures"][name]
    index, _ = load_hnswlib(info["space"], info["dim"], DATA / f"{name}.bin")
    km = index.key_map
    labels = [int(x) for x in np.load(DATA / f"{name}.labels.npy")]
    n = len(labels)
    assert [km.get(k) for k in labels] == list(range(n))
    assert km.get_many(labels).tolist() == list(range(n))
    assert km.get_many(None, np.array([k for k in labels if k < 2**63], np.int64)).tolist() == [
        i for i, k in enumerate(labels) if k < 2**63]
    absent = sorted(({-1, 2**64, max(labels) + 1, min(labels) - 1, n, 1001} - set(labels)))
    assert [km.get(k) for k in absent] == [-1] * len(absent)
    assert km.get("x") == -1 and km.get_many(["x", labels[0]]).tolist() == [-1, 0]
    assert km.get_many(None, np.array([-1, -(2**63)], np.int64)).tolist() == [-1, -1]
    assert km.keys_for(np.array([[0, -1]])).tolist() == [[labels[0], -1]]


def test_labels_above_int64(tmp_path: Path) -> None:
    index, store = load_hnswlib("ip", 8, DATA / "ip.bin")
    labels = np.load(DATA / "ip.labels.npy")
    assert 2**64 - 1 in index and index.node_id(2**63) == int(np.flatnonzero(labels == 2**63)[0])
    assert -1 not in index and "x" not in index
    keys, _ = index.search_batch(store, np.load(DATA / "ip.queries.npy"), 3, filter=[0, 2**64 - 1, 2**63])
    assert set(keys.ravel().tolist()) <= {0, 2**64 - 1, 2**63}
    copy, cstore = index.materialize(store)
    # padding is key -1 for int keys, as the materialized copy pads (it was None here)
    q = np.load(DATA / "ip.queries.npy")
    padded = index.search_batch(store, q, 5, filter=[0, 2**63])[0]
    assert padded[:, 2:].tolist() == [[-1] * 3] * q.shape[0]
    assert padded.tolist() == copy.search_batch(cstore, q, 5, filter=[0, 2**63])[0].tolist()
    hn.save(tmp_path / "ip.zarr", copy, cstore)
    again, astore = hn.load(tmp_path / "ip.zarr", hn.InnerProduct())
    assert again.key(0) == int(labels[0]) and (2**64 - 1) in again


# ---------------------------------------------------------------------------- read-only
def test_mapped_index_is_read_only(tiny_l2) -> None:
    index, store = tiny_l2
    v = np.zeros(8, np.float32)
    for call in (lambda: index.insert(store, 1, v), lambda: index.insert_batch(store, [1], v[None]),
                 lambda: index.set(store, 1000, v), lambda: index.delete(1000), lambda: index.resize(1000),
                 lambda: index.repair(store), lambda: index.compact(store),
                 lambda: store.write(np.array([0], np.int32), v[None]), lambda: store.resize(10)):
        with pytest.raises(hn.ReadOnlyIndexError):
            call()
    assert 1000 in index and len(index) == 300
    arrays = [*index.graph_arrays, store.rows().data]
    assert not any(a.flags.writeable for a in arrays)


@pytest.mark.parametrize("immutable", ["bytes", "memmap"])
def test_zero_copy_views(immutable: str) -> None:
    if immutable == "bytes":
        raw = np.frombuffer((DATA / "l2.bin").read_bytes(), np.uint8)
    else:
        raw = np.memmap(DATA / "l2.bin", np.uint8, mode="r")
    index, store = load_hnswlib(hn.L2(), 8, raw)
    a = index.graph_arrays
    for view in (store.rows().data, a.links0, a.upper_links, a.tombstones, index.key_map.node_keys):
        assert np.shares_memory(view, raw)
    assert index.key_map.nbytes() == 8 * 300  # increasing labels: a sorted copy only
    shuffled, _ = load_hnswlib(hn.Cosine(), 8, DATA / "cosine.bin")
    assert shuffled.key_map.nbytes() == 4 * 200  # a permutation of 0 .. N-1: one id per label
    anyhow, _ = load_hnswlib(hn.InnerProduct(), 8, DATA / "ip.bin")
    assert anyhow.key_map.nbytes() == 12 * 200  # sorted copy + permutation
    dense, _ = load_hnswlib(hn.L2(), 8, DATA / "deleted.bin")  # labels 0 .. N-1: no table
    assert dense.key_map.nbytes() == 0


def _writable(kind: str, data: bytes, tmp_path: Path) -> tuple:
    """A source over memory its owner can write, and that memory as a writable uint8 array."""
    if kind == "bytearray":
        b = bytearray(data)
        return b, np.frombuffer(b, np.uint8)
    if kind == "memmap-r+":
        (tmp_path / "l2.bin").write_bytes(data)
        m = np.memmap(tmp_path / "l2.bin", np.uint8, mode="r+")
        return m, m
    w = np.frombuffer(bytearray(data), np.uint8)
    if kind == "array":
        return w, w
    if kind == "readonly-memoryview":
        return memoryview(w).toreadonly(), w
    view = w.view()  # "readonly-view": read-only, yet its base stays writable
    view.flags.writeable = False
    return view, w


@pytest.mark.parametrize("kind", ["array", "bytearray", "readonly-view", "readonly-memoryview", "memmap-r+"])
def test_writable_buffers_are_copied(kind: str, tmp_path: Path) -> None:
    """The checks hold for the bytes the index reads: a buffer its owner can still write
    (overwritten here with hostile link ids after the load) is not what the kernels read."""
    data = (DATA / "l2.bin").read_bytes()
    source, memory = _writable(kind, data, tmp_path)
    index, store = load_hnswlib(hn.L2(), 8, source)
    a = index.graph_arrays
    for view in (store.rows().data, a.links0, a.upper_links, a.tombstones):
        assert not np.shares_memory(view, memory)
    q = np.load(DATA / "l2.queries.npy")
    before = index.search_batch(store, q, 10)
    memory[96:] = 0xFF  # past the header: link ids 0xFFFFFFFF, NaN vectors
    after = index.search_batch(store, q, 10)
    assert np.array_equal(before[0], after[0]) and np.array_equal(before[1], after[1])


def test_one_kernel_type_for_every_file() -> None:
    """Every hnswlib file gives the kernels the same array types (one specialisation)."""
    from numba import typeof

    types = set()
    for name, metric, dim in (("l2", "l2", 8), ("single", "l2", 4), ("empty", "l2", 4), ("cosine", "cosine", 8)):
        index, store = load_hnswlib(metric, dim, DATA / f"{name}.bin")
        types.add((typeof(index.graph_arrays), typeof(store.rows())))
    assert len(types) == 1, types


@pytest.mark.parametrize("kind", ["path", "str", "bytes", "bytearray", "memoryview", "memmap", "mmap", "misaligned"])
def test_sources(kind: str, tiny_l2) -> None:
    path = DATA / "l2.bin"
    data = path.read_bytes()
    source = {
        "path": lambda: path,
        "str": lambda: str(path),
        "bytes": lambda: data,
        "bytearray": lambda: bytearray(data),
        "memoryview": lambda: memoryview(data),
        "memmap": lambda: np.memmap(path, np.uint8, mode="r"),
        "mmap": lambda: mmap.mmap(-1, len(data)),
        "misaligned": lambda: memoryview(b"x" + data)[1:],
    }[kind]()
    if kind == "mmap":
        source.write(data)
    index, store = load_hnswlib("l2", 8, source)
    q = np.load(DATA / "l2.queries.npy")
    ref = tiny_l2[0].search_batch(tiny_l2[1], q, 10)
    got = index.search_batch(store, q, 10)
    assert np.array_equal(got[0], ref[0]) and np.array_equal(got[1], ref[1])


def test_bad_arguments() -> None:
    with pytest.raises(hn.InvalidParameterError):
        load_hnswlib(hn.L2Qi8(), 8, DATA / "l2.bin")
    with pytest.raises(hn.InvalidParameterError):
        load_hnswlib("hamming", 8, DATA / "l2.bin")
    with pytest.raises(hn.InvalidParameterError):
        load_hnswlib("l2", 8, 12345)
    with pytest.raises(hn.LegacyFormatError, match=r"\[dim-mismatch\].*8-dimensional vectors, 16"):
        load_hnswlib("l2", 16, DATA / "l2.bin")
    with pytest.raises(FileNotFoundError):
        load_hnswlib("l2", 8, DATA / "missing.bin")


# ---------------------------------------------------------------------------- materialize
def test_materialize_gives_a_full_index(tmp_path: Path, tiny_l2) -> None:
    index, store = tiny_l2
    q = np.load(DATA / "l2.queries.npy")
    copy, cstore = index.materialize(store)
    assert not copy.read_only and copy.max_nodes == 300 and isinstance(cstore, hn.InMemoryVectorStore)
    (ck, cd), (rk, rd) = copy.search_batch(cstore, q, 10, ef=100), index.search_batch(store, q, 10, ef=100)
    # same graph, same answers (distances may differ in the last bit: contiguous rows are summed in SIMD order)
    assert np.array_equal(ck, rk) and np.allclose(cd, rd, rtol=1e-5)
    copy.check_integrity()
    copy.resize(400)
    cstore.resize(400)
    rng = np.random.default_rng(0)
    new = rng.standard_normal((50, 8)).astype(np.float32)
    copy.insert_batch(cstore, np.arange(50), new)
    copy.set(cstore, 1000, new[0])
    copy.delete(1003)
    copy.check_integrity()
    assert copy.search(cstore, new[7], 1)[0].key == 7
    assert 1003 not in copy and 1003 in index
    hn.save(tmp_path / "m.zarr", copy, cstore)
    loaded, lstore = hn.load(tmp_path / "m.zarr", hn.L2())
    for got, ref in zip(loaded.search_batch(lstore, q, 10), copy.search_batch(cstore, q, 10)):
        assert np.array_equal(got, ref)


def test_writable_option_and_small_files() -> None:
    index, store = load_hnswlib("l2", 8, DATA / "deleted.bin", writable=True)
    assert not index.read_only and index.deleted_count == 40
    index.delete(int(next(iter(index.keys()))))
    index.check_integrity()
    empty, estore = load_hnswlib("l2", 4, DATA / "empty.bin")
    assert len(empty) == 0 and empty.search_batch(estore, np.zeros((1, 4)), 2)[0].tolist() == [[-1, -1]]
    e2, s2 = empty.materialize(estore)
    assert e2.max_nodes == 10  # hnswlib's capacity
    e2.insert(s2, 5, np.ones(4))
    assert e2.search(s2, np.ones(4), 1)[0].key == 5
    single, sstore = load_hnswlib("l2", 4, DATA / "single.bin")
    assert [h.key for h in single.search(sstore, np.zeros(4), 3)] == [7]
    single.check_integrity()


# ---------------------------------------------------------------------------- crafted files
def _layout(data: bytes) -> dict:
    """Reference reading of a valid file (plain Python, for building variants)."""
    h = dict(zip(FIELDS, HEADER.unpack_from(data)))
    n, s = h["count"], h["size_per_element"]
    pos, records = 96 + n * s, []
    for _ in range(n):
        records.append(pos)
        pos += 4 + struct.unpack_from("<I", data, pos)[0]
    assert pos == len(data)
    return {**h, "records": records, "upper0": 96 + n * s}


def _put(data: bytes, off: int, fmt: str, value) -> bytes:
    b = bytearray(data)
    struct.pack_into(fmt, b, off, value)
    return bytes(b)


def _variants() -> list:
    data = (DATA / "l2.bin").read_bytes()
    L = _layout(data)
    s, n, m0, m = L["size_per_element"], L["count"], L["max_m0"], L["max_m"]
    out = []
    offs = [struct.calcsize("<" + HEADER.format[1 : 1 + i]) for i in range(13)]
    for i, field in enumerate(FIELDS):
        fmt = "<" + HEADER.format[1 + i]
        for label, value in (("0", 0), ("-1", -1), ("huge", None)):
            if fmt == "<d":
                value = {"0": 0.0, "-1": -1.0, "huge": 1e300}[label]
            elif value == -1:
                value = {"<Q": 2**64 - 1, "<I": 2**32 - 1, "<i": -1}[fmt]
            elif value is None:
                value = {"<Q": 2**62 + 12345, "<I": 2**31 + 7, "<i": 2**31 - 1}[fmt]
            if value != L[field]:
                out.append((f"header-{field}={label}", _put(data, offs[i], fmt, value), None))
    cuts = {1, 50, 95, 96, 97, 96 + s - 1, 96 + s, 96 + s * n // 2, L["upper0"] - 1, L["upper0"], L["upper0"] + 2,
            len(data) - 1} | set(L["records"][1:]) | {r + 4 for r in L["records"]}
    out += [(f"truncated-at-{c}", data[:c], None) for c in sorted(cuts) if c < len(data)]
    out.append(("empty-file", b"", "header-truncated"))

    def slot(i: int, j: int) -> int:  # byte offset of level-0 word j of element i
        return 96 + i * s + 4 * j

    upper = next(i for i, r in enumerate(L["records"]) if struct.unpack_from("<I", data, r)[0])
    ub = L["records"][upper] + 4  # first upper block of element `upper`
    out += [
        ("level0-id=N", _put(data, slot(5, 1), "<I", n), "neighbour-id"),
        ("level0-id=-1", _put(data, slot(5, 1), "<I", 2**32 - 1), "neighbour-id"),
        ("level0-id=2^31", _put(data, slot(5, 1), "<I", 2**31), "neighbour-id"),
        ("upper-id=N", _put(data, ub + 4, "<I", n), "neighbour-id"),
        ("level0-count=maxM0+1", _put(data, slot(3, 0), "<H", m0 + 1), "link-count"),
        ("level0-count=65535", _put(data, slot(3, 0), "<H", 0xFFFF), "link-count"),
        ("upper-count=maxM+1", _put(data, ub, "<H", m + 1), "link-count"),
        ("level0-flag-bit17", _put(data, slot(2, 0) + 2, "<B", 2), "flag-bits"),
        ("upper-high-bits", _put(data, ub + 2, "<H", 1), "flag-bits"),
        ("self-loop", _put(data, slot(4, 1), "<I", 4), "self-loop"),
        ("duplicate-neighbour", _put(data, slot(4, 2), "<I", struct.unpack_from("<I", data, slot(4, 1))[0]),
         "duplicate-neighbour"),
        ("duplicate-label", _put(data, 96 + 7 * s + L["label_offset"], "<Q", 1000 + 3 * 3), "duplicate-label"),
        ("upper-size+4", _put(data, L["records"][upper], "<I", struct.unpack_from("<I", data, L["records"][upper])[0] + 4),
         "upper-size"),
        ("upper-level-huge", _put(data, L["records"][0], "<I", 40 * 4 * (m + 1)), None),
        ("trailing-4", data + bytes(4), "trailing-bytes"),
        ("trailing-1", data + bytes(1), "trailing-bytes"),
        ("trailing-1MiB", data + bytes(1 << 20), "trailing-bytes"),  # the walk only examines what N records can span
        ("dim-as-vector-bytes", _put(data, 32, "<Q", L["label_offset"] + 2), None),
    ]
    return out


@pytest.mark.parametrize("name,blob,check", [pytest.param(*v, id=v[0]) for v in _variants()])
def test_crafted_variants_raise(name: str, blob: bytes, check: str | None) -> None:
    with pytest.raises(hn.LegacyFormatError) as exc:
        load_hnswlib("l2", None, blob)
    assert isinstance(exc.value, (hn.HnswError, ValueError))
    if check is not None:
        assert exc.value.check == check, str(exc.value)


def test_store_is_the_file(tiny_l2) -> None:
    index, store = tiny_l2
    assert isinstance(store, HnswlibVectorStore) and store.nbytes == 0 and store.header.m == 4
    assert np.array_equal(store.vector(3), np.load(DATA / "l2.vectors.npy")[3])
    assert store.vector(300) is None
