"""Zarr persistence: round trips, targets, mmap, layout, and corrupt input."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import zarr

import hnsw_numba as hn
from hnsw_numba.io import chunks
from conftest import clustered
from hnsw_numba.io import persist, swap
from hnsw_numba.kernels.layout import H_ENTRY, H_UPPER_USED

N, DIM, M = 240, 12, 6


def qi8_store(dim: int, rows: int):
    return pytest.importorskip("hnsw_numba.core.store_qi8").InMemoryQi8VectorStore(dim, rows)


def make(metric, dtype=np.float32, keys: str = "int", seed: int = 0, n: int = N):
    """A small index with deletions and a resurrection (set on a deleted key)."""
    rng = np.random.default_rng(seed)
    data = clustered(rng, n + 20, DIM, centers=8)
    idx = hn.Hnsw(metric, hn.HnswConfig(dim=DIM, max_nodes=n + 40, m=M, ef_construction=40, seed=seed))
    if dtype == "qi8":
        store = qi8_store(DIM, n + 40)
    elif dtype == "walk-copy":
        store = hn.InMemoryVectorStore(DIM, n + 40, walk_copy=True)
    else:
        store = hn.InMemoryVectorStore(DIM, n + 40, dtype=dtype)
    ks = {"int": list(range(0, 3 * n, 3)), "str": [f"doc-{i}-é" for i in range(n)],
          "mixed": [i if i % 3 else f"k{i}" for i in range(n - 1)] + [2**70]}[keys]
    idx.insert_batch(store, ks, data[:n])
    for k in ks[5:40:4]:
        idx.delete(k)
    idx.set(store, ks[9], data[n])  # resurrected with a new vector
    idx.set(store, ks[10], data[n + 1])  # a live key updated
    return idx, store, ks, data


def results(idx, store, q, k=7):
    keys, dists = idx.search_batch(store, q, k, num_threads=1)
    return keys.tolist(), dists.tobytes()


def assert_same(a, sa, b, sb, q) -> None:
    assert results(a, sa, q) == results(b, sb, q)
    assert (len(a), a.node_count, a.deleted_count, a.config) == (len(b), b.node_count, b.deleted_count, b.config)
    ga, gb, n = a.graph_arrays, b.graph_arrays, a.node_count
    for name in ("levels", "links0", "upper_start", "tombstones"):
        np.testing.assert_array_equal(getattr(ga, name)[:n], getattr(gb, name)[:n], err_msg=name)
    used = int(ga.header[H_UPPER_USED])
    np.testing.assert_array_equal(ga.upper_links[:used], gb.upper_links[:used])
    np.testing.assert_array_equal(ga.header[:4], gb.header[:4])
    b.check_integrity()


def tree_digest(path: Path) -> dict:
    if path.is_file():
        return {"": hashlib.sha256(path.read_bytes()).hexdigest()}
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    "metric,dtype,keys",
    [(hn.L2(), np.float32, "int"), (hn.Cosine(), np.float32, "str"), (hn.InnerProduct(), np.float32, "mixed"),
     (hn.L2(), np.float16, "str"), (hn.Cosine(), np.float16, "int"), (hn.InnerProduct(), np.float16, "int"),
     (hn.L2(), "bfloat16", "mixed"), (hn.Cosine(), "bfloat16", "int"), (hn.InnerProduct(), "bfloat16", "str"),
     (hn.L2Qi8(), "qi8", "int"), (hn.CosineQi8(), "qi8", "str"), (hn.InnerProductQi8(), "qi8", "mixed"),
     (hn.L2(), "walk-copy", "int"), (hn.Cosine(), "walk-copy", "str")],
)
def test_round_trip_every_store_and_metric(tmp_path, metric, dtype, keys) -> None:
    idx, store, ks, data = make(metric, dtype, keys)
    q = data[:15] + 0.05
    hn.save(tmp_path / "ix", idx, store)
    idx2, store2 = hn.load(tmp_path / "ix", type(metric)())
    assert getattr(store2, "walk_copy", False) == getattr(store, "walk_copy", False)
    assert_same(idx, store, idx2, store2, q)
    assert type(store2) is type(store) and store2.dtype == store.dtype and store2.max_nodes == store.max_nodes
    n = idx.node_count
    for name, column in store.columns().items():
        np.testing.assert_array_equal(column[:n], store2.columns()[name][:n], err_msg=name)
    assert [idx2.key(i) for i in range(idx2.node_count)] == [idx.key(i) for i in range(idx.node_count)]
    assert ks[9] in idx2 and ks[13] not in idx2 and idx2.is_deleted(13)
    # the loaded index keeps working: inserts, resurrections, searches
    new = ["new-a", "new-b"] if keys == "str" else [10**6, 10**6 + 1]
    idx2.insert_batch(store2, new, data[-2:])
    idx2.set(store2, ks[13], data[0])
    assert new[1] in idx2 and ks[13] in idx2 and len(idx2) == len(idx) + 3
    for v in (data[-1], data[0]):
        got, want = idx2.search(store2, v, 3), idx2.search(store2, v, 3, exact=True)
        np.testing.assert_allclose([h.distance for h in got], [h.distance for h in want], atol=1e-5)
    if metric.code != hn.InnerProduct.code:  # under IP a vector need not be its own nearest
        assert idx2.search(store2, data[-1], 1)[0].key == new[1]
    idx2.check_integrity()


def test_targets(tmp_path) -> None:
    pytest.importorskip("fsspec")
    idx, store, _, data = make(hn.L2())
    q = data[:10]
    targets = [
        tmp_path / "dir.zarr", str(tmp_path / "s.zarr"), "file://" + str(tmp_path / "url.zarr"),
        tmp_path / "f.zip", zarr.storage.LocalStore(tmp_path / "ls"), zarr.storage.MemoryStore(),
        f"memory://persist-test-{os.getpid()}/ix",
    ]
    for t in targets:
        hn.save(t, idx, store)
        assert_same(idx, store, *hn.load(t, hn.L2()), q)
    with zarr.storage.ZipStore(tmp_path / "user.zip", mode="w") as zs:
        hn.save(zs, idx, store)
        assert_same(idx, store, *hn.load(zs, hn.L2()), q)
        with pytest.raises(hn.InvalidParameterError, match="zip"):
            hn.save(zs, idx, store)  # zip entries cannot be replaced
    assert_same(idx, store, *hn.load(tmp_path / "user.zip", hn.L2()), q)
    assert_same(idx, store, *hn.load(zarr.storage.ZipStore(tmp_path / "f.zip", mode="r"), hn.L2()), q)
    # only the saves themselves are left: no temporary or aside copies
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.zarr", "f.zip", "ls", "s.zarr", "url.zarr", "user.zip"]


def test_halves_and_chunked_layout(tmp_path) -> None:
    idx, store, _, data = make(hn.Cosine(), np.float16, "str")
    q = data[:10]
    hn.save_index(idx, tmp_path / "g", chunk_rows=7)
    hn.save_store(store, tmp_path / "v", idx.node_count, chunk_rows=7)
    idx2 = hn.load_index(hn.Cosine(), tmp_path / "g")
    store2, n = hn.load_store(tmp_path / "v")
    assert n == idx.node_count
    assert_same(idx, store, idx2, store2, q)
    # edge chunks are padded to full size, as Zarr requires
    assert len(list((tmp_path / "g" / "links0" / "c").iterdir())) == -(-idx.node_count // 7)
    # the halves of a combined save load on their own too
    hn.save(tmp_path / "both", idx, store, chunk_rows=50)
    assert results(hn.load_index(hn.Cosine(), tmp_path / "both"), hn.load_store(tmp_path / "both")[0], q) == results(idx, store, q)
    with pytest.raises(hn.IndexFormatError, match="graph"):
        hn.load(tmp_path / "g", hn.Cosine())  # a graph alone is not a combined save
    with pytest.raises(hn.InvalidParameterError, match="one chunk"):
        hn.load(tmp_path / "both", hn.Cosine(), mmap=True)


def test_plain_zarr_reads_the_layout(tmp_path) -> None:
    idx, store, ks, _ = make(hn.L2(), "bfloat16", "str")
    hn.save(tmp_path / "ix", idx, store)
    g = zarr.open_group(tmp_path / "ix", mode="r")
    info = g.attrs["hnsw_numba"]
    assert info["kind"] == "index" and info["format_version"] == persist.FORMAT_VERSION
    gi = g["graph"].attrs["hnsw_numba"]
    assert gi["metric"] == "l2" and gi["config"]["m"] == M and gi["keys"] == "text"
    n = idx.node_count
    np.testing.assert_array_equal(g["graph/links0"][:], idx.graph_arrays.links0[:n])
    np.testing.assert_array_equal(g["graph/tombstones"][:], idx.graph_arrays.tombstones[:n])
    off, raw = g["graph/key_offsets"][:], g["graph/key_bytes"][:].tobytes()
    assert raw[off[3] : off[4]].decode() == ks[3]
    v = g["vectors"]
    assert v.attrs["hnsw_numba"]["dtype"] == "bfloat16" and v["data"].attrs["hnsw_numba"]["dtype"] == "bfloat16"
    np.testing.assert_array_equal(v["data"][:], store.rows()[0][:n])
    for a in g["graph"].array_values():
        assert [c["name"] for c in a.metadata.to_dict()["codecs"]] == ["bytes", "crc32c"]


def test_mmap_load(tmp_path) -> None:
    idx, store, _, data = make(hn.L2())
    q = data[:10]
    hn.save(tmp_path / "ix", idx, store)
    before = tree_digest(tmp_path / "ix")
    for verify in (True, False):
        idx2, store2 = hn.load(tmp_path / "ix", hn.L2(), mmap=True, verify=verify)
        base = store2.rows()[0]
        while not isinstance(base, np.memmap) and base is not None:
            base = base.base
        assert isinstance(base, np.memmap)
        assert results(idx2, store2, q) == results(idx, store, q)
    # writes go to private pages, never to the file; inserts need room in the store
    idx2.set(store2, 0, data[5])
    assert idx2.search(store2, data[5], 1)[0].key == 0
    with pytest.raises(hn.CapacityError, match="store"):
        idx2.insert(store2, 10**6, data[0])
    store2.resize(idx2.max_nodes)
    idx2.insert_batch(store2, [10**6, 10**6 + 1], data[-2:])
    assert idx2.search(store2, data[-1], 1)[0].key == 10**6 + 1
    assert tree_digest(tmp_path / "ix") == before


def test_qi8_mmap_and_layout(tmp_path) -> None:
    idx, store, _, data = make(hn.L2Qi8(), "qi8")
    q = data[:10]
    hn.save(tmp_path / "ix", idx, store)
    idx2, store2 = hn.load(tmp_path / "ix", hn.L2Qi8(), mmap=True)
    assert isinstance(store2.rows()[0].base, np.memmap) or isinstance(store2.rows()[0].base.base, np.memmap)
    assert results(idx2, store2, q) == results(idx, store, q)
    v = zarr.open_group(tmp_path / "ix", mode="r")["vectors"]
    assert v.attrs["hnsw_numba"]["store"] == "qi8" and v["zero_point"].dtype == np.int8
    n = idx.node_count
    np.testing.assert_array_equal(v["codes"][:], store.rows().codes[:n])
    np.testing.assert_array_equal(v["zero_point"][:], store.rows().zero[:n])
    qs, count = persist.load_store(tmp_path / "ix", expect=type(store))
    assert count == n and qs.vector(3).scale == store.vector(3).scale
    with pytest.raises(hn.IndexFormatError, match="InMemoryVectorStore"):
        hn.load_store(tmp_path / "ix", expect=hn.InMemoryVectorStore)
    with pytest.raises(hn.MetricMismatchError):
        hn.load(tmp_path / "ix", hn.L2())
    _rewrite(tmp_path / "ix", "vectors/scale", lambda x: x.__setitem__(2, np.nan))
    with pytest.raises(hn.IndexFormatError, match="scale"):
        hn.load(tmp_path / "ix", hn.L2Qi8())


def test_empty_index(tmp_path) -> None:
    idx = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=3, max_nodes=5))
    store = hn.InMemoryVectorStore(3, 5)
    for t in (tmp_path / "e", zarr.storage.MemoryStore()):
        hn.save(t, idx, store)
        idx2, store2 = hn.load(t, hn.L2(), mmap=isinstance(t, Path))
        assert len(idx2) == 0 and idx2.search(store2, np.ones(3, np.float32), 3) == []
        idx2.insert(store2, 1, np.ones(3, np.float32))
        assert idx2.search(store2, np.ones(3, np.float32), 1)[0].key == 1


def test_save_replaces_atomically_and_bad_input_changes_nothing(tmp_path) -> None:
    a, sa, _, data = make(hn.L2(), seed=1)
    b, sb, _, _ = make(hn.L2(), seed=2, n=100)
    path = tmp_path / "ix"
    hn.save(path, a, sa)
    before = tree_digest(path)
    bad_store = hn.InMemoryVectorStore(DIM + 1, 400)
    for call, exc in [
        (lambda: hn.save(path, b, bad_store), hn.DimensionMismatchError),
        (lambda: hn.save(path, b, sb, chunk_rows=0), hn.InvalidParameterError),
        (lambda: hn.save(path, b, object()), hn.MetricMismatchError),
        (lambda: hn.save(3.5, b, sb), hn.InvalidParameterError),
        (lambda: hn.save_store(sb, path, 10**6), hn.InvalidParameterError),
        (lambda: hn.save(zarr.storage.LocalStore(path, read_only=True), b, sb), hn.InvalidParameterError),
    ]:
        with pytest.raises(exc):
            call()
        assert tree_digest(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ix"]
    hn.save(path, b, sb)
    b2, sb2 = hn.load(path, hn.L2())
    assert b2.node_count == 100 and results(b2, sb2, data[:5]) == results(b, sb, data[:5])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ix"]


def test_recovers_from_an_interrupted_swap(tmp_path) -> None:
    a, sa, _, data = make(hn.L2(), seed=1)
    path = tmp_path / "ix"
    hn.save(path, a, sa)
    os.rename(path, tmp_path / ".ix.old")  # crash between "move old aside" and "rename new in"
    (tmp_path / ".ix.tmp-999999999-abcd").mkdir()  # a dead saver's temporary copy
    assert results(*hn.load(path, hn.L2()), data[:5]) == results(a, sa, data[:5])
    assert path.is_dir() and not (tmp_path / ".ix.old").exists()
    shutil.copytree(path, tmp_path / ".ix.old")  # crash before "delete old": a stale aside copy
    hn.save(path, a, sa)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ix"]
    with pytest.raises(FileNotFoundError):
        hn.load(tmp_path / "nothing", hn.L2())


def test_a_save_recovering_while_another_renames_its_copy_in_saves(tmp_path, monkeypatch) -> None:
    """A save finding the target moved aside by another save puts the aside copy back; when
    that save renames its own copy in first, the rename back fails (the target is a
    non-empty directory again) and the save goes on: the target is whole."""
    a, sa, _, data = make(hn.L2(), seed=1)
    b, sb, _, _ = make(hn.L2(), seed=2)
    path = tmp_path / "ix"
    hn.save(path, a, sa)
    other = tmp_path / "other"
    hn.save(other, b, sb)
    os.rename(path, tmp_path / ".ix.old")  # the other save has moved the old copy aside
    real_rename = os.rename

    def rename(src, dst):
        if Path(src).name == ".ix.old" and Path(dst) == path and not path.exists():
            real_rename(other, path)  # ... and renames its copy in just before this one
        return real_rename(src, dst)

    monkeypatch.setattr(swap.os, "rename", rename)
    hn.save(path, a, sa)
    monkeypatch.undo()
    assert results(*hn.load(path, hn.L2()), data[:5]) == results(a, sa, data[:5])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ix"]


# ---------------------------------------------------------------------------- corruption
def _rewrite(path: Path, name: str, fn) -> None:
    """Change an array through zarr, its chunk checksums and digest recomputed (a crafted
    file: the loader's semantic checks must catch it)."""
    arr = zarr.open_group(path, mode="r+")[name]
    x = arr[:]
    fn(x)
    arr[...] = x
    rows = arr.chunks[0]
    group = chunks.bound_attrs(zarr.open_group(path, mode="r")[name.rpartition("/")[0]].attrs.asdict())
    crcs = chunks.chunk_crcs(np.ascontiguousarray(x), rows)
    arr.update_attributes({chunks.DIGEST_ATTR: chunks.digest(name, x.dtype, x.shape, crcs, group)})


def _edit_json(path: Path, fn) -> None:
    meta = json.loads(path.read_text())
    fn(meta)
    path.write_text(json.dumps(meta))


def _flip(f: Path, pos: int) -> None:
    b = bytearray(f.read_bytes())
    b[pos] ^= 0x40
    f.write_bytes(bytes(b))


def _set_attr(p, group, key, value):
    """Edit a group attribute, the digests of its arrays recomputed (a crafted file)."""
    _edit_json(p / group / "zarr.json", lambda m: m["attributes"]["hnsw_numba"].__setitem__(key, value))
    redigest(p, group)


def redigest(p: Path, group: str) -> None:
    """Recompute the digests of the arrays of ``group`` from their data and attributes."""
    g = zarr.open_group(p, mode="r+")
    node = g[group] if group else g
    bound = chunks.bound_attrs(node.attrs.asdict())
    for name, arr in node.arrays():
        path = f"{group}/{name}" if group else name
        x = np.ascontiguousarray(arr[:])
        arr.update_attributes({chunks.DIGEST_ATTR: chunks.digest(path, x.dtype, x.shape, chunks.chunk_crcs(x, arr.chunks[0]), bound)})


L2 = hn.L2()
CORRUPTIONS = [
    # (case, mutation of the saved directory, load metric, error, message fragment)
    ("truncated chunk", lambda p: os.truncate(p / "graph/links0/c/0/0", 100), L2, hn.IndexFormatError, "truncated"),
    ("truncated vectors", lambda p: os.truncate(p / "vectors/data/c/0/0", 1000), L2, hn.IndexFormatError, "truncated"),
    ("flipped byte in links", lambda p: _flip(p / "graph/links0/c/0/0", 333), L2, hn.IndexFormatError, "checksum"),
    ("flipped byte in vectors", lambda p: _flip(p / "vectors/data/c/0/0", 77), L2, hn.IndexFormatError, "checksum"),
    ("flipped checksum", lambda p: _flip(p / "graph/keys/c/0", -2), L2, hn.IndexFormatError, "checksum"),
    ("missing chunk", lambda p: os.remove(p / "graph/tombstones/c/0"), L2, hn.IndexFormatError, "missing"),
    ("missing array", lambda p: shutil.rmtree(p / "graph/upper_start"), L2, hn.IndexFormatError, "upper_start"),
    ("missing group", lambda p: shutil.rmtree(p / "vectors"), L2, hn.IndexFormatError, "vectors"),
    ("wrong format version", lambda p: _set_attr(p, "", "format_version", 99), L2, hn.IndexFormatError, "version 99"),
    ("wrong graph version", lambda p: _set_attr(p, "graph", "format_version", "1"), L2, hn.IndexFormatError, "version"),
    ("no marker (interrupted)", lambda p: _edit_json(p / "zarr.json", lambda m: m["attributes"].clear()), L2, hn.IndexFormatError, "interrupted"),
    ("metric mismatch", lambda p: None, hn.Cosine(), hn.MetricMismatchError, "l2"),
    ("store kind mismatch", lambda p: _set_attr(p, "graph", "metric", "l2_qi8"), hn.L2Qi8(), hn.MetricMismatchError, "qi8"),
    ("neighbour past the end", lambda p: _rewrite(p, "graph/links0", lambda x: x.__setitem__((3, 1), N + 5)), L2, hn.IndexFormatError, "out of range"),
    ("negative neighbour", lambda p: _rewrite(p, "graph/links0", lambda x: x.__setitem__((4, 2), -7)), L2, hn.IndexFormatError, "out of range"),
    ("degree above 2m", lambda p: _rewrite(p, "graph/links0", lambda x: x.__setitem__((5, 0), 2 * M + 1)), L2, hn.IndexFormatError, "more than"),
    ("self loop", lambda p: _rewrite(p, "graph/links0", lambda x: x.__setitem__((6, 1), 6)), L2, hn.IndexFormatError, "self loop"),
    ("level dropped", lambda p: _rewrite(p, "graph/levels", lambda x: x.__setitem__(np.argmax(x), 0)), L2, hn.IndexFormatError, "upper_start"),
    ("level raised", lambda p: _rewrite(p, "graph/levels", lambda x: x.__setitem__(np.argmin(x), 5)), L2, hn.IndexFormatError, "upper_start"),
    ("upper offset past end", lambda p: _rewrite(p, "graph/upper_start", lambda x: x.__setitem__(np.argmax(x), 10**9)), L2, hn.IndexFormatError, "outside"),
    ("entry point past end", lambda p: _rewrite(p, "graph/header", lambda x: x.__setitem__(H_ENTRY, N + 3)), L2, hn.IndexFormatError, "entry point"),
    ("absurd upper words", lambda p: _rewrite(p, "graph/header", lambda x: x.__setitem__(H_UPPER_USED, 10**15)), L2, hn.IndexFormatError, "upper-link words"),
    ("tombstone value 7", lambda p: _rewrite(p, "graph/tombstones", lambda x: x.__setitem__(0, 7)), L2, hn.IndexFormatError, "tombstones"),
    ("duplicate key", lambda p: _rewrite(p, "graph/keys", lambda x: x.__setitem__(1, x[0])), L2, hn.IndexFormatError, "twice"),
    ("shape tampered", lambda p: _edit_json(p / "graph/levels/zarr.json", lambda m: m["shape"].__setitem__(0, 10**12)), L2, hn.IndexFormatError, "shape"),
    ("dtype tampered", lambda p: _edit_json(p / "graph/links0/zarr.json", lambda m: m.__setitem__("data_type", "int64")), L2, hn.IndexFormatError, "dtype"),
    ("huge chunk shape", lambda p: _edit_json(p / "graph/links0/zarr.json", lambda m: m["chunk_grid"]["configuration"].__setitem__("chunk_shape", [10**12, 2 * M + 1])), L2, hn.IndexFormatError, "chunk shape"),
    ("codec swapped", lambda p: _edit_json(p / "graph/keys/zarr.json", lambda m: m["codecs"].__setitem__(1, {"name": "numcodecs.pickle"})), L2, hn.IndexFormatError, "keys"),
    ("gzip added", lambda p: _edit_json(p / "vectors/data/zarr.json", lambda m: m["codecs"].append({"name": "gzip", "configuration": {"level": 1}})), L2, hn.IndexFormatError, "encoding"),
    ("zarr.json not JSON", lambda p: (p / "graph/zarr.json").write_text("{nope"), L2, hn.IndexFormatError, "graph"),
    ("bad config", lambda p: _set_attr(p, "graph", "config", {"dim": DIM, "max_nodes": 1, "m": M}), L2, hn.IndexFormatError, "max_nodes"),
    ("vector dtype unknown", lambda p: _set_attr(p, "vectors", "dtype", "float64"), L2, hn.IndexFormatError, "float64"),
    ("vectors too short", lambda p: _set_attr(p, "vectors", "node_count", 3), L2, hn.IndexFormatError, "do not match the graph"),
    ("vectors shape tampered", lambda p: _edit_json(p / "vectors/data/zarr.json", lambda m: m["shape"].__setitem__(1, DIM + 1)), L2, hn.IndexFormatError, "shape"),
]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    idx, store, _, _ = make(hn.L2())
    path = tmp_path_factory.mktemp("pristine") / "ix"
    hn.save(path, idx, store)
    return path


@pytest.mark.parametrize("case,mutate,metric,exc,fragment", CORRUPTIONS, ids=[c[0] for c in CORRUPTIONS])
def test_corruption_is_a_clear_error(tmp_path, pristine, case, mutate, metric, exc, fragment) -> None:
    path = tmp_path / "ix"
    shutil.copytree(pristine, path)
    mutate(path)
    with pytest.raises(exc, match=fragment):
        hn.load(path, metric)


F16_NAN, F16_INF = 0x7E00, 0x7C00  # bit patterns (bfloat16: the high half of float32's)
UNSEARCHABLE = [
    # (case, metric, store dtype, array, edit of row 3): a crafted file whose checksums hold
    ("NaN in float32", hn.L2(), np.float32, "vectors/data", lambda x: x.__setitem__((3, 2), np.nan)),
    ("inf in float16", hn.L2(), np.float16, "vectors/data", lambda x: x.__setitem__((3, 2), np.inf)),
    ("NaN bits in bfloat16", hn.L2(), "bfloat16", "vectors/data", lambda x: x.__setitem__((3, 2), 0x7FC0)),
    ("walk-copy float32 inf", hn.L2(), "walk-copy", "vectors/data", lambda x: x.__setitem__((3, 0), -np.inf)),
    ("L2 component past the float32 limit", hn.L2(), np.float32, "vectors/data", lambda x: x.__setitem__((3, 2), 1e20)),
    ("Qi8 scale -1", hn.L2Qi8(), "qi8", "vectors/scale", lambda x: x.__setitem__(3, -1.0)),
    ("Qi8 scale 0", hn.L2Qi8(), "qi8", "vectors/scale", lambda x: x.__setitem__(3, 0.0)),
    ("Qi8 scale overflowing", hn.L2Qi8(), "qi8", "vectors/scale", lambda x: x.__setitem__(3, 1e38)),
    ("cosine row of norm 5", hn.Cosine(), np.float32, "vectors/data", lambda x: x.__setitem__(3, x[3] * 5)),
    ("cosine float16 row of norm 0.5", hn.Cosine(), np.float16, "vectors/data", lambda x: x.__setitem__(3, x[3] / 2)),
    ("cosine Qi8 row of norm 3", hn.CosineQi8(), "qi8", "vectors/scale", lambda x: x.__setitem__(3, x[3] * 3)),
]


@pytest.mark.parametrize("case,metric,dtype,name,edit", UNSEARCHABLE, ids=[u[0] for u in UNSEARCHABLE])
def test_rows_a_search_cannot_rank_are_refused_on_load(tmp_path, case, metric, dtype, name, edit) -> None:
    idx, store, _, _ = make(metric, dtype)
    path = tmp_path / "ix"
    hn.save(path, idx, store)
    _rewrite(path, name, edit)
    for mmap in (False, True):
        with pytest.raises(hn.IndexFormatError, match="vector 3 cannot be searched|Qi8 scale"):
            hn.load(path, metric, mmap=mmap)
    if name == "vectors/data" and metric == hn.L2() and dtype != "walk-copy":
        hn.load(path, metric, mmap=True, verify=False)  # a mapped store read without verify is taken as it is


def test_a_save_that_would_not_load_keeps_the_good_copy(tmp_path) -> None:
    idx, store, _, _ = make(hn.L2())
    path = tmp_path / "ix"
    hn.save(path, idx, store)
    before = tree_digest(path)
    store.data[3, 2] = np.nan  # written around the store's checks
    with pytest.raises(hn.IndexFormatError, match="vector 3 cannot be searched"):
        hn.save(path, idx, store)
    assert tree_digest(path) == before


def test_corrupt_text_keys_and_nonlocal_stores(tmp_path) -> None:
    idx, store, _, _ = make(hn.L2(), keys="str")
    path = tmp_path / "ix"
    hn.save(path, idx, store)
    _rewrite(path, "graph/key_bytes", lambda x: x.__setitem__(0, 0xFF))
    with pytest.raises(hn.IndexFormatError, match="UTF-8"):
        hn.load(path, hn.L2())
    hn.save(path, idx, store)
    _rewrite(path, "graph/key_offsets", lambda x: x.__setitem__(5, x[7]))
    with pytest.raises(hn.IndexFormatError, match="key_offsets"):
        hn.load(path, hn.L2())
    # the generic (non-local) reader checks checksums and missing chunks too
    ms = zarr.storage.MemoryStore()
    hn.save(ms, idx, store, chunk_rows=64)
    key = "vectors/data/c/1/0"
    raw = bytearray(ms._store_dict[key].to_bytes())
    raw[10] ^= 1
    ms._store_dict[key] = type(ms._store_dict[key]).from_bytes(bytes(raw))
    with pytest.raises(hn.IndexFormatError, match="vectors/data"):
        hn.load(ms, hn.L2())
    hn.save(ms, idx, store, chunk_rows=64)
    del ms._store_dict["graph/links0/c/2/0"]
    with pytest.raises(hn.IndexFormatError, match="missing"):
        hn.load(ms, hn.L2())
    with zipfile.ZipFile(tmp_path / "junk.zip", "w") as zf:
        zf.writestr("zarr.json", "[]")
    with pytest.raises(hn.IndexFormatError):
        hn.load(tmp_path / "junk.zip", hn.L2())


def test_a_load_that_meets_a_save_reads_the_new_copy_whole(tmp_path, monkeypatch) -> None:
    # A save swaps its copy in while a load reads: the load read the old graph and the new
    # vectors (equal shapes pass every check) or met a missing file. It reads again.
    idx, store, _, data = make(hn.L2())
    path = tmp_path / "ix"
    hn.save(path, idx, store)
    other, other_store, _, _ = make(hn.L2(), seed=1)
    read_store, swaps = persist.read_store, []

    def swapped_before_the_vectors(*args, **kwargs):
        if not swaps:  # once: the save below loads its own copy through here too
            swaps.append(True)
            hn.save(path, other, other_store)
        return read_store(*args, **kwargs)

    monkeypatch.setattr(persist, "read_store", swapped_before_the_vectors)
    got, got_store = hn.load(path, hn.L2())
    assert swaps
    assert_same(got, got_store, other, other_store, data[:20])
