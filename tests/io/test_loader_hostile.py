"""Loaders refuse what they cannot search correctly: NaN vectors, hostile metadata,
chunks moved between arrays, non-regular files."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

import hnsw_numba as hn
from conftest import without_digests
from test_persist import redigest

DIM = 8


def _saved(tmp_path: Path, n: int = 300, qi8: bool = False) -> tuple[Path, np.ndarray]:
    data = np.random.default_rng(1).standard_normal((n, DIM)).astype(np.float32)
    metric = hn.L2Qi8() if qi8 else hn.L2()
    idx = hn.Hnsw(metric, hn.HnswConfig(dim=DIM, max_nodes=n, m=6, ef_construction=32, seed=1))
    store = hn.InMemoryQi8VectorStore(DIM, n) if qi8 else hn.InMemoryVectorStore(DIM, n)
    idx.insert_batch(store, np.arange(n), data)
    idx.delete_batch(np.arange(0, n, 5))
    p = tmp_path / "ix"
    hn.save(p, idx, store)
    return p, data


def test_nan_vector_in_hnswlib_file_is_refused(tmp_path: Path) -> None:
    """One NaN component in an hnswlib file: LegacyFormatError (check ``finite-vectors``);
    ``allow_nonfinite=True`` opens it for inspection.

    Fails before the finite-vectors check: the file loaded and searches ranked the NaN item first.
    """
    hnswlib = pytest.importorskip("hnswlib")
    data = np.random.default_rng(2).standard_normal((200, DIM)).astype(np.float32)
    h = hnswlib.Index(space="l2", dim=DIM)
    h.init_index(max_elements=200, M=8, ef_construction=50, random_seed=1)
    h.add_items(data, np.arange(200))
    path = tmp_path / "h.bin"
    h.save_index(str(path))
    raw = bytearray(path.read_bytes())
    at = raw.find(data[37].tobytes())
    assert at > 0
    raw[at + 8 : at + 12] = np.float32(np.nan).tobytes()
    path.write_bytes(bytes(raw))
    with pytest.raises(hn.LegacyFormatError) as err:
        hn.load_hnswlib(hn.L2(), DIM, path)
    assert err.value.check == "finite-vectors"
    with pytest.raises(hn.LegacyFormatError):
        hn.load_hnswlib(hn.L2(), DIM, bytes(raw), writable=True)
    idx, _ = hn.load_hnswlib(hn.L2(), DIM, path, allow_nonfinite=True)
    assert len(idx) == 200


def test_a_cosine_load_refuses_vectors_that_are_not_unit(tmp_path: Path) -> None:
    """An 'l2' file opened as cosine: LegacyFormatError (check ``unit-vectors``), as a Zarr
    load refuses such rows; unit rows and a zero row load.

    Fails before the check: the file loaded, with distances below 0 and the longest rows first.
    """
    x = np.random.default_rng(4).standard_normal((300, DIM)).astype(np.float32) * 3
    l2 = hn.Index(DIM, "l2", seed=1)
    l2.add(x)
    hn.save_hnswlib(tmp_path / "l2.bin", *l2.native)
    for writable in (False, True):
        with pytest.raises(hn.LegacyFormatError) as err:
            hn.load_hnswlib("cosine", None, tmp_path / "l2.bin", writable=writable)
        assert err.value.check == "unit-vectors"
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    unit[5] = 0
    ip = hn.Index(DIM, "ip", seed=1)
    ip.add(unit)
    hn.save_hnswlib(tmp_path / "unit.bin", *ip.native)
    ro, store = hn.load_hnswlib("cosine", None, tmp_path / "unit.bin")
    hits = ro.search(store, unit[3], 3)
    assert hits[0].key == 3 and all(0 <= h.distance <= 2 for h in hits)
    for dtype in ("bf16", "qi8"):  # rows widened from their storage type keep its rounding (norms 0.998, 1.001)
        c = hn.Index(DIM, "cosine", dtype, seed=1)
        c.add(x)
        hn.save_hnswlib(tmp_path / f"{dtype}.bin", *c.native, convert=True)
        ro, store = hn.load_hnswlib("cosine", None, tmp_path / f"{dtype}.bin")
        assert ro.search(store, x[3], 1)[0].key == 3
        hn.save(tmp_path / f"{dtype}.zarr", *hn.load_hnswlib("cosine", None, tmp_path / f"{dtype}.bin", writable=True))  # unit in float32


def test_a_huge_hnswlib_max_elements_is_not_allocated(tmp_path: Path, monkeypatch) -> None:
    """max_elements 1.5e8 in a 200-vector hnswlib file: a writable load allocates at most
    ``capacity_for`` of its rows; the hnswlib shim keeps the file's max_elements and grows
    its room on demand.

    Fails before the bound: the load allocated room for 150 million vectors (~1.9 GiB here).
    """
    import hnsw_numba.hnswlib as shim

    x = np.random.default_rng(5).standard_normal((260, DIM)).astype(np.float32)
    index = hn.Index(DIM, "l2", seed=1)
    index.add(x[:200])
    hn.save_hnswlib(tmp_path / "h.bin", *index.native, max_elements=150_000_000)
    w, ws = hn.load_hnswlib("l2", None, tmp_path / "h.bin", writable=True)
    assert w.max_nodes <= 200 + 65536 and ws.max_nodes <= 200 + 65536
    assert w.search(ws, x[7], 1)[0].key == 7
    hn.save_hnswlib(tmp_path / "again.bin", w, ws)  # the file's max_elements goes back as it came
    assert hn.load_hnswlib("l2", None, tmp_path / "again.bin")[1].source_capacity == 150_000_000
    monkeypatch.setattr(shim, "capacity_for", lambda declared, n: n + 10)  # little room: the adds below grow it
    p = shim.Index("l2", DIM)
    p.load_index(str(tmp_path / "h.bin"))
    assert p.get_max_elements() == 150_000_000 and p.native[0].max_nodes == 210
    p.add_items(x[200:], np.arange(200, 260))
    assert p.element_count == 260 and p.native[0].max_nodes >= 260
    assert p.knn_query(x[250], k=1)[0][0, 0] == 250


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_is_never_opened_for_reading(tmp_path: Path) -> None:
    """A FIFO in place of a chunk file, a zarr.json or an hnswlib file is refused at once.

    Fails before: the load blocked forever reading the FIFO.
    """
    p, _ = _saved(tmp_path)
    cases = [p / "graph" / "levels" / "c" / "0", p / "vectors" / "zarr.json"]
    for target in cases:
        q = tmp_path / f"case{cases.index(target)}"
        shutil.copytree(p, q)
        victim = q / target.relative_to(p)
        victim.unlink()
        os.mkfifo(victim)
        out: list = []
        t = threading.Thread(target=lambda: out.append(_outcome(lambda: hn.load(q))), daemon=True)
        t.start()
        t.join(20)
        assert not t.is_alive(), f"load blocked on a FIFO at {victim}"
        assert isinstance(out[0], hn.IndexFormatError), out
    fifo = tmp_path / "h.bin"
    os.mkfifo(fifo)
    with pytest.raises(hn.LegacyFormatError):
        hn.load_hnswlib(hn.L2(), DIM, fifo)


def _outcome(fn):
    try:
        fn()
    except BaseException as exc:  # the test inspects it
        return exc
    return None


def _edit(path: Path, fn) -> None:
    meta = json.loads(path.read_text())
    fn(meta)
    path.write_text(json.dumps(meta))


def test_hostile_metadata_is_a_format_error(tmp_path: Path) -> None:
    """chunk_shape [0] and deeply nested JSON raise IndexFormatError.

    Fails before: a bare ValueError (range step zero) and a RecursionError.
    """
    p, _ = _saved(tmp_path)
    q = tmp_path / "zero"
    shutil.copytree(p, q)
    _edit(q / "graph" / "levels" / "zarr.json",
          lambda m: m["chunk_grid"]["configuration"].__setitem__("chunk_shape", [0]))
    with pytest.raises(hn.IndexFormatError, match="chunk shape"):
        hn.load(q)
    q = tmp_path / "deep"
    shutil.copytree(p, q)
    (q / "graph" / "zarr.json").write_text("[" * 100_000)
    with pytest.raises(hn.IndexFormatError):
        hn.load(q)


def test_huge_saved_capacity_is_not_allocated(tmp_path: Path) -> None:
    """max_nodes edited to 1.5e8 in a 300-vector save loads with a bounded capacity.

    Fails before: the load allocated the full claimed capacity.
    """
    p, data = _saved(tmp_path)
    _edit(p / "graph" / "zarr.json", lambda m: m["attributes"]["hnsw_numba"]["config"].__setitem__("max_nodes", 150_000_000))
    _edit(p / "vectors" / "zarr.json", lambda m: m["attributes"]["hnsw_numba"].__setitem__("max_nodes", 150_000_000))
    with pytest.raises(hn.IndexFormatError, match="digest"):  # the edit breaks the digests
        hn.load(p)
    redigest(p, "graph")  # a crafted file: digests recomputed
    redigest(p, "vectors")
    idx, store = hn.load(p)
    assert idx.max_nodes <= 300 + 65536 and store.max_nodes <= 300 + 65536
    assert idx.search(store, data[1], 1)[0].key == 1


@pytest.mark.parametrize("qi8", [False, True])
def test_chunk_copied_from_another_array_fails(tmp_path: Path, qi8: bool) -> None:
    """A chunk file copied over another array's chunk of the same size fails to load.

    Fails before per-array digests: the chunk's own CRC is valid, so it loaded, passed
    integrity and gave wrong answers.
    """
    p, _ = _saved(tmp_path, qi8=qi8)
    pairs = [("graph/tombstones", "vectors/written")]
    if qi8:
        pairs.append(("graph/levels", "vectors/zero_point"))
    for src, dst in pairs:
        q = tmp_path / f"swap-{src.replace('/', '_')}"
        shutil.copytree(p, q)
        a, b = q / src / "c" / "0", q / dst / "c" / "0"
        assert a.stat().st_size == b.stat().st_size
        if a.read_bytes() == b.read_bytes():
            continue
        shutil.copyfile(a, b)
        with pytest.raises(hn.IndexFormatError, match="digest"):
            hn.load(q)


def test_format_version_1_saves_still_load(tmp_path: Path) -> None:
    """A save without digests marked format version 1 loads (chunk CRCs checked)."""
    p, data = _saved(tmp_path)
    without_digests(p)
    idx, store = hn.load(p)
    assert idx.search(store, data[2], 1)[0].key == 2
    # a version-2 save must carry its digests
    _edit(p / "zarr.json", lambda m: m["attributes"]["hnsw_numba"].__setitem__("format_version", 2))
    with pytest.raises(hn.IndexFormatError, match="digest"):
        hn.load(p)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc")
def test_a_refused_hnswlib_file_is_released_when_its_error_is(tmp_path: Path) -> None:
    """A file the checks refuse is unmapped and closed once the caller drops the error, with
    no garbage collection (gc off).

    Fails before: the error's traceback sat in a reference cycle holding the parse's frames
    and with them the mapping: 20 failed loads kept 20 descriptors and mappings.
    """
    import gc

    x = np.random.default_rng(7).standard_normal((300, DIM)).astype(np.float32)
    index = hn.Index(DIM, "l2", seed=1)
    index.add(x)
    path = tmp_path / "h.bin"
    hn.save_hnswlib(path, *index.native)
    raw = bytearray(path.read_bytes())
    raw[-8:] = b"\xff" * 8  # the last element's upper-level record: its size field
    path.write_bytes(bytes(raw))
    gc.collect()
    gc.disable()
    try:
        before = len(os.listdir("/proc/self/fd"))
        for _ in range(20):
            try:
                hn.load_hnswlib("l2", None, path)
            except hn.LegacyFormatError:
                pass
            else:
                raise AssertionError("the damaged file loaded")
        assert len(os.listdir("/proc/self/fd")) == before
    finally:
        gc.enable()
