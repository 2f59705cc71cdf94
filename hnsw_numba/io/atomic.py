"""One-file saves, written atomically (hnswlib files, sharded manifests, search results).

:func:`write_atomically` / :func:`replace_file`: written to a temporary sibling named with
the saving pid, flushed, renamed over the target, the directory flushed. A save that raises
has replaced nothing: when flushing the directory after the rename fails, the old file
(kept as a hard link until then) is put back before the error is raised, as the swap of a
directory save does.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import BinaryIO, Callable

from ..core.errors import persist_error, persist_errors
from ..core.interrupts import held_interrupts
from .localfiles import clean_leftovers, flush_dir, release_tmp, tmp_name
from .places import check_place, through_link

__all__ = ["replace_file", "write_atomically", "write_files_atomically"]


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
    # Ctrl-C held from before the try to the end, so the aside link and its name go on every
    # way out: held only inside the clean-up, a Ctrl-C landing on its first Python frame (the
    # finally's _drop, its release_tmp, their held_interrupts' __enter__) skips it and keeps the
    # link, its lock file and descriptor for the life of the process. One landing on this
    # hold's own entry comes before anything is made; one during the swap is raised at its end.
    with held_interrupts():
        aside = None
        try:
            if existed and flush:
                aside = tmp_name(path, ".old")
                try:
                    os.link(path, aside)
                except OSError:  # the old file cannot be kept: only putting it back after a failed flush needs it
                    release_tmp(aside)
                    aside = None
            os.replace(tmp, path)  # atomic for a single file
            if step is not None:
                step("swap: renamed in")
            if flush:
                try:
                    flush_dir(path.parent)
                except OSError as exc:
                    if existed and aside is None:
                        raise persist_error(exc, f"cannot save {path} durably: the new copy is in place and loads but is "
                                                 f"not known to be durable (flushing {path.parent} after the rename "
                                                 "failed, and the previous copy could not be kept to put back)") from exc
                    _put_back(path, tmp, aside)
                    raise
        finally:
            _drop(aside)  # after a put back: nothing there


def _drop(path: Path | None) -> None:
    """Remove a file if there is one; best effort: what stays is a leftover of this pid, removed later."""
    if path is not None:
        try:
            with contextlib.suppress(OSError):
                path.unlink()
        finally:
            release_tmp(path)


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
            release_tmp(tmps[i])  # renamed into place; a Ctrl-C at its start leaves the name to the handler below
            tmps[i] = None
    except BaseException:  # only after an error: a clean-up a save's own end ran could lose its start to a Ctrl-C
        for tmp in tmps:
            _drop(tmp)  # cleanup must not hide the error
        raise
