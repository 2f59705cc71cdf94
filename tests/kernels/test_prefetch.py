"""The software prefetch intrinsics: they compile, read nothing and ask for the right lines."""

from __future__ import annotations

import numba
import numpy as np

from hnsw_numba.kernels.prefetch import prefetch, prefetch_at, prefetch_lines


@numba.njit
def _touch_every_row(links, nbytes):
    for i in range(links.shape[0]):
        prefetch(links, i)
        prefetch_at(links, i, 64)
        prefetch_lines(links, i, 0, nbytes)
        prefetch_lines(links, i, 128, nbytes)
    return links.shape[0]


def test_prefetching_every_row_runs_and_changes_nothing() -> None:
    links = np.arange(33 * 7, dtype=np.int32).reshape(7, 33)
    before = links.copy()
    for nbytes in (1, 4, 64, 65, 132):
        assert _touch_every_row(links, np.int64(nbytes)) == 7
    np.testing.assert_array_equal(links, before)


def test_prefetch_lines_asks_for_every_line_a_row_spans() -> None:
    """The offsets of ``prefetch_lines``'s loop (``first``, ``first + 64``, ... within ``nbytes +
    60``, the last one moved to ``nbytes - 1``; its compiled form holds the clamp, the offsets are
    mirrored here) reach every 64-byte line of a 4-byte-aligned row from the one holding byte
    ``first`` to its last."""
    _touch_every_row(np.zeros((2, 33), np.int32), np.int64(132))
    llvm_ir = next(iter(_touch_every_row.inspect_llvm().values()))
    assert "llvm.prefetch" in llvm_ir and ("select" in llvm_ir or "llvm.smin" in llvm_ir)  # the clamped offset
    for nbytes in range(4, 1025, 4):
        for first in (0, 128):
            if first >= nbytes:
                continue
            offsets = [min(o, nbytes - 1) for o in range(first, nbytes + 60, 64)]
            for start in range(0, 64, 4):
                spanned = set(range((start + first) // 64, (start + nbytes - 1) // 64 + 1))
                assert {(start + o) // 64 for o in offsets} == spanned, (nbytes, first, start)
