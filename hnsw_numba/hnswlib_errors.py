"""Errors of the hnswlib-compatible API (:mod:`hnsw_numba.hnswlib`).

hnswlib raises ``RuntimeError`` for nearly everything, and code written for it catches
that. Each class here is the library's own error (so ``except hn.KeyNotFoundError`` and
``except KeyError`` work as everywhere in hnsw_numba) and a ``RuntimeError`` as well
(so ``except RuntimeError`` written for hnswlib keeps working). :func:`as_runtime` turns a
native error into its counterpart here, keeping message and attributes.
"""

from __future__ import annotations

from .core import errors as core
from .io.hnswlib_write import HnswlibWriteError as _WriteError

__all__ = [
    "HnswlibError",
    "KeyNotFoundError",
    "KeyExistsError",
    "InvalidKeyError",
    "LabelRangeError",
    "DimensionMismatchError",
    "InvalidVectorError",
    "InvalidParameterError",
    "CapacityError",
    "LegacyFormatError",
    "HnswlibWriteError",
    "ReadOnlyIndexError",
    "IndexFileNotFoundError",
    "as_runtime",
]


class HnswlibError(core.HnswError, RuntimeError):
    """What hnswlib reports with a plain ``RuntimeError`` (index not initialised, fewer than k results, ...)."""


class KeyNotFoundError(core.KeyNotFoundError, RuntimeError):
    """A label that is not in the index (hnswlib: "Label not found")."""


class KeyExistsError(core.KeyExistsError, RuntimeError):
    """A label in a state the call cannot take (e.g. undeleting a live label)."""


class InvalidKeyError(core.InvalidKeyError, RuntimeError):
    """A label that is not an integer in ``[0, 2**64)``."""


class LabelRangeError(InvalidKeyError, OverflowError):
    """A label number outside ``[0, 2**64)`` (hnswlib's conversion of the ids raises ``OverflowError``)."""


class DimensionMismatchError(core.DimensionMismatchError, RuntimeError):
    """Vectors or queries of the wrong shape (hnswlib: "Wrong dimensionality of the vectors")."""


class InvalidVectorError(core.InvalidVectorError, RuntimeError):
    """Vectors with NaN or inf, or not convertible to float32."""


class InvalidParameterError(core.InvalidParameterError, RuntimeError):
    """A parameter out of range (space name, M, ef, k, max_elements, return_type, ...)."""


class CapacityError(core.CapacityError, RuntimeError):
    """More elements than ``max_elements`` (hnswlib: "The number of elements exceeds the specified limit")."""


class LegacyFormatError(core.LegacyFormatError, RuntimeError):
    """A corrupt, truncated or hostile index file (hnswlib: "Index seems to be corrupted or unsupported")."""


class HnswlibWriteError(_WriteError, RuntimeError):
    """Something hnswlib's file format cannot carry; nothing was written."""


class ReadOnlyIndexError(core.ReadOnlyIndexError, RuntimeError):
    """A mutation of a read-only index."""


class IndexFileNotFoundError(core.HnswError, FileNotFoundError, RuntimeError):
    """``load_index`` of a path that does not exist (hnswlib: "Cannot open file")."""


_COUNTERPART: dict[type, type] = {
    core.KeyNotFoundError: KeyNotFoundError,
    core.KeyExistsError: KeyExistsError,
    core.InvalidKeyError: InvalidKeyError,
    core.DimensionMismatchError: DimensionMismatchError,
    core.InvalidVectorError: InvalidVectorError,
    core.InvalidParameterError: InvalidParameterError,
    core.CapacityError: CapacityError,
    core.LegacyFormatError: LegacyFormatError,
    _WriteError: HnswlibWriteError,
    core.ReadOnlyIndexError: ReadOnlyIndexError,
}


def as_runtime(exc: BaseException) -> BaseException:
    """The counterpart of a native error here (message and attributes kept), else ``exc``."""
    if isinstance(exc, RuntimeError):
        return exc
    for cls in type(exc).__mro__:
        sub = _COUNTERPART.get(cls)
        if sub is not None:
            new = sub(*exc.args)
            new.__dict__.update(exc.__dict__)  # e.g. LegacyFormatError.check
            return new
    return exc
