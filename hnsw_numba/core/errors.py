"""Exception hierarchy.

Every error raised on purpose by hnsw_numba derives from :class:`HnswError`; where a
built-in exception is the natural match (``KeyError``, ``ValueError``, ...) the class
derives from it too, so ``except KeyError`` keeps working for users who do not know us.
"""

from __future__ import annotations

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
    "RecallTargetError",
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


class InvalidParameterError(HnswError, ValueError):
    """A parameter (k, ef, m, a filter, a configuration field, ...) is out of range."""


class CapacityError(HnswError, ValueError):
    """The index or store is full; ``resize`` to grow it."""


class MetricMismatchError(HnswError, TypeError):
    """A metric was used with a vector store of a type it cannot read."""


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
