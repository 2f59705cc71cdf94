"""Saves that overlap mutations write one consistent snapshot; a bad copy never replaces a good one."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest

import hnsw_numba as hn
from hnsw_numba.io import persist, swap, zarr_io


def _built(n: int = 20000, dim: int = 32, seed: int = 0) -> tuple[hn.Hnsw, hn.InMemoryVectorStore, np.ndarray]:
    data = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    idx = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=dim, max_nodes=n, m=8, ef_construction=32, seed=1))
    store = hn.InMemoryVectorStore(dim, n)
    idx.insert_batch(store, np.arange(n), data)
    return idx, store, data


def test_save_during_deletes_loads(tmp_path: Path) -> None:
    """A save while another thread deletes keys loads, and agrees with itself.

    Fails before deletions took the lock shared: the header's deleted count was copied
    while tombstones still changed, the save did not load, and it replaced the good copy.
    """
    idx, store, _ = _built()
    p = tmp_path / "ix"
    hn.save(p, idx, store)
    go = threading.Event()

    def deleter() -> None:
        go.set()
        for key in range(0, 20000, 3):
            idx.delete(key)

    for _ in range(3):
        t = threading.Thread(target=deleter)
        t.start()
        go.wait()
        try:
            hn.save(p, idx, store)
        finally:
            t.join()
        loaded, _ = hn.load(p)  # raised IndexFormatError (deleted count vs tombstones) before
        loaded.check_integrity()
        assert loaded.deleted_count == int(loaded.graph_arrays.tombstones[: loaded.node_count].sum())
        for key in range(0, 20000, 3):  # undo for the next round
            idx.insert(store, key, np.zeros(32, np.float32) + key)


def test_save_validates_before_swap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A save whose written copy does not load raises and keeps the previous save.

    Fails before saves loaded the written copy before swapping it in.
    """
    idx, store, data = _built(500, 8)
    p = tmp_path / "ix"
    hn.save(p, idx, store)
    real = persist.graph_payload

    def broken(index: hn.Hnsw) -> tuple:
        attrs, arrays = real(index)
        arrays = [(name, (arr + 3) if name == "levels" else arr, kw) for name, arr, kw in arrays]
        return attrs, arrays

    monkeypatch.setattr(persist, "graph_payload", broken)
    with pytest.raises(hn.IndexFormatError):
        hn.save(p, idx, store)
    monkeypatch.undo()
    loaded, lstore = hn.load(p)
    assert len(loaded) == 500
    assert [h.key for h in loaded.search(lstore, data[7], 1)] == [7]
    assert not [s for s in os.listdir(tmp_path) if s.startswith(".")]


def test_load_removes_leftovers_of_killed_saves(tmp_path: Path) -> None:
    """A load removes the temporary copy a killed save left behind (not only the next save).

    Fails before loads cleaned up: the copy stayed until the next save of that path.
    """
    idx, store, _ = _built(300, 8)
    p = tmp_path / "ix"
    hn.save(p, idx, store)
    dead = 2**22 + 12345  # beyond pid_max on common systems: no such process
    while True:
        try:
            os.kill(dead, 0)
            dead += 1
        except ProcessLookupError:
            break
        except PermissionError:
            dead += 1
    leftover = tmp_path / f".ix.tmp-{dead}-deadbeef"
    leftover.mkdir()
    (leftover / "zarr.json").write_text("{}")
    hn.load(p)
    assert not leftover.exists()
    assert swap.tmp_sibling(p).name.startswith(".ix.tmp-")


def test_a_mapped_load_maps_the_file_it_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A mapped load checks the vectors' chunk file's size through the file it opens, then
    maps it. Mapped again by path, a save that swapped the directory in between (a smaller
    index) gave a shorter file, and the load raised ValueError (mmap length is greater than
    file size); it maps the file it checked, and the load, which the swap overlapped, runs
    again and reads the new save."""
    idx, store, _ = _built(400, 8)
    small, small_store, data = _built(100, 8, seed=1)
    p = tmp_path / "ix"
    hn.save(p, idx, store)
    real = zarr_io.open_regular
    armed = [True]

    def open_then_save(path, error):
        f = real(path, error)
        if armed[0] and Path(path).parts[-5:-3] == ("vectors", "data"):  # the chunk file mapped
            armed[0] = False
            hn.save(p, small, small_store)
        return f

    monkeypatch.setattr(zarr_io, "open_regular", open_then_save)
    loaded, lstore = hn.load(p, mmap=True)
    assert not armed[0] and len(loaded) == 100
    assert [h.key for h in loaded.search(lstore, data[7], 1)] == [7]


@pytest.mark.parametrize("kind", ["dir", "zip"])
def test_a_load_overtaken_by_saves_reads_again_though_the_inode_comes_back(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file system may give a new copy a freed inode (A/B/A/B across saves): a load that
    two saves overtook saw the same (device, inode) and kept one save's keys with the
    other's vectors; a zip was never read again at all."""
    import types

    # the inodes come back; the save's metadata file was written at another time
    times = iter([100, 200, 200, 200])

    def stat(path):
        t = next(times) if kind == "zip" or path.endswith("zarr.json") else 0
        return types.SimpleNamespace(st_dev=1, st_ino=5, st_ctime_ns=t, st_mtime_ns=t, st_size=1)

    monkeypatch.setattr(persist, "os", types.SimpleNamespace(stat=stat, path=os.path))
    reads = iter(["mixed", "whole"])
    assert persist.across_swaps(types.SimpleNamespace(kind=kind, path="x"), lambda: next(reads)) == "whole"


def test_a_file_made_in_the_directory_is_no_new_save(tmp_path: Path) -> None:
    """Any entry made in the index directory changes the directory's own times: loads beside a
    sync client's files failed 20 of 20 ("saves replaced it during 4 reads")."""
    from hnsw_numba.io import persist

    index = hn.Index(4, metric="l2")
    index.add(np.ones((3, 4), np.float32))
    index.save(tmp_path / "i.zarr")
    tgt = swap.resolve_target(tmp_path / "i.zarr", write=False)
    before = persist._identity(tgt)
    (tmp_path / "i.zarr" / ".DS_Store").write_bytes(b"x")
    assert persist._identity(tgt) == before
    index.save(tmp_path / "i.zarr")
    assert persist._identity(tgt) != before
