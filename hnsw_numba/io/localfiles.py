"""Local files: what a loader opens (regular files only), and a save's siblings.

A FIFO blocks a reader forever and a device may never end or have side effects on
open, so loaders check the kind of every file first (``stat``), open it non-blocking
(a FIFO swapped in after the check does not block the open) and check the opened
descriptor again (``fstat``). Saves check their target first (:mod:`~hnsw_numba.io.places`),
write to temporary siblings (:func:`tmp_name`) and remove those killed saves left
(:func:`clean_leftovers`); one-file saves are :mod:`~hnsw_numba.io.atomic`'s.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import shutil
import stat
import threading
import time
from pathlib import Path
from typing import IO, Callable, Iterator

try:
    import fcntl
except ImportError:  # Windows: no locks, the pid and token tell
    fcntl = None  # type: ignore[assignment]

from ..core.errors import InvalidParameterError
from ..core.interrupts import held_interrupts

__all__ = ["open_regular", "check_regular_tree", "clean_leftovers", "save_under_way", "tmp_name", "release_tmp", "sibling_name", "flush_dir", "walk"]


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory")):
        if test(mode):
            return name
    return "not a regular file"


def open_regular(path: str | os.PathLike, error: Callable[[str], Exception]) -> IO[bytes]:
    """``open(path, "rb", buffering=0)`` after checking it is a regular file.

    ``error(message)`` builds the exception raised for anything else (FileNotFoundError
    and other OS errors propagate).
    """
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise error(f"{os.fspath(path)} is {_kind(mode)}, not a regular file: not read")
    # Ctrl-C held from os.open until a file object owns the descriptor: landing in between, it
    # left the number open, or closed it twice (the second close taking a file opened
    # meanwhile elsewhere)
    with held_interrupts():
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
        try:
            f = open(fd, "rb", buffering=0)
        except BaseException:
            os.close(fd)
            raise
    try:
        mode = os.fstat(f.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise error(f"{os.fspath(path)} is {_kind(mode)}, not a regular file: not read")
        if hasattr(os, "set_blocking"):
            os.set_blocking(f.fileno(), True)
        return f
    except BaseException:
        f.close()
        raise


def _raise(exc: OSError) -> None:
    raise exc


def _raise_unless_gone(exc: OSError) -> None:
    """``os.walk``'s error handler for a check: a directory gone by the time it is listed (or a
    link loop) is skipped, as ``os.walk`` does; any other error is raised."""
    if exc.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
        raise exc


def walk(root: str | os.PathLike) -> Iterator[tuple[str, list[str], list[str]]]:
    """``os.walk(root)`` that raises the OS error of a directory it cannot list (too many open
    files, an I/O error), where ``os.walk`` skips that directory: a save flushing or packing
    its copy must not leave part of it out unseen."""
    return os.walk(root, onerror=_raise)


def check_regular_tree(root: Path, error: Callable[[str], Exception], follow_links: bool = False) -> None:
    """Raise ``error`` if anything under ``root`` (followed through symlinks) is neither a
    regular file nor a directory: zarr-python would open it for reading. ``follow_links``:
    walk into linked directories too (each directory once), as a reader of any Zarr array does.

    An OS error other than a missing file or a link loop (I/O error, no permission)
    propagates: the kind of that file is unknown.
    """
    seen: set[tuple[int, int]] = set()
    for dirpath, dirs, files in os.walk(root, onerror=_raise_unless_gone, followlinks=follow_links):
        if follow_links:
            try:
                st = os.stat(dirpath)
            except OSError as exc:
                _raise_unless_gone(exc)
                continue
            if (st.st_dev, st.st_ino) in seen:  # reached again through a link
                dirs[:] = []
                continue
            seen.add((st.st_dev, st.st_ino))
        for name in files + dirs:
            full = os.path.join(dirpath, name)
            try:
                mode = os.stat(full).st_mode
            except OSError as exc:  # a dangling link reads as a missing file later
                _raise_unless_gone(exc)
                continue
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise error(f"{full} is {_kind(mode)}, not a regular file: not read")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


#: Names (not paths) of the temporary siblings this process made and has not removed yet
#: (saves under way), each with the descriptor of its lock file (-1: none). A path's spelling
#: differs between callers (relative or absolute, through a symlinked folder) and a save's
#: copy removed under another spelling lost the save; the name carries this pid, this
#: process's token and 32 random bits.
_in_use: dict[str, int] = {}

#: 32 random bits naming this process in its copies' names beside its pid: a pid alone does
#: not make a copy this process's own (two containers' processes on one volume are both
#: pid 1). A forked child keeps it: its pid tells its copies from its parent's.
_token = secrets.token_hex(4)


def _lock_file(tmp: Path) -> Path:
    """The lock file of the temporary sibling ``tmp``: ``flock``-ed while its save runs, so
    any process on the machine tells a copy under way from a dead one's, whatever pids it
    sees (another PID namespace's pids look dead)."""
    return tmp.with_name(tmp.name + ".lock")


def _pre_lock(path: Path, tag: str) -> Path:
    """Where :func:`tmp_name` makes and ``flock``-s a lock file before renaming it to the
    copy's: no cleaner probes this name while the lock is fresh (see :data:`_PRE_LOCK_AGE`)."""
    return sibling_name(path, f"lk-{tag}")


#: Seconds after which an unlocked pre-lock file (:func:`_pre_lock`) is a crashed process's,
#: removed by :func:`clean_leftovers`. A lock file made under its final name is unlocked
#: from its creation to its ``flock``: another process's cleaner may unlink it there as an
#: orphan, or its probe ``flock`` make the saver's fail, and the copy then goes on with no
#: lock file, for a cleaner in another PID namespace (where the saver's pid is dead) to remove.
_PRE_LOCK_AGE = 60.0

#: What follows ``.<name>.lk-`` in a pre-lock file's name (pid, token, random bits, suffix):
#: the name of another target's sibling (``x.lk-1`` beside ``x``) may start the same.
_PRE_LOCK_REST = re.compile(r"\d+-[0-9a-f]{8}-[0-9a-f]{8}(\.[a-z]+)?")

#: Held (re-entrantly: a signal handler may save) from the opening of a lock descriptor to
#: its entry in :data:`_in_use`, from that entry's removal to the descriptor's close, and
#: across a fork: a fork from another thread in between would give the child a descriptor
#: that its fork handler does not know, holding the parent's lock while the child lives.
_fds_lock = threading.RLock()


def _forked() -> None:
    """A forked child drops its copies of the lock descriptors: a lock is held while any
    descriptor of it is open, and the parent's copies are the parent's to release."""
    global _fds_lock
    for fd in _in_use.values():
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)
    _in_use.clear()
    _fds_lock = threading.RLock()  # the parent's thread held it at the fork


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=lambda: _fds_lock.acquire(), after_in_parent=lambda: _fds_lock.release(),
                        after_in_child=_forked)


def release_tmp(path: Path) -> None:
    """Mark a :func:`tmp_name` as no longer in use (removed, or renamed into place): its lock
    file goes, then the lock."""
    with held_interrupts(), _fds_lock:  # from the first statement: a Ctrl-C before the block would keep the name and its lock
        path = Path(path)
        fd = _in_use.pop(path.name, -1)
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.unlink(_lock_file(path))
            os.close(fd)


def _locked(lock: Path) -> bool | None:
    """Whether a process holds ``lock`` (None: no such file; True when it cannot be told)."""
    if fcntl is None:
        return None
    with held_interrupts():
        try:
            fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError:
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return False
        except OSError:
            return True
        finally:
            os.close(fd)


def save_under_way(path: Path) -> bool:
    """Whether a live process holds a temporary sibling of ``path`` (its lock file
    ``flock``-ed): a save of ``path`` under way, which may be between its swap's two renames."""
    prefix = sibling_name(path, "tmp-").name
    try:
        names = os.listdir(path.parent)
    except OSError:
        return False
    return any(name.startswith(prefix) and name.endswith(".lock") and bool(_locked(path.parent / name)) for name in names)


def clean_leftovers(path: Path) -> None:
    """Remove the temporary siblings of ``path`` that saves of dead processes left behind,
    and those of this process that no save of it uses any more (a Ctrl-C during the removal
    of a save's copy left it).

    Loads and saves of ``path`` call it, so a killed save's copy does not outlive the
    next use of the path. A directory that cannot be listed or written is left as is.
    """
    if not path.name:  # "/": no siblings
        return
    prefix = sibling_name(path, "tmp-").name
    pre_lock = _pre_lock(path, "").name
    mine = f"{os.getpid()}-{_token}-"
    with contextlib.suppress(OSError):
        for sib in list(path.parent.iterdir()):
            if sib.name.startswith(pre_lock) and _PRE_LOCK_REST.fullmatch(sib.name[len(pre_lock) :]):
                with contextlib.suppress(OSError):  # a crash between its creation and its rename left it
                    st = sib.lstat()
                    if (stat.S_ISREG(st.st_mode) and not st.st_size and time.time() - st.st_mtime > _PRE_LOCK_AGE
                            and _locked(sib) is False):
                        sib.unlink()
                continue
            if not sib.name.startswith(prefix):
                continue
            if sib.name.endswith(".lock"):  # a lock whose copy is gone (renamed into place, a crash before its unlink)
                if not os.path.lexists(sib.with_name(sib.name[: -len(".lock")])) and _locked(sib) is False:
                    sib.unlink()
                continue
            rest = sib.name[len(prefix) :]
            pid = rest.split("-", 1)[0]
            if not pid.isdigit():
                continue
            held = _locked(_lock_file(sib))
            if held is None:  # no lock file: by pid (and token) alone
                held = sib.name in _in_use if rest.startswith(mine) else _pid_alive(int(pid))
            if not held:
                if sib.is_dir() and not sib.is_symlink():
                    shutil.rmtree(sib, ignore_errors=True)
                else:
                    sib.unlink()
                with contextlib.suppress(OSError):
                    _lock_file(sib).unlink()


#: Bytes of a name kept whole in its siblings' names: ``.<name>.tmp-<pid>-<token>-<hex>.old`` must fit
#: the 255 bytes most file systems allow a name.
_STEM_BYTES = 200


def sibling_name(path: Path, tag: str) -> Path:
    """``path``'s hidden sibling ``.<name>.<tag>``; a name longer than 200 bytes is cut and
    a digest of it appended, so the sibling of any valid name is a valid name."""
    if not path.name:
        raise InvalidParameterError(f"{path} names no file or directory of its own")
    raw = os.fsencode(path.name)
    name = path.name
    if len(raw) > _STEM_BYTES:
        stem = name[: _STEM_BYTES - 17]
        while len(os.fsencode(stem)) > _STEM_BYTES - 17:  # cut whole characters: the name stays valid text
            stem = stem[:-1]
        name = f"{stem}~{hashlib.sha256(raw).hexdigest()[:16]}"
    return path.with_name(f".{name}.{tag}")


def tmp_name(path: Path, suffix: str = "") -> Path:
    """A fresh temporary sibling of ``path`` named with this process's pid and token
    (:func:`clean_leftovers` removes it once the process is dead)."""
    tag = f"{os.getpid()}-{_token}-{secrets.token_hex(4)}{suffix}"
    tmp = sibling_name(path, f"tmp-{tag}")
    try:
        with held_interrupts(), _fds_lock:  # until release_tmp: no clean_leftovers of any process removes it
            _in_use[tmp.name] = _hold_lock(_pre_lock(path, tag), _lock_file(tmp))
        return tmp
    except BaseException:  # a Ctrl-C held in the block is raised at its end: the caller never gets the name to release
        release_tmp(tmp)
        raise


def _hold_lock(pre: Path, lock: Path) -> int:
    """The descriptor of the lock file ``lock``, made and ``flock``-ed as ``pre``, then renamed
    (the lock stays with the file): under its final name it is held from the start. -1 where
    there are no locks, or the folder is not made yet or not writable: the pid and token tell."""
    if fcntl is None:
        return -1
    fd = -1
    try:
        fd = os.open(pre, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(pre, lock)
        return fd
    except BaseException as exc:
        if fd >= 0:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(pre)
        if isinstance(exc, OSError):
            return -1
        raise


def flush_dir(folder: Path) -> None:
    """``fsync`` the directory ``folder``, so the renames into it survive a power loss.

    OS errors propagate: a rename whose flush failed is not known to be on disk. A no-op on
    Windows, which cannot open a directory to flush it.
    """
    if os.name == "nt":
        return
    with held_interrupts():  # a Ctrl-C between os.open and the try leaked the descriptor
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
