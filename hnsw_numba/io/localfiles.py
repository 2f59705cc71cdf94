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
import secrets
import shutil
import stat
from pathlib import Path
from typing import IO, Callable

from ..core.errors import InvalidParameterError
from ..core.interrupts import held_interrupts

__all__ = ["open_regular", "check_regular_tree", "clean_leftovers", "tmp_name", "release_tmp", "sibling_name", "flush_dir"]


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


def check_regular_tree(root: Path, error: Callable[[str], Exception]) -> None:
    """Raise ``error`` if anything under ``root`` (followed through symlinks) is neither a
    regular file nor a directory: zarr-python would open it for reading.

    An OS error other than a missing file or a link loop (I/O error, no permission)
    propagates: the kind of that file is unknown.
    """
    for dirpath, dirs, files in os.walk(root):
        for name in files + dirs:
            full = os.path.join(dirpath, name)
            try:
                mode = os.stat(full).st_mode
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                    continue  # a dangling link reads as a missing file later
                raise
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


#: Names (not paths) of the temporary siblings this process made and has not removed yet:
#: saves under way. A path's spelling differs between callers (relative or absolute, through
#: a symlinked folder) and a save's copy removed under another spelling lost the save; the
#: name carries this pid, this process's token and 32 random bits.
_in_use: set[str] = set()

#: 32 random bits naming this process in its copies' names beside its pid: a pid alone does
#: not make a copy this process's own (two containers' processes on one volume are both
#: pid 1). A forked child keeps it: its pid tells its copies from its parent's.
_token = secrets.token_hex(4)


def release_tmp(path: Path) -> None:
    """Mark a :func:`tmp_name` as no longer in use (removed, or renamed into place)."""
    _in_use.discard(Path(path).name)


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
    mine = f"{os.getpid()}-{_token}-"
    with contextlib.suppress(OSError):
        for sib in path.parent.iterdir():
            if sib.name.startswith(prefix):
                rest = sib.name[len(prefix) :]
                pid = rest.split("-", 1)[0]
                if pid.isdigit() and (sib.name not in _in_use if rest.startswith(mine) else not _pid_alive(int(pid))):
                    if sib.is_dir() and not sib.is_symlink():
                        shutil.rmtree(sib, ignore_errors=True)
                    else:
                        sib.unlink()


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
    tmp = sibling_name(path, f"tmp-{os.getpid()}-{_token}-{secrets.token_hex(4)}{suffix}")
    _in_use.add(tmp.name)  # until release_tmp: no clean_leftovers of this process removes it
    return tmp


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
