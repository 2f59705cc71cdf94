"""Graph invariant checks (hnswlib ``checkIntegrity``, but returning what broke)."""

from __future__ import annotations

import numpy as np

from ._jit import kernel
from .rows import H_DELETED, H_ENTRY, H_M, H_MAX_LEVEL, H_NODES, H_UPPER_USED

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
        for level in range(lev + 1):
            if level == 0:
                base = 0
                lst = g.links0[i]
                max_c = m0
            else:
                base = start + (level - 1) * (m + 1)
                lst = g.upper_links[base : base + m + 1]
                max_c = m
            cnt = lst[0] & 0xFFFF
            if cnt > max_c:
                return 4, i, level
            for j in range(1, cnt + 1):
                nb = lst[j]
                if nb < 0 or nb >= n:
                    return 5, i, level
                if nb == i:
                    return 6, i, level
                if g.levels[nb] < level:
                    return 8, i, level
                for t in range(1, j):
                    if lst[t] == nb:
                        return 7, i, level
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
