"""Checks of a graph's arrays before any kernel walks them, in vectorised NumPy.

Loaders (Zarr saves, pickles) run :func:`check_loaded_graph` on what they read:
:func:`validate_graph`, then ``check_graph_kernel`` for what is cheaper to check in a loop
(self loops, duplicate neighbours); it names the first thing that is wrong.
"""

from __future__ import annotations

import numpy as np

from ..kernels.integrity import INTEGRITY_MESSAGES, check_graph_kernel
from ..kernels.layout import COUNT_MASK, H_DELETED, H_ENTRY, H_M, H_MAX_LEVEL, H_NODES, H_UPPER_USED, GraphArrays
from .config import MAX_LEVEL
from .errors import IndexFormatError

__all__ = ["stored_layout", "stored_dropped_ceiling", "stored_renamed", "validate_graph", "check_loaded_graph", "check_live_rows_written"]

_ROWS = 1 << 16  # rows per block of the neighbour checks: bounds the boolean temporaries


def _fail(where: str, msg: str) -> None:
    raise IndexFormatError(f"{where}: {msg}")


def stored_layout(header: np.ndarray, m: int, max_nodes: int, where: str) -> tuple[int, int, tuple]:
    """The node count and used upper-link words a stored graph's header declares, checked
    against its configuration, and ``(name, dtype, shape)`` of each array they size (what
    a loader must find before it makes room for them)."""
    n, used = int(header[H_NODES]), int(header[H_UPPER_USED])
    if int(header[H_M]) != m:
        _fail(where, f"header has m={int(header[H_M])}, config has m={m}")
    if not 0 <= n <= max_nodes:
        _fail(where, f"header has {n} nodes, outside [0, max_nodes={max_nodes}]")
    if not 0 <= used <= n * MAX_LEVEL * (m + 1):
        _fail(where, f"header has {used} upper-link words, impossible for {n} nodes")
    specs = (("levels", np.int8, (n,)), ("links0", np.int32, (n, 2 * m + 1)), ("upper_start", np.int64, (n,)),
             ("tombstones", np.uint8, (n,)), ("upper_links", np.int32, (used,)))
    return n, used, specs


def stored_renamed(value: object, tombstones: np.ndarray, n: int, where: str) -> set[int]:
    """Stored NodeIds ``rename_deleted`` gave new keys not inserted since: distinct ints in
    ``[0, n)``, every one deleted. ``None`` (a save or pickle that predates the record) is
    every deleted NodeId: which of them a rename gave another key is unknown, and ``undelete``
    of such a key would answer it with the old key's vector."""
    if value is None:
        return set(np.flatnonzero(tombstones[:n]).tolist())
    if not isinstance(value, list) or any(type(v) is not int for v in value):
        _fail(where, f"renamed must be a list of NodeIds, got {value!r:.80}")
    ids = np.asarray(value, np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= n or np.unique(ids).size != ids.size or not tombstones[ids].all()):
        _fail(where, "renamed must list distinct deleted NodeIds below the node count")
    return set(value)


def stored_dropped_ceiling(value: object, where: str) -> int:
    """A stored ``dropped_ceiling`` (0 where a save or pickle predates it): an int >= 0."""
    if type(value) is not int or value < 0:
        _fail(where, f"dropped_ceiling must be an int >= 0, got {value!r}")
    return value


def _check_ids(where: str, what: str, owners: np.ndarray, levels_of_list: np.ndarray | int,
               lists: np.ndarray, counts: np.ndarray, n: int, levels: np.ndarray) -> None:
    """Ids in ``lists[:, :count]`` lie in [0, n) and reach the list's level."""
    # Slots past a count hold zeros or stale ids, so a whole-block test is almost always
    # clean; only then is the per-slot mask needed (as uint32, negatives compare >= n).
    valid = None
    oob = lists.view(np.uint32) >= n
    if oob.any():
        valid = np.arange(lists.shape[1])[None, :] < counts[:, None]
        bad = valid & oob
        if bad.any():
            r, c = np.argwhere(bad)[0]
            _fail(where, f"{what}: neighbour id {int(lists[r, c])} of node {int(owners[r])} is out of range [0, {n})")
    if np.isscalar(levels_of_list) and levels_of_list == 0:
        return  # every node reaches level 0
    if valid is None:
        valid = np.arange(lists.shape[1])[None, :] < counts[:, None]
    target_level = levels[np.where(valid, lists, 0)]
    need = levels_of_list if np.isscalar(levels_of_list) else levels_of_list[:, None]
    low = valid & (target_level < need)
    if low.any():
        r, c = np.argwhere(low)[0]
        lev = need if np.isscalar(need) else int(need[r, 0])
        _fail(where, f"{what}: node {int(owners[r])} links on level {lev} to node {int(lists[r, c])}, "
                     f"whose top level is {int(target_level[r, c])}")


def validate_graph(a: GraphArrays, n: int, m: int, used: int, where: str) -> None:
    """Check levels, tombstones, upper offsets, degrees, neighbour ids and the entry point.

    ``a`` holds the loaded prefix (``n`` nodes, ``used`` upper-link words); shapes and
    dtypes were checked while reading.
    """
    levels = a.levels[:n].astype(np.int64)
    if n and (levels.min() < 0 or levels.max() > MAX_LEVEL):
        i = int(np.argmax((levels < 0) | (levels > MAX_LEVEL)))
        _fail(where, f"levels: node {i} has level {int(levels[i])}, outside [0, {MAX_LEVEL}]")
    tomb = a.tombstones[:n]
    if n and tomb.max() > 1:
        _fail(where, f"tombstones: node {int(np.argmax(tomb > 1))} has value {int(tomb.max())}, expected 0 or 1")
    if int(tomb.sum(dtype=np.int64)) != int(a.header[H_DELETED]):
        _fail(where, f"header: deleted count {int(a.header[H_DELETED])} but {int(tomb.sum())} tombstones")

    # upper_start: -1 exactly for level-0 nodes; blocks inside the used words, disjoint
    start = a.upper_start[:n]
    upper = levels > 0
    if (start[~upper] != -1).any():
        i = int(np.flatnonzero(~upper & (start != -1))[0])
        _fail(where, f"upper_start: level-0 node {i} has offset {int(start[i])}, expected -1")
    nodes = np.flatnonzero(upper)
    s, lv = start[nodes], levels[nodes]
    block = m + 1
    end = s + lv * block
    out = (s < 0) | (end > used)
    if out.any():
        i = int(nodes[np.argmax(out)])
        _fail(where, f"upper_start: node {i}'s blocks [{int(start[i])}, {int(start[i] + levels[i] * block)}) "
                     f"fall outside the {used} used upper-link words")
    order = np.argsort(s, kind="stable")
    overlap = s[order][1:] < end[order][:-1]
    if overlap.any():
        i = int(nodes[order][1:][np.argmax(overlap)])
        _fail(where, f"upper_start: node {i}'s blocks overlap another node's")

    # level 0, in row blocks
    m0 = a.links0.shape[1] - 1
    for r0 in range(0, n, _ROWS):
        rows = a.links0[r0 : min(r0 + _ROWS, n)]
        counts = rows[:, 0] & COUNT_MASK
        if (counts > m0).any():
            i = r0 + int(np.argmax(counts > m0))
            _fail(where, f"links0: node {i} has {int(counts.max())} level-0 links, more than {m0}")
        _check_ids(where, "links0", np.arange(r0, r0 + rows.shape[0]), 0, rows[:, 1:], counts, n, levels)

    # upper levels: one row per (node, level) block
    if nodes.shape[0]:
        total = int(lv.sum())
        owner = np.repeat(nodes, lv)
        first = np.cumsum(lv) - lv
        level = np.arange(total) - np.repeat(first, lv) + 1
        base = np.repeat(s, lv) + (level - 1) * block
        for b0 in range(0, total, _ROWS):
            sl = slice(b0, min(b0 + _ROWS, total))
            counts = a.upper_links[base[sl]] & COUNT_MASK
            if (counts > m).any():
                j = int(np.argmax(counts > m))
                _fail(where, f"upper_links: node {int(owner[sl][j])} has {int(counts[j])} links on level "
                             f"{int(level[sl][j])}, more than {m}")
            lists = a.upper_links[base[sl, None] + 1 + np.arange(m)[None, :]]
            _check_ids(where, "upper_links", owner[sl], level[sl], lists, counts, n, levels)

    entry, top = int(a.header[H_ENTRY]), int(a.header[H_MAX_LEVEL])
    if n == 0:
        if entry != -1 or top != -1:
            _fail(where, f"header: empty graph with entry point {entry} / max level {top}, expected -1 / -1")
        return
    if not 0 <= entry < n:
        _fail(where, f"header: entry point {entry} out of range [0, {n})")
    if top != int(levels.max()) or int(levels[entry]) != top:
        _fail(where, f"header: max level {top} but the entry point has level {int(levels[entry])} "
                     f"and the highest level is {int(levels.max())}")



def check_loaded_graph(a: GraphArrays, n: int, m: int, used: int, where: str) -> None:
    """:func:`validate_graph`, then ``check_graph_kernel``; IndexFormatError naming the first fault."""
    validate_graph(a, n, m, used, where)
    code, node, level = check_graph_kernel(a)
    if code:
        _fail(where, f"{INTEGRITY_MESSAGES[code]} (node {node}, level {level})")

def check_live_rows_written(tombstones: np.ndarray, written: np.ndarray, n: int, where: str) -> None:
    """Every live node of ``n`` has its row marked written in the store (``written``).

    The store's ``written`` mask says which rows hold a vector, and ``get`` (None),
    ``compact`` and ``reorder`` (refused as "not this index's store") and pickling (rows
    past the last written one are dropped) rely on it; loads of a file or a pickle check it.
    """
    unwritten = (written[:n] == 0) & (tombstones[:n] == 0)
    if unwritten.any():
        _fail(where, f"live node {int(unwritten.argmax())} has no vector (its written flag is 0)")
