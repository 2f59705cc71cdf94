"""Local files: what a loader opens (regular files only), where a save may write.

A FIFO blocks a reader forever and a device may never end or have side effects on
open, so loaders check the kind of every file first (``stat``), open it non-blocking
(a FIFO swapped in after the check does not block the open) and check the opened
descriptor again (``fstat``). Saves check their target with :func:`check_place` before
they write anything, and remove the temporary copies killed saves left (:func:`clean_leftovers`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from pathlib import Path
from typing import IO, Callable

from ..core.errors import PersistFileExistsError, PersistIsADirectoryError, PersistNotADirectoryError, persist_error

__all__ = ["open_regular", "check_regular_tree", "check_place", "clean_leftovers"]


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
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise error(f"{os.fspath(path)} is {_kind(mode)}, not a regular file: not read")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb", buffering=0)
    except BaseException:
        os.close(fd)
        raise


def check_regular_tree(root: Path, error: Callable[[str], Exception]) -> None:
    """Raise ``error`` if anything under ``root`` (followed through symlinks) is neither a
    regular file nor a directory: zarr-python would open it for reading."""
    for dirpath, dirs, files in os.walk(root):
        for name in files + dirs:
            full = os.path.join(dirpath, name)
            try:
                mode = os.stat(full).st_mode
            except OSError:
                continue  # a dangling link reads as a missing file later
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise error(f"{full} is {_kind(mode)}, not a regular file: not read")


def check_place(path: Path, *, directory: bool) -> None:
    """Refuse, before anything is written, a save to ``path`` that cannot succeed.

    The parent must be an existing directory (PersistFileNotFoundError,
    PersistNotADirectoryError); an existing ``path`` must be of the kind the save
    replaces: a directory for a ``directory`` save (PersistFileExistsError), anything but
    a directory for a one-file save (PersistIsADirectoryError).
    """
    parent = path.parent
    try:
        st = os.stat(parent)
    except OSError as exc:
        raise persist_error(exc, f"cannot save {path}: no directory {parent}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise PersistNotADirectoryError(errno.ENOTDIR, f"cannot save {path}: {parent} is not a directory", str(parent))
    if directory and path.exists() and not path.is_dir():
        raise PersistFileExistsError(errno.EEXIST, f"cannot save {path}: it exists and is not a directory (not replaced)", str(path))
    if not directory and path.is_dir():
        raise PersistIsADirectoryError(errno.EISDIR, f"cannot save {path}: it is a directory (not replaced)", str(path))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_leftovers(path: Path) -> None:
    """Remove the temporary siblings of ``path`` that saves of dead processes left behind.

    Loads and saves of ``path`` call it, so a killed save's copy does not outlive the
    next use of the path. A directory that cannot be listed or written is left as is.
    """
    prefix = f".{path.name}.tmp-"
    with contextlib.suppress(OSError):
        for sib in path.parent.iterdir():
            if sib.name.startswith(prefix):
                pid = sib.name[len(prefix) :].split("-", 1)[0]
                if pid.isdigit() and not _pid_alive(int(pid)):
                    if sib.is_dir() and not sib.is_symlink():
                        shutil.rmtree(sib, ignore_errors=True)
                    else:
                        sib.unlink()
