"""Large arrays on transparent huge pages.

A search at a million vectors reads rows and link lists scattered over hundreds of megabytes:
on 4 KiB pages nearly every row read also misses the TLB, and the page walk costs another
trip to memory. Where Linux offers transparent huge pages only to mappings that ask for them
(``/sys/kernel/mm/transparent_hugepage/enabled`` = ``madvise``, a common default), the arrays
the walks read (the vectors, level-0 links, visited tags) are allocated here: an anonymous
private mapping advised ``MADV_HUGEPAGE``, its array starting on a 2 MiB boundary
(docs/design.md, "Huge pages for the walks' arrays"). Pages are still faulted in on first
touch and start zeroed, as ``np.zeros`` gives them.

Only whole 2 MiB pages inside the array are advised, so resident memory grows as with small
pages (an array's untouched tail stays unallocated); a last page the array fills at least
``TAIL_SHARE`` of is advised whole. Arrays that hold no page so advised (under ``HUGE_MIN``
bytes), systems without ``madvise`` and processes with ``HNSW_NUMBA_HUGE_PAGES=0`` in the
environment (read at each allocation) get plain ``np.zeros``.
"""

from __future__ import annotations

import mmap
import os
from typing import Any

import numpy as np

__all__ = ["zeros", "full", "HUGE_PAGE", "HUGE_MIN", "TAIL_SHARE", "on_huge_pages"]

#: The x86-64 and arm64 (4 KiB base) transparent huge page size.
HUGE_PAGE = 2 << 20
#: A last, partial huge page is advised when the array covers at least this share of it.
TAIL_SHARE = 0.875
#: Arrays from this many bytes ask for huge pages (the visited tags of a million nodes, 1.9 MiB, do).
HUGE_MIN = int(TAIL_SHARE * HUGE_PAGE)

_ADVICE = getattr(mmap, "MADV_HUGEPAGE", None)


def zeros(shape: Any, dtype: Any) -> np.ndarray:
    """``np.zeros(shape, dtype)``, on huge pages where it is large enough and the OS offers them."""
    dtype = np.dtype(dtype)
    shape = (int(shape),) if np.ndim(shape) == 0 else tuple(int(s) for s in shape)
    count = int(np.prod(shape, dtype=np.int64))
    nbytes = count * dtype.itemsize
    if _ADVICE is None or nbytes < HUGE_MIN or os.environ.get("HNSW_NUMBA_HUGE_PAGES") == "0":
        return np.zeros(shape, dtype)
    try:
        mm = mmap.mmap(-1, nbytes + 2 * HUGE_PAGE, flags=mmap.MAP_PRIVATE)  # anonymous: zero pages; room to align and round up
    except (OSError, ValueError):  # no anonymous private mappings here
        return np.zeros(shape, dtype)
    start = np.frombuffer(mm, np.uint8, 1).ctypes.data
    offset = -start % HUGE_PAGE
    pages, tail = divmod(nbytes, HUGE_PAGE)
    if tail >= TAIL_SHARE * HUGE_PAGE:
        pages += 1  # at least one page: HUGE_MIN is the share of one
    try:
        mm.madvise(_ADVICE, offset, pages * HUGE_PAGE)
    except (OSError, ValueError):  # transparent huge pages disabled: small pages, same array
        pass
    return np.frombuffer(mm, dtype, count, offset).reshape(shape)


def full(shape: Any, fill: Any, dtype: Any) -> np.ndarray:
    """``np.full(shape, fill, dtype)`` through :func:`zeros`."""
    out = zeros(shape, dtype)
    if fill != 0:
        out.fill(fill)
    return out


def on_huge_pages(arr: np.ndarray) -> bool:
    """Whether ``arr``'s memory is a mapping :func:`zeros` advised (what was asked, not what the OS gave)."""
    base: Any = arr
    while isinstance(base, (np.ndarray, memoryview)):
        base = base.base if isinstance(base, np.ndarray) else base.obj
    return isinstance(base, mmap.mmap)
