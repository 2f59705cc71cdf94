"""Where a save may go: :func:`check_place`, run before anything is written.

A save replaces its target whole, so a target that holds anything but a save of the same
family (a project folder, an index where search results go), that lies inside another
save (whose next save would delete it), or whose old copy this user cannot remove is
refused with a typed :class:`~hnsw_numba.PersistError`. A symlink is followed
(:func:`through_link`): the save replaces what it names.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import zipfile
from pathlib import Path
from typing import NoReturn

from ..core.errors import (
    InvalidParameterError, PersistFileExistsError, PersistFileNotFoundError, PersistIsADirectoryError, PersistNotADirectoryError,
    PersistPermissionError, persist_error, persist_errors,
)
from .localfiles import open_regular, sibling_name
from .read_faults import is_tree_fault

__all__ = ["check_place", "save_kind", "dir_save_kind", "saved_dir_kind", "through_link"]


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
    index); a regular file for a one-file save (PersistIsADirectoryError for a directory,
    PersistFileExistsError for a device, FIFO or socket), and with
    ``kind`` (a ``.zip`` save) a zip holding such a save. A directory save's aside name
    (``.<name>.old``, where a swap keeps the old copy) must be free or hold a save. Other OS
    errors (a name too long) raise PersistError.
    """
    if path.name in ("", ".", ".."):
        raise InvalidParameterError(f"cannot save {path}: name the directory or file to write")
    if "\x00" in str(path):  # os.stat raises a bare ValueError for it
        raise InvalidParameterError(f"cannot save {str(path)!r}: a path cannot hold a NUL character")
    with persist_errors(f"cannot save {path}"):
        parent = path.parent
        try:
            st = os.stat(parent)
        except OSError as exc:
            raise persist_error(exc, f"cannot save {path}: no directory {parent}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise PersistNotADirectoryError(errno.ENOTDIR, f"cannot save {path}: {parent} is not a directory", str(parent))
        if os.path.islink(path) and not os.path.exists(path):  # through_link keeps it: a loop of links
            raise PersistFileNotFoundError(errno.ENOENT, f"cannot save {path}: a symlink that leads nowhere (a loop of links)", str(path))
        sharded = _check_outside_saves(path)
        if directory:
            _check_aside(path, kind)
            if sharded is not None and os.path.lexists(path):
                # its shards are replaced only by its own writes, under fresh names (a shard
                # written over failed every search of the sharded index: checksums)
                raise PersistFileExistsError(errno.EEXIST, f"cannot save {path}: it is part of the sharded index at {sharded} "
                                                           "(not replaced: write through ShardedIndex)", str(path))
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            return
        if directory and not stat.S_ISDIR(mode):
            raise PersistFileExistsError(errno.EEXIST, f"cannot save {path}: it exists and is not a directory (not replaced)", str(path))
        if not directory and stat.S_ISDIR(mode):
            raise PersistIsADirectoryError(errno.EISDIR, f"cannot save {path}: it is a directory (not replaced)", str(path))
        if not directory and not stat.S_ISREG(mode):  # a device, FIFO or socket (through a link: /dev/zero)
            raise PersistFileExistsError(errno.EEXIST, f"cannot save {path}: it is no regular file (not replaced)", str(path))
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


def _check_outside_saves(path: Path) -> Path | None:
    """Refuse ``path`` inside a saved index, half of one or search results: their next save
    replaces the directory whole (and a group of a save is no save of its own). Returns the
    sharded index ``path`` lies in, if any (it holds saves: its shards)."""
    parent = Path(os.path.realpath(path.parent))  # through links: a link into a save is inside it
    kinds = [(folder, dir_save_kind(folder)) for folder in (parent, *parent.parents)]
    around = [(folder, found) for folder, found in kinds if found is not None and found != "sharded"]
    if not around:
        return next((folder for folder, found in kinds if found == "sharded"), None)
    folder, found = around[-1]  # the outermost: the save whose next save replaces the rest
    raise PersistFileExistsError(errno.EEXIST, f"cannot save {path}: {folder} holds {_name(found)}, which its "
                                               "next save replaces whole (save beside it, not inside it)", str(path))


def _check_aside(path: Path, kind: str | None) -> None:
    """Refuse a directory save whose aside name holds what is no save of ours (the swap
    would remove it, and a load would take it for an interrupted swap's copy), or, with
    ``path`` missing, a save of another family than ``kind``: the last whole copy of an
    interrupted swap, which the family rule keeps as it keeps ``path``."""
    aside = sibling_name(path, "old")
    if not os.path.lexists(aside):
        return
    found = saved_dir_kind(aside)
    if found is None:
        raise PersistFileExistsError(errno.EEXIST, f"cannot save {path}: {aside} exists and holds no save (a save keeps "
                                                   "the previous copy there while it swaps: rename or remove it)", str(aside))
    if found and kind is not None and not os.path.lexists(path) and _family(found) != _family(kind):
        raise PersistFileExistsError(errno.EEXIST, f"cannot save {path}: {aside}, the copy an interrupted save left, holds "
                                                   f"{_name(found)} (not replaced: open it to put it back, or remove it)", str(aside))


def _check_removable(path: Path) -> None:
    """Refuse to replace a save this user cannot remove (a directory of it read-only): the
    swap would put the new copy in place and leave the old one behind for good."""
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return

    def refuse(where: str) -> NoReturn:
        raise PersistPermissionError(errno.EACCES, f"cannot save {path}: the previous save cannot be removed "
                                                   f"({where} is read-only or unreadable; not replaced)", where)

    for dirpath, _, _ in os.walk(path, onerror=lambda exc: refuse(exc.filename or str(path))):
        if not os.access(dirpath, os.R_OK | os.W_OK | os.X_OK):
            refuse(dirpath)


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


def saved_dir_kind(path: Path) -> str | None:
    """The save kind a directory (not a symlink) ``path`` holds: ``""`` when it is empty (a
    save made into an empty directory leaves one aside), None when it is no such directory
    or holds no save. An OS error listing it propagates."""
    if os.path.islink(path) or not os.path.isdir(path):
        return None
    return _dir_kind(path)


def _zip_kind(path: Path) -> str | None:
    """The save kind regular file ``path`` holds as a zip: ``""`` when it is empty (a file made
    for the save, as by ``tempfile``), None when it is no zip of a save. A read the OS
    fails (too many open files, an I/O error) raises: what the file holds is unknown."""
    try:
        if os.stat(path).st_size == 0:
            return ""
        with zipfile.ZipFile(path) as z:
            info = z.getinfo("zarr.json")
            if info.file_size > 1 << 20:
                return None
            return save_kind(json.loads(z.read(info)))
    except OSError as exc:
        if is_tree_fault(exc):
            return None
        raise persist_error(exc, f"cannot save {path}: cannot read it") from exc
    except (ValueError, KeyError, RecursionError, zipfile.BadZipFile, EOFError):
        return None


def through_link(path: Path) -> Path:
    """Where a save or load of ``path`` goes: the file or directory a symlink ``path`` leads
    to (a save replaces what the link names and keeps the link, as editors write through
    links), missing or not: a crash between a swap's two renames leaves the link's target
    missing and its aside copy whole, which the save or load puts back. A loop of links
    stays itself (the save refuses it)."""
    if os.path.islink(path):
        target = Path(os.path.realpath(path))
        if not os.path.islink(target):
            return target
    return path
