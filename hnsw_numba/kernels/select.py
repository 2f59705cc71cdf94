"""Neighbour selection: hnswlib's heuristic (``getNeighborsByHeuristic2``).

A candidate is kept only if it is closer to the base point than to every neighbour kept
so far, which spreads links over directions instead of clustering them; this is what
keeps HNSW navigable on clustered data.
"""

from __future__ import annotations

import numpy as np

from .jit import helper
from .distances import dist_pair
from .prefetch import prefetch

__all__ = ["select_heuristic", "keep_live"]


@helper
def select_heuristic(metric, rows, cand_d, cand_i, n, max_keep, out):
    """Select up to ``max_keep`` of the ``n`` candidates (sorted ascending by distance).

    Parameters
    ----------
    cand_d, cand_i : float32[>= n], int32[>= n]
        Candidate distances to the base point and their NodeIds, nearest first (equal
        distances newest first: ``heap.sort_pairs``'s order, hnswlib's).
    out : int32[>= max_keep]
        Receives the kept NodeIds, nearest first.

    Returns
    -------
    int
        Number kept. Fewer than ``max_keep`` candidates are all kept, as in hnswlib.
    """
    if n < max_keep:
        for j in range(n):
            out[j] = cand_i[j]
        return n
    kept = np.int64(0)
    idx = np.int64(0)
    data0 = rows[0]
    while idx < n and kept < max_keep:
        e = cand_i[idx]
        de = cand_d[idx]
        if idx + 1 < n:  # the next candidate's row loads during this one's distances
            prefetch(data0, np.uint32(cand_i[idx + 1]))
        # a flag loop rather than `break`: early exits keep LLVM from pruning the
        # reference-count pairs around each inlined distance call
        r = np.int64(0)
        while r < kept and dist_pair(metric, rows, out[r], e) >= de:
            r += 1
        if r == kept:
            out[kept] = e
            kept += 1
        idx += 1
    return kept


@helper
def keep_live(tombstones, cand, n_cand, out, kept, max_c):
    """Let pruned live candidates displace deleted ones in a shrunk list ``out[:kept]``.

    The heuristic drops a candidate that a kept node "covers"; a deleted node covers
    without ever linking to the newcomers, so after heavy deletion it strips every back
    link of new nodes and leaves them unreachable. When a deleted node is among the
    ``n_cand`` candidates (nearest first), each pruned live one takes a free slot or the
    farthest deleted one's; without deleted candidates nothing changes (the build stays
    hnswlib's). Returns the new count.
    """
    dead = False
    for t in range(n_cand):
        if tombstones[cand[t]] != 0:
            dead = True
            break
    if not dead:
        return kept
    for t in range(n_cand):
        c = cand[t]
        if tombstones[c] != 0:
            continue
        present = False
        for j in range(kept):
            if out[j] == c:
                present = True
                break
        if present:
            continue
        if kept < max_c:
            out[kept] = c
            kept += 1
            continue
        j = kept - 1
        while j >= 0 and tombstones[out[j]] == 0:
            j -= 1
        if j < 0:
            break
        out[j] = c
    return kept
