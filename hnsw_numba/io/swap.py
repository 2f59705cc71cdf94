"""Where a save goes, and the crash-safe swap that puts a local save in place.

A local save is written to a temporary sibling and swapped in: the old copy is renamed
aside (``.<name>.old``), the new one renamed to the target, the directory flushed, the old
one deleted. The target only ever receives whole copies, so after a crash at any point
either the target or its aside copy is whole (:func:`recover` and :func:`local_dir_for_read`
put the aside copy back). A swap that fails (the rename in, or flushing it) puts the old
copy back before it raises. An aside copy is renamed to a temporary sibling before it is
deleted (:func:`drop_aside`), so a deletion cut short leaves a temporary copy, which the
next save or load of the path removes, never a partial ``.<name>.old``.

A create-only save (``swap_in(..., replace=False)``, :func:`put_new`) puts its copy in place by a step
that itself refuses an existing target (a hard link, or a rename that a non-empty directory
refuses): of two saves that checked the target missing, the later one fails with
:class:`TargetExistsError` and the earlier one's save stays.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable

from zarr.abc.store import Store
from zarr.storage import FsspecStore, LocalStore

from ..core.errors import IndexFormatError, InvalidParameterError, PersistFileExistsError, PersistFileNotFoundError, persist_errors
from ..core.interrupts import held_interrupts
from .atomic import replace_file
from .localfiles import clean_leftovers, flush_dir, release_tmp, save_under_way, sibling_name, tmp_name, walk
from .places import check_place, saved_dir_kind, through_link

__all__ = ["Target", "resolve_target", "recover", "clean_leftovers", "swap_in", "drop_aside", "local_dir_for_read", "checkpoint",
           "aside_identity", "TargetExistsError", "target_exists", "put_new", "put_new_files"]


class TargetExistsError(PersistFileExistsError):
    """A create-only save found its target in place (made by another save after the checks): nothing is replaced."""


def target_exists(path: Path) -> TargetExistsError:
    """The error of a create-only save whose ``path`` exists."""
    return TargetExistsError(errno.EEXIST, f"cannot save {path}: it exists already (not replaced)", str(path))


def checkpoint(event: str) -> None:
    """Called after every file written and every step of a swap; crash tests replace it."""


@dataclass
class Target:
    """Where an index lives: a local directory, a local ``.zip`` file or any Zarr store."""

    kind: str  # "dir" | "zip" | "store"
    path: Path | None = None
    store: Store | None = None

    def __str__(self) -> str:
        return str(self.path) if self.path is not None else repr(self.store)


def resolve_target(target: Any, *, write: bool) -> Target:
    """Classify ``target`` (path, ``file://``/fsspec URL, Zarr store, or a :class:`Target`)."""
    if isinstance(target, Target):
        return target
    if isinstance(target, LocalStore):
        if write and target.read_only:
            raise InvalidParameterError("cannot save to a read-only LocalStore")
        return Target("dir", Path(target.root))
    if isinstance(target, Store):
        if write and target.read_only:
            raise InvalidParameterError(f"cannot save to a read-only store {target!r}")
        return Target("store", store=target)
    if isinstance(target, (str, os.PathLike)):
        text = os.fspath(target)
        if isinstance(text, bytes):
            text = os.fsdecode(text)
        if "://" in text or "::" in text:
            if text.startswith("file://"):
                text = text[len("file://") :]
            else:
                try:
                    import fsspec  # noqa: F401
                except ImportError:
                    raise InvalidParameterError(
                        f"{text!r} is a URL: install fsspec (and the filesystem's package, e.g. s3fs)"
                    ) from None
                try:
                    store = FsspecStore.from_url(text, read_only=not write)
                except (ImportError, ValueError) as exc:  # unknown protocol, missing s3fs...
                    raise InvalidParameterError(f"cannot open {text!r}: {exc}") from None
                local = _local_path(store, text)
                if local is None:
                    return Target("store", store=store)
                text = local  # a local directory however named: saved by the swap, not emptied in place
        if not text:
            raise InvalidParameterError("empty path")
        if "\x00" in text:  # the OS refuses it: os.stat raised a bare ValueError
            raise InvalidParameterError(f"{text!r}: a path cannot hold a NUL character")
        path = Path(text)
        if not write and path.name in ("", ".."):  # "." or "..": read the directory by its own name,
            path = Path(os.path.realpath(text))  # the one the OS means ("link/.." is the link target's parent)
            if not path.name:
                raise PersistFileNotFoundError(errno.ENOENT, "no saved index", text)
        return Target("zip" if path.suffix.lower() == ".zip" else "dir", path)
    raise InvalidParameterError(
        f"target must be a path, a URL or a zarr store, got {type(target).__name__}"
    )


def _local_path(store: FsspecStore, url: str) -> str | None:
    """The local path an fsspec store of ``url`` reaches (``local://``, ``simplecache::file://``...), or None.

    For a chained URL the path is its last link's (fsspec reads ``file::PATH`` as the
    current directory)."""
    fs = store.fs
    for _ in range(8):  # wrappers keep the wrapped file system as ``sync_fs`` (async) or ``fs`` (caching)
        if fs is None:
            return None
        protocol = getattr(fs, "protocol", ())
        protocol = (protocol,) if isinstance(protocol, str) else tuple(protocol)
        if "file" in protocol or "local" in protocol:
            if "::" not in url:
                return os.fspath(getattr(store, "path", "")) or None
            last = url.rsplit("::", 1)[1]
            for prefix in ("file://", "local://"):
                last = last[len(prefix):] if last.startswith(prefix) else last
            return last or None
        fs = getattr(fs, "sync_fs", None) or getattr(fs, "fs", None)
    return None


def _aside(path: Path) -> Path:
    return sibling_name(path, "old")


def _ours(aside: Path) -> bool:
    """Whether ``aside`` is a directory a swap left: a save, or empty (the aside copy of a
    save made into an empty directory). Anything else there is the user's, never touched."""
    try:
        return saved_dir_kind(aside) is not None
    except OSError:  # it cannot be listed: not known to be ours
        return False


def drop_aside(path: Path) -> None:
    """Delete ``path``'s aside copy: renamed to a temporary sibling first, then removed.

    A deletion cut short (SIGKILL, power loss) leaves part of the copy: under the aside name
    it would hold no save and refuse every later save as someone else's folder, whereas the
    next save or load of ``path`` removes a dead process's temporary sibling. An aside copy
    that cannot be renamed (a read-only directory) stays whole.
    """
    aside = _aside(path)
    if not os.path.lexists(aside):
        return
    # Ctrl-C held from before the name is taken to the copy's removal: held only inside
    # remove, a Ctrl-C landing on its start skips it and keeps the whole previous copy, its
    # lock file and descriptor for the life of the process
    with held_interrupts():
        tmp = tmp_name(path, ".old")
        try:
            with contextlib.suppress(OSError):  # gone already (another save or load took it), or not renamable: left whole
                os.rename(aside, tmp)
        finally:
            remove(tmp)  # the renamed copy, or only the name when the rename failed


def aside_identity(path: Path) -> tuple[int, int] | None:
    """The inode and change time of ``path``'s aside copy, None when there is none: a swap
    moves the copy there and may put it back, which a reader's identity of ``path`` misses."""
    try:
        st = os.lstat(_aside(through_link(path)))
    except OSError:
        return None
    return st.st_ino, st.st_ctime_ns


def tmp_sibling(path: Path, suffix: str = "") -> Path:
    """A fresh temporary sibling of ``path`` named with this process's pid (in use until :func:`remove`)."""
    return tmp_name(path, suffix)


def fsync_tree(root: Path) -> None:
    """Flush every file and directory under ``root`` (before it is renamed into place)."""
    if root.is_file():
        with open(root, "rb") as f:
            os.fsync(f.fileno())
        return
    for dirpath, _, files in walk(root):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as f:
                os.fsync(f.fileno())
        flush_dir(Path(dirpath))


def remove(path: Path) -> None:
    """Delete a file or tree if it exists; best effort: a failure here must not hide the
    outcome of the save that cleans up (what stays is removed by a later save or load, a
    temporary sibling of this process's too: it is no longer in use). Ctrl-C is held
    meanwhile: it cut ``shutil.rmtree`` short between two closes of one descriptor (EBADF in
    place of the interrupt), and left the copy half removed."""
    with held_interrupts():
        _remove(path)


def _remove(path: Path) -> None:
    try:
        if os.path.isdir(path) and not os.path.islink(path):  # os.path.isdir is False where stat fails
            shutil.rmtree(path, ignore_errors=True)
            return
        try:
            path.unlink()
        except (IsADirectoryError, PermissionError):  # a directory that stat could not see
            shutil.rmtree(path, ignore_errors=True)
        except OSError:
            pass
    finally:
        release_tmp(path)


def recover(path: Path) -> None:
    """Finish a swap that a crash interrupted.

    The target only ever receives whole copies (by rename), so: target missing but the
    aside copy present means the crash fell between "move old aside" and "rename new in"
    (put the old one back); both present means the crash fell before "delete old" (drop
    it). Temporary siblings of dead processes are removed. Only a directory save swaps
    through an aside copy, and only an aside directory holding a save is touched.
    """
    aside = _aside(path)
    if _ours(aside):
        if path.exists():
            drop_aside(path)
        else:
            try:
                os.rename(aside, path)
            except OSError:
                # another save renamed its copy in meanwhile (saves in other threads or
                # processes): the target is whole, and that save removes the aside copy
                if not (path.exists() or path.is_symlink()):
                    raise
            else:
                flush_dir(path.parent)
    clean_leftovers(path)


def swap_in(tmp: Path, path: Path, *, replace: bool = True) -> None:
    """Make ``tmp`` (whole and flushed) the new ``path``; at every instant ``path`` or its aside copy is whole.

    ``replace`` False refuses an existing ``path`` instead (:func:`put_new`).

    On failure (the rename in, or flushing the directory after it) the previous ``path``
    is put back before the error propagates: a save that raises leaves the old copy. A file
    is swapped by :func:`~hnsw_numba.io.atomic.replace_file`, which says what happens on
    file systems without hard links.
    """
    if not replace:
        put_new(tmp, path)
        return
    parent = path.parent
    aside = _aside(path)
    if tmp.is_file():
        replace_file(tmp, path, step=lambda event: checkpoint(event))
        return
    moved = False
    # Ctrl-C held from the first rename to the old copy's removal: landing between them it
    # leaves the previous generation aside beside the new one (raised at the end instead)
    with held_interrupts():
        for attempt in range(3):
            if path.exists():
                if aside.exists():
                    drop_aside(path)  # a stale copy: path itself is whole
                    checkpoint("swap: removed stale aside")
                    if os.path.lexists(aside):
                        raise PersistFileExistsError(errno.EEXIST, f"cannot save {path}: the stale copy {aside} cannot be "
                                                                   "removed (the previous save is kept)", str(aside))
                os.rename(path, aside)
                moved = True
                checkpoint("swap: moved old aside")
            try:
                os.rename(tmp, path)
                break
            except OSError:
                # a concurrent load put the aside copy back in place: move it aside again
                if attempt == 2 or not path.exists():
                    if moved and not path.exists():
                        with contextlib.suppress(OSError):
                            os.rename(aside, path)
                    raise
        checkpoint("swap: renamed in")
        try:
            flush_dir(parent)
        except OSError:
            _undo(path, tmp, aside if moved else None)
            raise
        drop_aside(path)
        checkpoint("swap: removed old")


def put_new(tmp: Path, path: Path, *, flush: bool = True) -> None:
    """Make ``tmp`` (whole and flushed) ``path``, which must not exist: TargetExistsError else.

    The step that puts the copy in place refuses an existing ``path`` itself (a file by a
    hard link, a directory by a rename, which a non-empty directory or a file refuses; an
    empty directory it replaces, which loses nothing), so a save that appeared after any
    check is never replaced. A ``path`` whose aside copy holds a save is taken as existing:
    a save is between the two renames of its swap. On a file system without hard links the
    last check and the rename are two steps. ``tmp`` is gone afterwards (the caller still
    releases its name); when flushing the directory fails the copy goes back to ``tmp``.
    """
    if _ours(_aside(path)):
        raise target_exists(path)
    try:
        if tmp.is_file():
            try:
                os.link(tmp, path)
            except OSError as exc:
                if exc.errno == errno.EEXIST or os.path.lexists(path):  # else no hard links here: rename
                    raise FileExistsError(errno.EEXIST, "exists", str(path)) from None
                os.rename(tmp, path)
            else:
                with contextlib.suppress(OSError):  # the caller's removal of tmp tries again
                    tmp.unlink()
        else:
            os.rename(tmp, path)
    except OSError as exc:
        if exc.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
            raise target_exists(path) from None
        raise
    checkpoint("swap: renamed in")
    if flush:
        try:
            flush_dir(path.parent)
        except OSError:
            _undo(path, tmp, None)
            raise


def put_new_files(files: list[tuple[str | os.PathLike, Callable[[BinaryIO], None], str]], *, fsync: bool = True) -> None:
    """Create files that belong together: each ``(path, write, what)`` written whole to a
    temporary sibling by ``write(f)``, then each made its path by :func:`put_new`, in the
    order given (two runs writing the same paths meet at the first one).

    None of the paths may exist: TargetExistsError for the first that does, and the files
    this call made before it are removed again. OS errors raise PersistError led by ``what``.
    """
    paths = [through_link(Path(os.fspath(p))) for p, _, _ in files]
    for path in paths:
        check_place(path, directory=False)
        clean_leftovers(path)
    tmps: list[Path] = []
    made: list[tuple[Path, int]] = []
    try:
        for path, (_, write, what) in zip(paths, files):
            with persist_errors(what):
                tmps.append(tmp_name(path))
                with open(tmps[-1], "xb") as f:
                    write(f)
                    f.flush()
                    if fsync:
                        os.fsync(f.fileno())
        for path, tmp, (_, _, what) in zip(paths, tmps, files):
            with persist_errors(what):
                made.append((path, os.stat(tmp).st_ino))  # before it is put in place: a Ctrl-C there takes it back too
                put_new(tmp, path, flush=fsync)
        made.clear()
        while tmps:  # their names, in the try: a Ctrl-C at a removal's start leaves the rest to the handler below
            remove(tmps[-1])
            tmps.pop()
    except BaseException:  # only after an error: a clean-up a save's own end ran could lose its start to a Ctrl-C
        for path, ino in made:  # a later file existed or an interrupt came: the ones made here go again (ours: same inode)
            with contextlib.suppress(OSError):
                if os.lstat(path).st_ino == ino:
                    path.unlink()
        for tmp in tmps:
            remove(tmp)
        raise


def _undo(path: Path, tmp: Path, aside: Path | None) -> None:
    """Take a swapped-in copy back out (to ``tmp``, which the caller removes) and put ``aside`` back.

    Best effort: if a step fails, ``path`` or ``aside`` is still whole and a load recovers it.
    """
    with contextlib.suppress(OSError):
        os.rename(path, tmp)
        checkpoint("swap: undone")
        if aside is not None:
            os.rename(aside, path)
            checkpoint("swap: old put back")


def local_dir_for_read(path: Path) -> Path:
    """The directory to read: ``path`` (through a symlink, what it names), or its aside copy
    after an interrupted swap (put back, unless a live save of ``path`` may be between its
    renames: then read where it is, as a rename back would hide that swap from readers).
    An aside copy beside a whole ``path`` with no save under way is a swap's that stopped
    after its rename in: removed (:func:`drop_aside`)."""
    path = through_link(path)
    mode = _mode(path)
    if mode is None:
        aside = _aside(path)
        if _ours(aside):
            if not save_under_way(path):
                try:
                    os.rename(aside, path)  # recover: the aside copy is the last whole save
                    return path
                except OSError:  # another process renamed a copy in, or a read-only directory
                    pass
            mode = _mode(path)
            if mode is None:
                return aside
        else:
            mode = _mode(path)  # a swap renamed its copy in and dropped the aside meanwhile
    if mode is not None and stat.S_ISDIR(mode):
        if os.path.lexists(_aside(path)) and _ours(_aside(path)) and not save_under_way(path):
            drop_aside(path)  # a swap cut short after its rename in (a Ctrl-C) kept it: read, it came back once path went
        return path
    if mode is not None:
        raise IndexFormatError(f"{path} is not a directory")
    raise PersistFileNotFoundError(errno.ENOENT, "no saved index", str(path))


def _mode(path: Path) -> int | None:
    """``path``'s mode in one ``stat`` (None when missing): with two (is it a directory, does
    it exist) a swap's rename between them makes a whole save look like no directory."""
    with persist_errors(f"cannot open {path}"):  # a name too long
        try:
            return os.stat(path).st_mode
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EBADF):  # as Path.exists: a link loop is missing
                return None
            raise
