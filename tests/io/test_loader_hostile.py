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
