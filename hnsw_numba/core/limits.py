"""Refuse absurd allocations up front, with a clear error instead of a MemoryError later."""

from __future__ import annotations

import os
from functools import cache

from .errors import CapacityError

__all__ = ["physical_memory", "check_allocation"]


@cache  # asked before every batch's result arrays: the machine's memory does not change
def physical_memory() -> int:
    """Bytes of physical memory on this machine (a generous upper bound for one allocation)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 1 << 46


def check_allocation(nbytes: int, what: str) -> None:
    """Raise CapacityError if ``nbytes`` exceeds the machine's physical memory.

    ``HNSW_NUMBA_MAX_BYTES`` overrides the limit (e.g. to allow memory-mapped stores larger
    than RAM, or to cap a service below it).
    """
    limit = int(os.environ.get("HNSW_NUMBA_MAX_BYTES", 0)) or physical_memory()
    if nbytes > limit:
        raise CapacityError(
            f"{what} would need {nbytes / 2**30:,.1f} GiB, more than the {limit / 2**30:,.1f} GiB "
            "available; lower max_nodes / k / batch size, or set HNSW_NUMBA_MAX_BYTES"
        )
