"""Refuse absurd allocations up front, with a clear error instead of a MemoryError later."""

from __future__ import annotations

import os
from functools import cache

from .errors import CapacityError

__all__ = ["physical_memory", "check_allocation", "capacity_for"]


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


def capacity_for(declared: int, node_count: int) -> int:
    """The capacity a load allocates for a file that declares capacity ``declared`` and holds
    ``node_count`` rows.

    A file records its capacity (a save's, hnswlib's ``max_elements``), which a hostile or
    edited file can set far beyond the rows it holds (a 3,000-row save claiming 150 million).
    A load honours it up to ``max(2 * node_count, node_count + 65536)``; room beyond that
    comes back on demand (``insert(..., grow=True)``, ``resize``, ``store.resize``).
    """
    return max(node_count, min(declared, max(2 * node_count, node_count + 65536)))
