"""Exception hierarchy.

Every error raised on purpose by hnsw_numba derives from :class:`HnswError`; where a
built-in exception is the natural match (``KeyError``, ``ValueError``, ...) the class
derives from it too, so ``except KeyError`` keeps working for users who do not know us.
"""

from __future__ import annotations

import contextlib
import errno as _errno
from typing import Iterator

__all__ = [
    "HnswError",
    "KeyExistsError",
    "KeyNotFoundError",
    "InvalidKeyError",
    "DimensionMismatchError",
    "InvalidVectorError",
    "InvalidParameterError",
    "CapacityError",
    "MetricMismatchError",
    "IntegrityError",
    "ReadOnlyIndexError",
    "IndexFormatError",
    "LegacyFormatError",
    "VectorFileError",
    "VectorFileNotFoundError",
    "MissingDependencyError",
    "PersistError",
    "PersistPermissionError",
    "PersistFileNotFoundError",
    "PersistFileExistsError",
    "PersistNotADirectoryError",
    "PersistIsADirectoryError",
    "nonfinite_error",
    "persist_error",
    "persist_errors",
    "is_backend_error",
    "backend_error",
    "RecallTargetError",
    "LockOrderError",
    "is_thread_refusal",
    "HnswWarning",
]


class HnswError(Exception):
    """Base class of every error raised by hnsw_numba."""


class KeyExistsError(HnswError, KeyError):
    """``insert`` was given a key that is already live in the index."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class KeyNotFoundError(HnswError, KeyError):
    """The key is not in the index (or is deleted)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class InvalidKeyError(HnswError, TypeError, ValueError):
    """A key the index cannot hold: only ``int`` and ``str`` are persistable, and int keys
    must be >= 0 (so -1 is free to pad results)."""


class DimensionMismatchError(HnswError, ValueError):
    """A vector or query has the wrong shape for the index."""


class InvalidVectorError(HnswError, ValueError):
    """A vector holds NaN/inf, is out of the store's range, or cannot be converted."""


class InvalidParameterError(HnswError, ValueError, TypeError):
    """A parameter (k, ef, m, a filter, a configuration field, ...) is out of range or of the
    wrong type (a ``TypeError`` too, as NumPy's and hnswlib's type errors are)."""


class CapacityError(HnswError, ValueError):
    """The index or store is full; ``resize`` to grow it."""


class MetricMismatchError(HnswError, TypeError):
    """A metric was used with a vector store of a type it cannot read."""


class LockOrderError(HnswError, RuntimeError):
    """A thread that holds an index's lock shared asked for it exclusive (it would wait for itself)."""


def is_thread_refusal(exc: BaseException | None) -> bool:
    """Whether ``exc`` is CPython's error for a thread the OS refused to start (the
    RuntimeError "can't start new thread" of a failed ``pthread_create``)."""
    return isinstance(exc, RuntimeError) and "can't start new thread" in str(exc)


class IntegrityError(HnswError, AssertionError):
    """``check_integrity`` found a broken graph invariant."""


class ReadOnlyIndexError(HnswError, PermissionError):
    """A mutation was attempted on a read-only (e.g. memory-mapped) index."""


class IndexFormatError(HnswError, ValueError):
    """A saved index is corrupt, incomplete, of an unknown version or mismatched."""


class LegacyFormatError(HnswError, ValueError):
    """A file in hnswlib's format is corrupt, truncated or hostile."""


class VectorFileError(HnswError, ValueError):
    """A file of vectors is unreadable, corrupt, truncated, of an unknown format or holds bad rows.

    The message names the file (and the dataset, column or row where that applies).
    """


class VectorFileNotFoundError(VectorFileError, FileNotFoundError):
    """A file (or the named dataset's file) of vectors does not exist."""


class MissingDependencyError(HnswError, ImportError):
    """An optional package is needed; the message names the extra that installs it."""


class PersistError(HnswError, OSError):
    """The OS refused a file operation of a save or load (disk full, I/O error, no permission...).

    ``errno`` and ``filename`` are the OS's; the message says what was being saved and
    what was kept. Where the OS error has a built-in subclass (``PermissionError``,
    ``FileNotFoundError``, ...) the error is one of the subclasses below, so ``except
    PermissionError`` keeps working; disk full (``ENOSPC``) and I/O errors (``EIO``) are
    plain ``OSError`` as in Python.
    """


class PersistPermissionError(PersistError, PermissionError):
    """A save or load was refused permission (``EACCES``, ``EPERM``)."""


class PersistFileNotFoundError(PersistError, FileNotFoundError):
    """A path of a save or load does not exist (no saved index, or no parent directory)."""


class PersistFileExistsError(PersistError, FileExistsError):
    """A path a save creates exists already."""


class PersistNotADirectoryError(PersistError, NotADirectoryError):
    """A directory of the path is a file."""


class PersistIsADirectoryError(PersistError, IsADirectoryError):
    """A save of one file (``.zip``, hnswlib's format) names a directory."""


def nonfinite_error(row: int) -> InvalidVectorError:
    """The error for row ``row`` of a batch holding NaN or inf."""
    return InvalidVectorError(f"vector {row} contains NaN or inf")


_BY_ERRNO = {_errno.EACCES: PersistPermissionError, _errno.EPERM: PersistPermissionError,
             _errno.ENOENT: PersistFileNotFoundError, _errno.EEXIST: PersistFileExistsError,
             _errno.ENOTDIR: PersistNotADirectoryError, _errno.EISDIR: PersistIsADirectoryError}


def persist_error(exc: OSError, what: str) -> PersistError:
    """The :class:`PersistError` for ``exc``: its errno, file names and built-in subclass, ``what`` leading the message.

    Parameters
    ----------
    exc : OSError
        What the OS raised.
    what : str
        What failed and what was kept, e.g. ``"cannot save ix (the previous save is kept)"``.
    """
    if exc.errno is None:
        return PersistError(f"{what}: {exc}")
    cls = _BY_ERRNO.get(exc.errno, PersistError)
    return cls(exc.errno, f"{what}: {exc.strerror}", exc.filename, None, exc.filename2)


#: Packages whose exceptions describe the data or a call (built-ins, Zarr's and its codecs'
#: complaints, ours), not the storage under them.
_DATA_LAYERS = frozenset({"builtins", "zarr", "numcodecs", "json", "numpy", "zipfile", "struct", "hnsw_numba"})


def is_backend_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a storage backend's own error type, other than OSError: what a
    remote filesystem's client library raises for an expired token or a refused request
    (a gcsfs ``HttpError``, an Azure ``ClientAuthenticationError``), not a built-in,
    Zarr's, NumPy's or ours."""
    return isinstance(exc, Exception) and not isinstance(exc, OSError) and type(exc).__module__.partition(".")[0] not in _DATA_LAYERS


def backend_error(exc: BaseException, what: str) -> PersistError:
    """The :class:`PersistError` for a backend's own error (:func:`is_backend_error`): its type
    and message after ``what`` (raise it ``from exc``: the backend's type says what failed)."""
    return PersistError(f"{what}: {type(exc).__name__}: {exc}")


@contextlib.contextmanager
def persist_errors(what: str) -> Iterator[None]:
    """Raise the OS errors of the body as :func:`persist_error` and a storage backend's own
    errors as :func:`backend_error` (``what`` leads the message); our own errors pass."""
    try:
        yield
    except HnswError:
        raise
    except OSError as exc:
        raise persist_error(exc, what) from exc
    except Exception as exc:
        if is_backend_error(exc):
            raise backend_error(exc, what) from exc
        raise


class RecallTargetError(HnswError, ValueError):
    """``tune_ef`` found no ef up to its limit that reaches the target recall.

    ``best_ef`` and ``best_recall`` hold the best recall measured and the smallest ef
    that gave it.
    """

    def __init__(self, message: str, best_ef: int, best_recall: float) -> None:
        super().__init__(message)
        self.best_ef = best_ef
        self.best_recall = best_recall

    def __reduce__(self) -> tuple:  # pickles (Dask, multiprocessing) with its fields
        return type(self), (self.args[0], self.best_ef, self.best_recall)


class HnswWarning(UserWarning):
    """Something was done differently from what was asked (the message says what and why)."""
