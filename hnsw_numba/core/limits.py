"""Refuse absurd allocations up front, with a clear error instead of a MemoryError later."""

from __future__ import annotations

import os
from functools import cache

from .errors import CapacityError, InvalidParameterError

__all__ = ["physical_memory", "max_bytes", "readable_bytes", "check_allocation", "check_results", "capacity_for",
           "RESULT_ENTRY_BYTES"]

#: Bytes a batch search allocates per (query, k) result entry, at its peak: int32 NodeIds
#: (4), float32 distances (4), the keys (8: int64, or for str keys an object array's
#: pointers to the key map's own objects) and the intp copy of the NodeIds ``np.take``
#: makes while it gathers the keys (8).
RESULT_ENTRY_BYTES = 24


@cache  # asked before every batch's result arrays: the machine's memory does not change
def physical_memory() -> int:
    """Bytes of physical memory on this machine (a generous upper bound for one allocation)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 1 << 46


def readable_bytes(nbytes: float) -> str:
    """``nbytes`` in the largest unit that keeps it at least 1: bytes, KiB, MiB or GiB.

    Parameters
    ----------
    nbytes : float
        A size in bytes.

    Returns
    -------
    str
        For example ``"512 bytes"``, ``"976.6 KiB"``, ``"1.5 GiB"``.
    """
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(nbytes) >= scale:
            return f"{nbytes / scale:,.1f} {unit}"
    return f"{int(nbytes):,} bytes"


def max_bytes() -> int:
    """The allocation limit: ``HNSW_NUMBA_MAX_BYTES`` if set (and not 0), else physical memory.

    Returns
    -------
    int
        Bytes one allocation may take.

    Raises
    ------
    InvalidParameterError
        The variable is not a non-negative integer number of bytes.
    """
    text = os.environ.get("HNSW_NUMBA_MAX_BYTES", "").strip()
    if not text:
        return physical_memory()
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise InvalidParameterError(
            f"HNSW_NUMBA_MAX_BYTES must be a non-negative integer number of bytes, got {text!r}")
    return value or physical_memory()


def check_allocation(nbytes: int, what: str) -> None:
    """Raise CapacityError if ``nbytes`` exceeds the machine's physical memory.

    ``HNSW_NUMBA_MAX_BYTES`` (an integer number of bytes; 0 or unset: physical memory)
    overrides the limit (e.g. to allow memory-mapped stores larger than RAM, or to cap a
    service below it); any other value raises InvalidParameterError.
    """
    limit = max_bytes()
    if nbytes > limit:
        raise CapacityError(
            f"{what} would need {readable_bytes(nbytes)}, more than the {readable_bytes(limit)} "
            "available; lower max_nodes / k / batch size, or set HNSW_NUMBA_MAX_BYTES"
        )


def check_results(n: int, k: int) -> None:
    """Raise CapacityError (as :func:`check_allocation`) if the results of ``n`` queries x ``k``
    (:data:`RESULT_ENTRY_BYTES` each) exceed the limit, before any of them is allocated."""
    check_allocation(n * k * RESULT_ENTRY_BYTES, f"results for {n:,} queries x k={k:,}")


def capacity_for(declared: int, node_count: int) -> int:
    """The capacity a load allocates for a file that declares capacity ``declared`` and holds
    ``node_count`` rows.

    A file records its capacity (a save's, hnswlib's ``max_elements``), which a hostile or
    edited file can set far beyond the rows it holds (a 3,000-row save claiming 150 million).
    A load honours it up to ``max(2 * node_count, node_count + 65536)``; room beyond that
    comes back on demand (``insert(..., grow=True)``, ``resize``, ``store.resize``).
    """
    return max(node_count, min(declared, max(2 * node_count, node_count + 65536)))
