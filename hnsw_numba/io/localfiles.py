"""Local files: what a loader opens (regular files only), where a save may write.

A FIFO blocks a reader forever and a device may never end or have side effects on
open, so loaders check the kind of every file first (``stat``), open it non-blocking
(a FIFO swapped in after the check does not block the open) and check the opened
descriptor again (``fstat``). Saves check their target with :func:`check_place` before
they write anything, and remove the temporary copies killed saves left (:func:`clean_leftovers`).

One-file saves (hnswlib files, sharded manifests, ``.zip`` indexes) go through
:func:`write_atomically` / :func:`replace_file`: written to a temporary sibling named with
the saving pid, flushed, renamed over the target, the directory flushed. A save that raises
has replaced nothing: when flushing the directory after the rename fails, the old file
(kept as a hard link until then) is put back before the error is raised, as the swap of a
directory save does.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import secrets
import shutil
import stat
import zipfile
from pathlib import Path
from typing import IO, BinaryIO, Callable

from ..core.errors import (
    InvalidParameterError, PersistFileExistsError, PersistIsADirectoryError, PersistNotADirectoryError, PersistPermissionError,
    persist_error, persist_errors,
)

__all__ = ["open_regular", "check_regular_tree", "check_place", "save_kind", "dir_save_kind", "clean_leftovers", "tmp_name",
           "sibling_name", "through_link", "flush_dir", "replace_file", "write_atomically", "write_files_atomically"]


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


def check_place(path: Path, *, directory: bool, kind: str | None = None) -> None:
    """Refuse, before anything is written, a save to ``path`` that cannot succeed or would
    replace what is no save of ``kind``'s family.

    ``path`` must name something (InvalidParameterError for ``.``, ``..`` or ``/``) in an
    existing directory (PersistFileNotFoundError, PersistNotADirectoryError) that is not part
    of a save (a directory holding an index, half of one or search results is replaced whole
    by its next save: PersistFileExistsError; a sharded index holds its shards' saves); an existing
    ``path`` must be of the kind the save replaces: for a ``directory`` save an empty
    directory or one holding a save (its root ``zarr.json`` carries the ``hnsw_numba``
    attribute) of the same family as ``kind`` (an index, or half of one, replaces an index or
    half of one; a sharded index and search results only their own) that this user may
    remove (PersistPermissionError for a read-only one), else
    PersistFileExistsError (a typo must not delete a project folder, search results not an
    index); anything but a directory for a one-file save (PersistIsADirectoryError), and with
    ``kind`` (a ``.zip`` save) a zip holding such a save. A directory save's aside name
    (``.<name>.old``, where a swap keeps the old copy) must be free or hold a save. Other OS
    errors (a name too long) raise PersistError.
    """
    if path.name in ("", ".", ".."):
        raise InvalidParameterError(f"cannot save {path}: name the directory or file to write")
    with persist_errors(f"cannot save {path}"):
        parent = path.parent
        try:
            st = os.stat(parent)
        except OSError as exc:
            raise persist_error(exc, f"cannot save {path}: no directory {parent}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise PersistNotADirectoryError(errno.ENOTDIR, f"cannot save {path}: {parent} is not a directory", str(parent))
        if directory or kind is not None:
            _check_outside_saves(path)
        if directory:
            _check_aside(path)
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            return
        if directory and not stat.S_ISDIR(mode):
            raise PersistFileExistsError(errno.EEXIST, f"cannot save {path}: it exists and is not a directory (not replaced)", str(path))
        if not directory and stat.S_ISDIR(mode):
            raise PersistIsADirectoryError(errno.EISDIR, f"cannot save {path}: it is a directory (not replaced)", str(path))
        if not directory and kind is None:
            return
        found = _dir_kind(path) if directory else _zip_kind(path)
        if found == "" or (found is not None and (kind is None or _family(found) == _family(kind))):
            if directory and found:
                _check_removable(path)
            return
        held = f"holds {_name(found)}" if found is not None else ("holds no save" if directory else "is no zip of a save")
        raise PersistFileExistsError(errno.EEXIST, f"cannot save {path}: {'a directory' if directory else 'a file'} that {held} "
                                                   "(not replaced: remove it first)", str(path))


def _check_outside_saves(path: Path) -> None:
    """Refuse ``path`` inside a saved index, half of one or search results: their next save
    replaces the directory whole (and a group of a save is no save of its own)."""
    around = [(folder, found) for folder in Path(os.path.abspath(path)).parents
              if (found := dir_save_kind(folder)) is not None and found != "sharded"]  # a sharded index holds saves
    if around:
        folder, found = around[-1]  # the outermost: the save whose next save replaces the rest
        raise PersistFileExistsError(errno.EEXIST, f"cannot save {path}: {folder} holds {_name(found)}, which its "
                                                   "next save replaces whole (save beside it, not inside it)", str(path))


def _check_aside(path: Path) -> None:
    """Refuse a directory save whose aside name holds what is no save of ours: the swap
    would remove it (and a load would take it for an interrupted swap's copy)."""
    aside = sibling_name(path, "old")
    if os.path.lexists(aside) and (os.path.islink(aside) or not os.path.isdir(aside) or _dir_kind(aside) is None):
        raise PersistFileExistsError(errno.EEXIST, f"cannot save {path}: {aside} exists and holds no save (a save keeps "
                                                   "the previous copy there while it swaps: rename or remove it)", str(aside))


def _check_removable(path: Path) -> None:
    """Refuse to replace a save this user cannot remove (a directory of it read-only): the
    swap would put the new copy in place and leave the old one behind for good."""
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return
    for dirpath, dirs, _ in os.walk(path):
        if not os.access(dirpath, os.W_OK | os.X_OK):
            raise PersistPermissionError(errno.EACCES, f"cannot save {path}: the previous save cannot be removed "
                                                       f"({dirpath} is read-only; not replaced)", dirpath)


def dir_save_kind(folder: Path) -> str | None:
    """The save kind whose root ``zarr.json`` directory ``folder`` holds, or None (no save, or unreadable)."""
    meta = folder / "zarr.json"
    try:
        if not stat.S_ISREG(os.stat(meta).st_mode):
            return None
        with open_regular(meta, lambda msg: ValueError(msg)) as f:
            return save_kind(json.loads(f.read(1 << 20)))
    except (OSError, ValueError, RecursionError):
        return None


#: Save kinds that replace one another: an index and either half of one.
_FAMILIES = {"graph": "index", "vectors": "index"}
_NAMES = {"index": "a saved index", "graph": "a saved graph", "vectors": "saved vectors", "sharded": "a sharded index",
          "search_results": "saved search results"}


def _family(kind: str) -> str:
    return _FAMILIES.get(kind, kind)


def _name(kind: str) -> str:
    return _NAMES.get(kind, f"a saved {kind}")


def save_kind(meta: object) -> str | None:
    """The ``hnsw_numba`` kind (``"index"``, ``"sharded"``, ...) a root ``zarr.json``'s parsed
    metadata names, or None."""
    attrs = meta.get("attributes") if isinstance(meta, dict) else None
    info = attrs.get("hnsw_numba") if isinstance(attrs, dict) else None
    return info.get("kind") if isinstance(info, dict) and isinstance(info.get("kind"), str) else None


def _dir_kind(path: Path) -> str | None:
    """The save kind directory ``path`` holds: ``""`` when it is empty, None when it holds no save."""
    with os.scandir(path) as entries:
        if next(entries, None) is None:
            return ""
    return dir_save_kind(path)  # None: no zarr.json, not a regular file, not JSON, nested past the parser


def _zip_kind(path: Path) -> str | None:
    """The save kind regular file ``path`` holds as a zip: ``""`` when it is empty (a file made
    for the save, as by ``tempfile``), None when it is no zip of a save."""
    try:
        if os.stat(path).st_size == 0:
            return ""
        with zipfile.ZipFile(path) as z:
            info = z.getinfo("zarr.json")
            if info.file_size > 1 << 20:
                return None
            return save_kind(json.loads(z.read(info)))
    except (OSError, ValueError, KeyError, RecursionError, zipfile.BadZipFile, EOFError):
        return None


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
    prefix = sibling_name(path, "tmp-").name
    with contextlib.suppress(OSError):
        for sib in path.parent.iterdir():
            if sib.name.startswith(prefix):
                pid = sib.name[len(prefix) :].split("-", 1)[0]
                if pid.isdigit() and not _pid_alive(int(pid)):
                    if sib.is_dir() and not sib.is_symlink():
                        shutil.rmtree(sib, ignore_errors=True)
                    else:
                        sib.unlink()


#: Bytes of a name kept whole in its siblings' names: ``.<name>.tmp-<pid>-<hex>.old`` must fit
#: the 255 bytes most file systems allow a name.
_STEM_BYTES = 200


def sibling_name(path: Path, tag: str) -> Path:
    """``path``'s hidden sibling ``.<name>.<tag>``; a name longer than 200 bytes is cut and
    a digest of it appended, so the sibling of any valid name is a valid name."""
    raw = os.fsencode(path.name)
    name = path.name
    if len(raw) > _STEM_BYTES:
        name = f"{os.fsdecode(raw[: _STEM_BYTES - 17])}~{hashlib.sha256(raw).hexdigest()[:16]}"
    return path.with_name(f".{name}.{tag}")


def tmp_name(path: Path, suffix: str = "") -> Path:
    """A fresh temporary sibling of ``path`` named with this process's pid (:func:`clean_leftovers`
    removes it once the process is dead)."""
    return sibling_name(path, f"tmp-{os.getpid()}-{secrets.token_hex(4)}{suffix}")


def through_link(path: Path) -> Path:
    """Where a save of ``path`` goes: the file or directory a symlink ``path`` leads to (a
    save replaces what the link names and keeps the link, as editors write through links); a
    dangling link stays itself (the save refuses it)."""
    if os.path.islink(path) and os.path.exists(path):
        return Path(os.path.realpath(path))
    return path


def flush_dir(folder: Path) -> None:
    """``fsync`` the directory ``folder``, so the renames into it survive a power loss.

    OS errors propagate: a rename whose flush failed is not known to be on disk. A no-op on
    Windows, which cannot open a directory to flush it.
    """
    if os.name == "nt":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_file(tmp: Path, path: Path, *, flush: bool = True, step: Callable[[str], None] | None = None) -> None:
    """Rename the whole, flushed file ``tmp`` over ``path``, then flush the directory.

    Parameters
    ----------
    tmp, path : Path
        The new copy and the target, siblings.
    flush : bool
        Flush the directory after the rename.
    step : callable, optional
        Called with the name of each step taken (crash tests kill the process there).

    Raises
    ------
    OSError
        The rename failed (``path`` untouched), or the flush after it failed: the old
        ``path`` (kept as a hard link until then) is put back, the new copy moved back to
        ``tmp`` (the caller removes it) and the error raised, so a save that raises has
        replaced nothing. Where no hard link could be made (file systems without them) the
        old file is gone and the new copy stays: PersistError then says it is in place and
        loads but is not known to be durable.
    """
    existed = path.exists()
    aside = tmp_name(path, ".old") if existed and flush else None
    if aside is not None:
        try:
            os.link(path, aside)
        except OSError:  # the old file cannot be kept: only putting it back after a failed flush needs it
            aside = None
    try:
        os.replace(tmp, path)  # atomic for a single file
    except BaseException:
        _drop(aside)
        raise
    if step is not None:
        step("swap: renamed in")
    if flush:
        try:
            flush_dir(path.parent)
        except OSError as exc:
            if existed and aside is None:
                raise persist_error(exc, f"cannot save {path} durably: the new copy is in place and loads but is not "
                                         f"known to be durable (flushing {path.parent} after the rename failed, and "
                                         "the previous copy could not be kept to put back)") from exc
            _put_back(path, tmp, aside)
            raise
    _drop(aside)


def _drop(path: Path | None) -> None:
    """Remove a file if there is one; best effort: what stays is a leftover of this pid, removed later."""
    if path is not None:
        with contextlib.suppress(OSError):
            path.unlink()


def _put_back(path: Path, tmp: Path, aside: Path | None) -> None:
    """Put the old file ``aside`` back over the swapped-in copy at ``path`` in one rename (with
    no old file, move the new copy back to ``tmp``, which the caller removes).

    Best effort, after another error: if the rename fails, ``path`` holds the whole new copy;
    it never goes missing, as it would between two renames.
    """
    with contextlib.suppress(OSError):
        if aside is not None:
            os.replace(aside, path)
        else:
            os.rename(path, tmp)


def write_atomically(target: str | os.PathLike, write: Callable[[BinaryIO], None], *, fsync: bool = True,
                     what: str | None = None) -> None:
    """Call ``write(f)`` on a temporary sibling of ``target``, then rename it over ``target``.

    ``target`` is then the old file or the whole new one, never a part; on any error (or
    Ctrl-C) the temporary file is removed and ``target`` holds the old file; one a killed
    save left is removed by the next save of ``target``.

    Parameters
    ----------
    target : path
        The file to replace; its directory must exist.
    write : callable
        Writes the new file's bytes to the binary file object it is given.
    fsync : bool
        Flush the file before the rename and the directory after it (see :func:`replace_file`).
    what : str, optional
        What failed and what is kept, leading the message of a PersistError; default
        ``"cannot save <target> (the previous file is kept)"``.

    Raises
    ------
    PersistError
        An OS error (disk full, I/O error, no permission, no such directory, ``target`` a
        directory), with its errno and built-in subclass.
    """
    write_files_atomically([(target, write, what)], fsync=fsync)


def write_files_atomically(files: list[tuple[str | os.PathLike, Callable[[BinaryIO], None], str | None]], *, fsync: bool = True) -> None:
    """:func:`write_atomically` for several files that belong together: every one is written
    whole to its temporary sibling before the first is renamed over its target.

    A write that fails (disk full, an I/O error, Ctrl-C) therefore leaves every target as it
    was; only a rename failing after another succeeded (rare: siblings on one file system)
    leaves some targets new and the rest old.

    Parameters
    ----------
    files : list of (path, callable, str or None)
        Target, the function writing its bytes, and the PersistError's lead for it (see
        :func:`write_atomically`).
    fsync : bool
        Flush each file before the renames and each directory after them.

    Raises
    ------
    PersistError
        As :func:`write_atomically`, for the first file that failed.
    """
    paths = [through_link(Path(os.fspath(target))) for target, _, _ in files]
    for path in paths:
        check_place(path, directory=False)
        clean_leftovers(path)  # the temporary files of killed saves (named by their pid)
    tmps: list[Path | None] = [None] * len(files)
    try:
        for i, (path, (_, write, what)) in enumerate(zip(paths, files)):
            with persist_errors(what or f"cannot save {path} (the previous file is kept)"):
                tmps[i] = tmp = tmp_name(path)
                with open(tmp, "xb") as f:
                    write(f)
                    f.flush()
                    if fsync:
                        os.fsync(f.fileno())
        for i, (path, (_, _, what)) in enumerate(zip(paths, files)):
            if i:  # the earlier targets are new already: say so
                what = f"cannot save {path} (the previous file is kept; {', '.join(str(p) for p in paths[:i])} replaced)"
            with persist_errors(what or f"cannot save {path} (the previous file is kept)"):
                replace_file(tmps[i], path, flush=fsync)
            tmps[i] = None
    finally:
        for tmp in tmps:
            _drop(tmp)  # cleanup must not hide the error
