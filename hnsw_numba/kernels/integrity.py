"""Graph invariant checks (hnswlib ``checkIntegrity``, but returning what broke)."""

from __future__ import annotations

import numpy as np

from .jit import helper, kernel
from .layout import COUNT_MASK, H_DELETED, H_ENTRY, H_M, H_MAX_LEVEL, H_NODES, H_UPPER_USED, MAX_LEVEL

__all__ = [
    "check_graph_kernel",
    "INTEGRITY_MESSAGES",
    "GRAPH_OK",
    "BAD_NODE_COUNT",
    "BAD_LEVEL",
    "BAD_UPPER_OFFSET",
    "TOO_MANY_LINKS",
    "BAD_NEIGHBOUR_ID",
    "SELF_LOOP",
    "DUPLICATE_NEIGHBOUR",
    "NEIGHBOUR_LACKS_LEVEL",
    "BAD_ENTRY_POINT",
    "BAD_MAX_LEVEL",
    "BAD_DELETED_COUNT",
]

#: ``check_graph_kernel`` codes: 0 when every invariant holds, else the first defect found.
GRAPH_OK = 0
BAD_NODE_COUNT = 1
BAD_LEVEL = 2
BAD_UPPER_OFFSET = 3
TOO_MANY_LINKS = 4
BAD_NEIGHBOUR_ID = 5
SELF_LOOP = 6
DUPLICATE_NEIGHBOUR = 7
NEIGHBOUR_LACKS_LEVEL = 8
BAD_ENTRY_POINT = 9
BAD_MAX_LEVEL = 10
BAD_DELETED_COUNT = 11

INTEGRITY_MESSAGES = {
    BAD_NODE_COUNT: "node count in header out of range",
    BAD_LEVEL: "level out of range",
    BAD_UPPER_OFFSET: "upper-level offset inconsistent with level",
    TOO_MANY_LINKS: "link count above the level's maximum degree",
    BAD_NEIGHBOUR_ID: "neighbour id out of range",
    SELF_LOOP: "self loop",
    DUPLICATE_NEIGHBOUR: "duplicate neighbour",
    NEIGHBOUR_LACKS_LEVEL: "link to a node that does not have this level",
    BAD_ENTRY_POINT: "entry point invalid",
    BAD_MAX_LEVEL: "max level does not match the entry point / highest level",
    BAD_DELETED_COUNT: "deleted count does not match the tombstones",
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
            return BAD_NEIGHBOUR_ID
        if nb == node:
            return SELF_LOOP
        if level > 0 and levels[nb] < level:
            return NEIGHBOUR_LACKS_LEVEL
        h = nb & 1023
        word = h >> 6
        bit = np.uint64(1) << np.uint64(h & 63)
        if bits[word] & bit:
            for t in range(1, j):
                if lists[row, base + t] == nb:
                    return DUPLICATE_NEIGHBOUR
        bits[word] |= bit
    return GRAPH_OK


@kernel
def check_graph_kernel(g):
    """Return ``(code, node, level)``: ``GRAPH_OK`` or the first defect's code, where it is."""
    n = g.header[H_NODES]
    cap = g.levels.shape[0]
    if n < 0 or n > cap:
        return BAD_NODE_COUNT, -1, -1
    m = g.header[H_M]
    m0 = g.links0.shape[1] - 1
    used = g.header[H_UPPER_USED]
    top = -1
    deleted = 0
    # levels and offsets first, so the link pass can trust levels[nb] for any nb < n
    for i in range(n):
        lev = np.int64(g.levels[i])
        if lev < 0 or lev > MAX_LEVEL:
            return BAD_LEVEL, i, lev
        if lev > top:
            top = lev
        if g.tombstones[i] != 0:
            deleted += 1
        start = g.upper_start[i]
        if lev == 0:
            if start != -1:
                return BAD_UPPER_OFFSET, i, lev
        elif start < 0 or start + lev * (m + 1) > used or start + lev * (m + 1) > g.upper_links.shape[0]:
            return BAD_UPPER_OFFSET, i, lev
    upper = g.upper_links.reshape(1, -1)
    bits = np.zeros(16, np.uint64)  # the duplicate filter, cleared per list
    for i in range(n):
        lev = np.int64(g.levels[i])
        cnt = g.links0[i, 0] & COUNT_MASK
        if cnt > m0:
            return TOO_MANY_LINKS, i, 0
        code = _list_problem(g.links0, np.int64(i), np.int64(0), cnt, i, n, g.levels, np.int64(0), bits)
        if code:
            return code, i, 0
        for level in range(1, lev + 1):
            base = g.upper_start[i] + (level - 1) * (m + 1)
            cnt = upper[0, base] & COUNT_MASK
            if cnt > m:
                return TOO_MANY_LINKS, i, level
            code = _list_problem(upper, np.int64(0), np.int64(base), cnt, i, n, g.levels, np.int64(level), bits)
            if code:
                return code, i, level
    ep = g.header[H_ENTRY]
    if n == 0:
        if ep != -1:
            return BAD_ENTRY_POINT, ep, -1
    else:
        if ep < 0 or ep >= n:
            return BAD_ENTRY_POINT, ep, -1
        if g.header[H_MAX_LEVEL] != top or np.int64(g.levels[ep]) != top:
            return BAD_MAX_LEVEL, ep, top
    if deleted != g.header[H_DELETED]:
        return BAD_DELETED_COUNT, -1, deleted
    return GRAPH_OK, -1, -1
