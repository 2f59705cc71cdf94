"""Which OS errors of a read mean a bad stored tree, and which mean the OS failed to read it.

A file missing, a file where a directory belongs, a symlink loop or an overlong name
describe the stored tree itself: the copy is incomplete or hostile (IndexFormatError).
Any other OS error (I/O error, no permission, out of memory, too many open files) is the
OS failing to read a copy that may be good (PersistError, with its errno and file name).
"""

from __future__ import annotations

import contextlib
import errno

from ..core.errors import HnswError, IndexFormatError, is_thread_refusal, persist_error

__all__ = ["TREE_ERRNOS", "is_tree_fault", "read_error", "thread_refused"]

#: Errnos that describe the stored tree rather than a failing read.
TREE_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.ELOOP, errno.ENAMETOOLONG})


def is_tree_fault(exc: OSError) -> bool:
    """Whether ``exc`` says the stored tree is wrong (missing or misplaced) rather than unreadable.

    An OSError without an errno counts as one (``FileNotFoundError(path)`` raised by hand,
    fsspec's complaints about a missing object).
    """
    return exc.errno is None or exc.errno in TREE_ERRNOS


def read_error(what: str, exc: OSError) -> HnswError:
    """The error to raise for an OS error reading a saved tree.

    Parameters
    ----------
    what : str
        What was being read, leading the message.
    exc : OSError
        What the OS raised.

    Returns
    -------
    HnswError
        IndexFormatError when :func:`is_tree_fault`, else the :func:`~hnsw_numba.core.errors.persist_error`
        of ``exc`` (errno, file name and built-in subclass kept).
    """
    if is_tree_fault(exc):
        return IndexFormatError(f"{what}: {type(exc).__name__}: {exc}")
    return persist_error(exc, f"{what}: cannot read")


def thread_refused(exc: BaseException) -> OSError | None:
    """An OSError (EAGAIN) standing for ``exc`` when it, or what caused it, is the OS refusing
    a new thread (CPython's RuntimeError "can't start new thread": memory or process limits),
    a fault of the moment rather than of the data; else None.

    zarr keeps the event loop whose I/O thread did not start, and every later zarr call of
    the process would wait on it for ever: that loop is forgotten here, so a retry starts
    another."""
    for e in (exc, exc.__cause__, exc.__context__):
        if is_thread_refusal(e):
            try:
                from zarr.core import sync
            except ImportError:  # pragma: no cover - zarr is a dependency
                sync = None
            loop, thread = getattr(sync, "loop", None), getattr(sync, "iothread", None)
            lock = getattr(sync, "_get_lock", None)  # zarr's own: a loop another thread is starting is left alone
            with lock() if callable(lock) else contextlib.nullcontext():
                if isinstance(loop, list) and isinstance(thread, list) and loop and thread and loop[0] is not None:
                    if thread[0] is None or not thread[0].is_alive():
                        loop[0] = thread[0] = None
            return OSError(errno.EAGAIN, f"{type(e).__name__}: {e}")
    return None
