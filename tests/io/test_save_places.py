"""Where a save goes and what it may replace: never a part of another save, never a user's
folder that happens to carry the aside name, through symlinks to what they name, local
folders however the URL spells them; and hnswlib files copied without a mapping."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import hnsw_numba as hn
from hnsw_numba.core.errors import PersistFileExistsError, PersistFileNotFoundError, PersistPermissionError
from hnsw_numba.io import hnswlib_source, persist, swap


def _index(n: int, seed: int) -> hn.Index:
    index = hn.Index(4, metric="l2")
    index.add(np.random.default_rng(seed).standard_normal((n, 4)).astype(np.float32))
    return index


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_save_inside_another_save_is_refused(tmp_path: Path) -> None:
    """A save to ``x.zarr/graph`` replaced the graph group of the save around it, which then
    did not load; a new folder inside a save is deleted by that save's next save."""
    a, b = _index(30, 1), _index(50, 2)
    a.save(tmp_path / "x.zarr")
    before = _files(tmp_path / "x.zarr")
    for inner in ("graph", "vectors", "new", "graph/deeper"):
        for save in (lambda p: b.save(p), lambda p: hn.save_index(b.native[0], p), lambda p: b.save(str(p) + ".zip")):
            with pytest.raises(PersistFileExistsError, match="holds a saved index"):
                save(tmp_path / "x.zarr" / inner)
    assert _files(tmp_path / "x.zarr") == before and len(hn.open(tmp_path / "x.zarr")) == 30


def test_a_folder_with_the_aside_name_is_left_alone(tmp_path: Path) -> None:
    """A user folder ``.models.old`` was moved into place and deleted by a save to ``models``,
    and renamed to ``other`` by a failed open of ``other``."""
    a = _index(30, 1)
    for name in ("models", "other"):
        (tmp_path / f".{name}.old").mkdir()
        (tmp_path / f".{name}.old" / "thesis.tex").write_text("mine")
    with pytest.raises(PersistFileExistsError, match="holds no save"):
        a.save(tmp_path / "models")
    with pytest.raises(FileNotFoundError):
        hn.open(tmp_path / "other")
    for name in ("models", "other"):
        assert (tmp_path / f".{name}.old" / "thesis.tex").read_text() == "mine"
        assert not (tmp_path / name).exists()
    a.save(tmp_path / "fresh")  # an aside copy that is a save is still recovered and replaced
    os.rename(tmp_path / "fresh", tmp_path / ".fresh.old")
    assert len(hn.open(tmp_path / "fresh")) == 30 and not (tmp_path / ".fresh.old").exists()


def test_a_save_that_cannot_remove_the_old_copy_is_refused_up_front(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read-only save (``chmod -R a-w``, its parent writable, another user than root) was
    replaced, its old copy left as ``.i.zarr.old`` for good, and every later save failed
    (directory not empty)."""
    a = _index(30, 1)
    a.save(tmp_path / "i.zarr")
    before = _files(tmp_path / "i.zarr")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: not str(p).endswith("graph") and real(p, mode))
    with pytest.raises(PersistPermissionError, match="graph is read-only"):
        _index(5, 2).save(tmp_path / "i.zarr")
    assert _files(tmp_path / "i.zarr") == before and sorted(os.listdir(tmp_path)) == ["i.zarr"]


def test_a_stale_aside_copy_that_stays_fails_the_save_before_anything_moves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = _index(30, 1)
    a.save(tmp_path / "i.zarr")
    a.save(tmp_path / "keep")
    os.rename(tmp_path / "keep", tmp_path / ".i.zarr.old")  # a stale copy: both present
    monkeypatch.setattr(swap, "recover", lambda path: None)
    monkeypatch.setattr(swap, "drop_aside", lambda path: None)  # it cannot be removed
    with pytest.raises(PersistFileExistsError, match="cannot be removed"):
        _index(5, 2).save(tmp_path / "i.zarr")
    assert len(hn.open(tmp_path / "i.zarr")) == 30


@pytest.mark.parametrize("name", ["idx.zarr", "idx.zip"])
def test_a_save_through_a_symlink_replaces_what_it_names(tmp_path: Path, name: str) -> None:
    (tmp_path / "bigdisk").mkdir()
    _index(30, 1).save(tmp_path / "bigdisk" / name)
    os.symlink(tmp_path / "bigdisk" / name, tmp_path / name)
    _index(50, 2).save(tmp_path / name)
    assert (tmp_path / name).is_symlink() and len(hn.open(tmp_path / "bigdisk" / name)) == 50


def test_a_hnswlib_file_through_a_symlink_keeps_the_link(tmp_path: Path) -> None:
    index = _index(30, 1)
    (tmp_path / "real").mkdir()
    hn.save_hnswlib(tmp_path / "real" / "i.bin", *index.native)
    os.symlink(tmp_path / "real" / "i.bin", tmp_path / "i.bin")
    hn.save_hnswlib(tmp_path / "i.bin", *_index(50, 2).native)
    assert (tmp_path / "i.bin").is_symlink() and hn.load_hnswlib(hn.L2(), 4, tmp_path / "real" / "i.bin")[0].node_count == 50


@pytest.mark.parametrize("url", ["local://{}", "simplecache::file://{}", "file::{}"])
def test_local_folders_named_by_any_fsspec_url_are_saved_by_the_swap(tmp_path: Path, url: str) -> None:
    """``local://DIR`` and ``simplecache::file://DIR`` emptied the store by deleting DIR, user
    files included, and then failed (no such directory)."""
    pytest.importorskip("fsspec")
    project = tmp_path / "project"
    project.mkdir()
    (project / "notes.txt").write_text("mine")
    a = _index(30, 1)
    with pytest.raises(PersistFileExistsError, match="holds no save"):
        a.save(url.format(project))
    assert (project / "notes.txt").read_text() == "mine"
    a.save(url.format(tmp_path / "i.zarr"))
    a.save(url.format(tmp_path / "i.zarr"))  # replaced by the swap
    assert len(hn.open(tmp_path / "i.zarr")) == 30 and len(hn.open(url.format(tmp_path / "i.zarr"))) == 30


def test_a_name_of_255_bytes_saves(tmp_path: Path) -> None:
    """The temporary sibling ``.<name>.tmp-<pid>-<hex>`` of a long name passed the 255 bytes
    a name may have: such a save always failed (name too long)."""
    a = _index(30, 1)
    for name in ("n" * 255, "é" * 127, "m" * 251 + ".zip"):
        a.save(tmp_path / name)
        a.save(tmp_path / name)
        assert len(hn.open(tmp_path / name)) == 30
    assert len(os.listdir(tmp_path)) == 3


def test_a_load_that_every_save_overtook_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    """A load whose every read met a save reported the last read's checksum error, as if the
    file were corrupt."""
    idents = iter(range(100))
    monkeypatch.setattr(persist, "_identity", lambda tgt: next(idents))
    monkeypatch.setattr(persist.time, "sleep", lambda s: None)

    def torn():
        raise hn.IndexFormatError("digest mismatch")

    import types

    with pytest.raises(hn.IndexFormatError, match="saves replaced it during"):
        persist.across_swaps(types.SimpleNamespace(kind="dir", path="x"), torn)


def test_copies_of_hnswlib_files_read_them_and_never_map(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """C++ hnswlib rewrites its file in place: a drop-in or writable load that mapped it was
    killed by SIGBUS when the file shrank under the mapping (8 of 10 readers)."""
    import hnsw_numba.hnswlib as shim

    index = _index(40, 1)
    hn.save_hnswlib(tmp_path / "i.bin", *index.native)

    def no_map(fd):
        raise AssertionError("mapped")

    monkeypatch.setattr(hnswlib_source, "map_file", no_map)
    p = shim.Index("l2", 4)
    p.load_index(str(tmp_path / "i.bin"))
    assert p.get_current_count() == 40
    copy, store = hn.load_hnswlib(hn.L2(), 4, tmp_path / "i.bin", writable=True)
    assert copy.node_count == 40 and not copy.read_only
    with pytest.raises(AssertionError, match="mapped"):
        hn.load_hnswlib(hn.L2(), 4, tmp_path / "i.bin")  # the zero-copy view maps


def test_a_file_that_changes_size_while_read_is_refused(tmp_path: Path) -> None:
    class Shrinking:
        def __init__(self, data: bytes) -> None:
            self.data, self.pos = data, 0

        def readinto(self, view) -> int:
            n = min(len(view), 100, len(self.data) - 300 - self.pos)  # the writer truncated it
            view[:n] = self.data[self.pos : self.pos + n]
            self.pos += max(n, 0)
            return max(n, 0)

        def read(self, n: int) -> bytes:
            return b""

    with pytest.raises(hn.LegacyFormatError, match="changed size"):
        hnswlib_source.read_whole(Shrinking(bytes(1000)), 1000)


def test_bf_load_of_a_fifo_or_folder_is_refused_without_blocking(tmp_path: Path) -> None:
    import hnsw_numba.hnswlib as shim

    os.mkfifo(tmp_path / "fifo")
    bf = shim.BFIndex("l2", 4)
    bf.init_index(10)
    for path in (tmp_path / "fifo", tmp_path):
        with pytest.raises(RuntimeError) as info:
            bf.load_index(str(path))
        assert isinstance(info.value, hn.HnswError)


def test_one_file_saves_and_links_into_a_save_are_refused(tmp_path: Path) -> None:
    """An hnswlib file written over ``x.zarr/zarr.json`` (or into the folder, deleted by its
    next save) was accepted; so was a save through a symlinked parent that led into a save."""
    a = _index(30, 1)
    a.save(tmp_path / "x.zarr")
    before = _files(tmp_path / "x.zarr")
    for target in (tmp_path / "x.zarr" / "zarr.json", tmp_path / "x.zarr" / "graph" / "i.bin"):
        with pytest.raises(PersistFileExistsError, match="holds a saved index"):
            hn.save_hnswlib(target, *a.native)
    os.symlink(tmp_path / "x.zarr" / "graph", tmp_path / "work")
    with pytest.raises(PersistFileExistsError, match="holds a saved index"):
        a.save(tmp_path / "work" / "b.zarr")
    assert _files(tmp_path / "x.zarr") == before


def test_an_interrupted_save_of_another_kind_is_not_replaced(tmp_path: Path) -> None:
    """With ``a.zarr`` missing and ``.a.zarr.old`` holding the last whole index (a save killed
    between its renames), saving search results to ``a.zarr`` removed the index."""
    from hnsw_numba.cli.files import write_results

    a = _index(30, 1)
    a.save(tmp_path / "a.zarr")
    os.rename(tmp_path / "a.zarr", tmp_path / ".a.zarr.old")
    with pytest.raises(PersistFileExistsError, match="interrupted save"):
        write_results(str(tmp_path / "a.zarr"), np.zeros((2, 3), np.int64), np.zeros((2, 3), np.float32))
    assert len(hn.open(tmp_path / "a.zarr")) == 30  # put back by the load


def test_a_link_into_no_directory_a_loop_of_links_and_an_unreadable_old_save_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = _index(30, 1)
    os.symlink(tmp_path / "nowhere" / "i.zip", tmp_path / "i.zip")
    with pytest.raises(PersistFileNotFoundError, match="no directory"):
        a.save(tmp_path / "i.zip")
    assert os.path.islink(tmp_path / "i.zip")
    os.symlink(tmp_path / "loop2.zarr", tmp_path / "loop1.zarr")
    os.symlink(tmp_path / "loop1.zarr", tmp_path / "loop2.zarr")
    with pytest.raises(PersistFileNotFoundError, match="loop of links"):
        a.save(tmp_path / "loop1.zarr")
    with pytest.raises(hn.PersistError):
        hn.open(tmp_path / "loop1.zarr")
    a.save(tmp_path / "j.zarr")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    real_walk = os.walk

    def unlistable(top, onerror=None):  # a directory of the old save this user cannot list
        onerror(PermissionError(13, "Permission denied", str(Path(top) / "graph")))
        return real_walk(top)

    monkeypatch.setattr(os, "walk", unlistable)
    with pytest.raises(PersistPermissionError, match="unreadable"):
        _index(5, 2).save(tmp_path / "j.zarr")


def test_a_link_whose_save_a_crash_left_aside_opens_and_saves(tmp_path: Path) -> None:
    """A crash between a swap's two renames leaves ``real.zarr`` missing and its copy in
    ``.real.zarr.old``; opening or saving through ``link.zarr -> real.zarr`` said "no saved
    index" / refused the link, although the load of ``real.zarr`` puts the copy back."""
    a = _index(30, 1)
    a.save(tmp_path / "real.zarr")
    os.symlink("real.zarr", tmp_path / "link.zarr")  # relative, as `ln -s` makes it
    for step in ("open", "save"):
        os.rename(tmp_path / "real.zarr", tmp_path / ".real.zarr.old")
        if step == "open":
            assert len(hn.open(tmp_path / "link.zarr")) == 30
        else:
            _index(12, 3).save(tmp_path / "link.zarr")
            assert len(hn.open(tmp_path / "real.zarr")) == 12
        assert os.path.islink(tmp_path / "link.zarr") and (tmp_path / "real.zarr").is_dir()
        assert not os.path.lexists(tmp_path / ".real.zarr.old")
    os.rename(tmp_path / "real.zarr", tmp_path / "moved.zarr")  # no copy aside: nothing to open
    with pytest.raises(PersistFileNotFoundError):
        hn.open(tmp_path / "link.zarr")


def test_a_save_opens_by_dot_and_a_folder_without_one_is_refused_before_it_is_walked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``hn.open(".")`` inside a save (and ``hnsw-numba info .``) raised a bare ValueError, as
    did ``hn.open("/")``; a folder holding no save was walked whole before it was refused
    (a FIFO deep inside it was named, a large tree took its time)."""
    _index(30, 1).save(tmp_path / "x.zarr")
    monkeypatch.chdir(tmp_path / "x.zarr" / "graph")
    assert len(hn.open("..")) == 30
    monkeypatch.chdir(tmp_path / "x.zarr")
    assert len(hn.open(".")) == 30
    with pytest.raises(PersistFileNotFoundError, match="no saved index"):
        hn.open("/")
    # "link/.." is the parent of the link's target, as the OS reads it (it was read as ".")
    os.makedirs(tmp_path / "side")
    os.symlink(tmp_path / "x.zarr" / "graph", tmp_path / "side" / "lnk")
    monkeypatch.chdir(tmp_path / "side")
    assert len(hn.open("lnk/..")) == 30
    with pytest.raises(hn.InvalidParameterError, match="name the directory"):
        _index(5, 2).save(".")
    os.makedirs(tmp_path / "data" / "deep")
    os.mkfifo(tmp_path / "data" / "deep" / "pipe")
    with pytest.raises(hn.IndexFormatError, match="no saved index there"):
        hn.open(tmp_path / "data")


def test_long_names_are_cut_on_whole_characters() -> None:
    from hnsw_numba.io.localfiles import sibling_name

    for name in ("é" * 127, "€" * 85, "😀" * 63):
        sib = sibling_name(Path(name), "old").name
        assert len(os.fsencode(sib)) <= 255 and sib.encode("utf-8")  # valid text
        assert sib == sibling_name(Path(name), "old").name != sibling_name(Path(name[:-1]), "old").name


def test_local_urls_of_a_sharded_index_are_local_paths() -> None:
    """``local://`` sharded targets counted as remote: writers took no lock and lost updates."""
    from hnsw_numba.dask.manifest import is_remote, target_text

    for url in ("local:///data/s", "file:///data/s"):
        assert target_text(url) == "/data/s" and not is_remote(target_text(url))
    with pytest.raises(hn.InvalidParameterError, match="chained URL"):  # read as an AttributeError from fsspec's cache
        target_text("simplecache::file:///data/s")


def test_a_one_file_save_does_not_replace_a_device_or_fifo(tmp_path: Path) -> None:
    """A one-file save replaced whatever its path named but a directory: through a link to
    ``/dev/null`` (as root) the device itself became a regular file."""
    os.mkfifo(tmp_path / "pipe")
    targets = [tmp_path / "pipe"]
    if os.path.exists("/dev/null"):
        os.symlink("/dev/null", tmp_path / "null.bin")
        targets.append(tmp_path / "null.bin")
    index = _index(20, 1)
    idx, store = index.native
    for target in targets:
        with pytest.raises(hn.PersistError) as info:
            hn.save_hnswlib(target, idx, store)
        assert isinstance(info.value, FileExistsError) and "no regular file" in str(info.value)
    assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")
    import stat as st

    assert st.S_ISFIFO(os.stat(tmp_path / "pipe").st_mode)


def test_a_path_with_a_nul_character_is_refused_typed(tmp_path: Path) -> None:
    """``os.stat`` raises a bare ValueError for a NUL in a path: open, read_info, save and the
    hnswlib loader passed it on."""
    from hnsw_numba.io.persist import read_info

    index = _index(5, 1)
    idx, store = index.native
    for call in (lambda: hn.open("x\x00y"), lambda: read_info("x\x00y"), lambda: index.save(str(tmp_path / "a\x00b.zarr")),
                 lambda: hn.load_hnswlib(hn.L2(), 4, "a\x00b"), lambda: hn.save_hnswlib(str(tmp_path / "a\x00b"), idx, store)):
        with pytest.raises(hn.InvalidParameterError):
            call()


def test_a_zip_the_os_cannot_read_is_no_file_of_another_kind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A .zip target whose check the OS failed (too many open files) was taken for a file that
    is no zip of a save ("remove it first"); the error is the OS's, as a PersistError, and
    the file stays as it was."""
    import errno
    import zipfile

    idx = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=2, max_nodes=4))
    store = hn.InMemoryVectorStore(2, 4)
    idx.insert_batch(store, [0, 1], np.eye(2, dtype=np.float32))
    path = tmp_path / "ix.zip"
    hn.save(path, idx, store)
    before = path.read_bytes()

    def refused(*args, **kwargs):
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(zipfile, "ZipFile", refused)
    with pytest.raises(hn.PersistError) as caught:
        hn.save(path, idx, store)
    monkeypatch.undo()
    assert caught.value.errno == errno.EMFILE and not isinstance(caught.value, PersistFileExistsError)
    assert path.read_bytes() == before
