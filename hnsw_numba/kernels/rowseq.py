"""Sequence numbers of rows rewritten in place, for readers that take no lock.

A row rewrite (``set`` of a live key) is bracketed by :func:`mark_rows` and
:func:`publish_rows`: each stores the rewrite's number in ``seq`` (int64, one per NodeId),
the first before the row is written, the second after. A reader that took the global
count ``s0`` before reading rows asks :func:`rows_rewritten` which of its results a rewrite
may have torn. The fences order those stores and loads against the row writes and reads,
which are plain stores and loads (NumPy's on the writer side, any kernel's on the reader
side): see :mod:`hnsw_numba.core.rowwrites` for the argument.
"""

from __future__ import annotations

import numpy as np

from .atomics import fence_acquire, fence_release
from .jit import kernel

__all__ = ["acquire_fence", "mark_rows", "publish_rows", "rows_rewritten"]


@kernel
def acquire_fence():
    """:func:`~hnsw_numba.kernels.atomics.fence_acquire` for Python callers: loads made
    before the call (the global count) are ordered before loads made after it (rows)."""
    fence_acquire()


@kernel
def mark_rows(seq, nids, s):
    """``seq[nids] = s`` (``s`` odd: a rewrite begins), then a release fence, so the
    numbers are visible before any store of the rows that follows."""
    for i in range(nids.shape[0]):
        seq[nids[i]] = s
    fence_release()


@kernel
def publish_rows(seq, nids, s):
    """A release fence, then ``seq[nids] = s`` (``s`` even: the rewrite ended): the rows
    written before the call are visible before the numbers."""
    fence_release()
    for i in range(nids.shape[0]):
        seq[nids[i]] = s


@kernel
def rows_rewritten(seq, ids, s0):
    """``bool`` per element of ``ids`` (int32 NodeIds, -1 padding): a rewrite of that row
    began after the count ``s0`` was read, or was running then (``s0`` odd).

    Starts with an acquire fence, so the rows the caller read before the call are ordered
    before the numbers read here.
    """
    fence_acquire()
    out = np.zeros(ids.shape[0], np.bool_)
    floor = s0 - (s0 & 1)  # a rewrite running at s0 numbered its row s0
    for i in range(ids.shape[0]):
        v = ids[i]
        if 0 <= v < seq.shape[0] and seq[v] > floor:
            out[i] = True
    return out
