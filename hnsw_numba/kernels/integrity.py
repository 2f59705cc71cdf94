"""Graph invariant checks (hnswlib ``checkIntegrity``, but returning what broke)."""

from __future__ import annotations

import numpy as np

from .jit import helper, kernel
from .layout import H_DELETED, H_ENTRY, H_M, H_MAX_LEVEL, H_NODES, H_UPPER_USED

__all__ = ["check_graph_kernel", "INTEGRITY_MESSAGES"]

INTEGRITY_MESSAGES = {
    1: "node count in header out of range",
    2: "level out of range",
    3: "upper-level offset inconsistent with level",
    4: "link count above the level's maximum degree",
    5: "neighbour id out of range",
    6: "self loop",
    7: "duplicate neighbour",
    8: "link to a node that does not have this level",
    9: "entry point invalid",
    10: "max level does not match the entry point / highest level",
    11: "deleted count does not match the tombstones",
}


@helper
def _list_problem(lists, row, base, cnt, node, n, levels, level, bits):
    """Code of the first defect in the list ``lists[row, base + 1 : base + 1 + cnt]``, else 0.

    2-D indexing with an offset (no per-list views); level 0 passes ``links0`` (which may be
    a strided view over an hnswlib file) and its row, upper levels ``upper_links[None]``.

    Duplicates are found with a 1,024-bit filter on the low id bits (one scan of the list
    only for ids whose bit is already set) instead of comparing every pair.
    """
    bits[:] = 0
    for j in range(1, cnt + 1):
        nb = lists[row, base + j]
        if nb < 0 or nb >= n:
            return 5
        if nb == node:
            return 6
        if level > 0 and levels[nb] < level:
            return 8
        h = nb & 1023
        word = h >> 6
        bit = np.uint64(1) << np.uint64(h & 63)
        if bits[word] & bit:
            for t in range(1, j):
                if lists[row, base + t] == nb:
                    return 7
        bits[word] |= bit
    return 0


@kernel
def check_graph_kernel(g):
    """Return ``(code, node, level)``; code 0 means every invariant holds."""
    n = g.header[H_NODES]
    cap = g.levels.shape[0]
    if n < 0 or n > cap:
        return 1, -1, -1
    m = g.header[H_M]
    m0 = g.links0.shape[1] - 1
    used = g.header[H_UPPER_USED]
    top = -1
    deleted = 0
    # levels and offsets first, so the link pass can trust levels[nb] for any nb < n
    for i in range(n):
        lev = np.int64(g.levels[i])
        if lev < 0 or lev > 31:
            return 2, i, lev
        if lev > top:
            top = lev
        if g.tombstones[i] != 0:
            deleted += 1
        start = g.upper_start[i]
        if lev == 0:
            if start != -1:
                return 3, i, lev
        elif start < 0 or start + lev * (m + 1) > used or start + lev * (m + 1) > g.upper_links.shape[0]:
            return 3, i, lev
    upper = g.upper_links.reshape(1, -1)
    bits = np.zeros(16, np.uint64)  # the duplicate filter, cleared per list
    for i in range(n):
        lev = np.int64(g.levels[i])
        cnt = g.links0[i, 0] & 0xFFFF
        if cnt > m0:
            return 4, i, 0
        code = _list_problem(g.links0, np.int64(i), np.int64(0), cnt, i, n, g.levels, np.int64(0), bits)
        if code:
            return code, i, 0
        for level in range(1, lev + 1):
            base = g.upper_start[i] + (level - 1) * (m + 1)
            cnt = upper[0, base] & 0xFFFF
            if cnt > m:
                return 4, i, level
            code = _list_problem(upper, np.int64(0), np.int64(base), cnt, i, n, g.levels, np.int64(level), bits)
            if code:
                return code, i, level
    ep = g.header[H_ENTRY]
    if n == 0:
        if ep != -1:
            return 9, ep, -1
    else:
        if ep < 0 or ep >= n:
            return 9, ep, -1
        if g.header[H_MAX_LEVEL] != top or np.int64(g.levels[ep]) != top:
            return 10, ep, top
    if deleted != g.header[H_DELETED]:
        return 11, -1, deleted
    return 0, -1, -1
