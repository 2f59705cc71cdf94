"""Saves under OS faults: typed errors, the previous copy kept, nothing left behind.

Each test makes one OS call of a save fail (monkeypatched ``os`` functions) and checks the
aftermath: the error is a PersistError and the matching built-in, the target holds the
bytes of the previous save, no temporary or aside copy is left, the index still saves.
"""

from __future__ import annotations

import builtins
import errno
import hashlib
import io
import mmap
import os
import re
import stat
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import REFUSE_THREADS, interrupt_each_step

import hnsw_numba as hn
from hnsw_numba.core.errors import (
    PersistFileExistsError, PersistFileNotFoundError, PersistIsADirectoryError, PersistNotADirectoryError,
)


def _index(n: int, seed: int) -> tuple[hn.Hnsw, hn.InMemoryVectorStore]:
    data = np.random.default_rng(seed).standard_normal((n, 4)).astype(np.float32)
    idx = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=4, max_nodes=n, m=4, ef_construction=20, seed=1))
    store = hn.InMemoryVectorStore(4, n)
    idx.insert_batch(store, np.arange(n), data)
    return idx, store


@pytest.fixture(scope="module")
def two() -> tuple:
    return _index(30, 1), _index(50, 2)


def digest(path: Path) -> dict:
    if path.is_file():
        return {"": hashlib.sha256(path.read_bytes()).hexdigest()}
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.rglob("*")) if p.is_file()}


def failing(real, err: int, when=lambda *a: True):
    """``real`` that raises OSError(err) on calls for which ``when(*args)`` holds."""
    def call(*args, **kwargs):
        if when(*args):
            raise OSError(err, os.strerror(err), str(args[0]) if args and not isinstance(args[0], int) else None)
        return real(*args, **kwargs)
    return call


def is_dir_fd(fd, *rest) -> bool:
    return stat.S_ISDIR(os.fstat(fd).st_mode)


@pytest.mark.parametrize("name", ["ix", "ix.zip", "ix.bin"])
@pytest.mark.parametrize("err,builtin", [(errno.ENOSPC, OSError), (errno.EIO, OSError), (errno.EACCES, PermissionError)])
def test_an_os_error_in_a_save_is_typed_and_keeps_the_old_copy(tmp_path, monkeypatch, two, name, err, builtin) -> None:
    (a, sa), (b, sb) = two
    path = tmp_path / name
    save = hn.save_hnswlib if name.endswith(".bin") else hn.save
    save(path, a, sa)
    before = digest(path)
    monkeypatch.setattr(os, "fsync", failing(os.fsync, err, lambda fd: not is_dir_fd(fd)))  # flushing the new file
    with pytest.raises(hn.PersistError) as caught:
        save(path, b, sb)
    monkeypatch.undo()
    assert isinstance(caught.value, builtin) and isinstance(caught.value, hn.HnswError)
    assert caught.value.errno == err and "cannot save" in str(caught.value)
    assert digest(path) == before and os.listdir(tmp_path) == [name]
    save(path, b, sb)  # the index is unchanged and unlocked
    assert digest(path) != before


def test_a_save_to_a_place_it_cannot_write_is_refused_before_writing(tmp_path, two) -> None:
    (a, sa), _ = two
    (tmp_path / "file").write_bytes(b"x")
    (tmp_path / "adir").mkdir()
    (tmp_path / "adir.zip").mkdir()
    cases = [
        (lambda: hn.save(tmp_path / "nope" / "ix", a, sa), PersistFileNotFoundError),
        (lambda: hn.save_hnswlib(tmp_path / "nope" / "ix.bin", a, sa), PersistFileNotFoundError),
        (lambda: hn.save(tmp_path / "file" / "ix.zip", a, sa), PersistNotADirectoryError),
        (lambda: hn.save_index(a, tmp_path / "file" / "sub" / "g"), PersistNotADirectoryError),
        (lambda: hn.save(tmp_path / "file", a, sa), PersistFileExistsError),
        (lambda: hn.save(tmp_path / "adir.zip", a, sa), PersistIsADirectoryError),
        (lambda: hn.save_hnswlib(tmp_path / "adir", a, sa), PersistIsADirectoryError),
    ]
    for call, exc in cases:
        with pytest.raises(exc) as caught:
            call()
        assert isinstance(caught.value, hn.PersistError) and caught.value.errno is not None
        assert sorted(os.listdir(tmp_path)) == ["adir", "adir.zip", "file"]
        assert not os.listdir(tmp_path / "adir") and not os.listdir(tmp_path / "adir.zip")
    with pytest.raises(FileNotFoundError) as caught:
        hn.load(tmp_path / "nothing")
    assert isinstance(caught.value, hn.PersistError)


def test_a_directory_that_holds_no_save_is_never_replaced(tmp_path, two) -> None:
    """A save to a directory of other files (a typo, a project folder) raises and removes
    nothing; an empty directory or a previous save is replaced; a path naming no entry
    (``.``, ``/``, ``x/..``) is refused before anything is written.

    Fails before the check: the project folder was swapped aside and deleted.
    """
    (a, sa), _ = two
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "notes.txt").write_text("mine")
    (project / "src" / "main.py").write_text("print(1)")
    for save in (lambda: hn.save(project, a, sa), lambda: hn.save_index(a, project)):
        with pytest.raises(PersistFileExistsError, match="holds no save "):
            save()
        assert sorted(os.listdir(project)) == ["notes.txt", "src"] and os.listdir(tmp_path) == ["project"]
        assert (project / "src" / "main.py").read_text() == "print(1)"
    (tmp_path / "empty").mkdir()
    hn.save(tmp_path / "empty", a, sa)
    hn.save(tmp_path / "empty", a, sa)  # a save replaces the previous one
    assert len(hn.load(tmp_path / "empty")[0]) == len(a)
    hn.save_index(a, tmp_path / "empty")  # an index and its halves replace one another
    hn.save(tmp_path / "empty", a, sa)
    assert len(hn.load(tmp_path / "empty")[0]) == len(a)
    for target in (Path("."), Path("/"), tmp_path / "project" / ".."):
        with pytest.raises(hn.InvalidParameterError, match="name the directory or file"):
            hn.save(target, a, sa)
    assert sorted(os.listdir(tmp_path)) == ["empty", "project"]


def test_a_zip_save_replaces_only_a_zip_save(tmp_path, two) -> None:
    """A ``.zip`` target that is a user's archive or any other file is refused (the file kept);
    a previous zip save is replaced.

    Fails before the check: any regular file at the path was replaced by the save.
    """
    import zipfile

    (a, sa), (b, sb) = two
    photos = tmp_path / "photos.zip"
    with zipfile.ZipFile(photos, "w") as z:
        z.writestr("holiday/a.jpg", b"jpeg")
    notes = tmp_path / "notes.ZIP"
    notes.write_text("mine")
    for target in (photos, notes):
        before = target.read_bytes()
        with pytest.raises(PersistFileExistsError, match="is no zip of a save"):
            hn.save(target, a, sa)
        assert target.read_bytes() == before
    hn.save(tmp_path / "ix.zip", a, sa)
    hn.save(tmp_path / "ix.zip", b, sb)
    assert len(hn.load(tmp_path / "ix.zip")[0]) == len(b)
    (tmp_path / "made.zip").touch()  # an empty file made for the save (tempfile, touch) is taken
    hn.save(tmp_path / "made.zip", a, sa)
    assert len(hn.load(tmp_path / "made.zip")[0]) == len(a)


def test_a_name_too_long_is_a_persist_error(tmp_path, two) -> None:
    """ENAMETOOLONG from any save or load is a PersistError (an OSError with its errno)."""
    (a, sa), _ = two
    long = str(tmp_path / ("x" * 300))
    calls = [lambda: hn.save(long, a, sa), lambda: hn.load(long), lambda: hn.save(long + ".zip", a, sa), lambda: hn.load(long + ".zip"),
             lambda: hn.save_hnswlib(long + ".bin", a, sa), lambda: hn.load_hnswlib(hn.L2(), None, long + ".bin")]
    for call in calls:
        with pytest.raises(hn.PersistError) as caught:
            call()
        assert caught.value.errno == errno.ENAMETOOLONG
    with pytest.raises(PersistFileNotFoundError):
        hn.load_hnswlib(hn.L2(), None, tmp_path / "missing.bin")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("name", ["ix", "ix.zip"])
def test_a_swap_that_fails_puts_the_old_copy_back(tmp_path, monkeypatch, two, name) -> None:
    # Flushing the directory fails after the new copy is renamed in, or the rename in fails
    # after the old copy is moved aside: the save raises, so the target must hold the old copy.
    (a, sa), (b, sb) = two
    path = tmp_path / name
    hn.save(path, a, sa)
    before = digest(path)
    monkeypatch.setattr(os, "fsync", failing(os.fsync, errno.EIO, is_dir_fd))  # fsync=False: only the swap's
    with pytest.raises(hn.PersistError):
        hn.save(path, b, sb, fsync=False)
    assert digest(path) == before and os.listdir(tmp_path) == [name]
    monkeypatch.undo()
    if name == "ix":
        monkeypatch.setattr(os, "rename", failing(os.rename, errno.EIO, lambda src, dst: ".tmp-" in str(src)))
        with pytest.raises(hn.PersistError):
            hn.save(path, b, sb, fsync=False)
        assert digest(path) == before and os.listdir(tmp_path) == [name]
        monkeypatch.undo()
    hn.save(path, b, sb)
    assert len(hn.load(path)[0]) == 50 and os.listdir(tmp_path) == [name]


def test_a_local_save_writes_every_file_from_the_calling_thread(tmp_path, monkeypatch, two) -> None:
    # zarr-python writes metadata documents from worker threads that go on after one
    # fails: the failed save's cleanup would race them and they would recreate the
    # temporary copy. Every file comes from the saving thread, so the cleanup is last.
    (a, sa), (b, sb) = two
    path = tmp_path / "ix"
    hn.save(path, a, sa)
    before = digest(path)
    real_open, threads, failed = io.open, set(), []

    def spy(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and ".tmp-" in str(file) and any(c in mode for c in "wax"):
            threads.add(threading.get_ident())
            if Path(file).name.startswith("zarr.") and not failed:  # the first metadata document
                failed.append(file)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(io, "open", spy)
    monkeypatch.setattr(builtins, "open", spy)
    with pytest.raises(hn.PersistError):
        hn.save(path, b, sb)
    monkeypatch.undo()
    assert failed and threads == {threading.get_ident()}
    assert digest(path) == before and os.listdir(tmp_path) == ["ix"]


def test_a_failed_manifest_write_leaves_no_temporary_file(tmp_path, monkeypatch) -> None:
    da = pytest.importorskip("dask.array")
    from hnsw_numba.dask import manifest

    data = da.from_array(np.random.default_rng(0).standard_normal((60, 4)).astype(np.float32), chunks=30)
    target = tmp_path / "sh"
    hn.dask.build(data, str(target), metric="l2", n_shards=2, m=4, ef_construction=20)
    old = manifest.read_manifest(str(target))
    before = sorted(os.listdir(target))
    monkeypatch.setattr(os, "replace", failing(os.replace, errno.ENOSPC))
    with pytest.raises(hn.PersistError) as caught:
        manifest.write_manifest(str(target), old)
    monkeypatch.undo()
    assert isinstance(caught.value, OSError) and caught.value.errno == errno.ENOSPC
    assert sorted(os.listdir(target)) == before
    assert manifest.read_manifest(str(target)) == old
    dead = target / ".zarr.json.tmp-999999999-deadbeef"  # a killed writer's (no such pid)
    dead.write_bytes(b"{")
    manifest.write_manifest(str(target), old)
    assert sorted(os.listdir(target)) == before


def test_a_killed_hnswlib_save_leaves_nothing_after_the_next_save(tmp_path, two) -> None:
    # The temporary file of a killed save carries the dead process's pid, so the next save
    # of the path removes it; one of another live process is left alone, one of this
    # process that no save of it uses (a Ctrl-C left it) goes. A copy named with this pid
    # but another process's token is another process's (two containers' processes on one
    # volume are both pid 1): it was taken for this one's and removed under its save.
    from hnsw_numba.io.localfiles import release_tmp, tmp_name

    (a, sa), _ = two
    path = tmp_path / "ix.bin"
    dead = tmp_path / ".ix.bin.tmp-999999999-deadbeef"  # no such pid
    live = tmp_path / f".ix.bin.tmp-{os.getppid()}-0badf00d"
    twin = tmp_path / f".ix.bin.tmp-{os.getpid()}-0badf00d-12345678"  # same pid, another process
    mine = tmp_name(path)
    release_tmp(mine)  # as a Ctrl-C during a save leaves it
    for leftover in (dead, live, twin, mine):
        leftover.write_bytes(b"partial")
    hn.save_hnswlib(path, a, sa)
    assert sorted(os.listdir(tmp_path)) == sorted(["ix.bin", live.name, twin.name])
    assert hn.load_hnswlib(hn.L2(), 4, path)[0].node_count == 30


def test_a_copy_whose_save_runs_in_another_pid_namespace_is_kept(tmp_path, two) -> None:
    """A save under way in another container names its copy with a pid this process sees as
    dead: the copy's lock file, held by the saving process, keeps it (a load here removed
    the copy under the save). Once the lock is let go, the next save removes both."""
    import subprocess
    import sys

    pytest.importorskip("fcntl")
    (a, sa), _ = two
    path = tmp_path / "ix.bin"
    copy = tmp_path / ".ix.bin.tmp-999999999-0badf00d-12345678"  # the saver's pid is no pid here
    copy.write_bytes(b"partial")
    lock = tmp_path / (copy.name + ".lock")
    holder = subprocess.Popen([sys.executable, "-c", f"""
import fcntl, os, sys
fd = os.open({str(lock)!r}, os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.read()
"""], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        hn.save_hnswlib(path, a, sa)
        assert sorted(os.listdir(tmp_path)) == sorted(["ix.bin", copy.name, lock.name])
    finally:
        holder.communicate("")
    hn.save_hnswlib(path, a, sa)
    assert sorted(os.listdir(tmp_path)) == ["ix.bin"]


def _one_file_saves(tmp_path: Path, two) -> dict:
    """``(target, save old, save new)`` of one-file saves (an hnswlib file, a ``.zip`` index)."""
    (a, sa), (b, sb) = two
    return {
        "hnswlib": (tmp_path / "ix.bin", lambda: hn.save_hnswlib(tmp_path / "ix.bin", a, sa),
                    lambda: hn.save_hnswlib(tmp_path / "ix.bin", b, sb)),
        "zip": (tmp_path / "ix.zip", lambda: hn.save(tmp_path / "ix.zip", a, sa), lambda: hn.save(tmp_path / "ix.zip", b, sb)),
    }


def _manifest_save(tmp_path: Path) -> tuple:
    """``(target, save old, save new)`` of a sharded index's manifest (skipped without dask)."""
    da = pytest.importorskip("dask.array")
    from hnsw_numba.dask import manifest

    data = da.from_array(np.random.default_rng(0).standard_normal((60, 4)).astype(np.float32), chunks=30)
    root = tmp_path / "sh"
    hn.dask.build(data, str(root), metric="l2", n_shards=2, m=4, ef_construction=20)
    old = manifest.read_manifest(str(root))
    new = old.with_shards(list(old.shards), list(old.bounds))
    return (root / "zarr.json", lambda: manifest.write_manifest(str(root), old),
            lambda: manifest.write_manifest(str(root), new))


@pytest.mark.parametrize("kind", ["hnswlib", "zip", "manifest"])
@pytest.mark.parametrize("err", [errno.EIO, errno.ENOSPC], ids=["EIO", "ENOSPC"])
def test_a_failed_directory_flush_after_the_rename_keeps_the_old_copy(tmp_path, monkeypatch, two, kind, err) -> None:
    # The rename is in place but not known to be on disk: the save raises, so it must not
    # have replaced anything (save_hnswlib ignored the failed flush; the manifest raised
    # with the new copy in place).
    path, save_old, save_new = _manifest_save(tmp_path) if kind == "manifest" else _one_file_saves(tmp_path, two)[kind]
    save_old()
    before, listing = digest(path), sorted(os.listdir(path.parent))
    monkeypatch.setattr(os, "fsync", failing(os.fsync, err, is_dir_fd))
    with pytest.raises(hn.PersistError) as caught:
        save_new()
    monkeypatch.undo()
    assert caught.value.errno == err and isinstance(caught.value, hn.HnswError)
    assert digest(path) == before and sorted(os.listdir(path.parent)) == listing
    save_new()  # unchanged and unlocked
    assert digest(path) != before and sorted(os.listdir(path.parent)) == listing


@pytest.mark.parametrize("kind", ["hnswlib", "manifest"])
def test_a_directory_that_cannot_be_opened_to_flush_fails_the_save(tmp_path, monkeypatch, two, kind) -> None:
    path, save_old, save_new = _manifest_save(tmp_path) if kind == "manifest" else _one_file_saves(tmp_path, two)[kind]
    save_old()
    before, listing = digest(path), sorted(os.listdir(path.parent))
    monkeypatch.setattr(os, "open", failing(os.open, errno.EACCES, lambda p, *rest: os.path.isdir(p)))
    with pytest.raises(hn.PersistError) as caught:
        save_new()
    monkeypatch.undo()
    assert isinstance(caught.value, PermissionError) and caught.value.errno == errno.EACCES
    assert digest(path) == before and sorted(os.listdir(path.parent)) == listing


def test_without_hard_links_a_failed_flush_says_the_new_copy_is_in_place(tmp_path, monkeypatch, two) -> None:
    # The old file cannot be kept aside, so it cannot be put back: the new copy stays (a
    # whole one rather than none) and the error says so.
    (a, sa), (b, sb) = two
    path = tmp_path / "ix.bin"
    hn.save_hnswlib(path, a, sa)
    monkeypatch.setattr(os, "link", failing(os.link, errno.EPERM))
    monkeypatch.setattr(os, "fsync", failing(os.fsync, errno.EIO, is_dir_fd))
    with pytest.raises(hn.PersistError) as caught:
        hn.save_hnswlib(path, b, sb)
    monkeypatch.undo()
    assert caught.value.errno == errno.EIO and "the new copy is in place" in str(caught.value)
    assert "not known to be durable" in str(caught.value)
    assert os.listdir(tmp_path) == ["ix.bin"]
    assert hn.load_hnswlib(hn.L2(), 4, path)[0].node_count == 50



@pytest.mark.parametrize("kind", ["hnswlib", "zip"])
def test_a_failed_put_back_after_a_failed_flush_leaves_a_whole_copy(tmp_path, monkeypatch, two, kind) -> None:
    # Two faults: the directory flush after the rename fails, then so does putting the old
    # file back. The target must still hold a whole copy (the new one, which loads): moving
    # the new copy out first and the old one in second left no file at all when the second
    # rename failed, and the old one only as a leftover that the next save removes.
    path, save_old, save_new = _one_file_saves(tmp_path, two)[kind]
    save_old()
    monkeypatch.setattr(os, "fsync", failing(os.fsync, errno.EIO, is_dir_fd))
    from_aside = lambda src, *rest: str(src).endswith(".old")  # noqa: E731
    monkeypatch.setattr(os, "rename", failing(os.rename, errno.EIO, from_aside))
    monkeypatch.setattr(os, "replace", failing(os.replace, errno.EIO, from_aside))
    with pytest.raises(hn.PersistError):
        save_new()
    monkeypatch.undo()
    assert path.is_file()
    if kind == "hnswlib":
        assert hn.load_hnswlib(hn.L2(), 4, path)[0].node_count == 50
    else:
        assert hn.load(path)[0].node_count == 50

class ReadBackFaults:
    """Fails the read-side OS calls a save makes on its new copy while it loads it back.

    Active only inside the loads of ``hnsw_numba.io.persist`` (the save's check), on paths
    inside a temporary copy. ``keys`` records ``(kind, path inside the copy)`` of every
    call; with ``fail`` set, every call of that key raises OSError(``err``) (a bad sector
    stays bad: a retry fails too), or with ``err`` None a read returns one byte flipped.
    """

    def __init__(self, monkeypatch) -> None:
        from hnsw_numba.io import persist

        self.keys: list = []
        self.fail = self.err = self.fired = None
        self.depth = 0
        self.fds: dict = {}
        real_io_open, real_os_open, real_stat, real_fdopen, real_mmap = io.open, os.open, os.stat, os.fdopen, mmap.mmap
        faults = self

        class File:
            def __init__(self, f, name):
                self._f, self._name = f, name

            def read(self, *args):
                faults.hit("read", self._name)
                out = self._f.read(*args)
                return faults.flip(out) if faults.wants("read", self._name) and out else out

            def readinto(self, buf):
                faults.hit("read", self._name)
                return self._f.readinto(buf)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self._f.close()

            def __iter__(self):
                return iter(self._f)

            def __getattr__(self, name):
                return getattr(self._f, name)

        def io_open(file, mode="r", *args, **kwargs):
            f = real_io_open(file, mode, *args, **kwargs)
            if isinstance(file, int) or any(c in mode for c in "wax+") or not faults.inside(file):
                return f
            try:
                faults.hit("open", file)
            except OSError:
                f.close()
                raise
            faults.fds[f.fileno()] = os.fspath(file)
            return File(f, os.fspath(file))

        def os_open(path, flags, *args, **kwargs):
            if not flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and faults.inside(path):
                faults.hit("open", path)
                fd = real_os_open(path, flags, *args, **kwargs)
                faults.fds[fd] = os.fspath(path)
                return fd
            return real_os_open(path, flags, *args, **kwargs)

        def fdopen(fd, *args, **kwargs):
            f = real_fdopen(fd, *args, **kwargs)
            return File(f, faults.fds.pop(fd)) if fd in faults.fds and faults.depth else f

        def stat(path, *args, **kwargs):
            if not isinstance(path, int) and faults.inside(path):
                faults.hit("stat", path)
            return real_stat(path, *args, **kwargs)

        def mmap_(fd, *args, **kwargs):
            if fd in faults.fds and faults.depth:
                faults.hit("mmap", faults.fds[fd])
            return real_mmap(fd, *args, **kwargs)

        def scoped(load):
            def call(*args, **kwargs):
                faults.depth += 1
                try:
                    return load(*args, **kwargs)
                finally:
                    faults.depth -= 1
            return call

        for name in ("load", "load_index", "load_store"):
            monkeypatch.setattr(persist, name, scoped(getattr(persist, name)))
        monkeypatch.setattr(io, "open", io_open)
        monkeypatch.setattr(builtins, "open", io_open)
        monkeypatch.setattr(os, "open", os_open)
        monkeypatch.setattr(os, "fdopen", fdopen)
        monkeypatch.setattr(os, "stat", stat)
        monkeypatch.setattr(mmap, "mmap", mmap_)

    def inside(self, path) -> bool:
        text = os.fspath(path) if self.depth > 0 else None
        return isinstance(text, str) and ".tmp-" in text

    @staticmethod
    def key(kind: str, path) -> tuple:
        return kind, re.sub(r"^.*\.tmp-\d+-[0-9a-f]+(-[0-9a-f]+)?(\.d)?", "", os.fspath(path))

    def wants(self, kind: str, path) -> bool:
        return self.fail == self.key(kind, path)

    def hit(self, kind: str, path) -> None:
        self.keys.append(self.key(kind, path))
        if self.wants(kind, path) and self.err is not None:
            self.fired = os.fspath(path)
            raise OSError(self.err, os.strerror(self.err), os.fspath(path))

    def flip(self, data: bytes) -> bytes:
        self.fired = "flipped"
        return bytes([data[0] ^ 1]) + data[1:]


READ_BACK_SAVES = {
    "dir": ("ix", lambda p, i, s: hn.save(p, i, s)),
    "zip": ("ix.zip", lambda p, i, s: hn.save(p, i, s)),
    "chunked": ("ix", lambda p, i, s: hn.save(p, i, s, chunk_rows=16)),
    "save_index": ("g", lambda p, i, s: hn.save_index(i, p)),
    "save_store": ("v", lambda p, i, s: hn.save_store(s, p, i.node_count)),
}


@pytest.mark.parametrize("kind", sorted(READ_BACK_SAVES))
def test_an_os_error_reading_the_new_copy_back_is_a_persist_error(tmp_path, monkeypatch, two, kind) -> None:
    # A save loads its new copy before swapping it in. The OS failing to read it (I/O
    # error, no permission, no memory to map it) is a PersistError with the OS's errno and
    # file name, not a format error; a copy that reads back wrong is still IndexFormatError.
    (a, sa), (b, sb) = two
    name, save = READ_BACK_SAVES[kind]
    path = tmp_path / name
    save(path, a, sa)
    before, listing = digest(path), sorted(os.listdir(tmp_path))
    q = np.random.default_rng(3).standard_normal((4, 4)).astype(np.float32)
    searched = b.search_batch(sb, q, 5, num_threads=1)[0].tolist()
    faults = ReadBackFaults(monkeypatch)
    save(tmp_path / ("dry-" + name), b, sb)  # records every read of the copy's check
    keys = list(dict.fromkeys(faults.keys))
    assert {k for k, _ in keys} >= {"open", "read", "stat"}, keys
    cases = [(key, errno.EIO) for key in keys]
    cases += [(keys[i], e) for i in (0, len(keys) // 2, len(keys) - 1) for e in (errno.EACCES, errno.ENOMEM)]
    cases += [(key, None) for key in keys if key[0] == "read" and "/c/" in key[1]][:2]  # a flipped byte
    for key, err in cases:
        faults.fail, faults.err, faults.fired = key, err, None
        expected = hn.IndexFormatError if err is None else hn.PersistError
        try:
            save(path, b, sb)
        except expected as exc:
            caught = exc
        else:
            pytest.fail(f"{key} failing with {err}: the save did not raise {expected.__name__} (fired: {faults.fired})")
        assert faults.fired, (key, err)
        if err is not None:
            assert isinstance(caught, PermissionError if err == errno.EACCES else OSError), (key, err)
            assert caught.errno == err and caught.filename == faults.fired, (key, err, caught)
            assert "cannot save" in str(caught) and "previous save is kept" in str(caught), (key, err, caught)
        assert digest(path) == before and sorted(os.listdir(tmp_path)) == sorted(listing + ["dry-" + name]), (key, err)
    faults.fail = None
    monkeypatch.undo()
    assert b.search_batch(sb, q, 5, num_threads=1)[0].tolist() == searched  # the index is unchanged
    save(path, b, sb)  # and unlocked
    assert digest(path) != before


@pytest.mark.parametrize("mmap_", [False, True], ids=["read", "mmap"])
def test_a_load_the_os_fails_to_read_raises_persist_error(tmp_path, monkeypatch, two, mmap_) -> None:
    # The same reader loads a save and checks a save's new copy: an I/O error on a chunk
    # file is the OS's fault (PersistError), a missing chunk file a format error.
    (a, sa), _ = two
    path = tmp_path / "ix"
    hn.save(path, a, sa)
    chunk = lambda p, *rest: os.fspath(p).endswith(os.path.join("links0", "c", "0", "0"))  # noqa: E731
    monkeypatch.setattr(os, "open", failing(os.open, errno.EIO, chunk))
    with pytest.raises(hn.PersistError) as caught:
        hn.load(path, mmap=mmap_)
    monkeypatch.undo()
    assert caught.value.errno == errno.EIO and caught.value.filename.endswith("0")
    (path / "graph" / "links0" / "c" / "0" / "0").unlink()
    with pytest.raises(hn.IndexFormatError, match="missing"):
        hn.load(path, mmap=mmap_)


def test_the_cleanup_of_a_failed_save_does_not_hide_its_error(tmp_path, monkeypatch, two) -> None:
    # Flushing the new copy fails (ENOSPC); the cleanup then cannot stat the temporary
    # copy (EIO). The save raises the ENOSPC and still removes the copy.
    (a, sa), (b, sb) = two
    path = tmp_path / "ix"
    hn.save(path, a, sa)
    before, broken = digest(path), []
    real_fsync, real_stat = os.fsync, os.stat

    def fsync(fd):
        if not is_dir_fd(fd):
            broken.append(fd)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    def stat(p, *args, **kwargs):
        if broken and not isinstance(p, int) and ".tmp-" in os.fspath(p):
            raise OSError(errno.EIO, os.strerror(errno.EIO), os.fspath(p))
        return real_stat(p, *args, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "stat", stat)
    with pytest.raises(hn.PersistError) as caught:
        hn.save(path, b, sb)
    monkeypatch.undo()
    assert caught.value.errno == errno.ENOSPC
    assert digest(path) == before and os.listdir(tmp_path) == ["ix"]


# ---------------------------------------------------------------------------- sharded indexes
def _sharded(tmp_path: Path):
    """``(ShardedIndex, root)`` of a two-shard index of 60 rows (skipped without dask)."""
    da = pytest.importorskip("dask.array")
    data = da.from_array(np.random.default_rng(0).standard_normal((60, 4)).astype(np.float32), chunks=30)
    root = tmp_path / "sh"
    return hn.dask.build(data, str(root), metric="l2", n_shards=2, m=4, ef_construction=20), root


def _shard_dirs(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "shards").iterdir() if p.name != "zarr.json")


def _listing_of(root: Path):
    """Predicate of :func:`failing`: the call lists ``root/shards``."""
    return lambda p=None, *rest: p is not None and not isinstance(p, int) and os.fspath(p) == str(root / "shards")


@pytest.fixture()
def synchronous():
    dask = pytest.importorskip("dask")
    from hnsw_numba.dask import fanout

    with dask.config.set(scheduler="synchronous"):  # in this process, so the patched os functions apply
        yield
    fanout.clear_cache()  # the shards opened here: other tests count this process's loads


def test_a_failed_cleanup_after_a_sharded_commit_keeps_the_commit(tmp_path, monkeypatch, synchronous) -> None:
    # The manifest swap commits a write; removing the replaced shard directories after it
    # is best effort: it warns, the write stands, and the next write removes them.
    ix, root = _sharded(tmp_path)
    before = _shard_dirs(root)
    monkeypatch.setattr(os, "listdir", failing(os.listdir, errno.EIO, _listing_of(root)))
    with pytest.warns(hn.HnswWarning, match="committed"):
        ix.delete([3])
    monkeypatch.undo()
    fresh = hn.dask.ShardedIndex(root)
    assert fresh.manifest == ix.manifest and len(fresh) == 59 and fresh.manifest.generation == 2
    assert set(_shard_dirs(root)) > {s.name for s in ix.manifest.shards} and set(_shard_dirs(root)) > set(before)
    ix.delete([4])
    assert _shard_dirs(root) == sorted(s.name for s in ix.manifest.shards)


def test_the_cleanup_of_a_failed_sharded_write_does_not_hide_its_error(tmp_path, monkeypatch, synchronous) -> None:
    # A write fails (a missing key; a manifest swap the disk refuses) and its cleanup then
    # cannot list the shard directories: the write's error comes out, the index is unchanged.
    ix, root = _sharded(tmp_path)
    before = digest(root)
    monkeypatch.setattr(os, "listdir", failing(os.listdir, errno.EIO, _listing_of(root)))
    with pytest.raises(hn.KeyNotFoundError):
        ix.delete([1000])
    manifest = str(root / "zarr.json")
    monkeypatch.setattr(os, "replace", failing(os.replace, errno.ENOSPC, lambda src, dst: os.fspath(dst) == manifest))
    with pytest.raises(hn.PersistError) as caught:
        ix.delete([3])
    assert caught.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert hn.dask.ShardedIndex(root).manifest == ix.manifest
    ix.delete([5])  # the index is unchanged and writable
    assert len(ix) == 59 and _shard_dirs(root) == sorted(s.name for s in ix.manifest.shards)
    assert digest(root) != before


def test_a_refused_sharded_manifest_swap_leaves_no_new_shards(tmp_path, monkeypatch, synchronous) -> None:
    # The new shards of a write whose manifest swap fails are removed: the target holds the
    # bytes of the previous index and nothing else.
    ix, root = _sharded(tmp_path)
    before = digest(root)
    da = pytest.importorskip("dask.array")
    manifest = str(root / "zarr.json")
    monkeypatch.setattr(os, "replace", failing(os.replace, errno.EIO, lambda src, dst: os.fspath(dst) == manifest))
    with pytest.raises(hn.PersistError):
        ix.append(da.from_array(np.ones((10, 4), np.float32)), n_shards=1)
    with pytest.raises(hn.PersistError):
        hn.dask.build(da.from_array(np.ones((10, 4), np.float32)), str(root), metric="l2", n_shards=2, m=4)
    monkeypatch.undo()
    assert digest(root) == before


@pytest.mark.parametrize("err", [errno.EIO, errno.EACCES])
def test_an_os_error_reading_a_sharded_root_is_a_persist_error(tmp_path, monkeypatch, err) -> None:
    # An unreadable root zarr.json is not "no sharded index": is_sharded, opening the index
    # and building over it raise PersistError (the built-in subclass kept); a missing one is
    # "not sharded" / FileNotFoundError.
    da = pytest.importorskip("dask.array")
    ix, root = _sharded(tmp_path)
    before = digest(root)
    manifest = str(root / "zarr.json")
    fault = failing(io.open, err, lambda p, *rest: os.fspath(p) == manifest)
    monkeypatch.setattr(io, "open", fault)
    monkeypatch.setattr(builtins, "open", fault)
    for call in (lambda: hn.dask.is_sharded(root), lambda: hn.dask.ShardedIndex(root),
                 lambda: hn.dask.build(da.from_array(np.ones((4, 4), np.float32)), str(root), metric="l2")):
        with pytest.raises(hn.PersistError) as caught:
            call()
        assert caught.value.errno == err and caught.value.filename == manifest
        assert isinstance(caught.value, PermissionError) == (err == errno.EACCES)
    monkeypatch.undo()
    assert digest(root) == before and hn.dask.is_sharded(root)
    assert not hn.dask.is_sharded(tmp_path / "none") and not hn.dask.is_sharded(root / "zarr.json")
    with pytest.raises(FileNotFoundError):
        hn.dask.ShardedIndex(tmp_path / "none")


@pytest.mark.parametrize("err", [errno.EIO, errno.EACCES])
def test_a_sharded_load_the_os_fails_to_read_raises_persist_error(tmp_path, monkeypatch, synchronous, err) -> None:
    # Opening a shard (its checksum read, then its load) and reading a shard back after a
    # write: the OS failing is a PersistError, a shard missing files an IndexFormatError.
    ix, root = _sharded(tmp_path)
    shard = root / "shards" / ix.manifest.shards[0].name
    meta = lambda p, *rest: os.fspath(p).startswith(str(shard)) and os.fspath(p).endswith("zarr.json")  # noqa: E731
    fault = failing(io.open, err, meta)
    monkeypatch.setattr(io, "open", fault)
    monkeypatch.setattr(builtins, "open", fault)
    with pytest.raises(hn.PersistError) as caught:
        ix.load_shard(0)
    assert caught.value.errno == err and caught.value.filename.startswith(str(shard))
    monkeypatch.undo()
    chunk = lambda p, *rest: os.fspath(p).startswith(str(shard)) and os.path.join("c", "0", "0") in os.fspath(p)  # noqa: E731
    monkeypatch.setattr(os, "open", failing(os.open, err, chunk))
    with pytest.raises(hn.PersistError) as caught:
        ix.load_shard(0)
    assert caught.value.errno == err
    before = digest(root)
    with pytest.raises(hn.PersistError) as caught:
        ix.delete([2])  # the shard is read to be rewritten
    monkeypatch.undo()
    assert caught.value.errno == err and digest(root) == before
    assert len(ix.load_shard(0)[0]) == 30
    (root / "shards" / ix.manifest.shards[1].name).rename(tmp_path / "aside")
    with pytest.raises(hn.IndexFormatError, match="no shard"):
        ix.load_shard(1)


def test_an_os_error_checksumming_a_new_shard_is_a_persist_error(tmp_path, monkeypatch, synchronous) -> None:
    # A rewritten shard is read back for its manifest checksum after its save: the OS
    # failing there refuses the write with a PersistError and leaves the index as it was.
    ix, root = _sharded(tmp_path)
    before, old = digest(root), {s.name for s in ix.manifest.shards}

    def new_chunk(p, *rest) -> bool:
        rel = os.path.relpath(os.fspath(p), root / "shards") if not isinstance(p, int) else ".."
        top = rel.split(os.sep)[0]  # a saved shard's directory, not a save's temporary one
        return not top.startswith(".") and top not in old and f"{os.sep}c{os.sep}" in rel

    monkeypatch.setattr(builtins, "open", failing(builtins.open, errno.EIO, new_chunk))
    with pytest.raises(hn.PersistError) as caught:
        ix.delete([2])
    monkeypatch.undo()
    assert caught.value.errno == errno.EIO and "cannot read" in str(caught.value)
    assert digest(root) == before


def ctrl_c_at_each_c_return(call, after_interrupt=lambda: None, limit: int = 200) -> tuple[object, int]:
    """Run ``call()`` with a KeyboardInterrupt raised where the n-th C call returns, n = 1, 2,
    ... (where SIGINT's handler runs; not while ``held_interrupts`` records the signal
    instead), ``after_interrupt()`` after each interrupted run, until a run finishes.
    Returns its result and the runs taken."""
    import signal

    from hnsw_numba.core.interrupts import held_interrupts

    def step(n: int, seen: list):
        def profiler(frame, event, arg):
            if event == "c_return":
                seen[0] += 1
                held = getattr(signal.getsignal(signal.SIGINT), "__func__", None) is held_interrupts._record
                if seen[0] == n and not held:
                    raise KeyboardInterrupt

        return profiler

    return interrupt_each_step(call, step, after_interrupt, limit)


def test_a_ctrl_c_while_a_file_is_opened_closes_its_descriptor_once(tmp_path) -> None:
    """A Ctrl-C runs its handler when a C call returns to Python code: after ``os.fdopen``'s
    file object took the descriptor, ``open_regular``'s clean-up closed the number again
    (EBADF in place of the KeyboardInterrupt, or another file opened meanwhile closed). A
    profiler raises KeyboardInterrupt at each C call's return in turn, as SIGINT's handler
    would: not while ``held_interrupts`` records the signal instead."""
    import gc

    from hnsw_numba.io.localfiles import open_regular

    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 10)
    before = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None

    def other_file_is_its_own() -> None:
        gc.collect()
        with open(tmp_path / "other.txt", "w") as other:  # takes a freed number: still its own
            other.write("kept")
            other.flush()
            os.fstat(other.fileno())

    f, runs = ctrl_c_at_each_c_return(lambda: open_regular(path, OSError), other_file_is_its_own)
    f.close()
    assert runs > 2  # interrupted at several places before the run that finished
    if before is not None:
        gc.collect()
        assert len(os.listdir("/proc/self/fd")) == before


def test_the_copy_of_a_save_interrupted_twice_goes_with_the_next_save(tmp_path, monkeypatch) -> None:
    """A Ctrl-C during a save and a second one while its copy was removed left the copy; the
    next saves of this process kept it (only dead processes' copies were removed): a notebook
    piled up full copies of the index beside it."""
    from hnsw_numba.io import swap

    index = hn.Index(4, "l2", seed=1)
    index.add(np.random.default_rng(0).standard_normal((30, 4)).astype(np.float32))
    index.save(tmp_path / "x.zarr")
    real_rmtree = swap.shutil.rmtree
    calls = []

    def second_ctrl_c(path, *args, **kw):
        if not calls:
            calls.append(path)
            raise KeyboardInterrupt
        return real_rmtree(path, *args, **kw)

    def first_ctrl_c(tmp, path):
        raise KeyboardInterrupt

    monkeypatch.setattr(swap.shutil, "rmtree", second_ctrl_c)
    monkeypatch.setattr(swap, "swap_in", first_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        index.save(tmp_path / "x.zarr")
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name]  # the copy stayed
    index.save(tmp_path / "x.zarr")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.zarr"]
    assert len(hn.open(tmp_path / "x.zarr")) == 30


def test_a_ctrl_c_while_a_copy_is_removed_leaves_it_whole_or_gone(tmp_path) -> None:
    """``shutil.rmtree`` cut short by a Ctrl-C closed one descriptor twice (a save raised EBADF
    in place of the KeyboardInterrupt) and left the copy half removed. A profiler raises
    KeyboardInterrupt at each C call's return in turn, as SIGINT's handler would, except
    where ``held_interrupts`` records the signal."""
    from hnsw_numba.io import swap

    root = tmp_path / "copy"

    def tree() -> None:
        for d in ("a/b", "c"):
            (root / d).mkdir(parents=True, exist_ok=True)
            for i in range(3):
                (root / d / f"f{i}").write_bytes(b"x")

    def whole_or_gone() -> None:
        assert not root.exists() or len(list(root.rglob("*"))) == 9  # gone, or untouched (2 + 1 directories, 6 files)
        tree()

    tree()
    ctrl_c_at_each_c_return(lambda: swap.remove(root), whole_or_gone)
    assert not root.exists()


def test_a_ctrl_c_after_a_one_file_swap_leaves_no_old_copy(tmp_path, monkeypatch, two) -> None:
    """A Ctrl-C after the rename of a ``.zip`` or hnswlib-format save skipped the removal of
    the hard link to the old file (``.name.tmp-<pid>-<hex>.old``); its name stayed in use, so
    no later save or load of the process removed it: one whole old copy per Ctrl-C."""
    from hnsw_numba.io import atomic, swap

    (a, sa), _ = two
    index = hn.Index(4, "l2", seed=1)
    index.add(np.random.default_rng(0).standard_normal((30, 4)).astype(np.float32))
    index.save(tmp_path / "a.zip")
    hn.save_hnswlib(tmp_path / "h.bin", a, sa)
    real_checkpoint = swap.checkpoint

    def ctrl_c_at_rename(event):
        if event == "swap: renamed in":
            raise KeyboardInterrupt
        return real_checkpoint(event)

    def ctrl_c_at_flush(folder):
        raise KeyboardInterrupt

    monkeypatch.setattr(swap, "checkpoint", ctrl_c_at_rename)
    with pytest.raises(KeyboardInterrupt):
        index.save(tmp_path / "a.zip")
    monkeypatch.setattr(swap, "checkpoint", real_checkpoint)
    monkeypatch.setattr(atomic, "flush_dir", ctrl_c_at_flush)
    with pytest.raises(KeyboardInterrupt):
        hn.save_hnswlib(tmp_path / "h.bin", a, sa)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zip", "h.bin"]
    assert len(hn.open(tmp_path / "a.zip")) == 30 and hn.load_hnswlib(hn.L2(), 4, tmp_path / "h.bin")[0].node_count == 30


def test_a_ctrl_c_while_a_directory_is_flushed_leaks_no_descriptor(tmp_path) -> None:
    """``flush_dir`` opened the directory before its ``try``: a Ctrl-C as ``os.open`` returned
    left the descriptor open, one per interrupted save."""
    from hnsw_numba.io.localfiles import flush_dir

    before = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
    ctrl_c_at_each_c_return(lambda: flush_dir(tmp_path))
    if before is not None:
        assert len(os.listdir("/proc/self/fd")) == before


def test_short_reads_of_a_chunk_trailer_are_read_on(tmp_path, monkeypatch) -> None:
    """A read may return fewer bytes than asked (FUSE, NFS, a signal): a chunk's 4-byte CRC
    trailer (and a last chunk's padding) read short was reported as corruption."""
    from hnsw_numba.io import zarr_io

    index = hn.Index(8, metric="l2", seed=1)
    index.add(np.random.default_rng(0).standard_normal((300, 8)).astype(np.float32))
    index.save(tmp_path / "ix.zarr", chunk_rows=16)  # a padded last chunk as well

    class ShortReads:
        def __init__(self, f) -> None:
            self.f = f

        def read(self, n: int = -1) -> bytes:
            return self.f.read(min(n, 2) if n and n > 0 else n)

        def __getattr__(self, name: str):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.f.__exit__(*exc)

    real = zarr_io.open_regular
    monkeypatch.setattr(zarr_io, "open_regular", lambda path, error: ShortReads(real(path, error)))
    assert len(hn.open(tmp_path / "ix.zarr")) == 300


_NO_THREADS = REFUSE_THREADS + """
if sys.argv[2] == "running":  # zarr's I/O thread runs already: the load's own check thread is refused
    hn.open(sys.argv[1])
refused_then(lambda: len(hn.open(sys.argv[1])), lambda: len(hn.open(sys.argv[1])))  # threads again: a retry loads
"""


@pytest.mark.parametrize("zarr_loop", ["fresh", "running"])
def test_a_thread_the_os_refuses_is_a_read_fault_not_a_corrupt_copy(tmp_path, zarr_loop: str) -> None:
    """A good index opened where the OS could not start zarr's I/O thread raised
    IndexFormatError (a corrupt copy), and every later open of the process hung on the loop
    zarr kept; with zarr's thread running, the load's check thread refused raised a bare
    RuntimeError (the check runs in the caller's thread then)."""
    import subprocess
    import sys

    index = hn.Index(8, metric="l2", seed=1)
    index.add(np.random.default_rng(0).standard_normal((200, 8)).astype(np.float32))
    index.save(tmp_path / "ok.zarr")
    out = subprocess.run([sys.executable, "-c", _NO_THREADS, str(tmp_path / "ok.zarr"), zarr_loop], capture_output=True, text=True, timeout=120)
    # with the loop running its reads may still ask for a worker thread (asyncio's executor
    # starts one while its idle one is busy, as under load): then the load is refused typed
    want = [["PersistError", "True", "200"]] if zarr_loop == "fresh" else [["200", "200"], ["PersistError", "True", "200"]]
    assert out.stdout.split() in want, out.stdout + out.stderr


_SAVE_NO_THREADS = REFUSE_THREADS + """
index = hn.Index(8, metric="l2", seed=1)
index.add(np.random.default_rng(0).standard_normal((200, 8)).astype(np.float32))
refused_then(lambda: index.save(sys.argv[1]), lambda: index.save(sys.argv[1]) or len(hn.open(sys.argv[1])))  # threads again: the next save works
"""


def test_a_save_where_the_os_refuses_a_thread_is_a_persist_error_and_the_next_save_works(tmp_path) -> None:
    """zarr's I/O thread refused during a save raised a bare RuntimeError, and every later save
    or load of the process hung on the loop zarr kept."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _SAVE_NO_THREADS, str(tmp_path / "s.zarr")], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["PersistError", "True", "200"], out.stdout + out.stderr


_LOOP_STARTING = """
import os, sys, threading, time
import hnsw_numba as hn
import zarr.core.sync as zs
from hnsw_numba.io.read_faults import thread_refused
start = threading.Thread.start
def slow(self):
    if self.name == "zarr_io":
        time.sleep(0.5)  # the loader holds zarr's lock between the thread's creation and its start
    return start(self)
threading.Thread.start = slow
out = {}
loader = threading.Thread(target=lambda: out.update(n=len(hn.open(sys.argv[1]))))
loader.start()
t0 = time.time()
while not (zs.iothread[0] is not None and not zs.iothread[0].is_alive()) and time.time() - t0 < 30:
    time.sleep(0.001)
thread_refused(RuntimeError("can't start new thread"))  # another thread's fault meanwhile
loader.join(60)
threading.Thread.start = start
print(out.get("n"), sum(t.name == "zarr_io" for t in threading.enumerate()))
sys.stdout.flush()
os._exit(0)
"""


def test_a_refused_thread_leaves_a_loop_another_thread_is_starting(tmp_path) -> None:
    """The reset of zarr's unstarted loop ran without zarr's lock: a load starting the loop at
    that moment failed as a corrupt copy (IndexFormatError) and its loop thread was orphaned."""
    import subprocess
    import sys

    index = hn.Index(4, metric="l2", seed=1)
    index.add(np.ones((3, 4), np.float32) * np.arange(3, dtype=np.float32)[:, None])
    index.save(tmp_path / "a.zarr")
    out = subprocess.run([sys.executable, "-c", _LOOP_STARTING, str(tmp_path / "a.zarr")], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["3", "1"], out.stdout + out.stderr


def test_a_directory_the_flush_cannot_list_fails_the_save(tmp_path, monkeypatch, two) -> None:
    """A directory of the new copy that the flush before the swap could not list (too many
    open files, an I/O error) was skipped unflushed and the save reported success: it is a
    PersistError with the OS's errno, and the previous save stays."""
    from hnsw_numba.io import swap

    (a, sa), (b, sb) = two
    path = tmp_path / "ix"
    hn.save(path, a, sa)
    before = digest(path)
    real_flush = swap.fsync_tree

    def flush(root) -> None:
        with monkeypatch.context() as m:
            m.setattr(os, "scandir", failing(os.scandir, errno.EMFILE, lambda p, *rest: os.path.basename(p) == "graph"))
            real_flush(root)

    monkeypatch.setattr(swap, "fsync_tree", flush)
    _refused_then_saved(path, b, sb, monkeypatch, before, "cannot save")


def _refused_then_saved(path, b, sb, monkeypatch, before: str, says: str) -> None:
    """The save of ``b`` fails with EMFILE as a PersistError saying ``says`` and leaves the
    copy whose digest is ``before``; with the patches undone it saves."""
    with pytest.raises(hn.PersistError) as caught:
        hn.save(path, b, sb)
    monkeypatch.undo()
    assert caught.value.errno == errno.EMFILE and says in str(caught.value)
    assert digest(path) == before and os.listdir(path.parent) == [path.name]
    hn.save(path, b, sb)
    assert digest(path) != before


def test_a_directory_the_zip_packing_cannot_list_is_a_persist_error(tmp_path, monkeypatch, two) -> None:
    """A directory of the written copy that packing it into the zip could not list (too many
    open files) was left out of the zip unseen: the read-back found no graph and the save
    reported IndexFormatError (a corrupt copy). It is a PersistError with the OS's errno, and
    the previous save stays."""
    (a, sa), (b, sb) = two
    path = tmp_path / "ix.zip"
    hn.save(path, a, sa)
    before = digest(path)
    packed = lambda p, *rest: isinstance(p, (str, os.PathLike)) and str(p).endswith(".d/graph")  # noqa: E731
    monkeypatch.setattr(os, "scandir", failing(os.scandir, errno.EMFILE, packed))
    _refused_then_saved(path, b, sb, monkeypatch, before, "previous save is kept")
