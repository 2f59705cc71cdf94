"""Keeping a long-lived index healthy: statistics, repair around deleted nodes, compaction.

The kernels are in :mod:`hnsw_numba.kernels.maintenance` and ``kernels.integrity``. ``Hnsw``
holds the exclusive lock around :func:`repair_links` and :func:`compact_arrays` and installs
what compaction builds; :func:`check_integrity` takes it itself.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..kernels.insert import insert_kernel
from ..kernels.integrity import INTEGRITY_MESSAGES, check_graph_kernel
from ..kernels.maintenance import dead_link_nodes_kernel, degree_kernel, reach_parents_kernel, reaching_kernel, repair_kernel
from ..kernels.layout import COUNT_MASK, H_ENTRY, H_NODES
from .errors import IntegrityError, InvalidParameterError
from .batch import search_prepared
from .graph import Graph, draw_levels
from .interrupts import held_interrupts
from .keymap import KeyMap
from .parallel import resolve_threads, run_parallel
from .reorder import reorder_arrays
from .state import IndexState
from .store_base import decode_rows

__all__ = ["index_stats", "repair_links", "reconnect_lost", "compact_arrays", "compact"]


def index_stats(state: IndexState) -> dict[str, Any]:
    """Counts and histograms describing the graph's health (see ``Hnsw.stats``).

    Holds the lock shared (no growth or compaction swaps the arrays meanwhile); inserts run
    on, so it counts the nodes there were when it started (the kernels, which read the
    count again, may see more: their arrays are cut to it)."""
    with state.lock.shared():
        return _stats(state)


def _stats(state: IndexState) -> dict[str, Any]:
    g = state.graph
    a = g.arrays
    n = int(a.header[H_NODES])
    levels = a.levels[:n]
    live = a.tombstones[:n] == 0
    root = root_node(a, n, searched=True) if n else -1
    reach = reach_parents_kernel(a, np.int64(root))[:n] >= 0 if n else np.zeros(0, bool)
    back = reaching_kernel(a, np.int64(root))[:n] if n else np.zeros(0, np.uint8)
    deg0 = degree_kernel(a, 0)[:n] if n else np.zeros(0, np.int32)
    dead_links = 0
    if n:
        cols = np.arange(1, a.links0.shape[1])
        valid = cols[None, :] <= (a.links0[:n, :1] & COUNT_MASK)
        targets = np.where(valid, a.links0[:n, 1:], 0)
        dead_links = int((valid & (a.tombstones[targets] != 0) & live[:, None]).sum())
    return {
        "live": int(live.sum()),
        "deleted": int(n - live.sum()),
        "node_count": n,
        "capacity": g.capacity,
        "max_level": g.max_level,
        "entry_point": g.entry_point,
        "level_histogram": np.bincount(levels.astype(np.int64), minlength=1).tolist() if n else [],
        "degree_histogram_level0": np.bincount(deg0[live], minlength=a.links0.shape[1]).tolist() if n else [],
        "live_links_to_deleted_level0": dead_links,
        "unreachable_live": int((live & (reach == 0)).sum()),
        # where a descent lands (level 1 and above) without a level-0 path to the root: a
        # search landing there misses what only the root's side reaches
        "landings_cut_off": int(((levels >= 1) & (back == 0)).sum()),
        "bytes": {**g.nbytes(), "keys": state.keys.nbytes()},
    }


def root_node(a: Any, n: int, searched: bool = False) -> int:
    """Where level-0 reachability is counted from: the entry point, or while it is deleted
    (its live in-links are repaired away) the live node on the highest level (the lowest
    NodeId of them); -1 without an entry point. ``searched``: only a live node the deleted
    entry point reaches at level 0 (every search descends from it), else the entry point."""
    entry = int(a.header[H_ENTRY])
    if entry < 0 or a.tombstones[entry] == 0:
        return entry
    live = a.tombstones[:n] == 0
    if searched:
        live &= reach_parents_kernel(a, np.int64(entry))[:n] >= 0
    live = np.flatnonzero(live)
    return int(live[np.argmax(a.levels[live])]) if live.shape[0] else entry


def repair_links(state: IndexState, store: Any, rows: tuple, num_threads: int | None = None) -> int:
    """Re-link every live node that links to a deleted one, then make every live node
    reachable from the entry point (:func:`reconnect_lost`); returns the lists rewritten.

    The caller holds the exclusive lock.
    """
    if state.node_count == 0 or state.graph.entry_point < 0:
        return 0
    return _relink_dead(state, rows, num_threads) + reconnect_lost(state, store)


def reconnect_lost(state: IndexState, store: Any, rounds: int = 32) -> int:
    """Link every live node that no level-0 path from the entry point reaches, and give
    every node on level 1 or above (where a search's descent lands) a level-0 path to the
    entry point; returns the lists changed.

    The heuristic's pruning can drop a node's last in-link (after heavy deletion often;
    at small ``m`` even in a fresh build). Each lost node is appended to the level-0
    list of the nearest reachable node (found by a search) that has a free slot, else of a
    reachable node farther off with one. Where every list is full, the first half of the
    rounds replaces, in the nearest node that has given fewer than ``m0 // 4`` links so far,
    a link whose node reachable nodes link to more than once, else that node's last link
    (a node so lost is taken in the next round); the links stay near, but where every list
    near many copies is full such chains outlast the rounds. The later rounds replace only
    links off the spanning tree of the walk from the entry point (``reach_parents_kernel``),
    so none loses a node, and one of them links every lost node: such a link exists while
    ``m0 >= 2`` (the reachable nodes' full lists hold more links than the tree's one per
    node). Replacing only those from the first round lowered recall@10 after repair on 3,000
    x 16 cosine rows at m 3, a third of them copies of five vectors, by 0.03-0.20 (five
    seeds). The lost node links back where it has room. The caller holds the exclusive lock.

    Every live node reachable has a price at very small ``m``: on 8,000 x 16 inner-product
    data with a third removed, recall@10 at ef 64 after repair was 0.904 at m 4 (0.934
    before; keeping the links of hubs, 1,516 items stayed lost at 0.928), 0.980 at m 6
    (0.979) and 0.994 at m 8 (0.990); without the per-node cap, 0.875 at m 4.
    """
    changed = 0
    # links of each reachable node given to lost ones: a few each, or hubs lose their routes
    replaced = np.zeros(state.graph.node_count, np.int64)
    for round_no in range(rounds):
        a = state.graph.arrays
        n = state.graph.node_count
        entry = root_node(a, n)  # a live node: no live node links to a deleted one
        if n == 0 or entry < 0:
            return changed
        parent = reach_parents_kernel(a, np.int64(entry))
        reach = parent >= 0
        lost = np.flatnonzero((a.tombstones[:n] == 0) & ~reach).astype(np.int32)
        if lost.shape[0] == 0:
            stuck = _stuck_landings(state, store, entry)
            if stuck == 0:
                return changed
            changed += stuck  # a replaced link may have lost a node: another round
            continue
        m0 = a.links0.shape[1] - 1
        queries = decode_rows(store, lost)[:, : state.config.dim]
        queries = np.ascontiguousarray(queries, np.float32)
        _, _, hits = search_prepared(state, store, queries, min(m0, n), ef=max(m0, 32), num_threads=1)
        room = _with_room(a, reach, n, m0)
        in_links = _reachable_in_links(a, reach, n)
        cap = max(1, m0 // 4)
        strict = round_no >= rounds // 2
        for i, (u, row) in enumerate(zip(lost.tolist(), hits.tolist())):
            near = [h for h in row if h >= 0 and h != u and reach[h]] or [entry]
            target = next((h for h in near if (a.links0[h, 0] & COUNT_MASK) < m0), None)
            if target is None and room.shape[0]:
                # a reachable node farther off with a free slot, before a replaced link
                # (copies of a few vectors fill every list near them)
                ids = room[(a.links0[room, 0] & COUNT_MASK) < m0]
                ids = ids[ids != u]
                if ids.shape[0]:
                    target = _nearest(state, store, ids, queries[i])
            slot = 0
            if target is None:
                fresh = [h for h in near if replaced[h] < cap] or near
                if not strict:
                    # a link whose node keeps another in-link, else the nearest's last: a node that
                    # loses its in-link so is taken in the next round
                    target, slot = next(((h, j) for h in fresh for j in range(m0, 0, -1) if in_links[a.links0[h, j]] > 1), (fresh[0], m0))
                else:
                    target, slot = next(((h, j) for h in fresh if (j := _off_tree_slot(a, parent, h)) > 0), (-1, 0))
                    if target < 0:  # none near: the nearest reachable live node that has one
                        ids = _with_off_tree(a, parent, n, replaced, cap)
                        ids = ids[ids != u]
                        target = _nearest(state, store, ids, queries[i]) if ids.shape[0] else near[0]
                        slot = _off_tree_slot(a, parent, target) or m0  # m0 < 2 only: the last link
                replaced[target] += 1
            cnt = int(a.links0[target, 0] & COUNT_MASK)
            if u in a.links0[target, 1 : 1 + cnt]:  # a lost node linked earlier in this pass links to it
                parent[u] = target
                reach[u] = True
                continue
            if cnt < m0:
                a.links0[target, 1 + cnt] = u
                a.links0[target, 0] = (a.links0[target, 0] & ~COUNT_MASK) | (cnt + 1)
            else:
                in_links[a.links0[target, slot]] -= 1
                a.links0[target, slot] = u
            in_links[u] += 1
            parent[u] = target  # on the tree now: later replacements keep this link
            reach[u] = strict  # strict rounds link lost nodes to those linked before them
            own = int(a.links0[u, 0] & COUNT_MASK)
            if own < m0 and target not in a.links0[u, 1 : 1 + own]:
                a.links0[u, 1 + own] = target
                a.links0[u, 0] = (a.links0[u, 0] & ~COUNT_MASK) | (own + 1)
            changed += 1
    return changed


def _off_tree_slot(a: Any, parent: np.ndarray, h: int) -> int:
    """The last slot of ``h``'s level-0 list whose link is not the tree link that reached
    its node (``parent``), 0 if every link is one: replacing it loses no node."""
    for j in range(int(a.links0[h, 0] & COUNT_MASK), 0, -1):
        if parent[a.links0[h, j]] != h:
            return j
    return 0


def _with_off_tree(a: Any, parent: np.ndarray, n: int, replaced: np.ndarray, cap: int, sample: int = 4096) -> np.ndarray:
    """Reachable live nodes holding a link off the tree (int32; those that have given fewer
    than ``cap`` links if any; a seeded sample of at most ``sample``)."""
    lists = a.links0[:n]
    valid = np.arange(1, lists.shape[1])[None, :] <= (lists[:, :1] & COUNT_MASK)
    off = valid & (parent[np.where(valid, lists[:, 1:], 0)] != np.arange(n, dtype=np.int32)[:, None])
    ids = np.flatnonzero(off.any(1) & (parent[:n] >= 0) & (a.tombstones[:n] == 0)).astype(np.int32)
    fresh = ids[replaced[ids] < cap]
    ids = fresh if fresh.shape[0] else ids
    if ids.shape[0] > sample:
        ids = np.sort(np.random.default_rng(0).choice(ids, sample, replace=False))
    return ids


def _stuck_landings(state: IndexState, store: Any, entry: int) -> int:
    """One round of giving every node a search's descent can land on (level 1 and above) a
    level-0 path to the entry point: a link to its nearest node that has one. Returns the
    lists changed (0: none is left without a path).

    From such a node the level-0 walk reaches what the entry point reaches; from one
    without it, items every check calls reachable were never returned (2 of 16 live items
    on a repaired inner-product index)."""
    a = state.graph.arrays
    n = state.graph.node_count
    back = reaching_kernel(a, np.int64(entry))
    stuck = np.flatnonzero((a.levels[:n] >= 1) & (back == 0)).astype(np.int32)
    if stuck.shape[0] == 0:
        return 0
    m0 = a.links0.shape[1] - 1
    rows = np.ascontiguousarray(decode_rows(store, stuck)[:, : state.config.dim], np.float32)
    _, _, hits = search_prepared(state, store, rows, min(m0, n), ef=max(m0, 32), num_threads=1)
    parent = reach_parents_kernel(a, np.int64(entry))
    changed = 0
    pending = []  # stuck nodes whose search found no node with a path (it landed where they are)
    for i, (u, row) in enumerate(zip(stuck.tolist(), hits.tolist())):
        own = a.links0[u, 1 : 1 + int(a.links0[u, 0] & COUNT_MASK)]
        if back[own].any():  # a node linked earlier in this pass gave it a path
            back[u] = 1
            continue
        target = next((h for h in row if h >= 0 and h != u and back[h]), -1)
        if target < 0:
            pending.append(i)
            continue
        _link_out(a, parent, u, own.shape[0], m0, target)
        back[u] = 1
        changed += 1
    if pending:
        # the nearest of a sample of live nodes with a path (by L2 over the rows; those this
        # pass gave one too): linked one a round, 136 of a region's 197 cut-off nodes were
        # still cut off when the rounds ran out
        ok = np.flatnonzero((back[:n] != 0) & (a.tombstones[:n] == 0)).astype(np.int32)
        if ok.shape[0] > 4096:
            ok = np.sort(np.random.default_rng(0).choice(ok, 4096, replace=False))
        if ok.shape[0] == 0:
            return changed
        cand = np.ascontiguousarray(decode_rows(store, ok)[:, : state.config.dim], np.float32)
        for i in pending:
            u = int(stuck[i])
            own = a.links0[u, 1 : 1 + int(a.links0[u, 0] & COUNT_MASK)]
            if back[own].any():
                continue
            d = ((cand - rows[i]) ** 2).sum(1)
            d[ok == u] = np.inf
            _link_out(a, parent, u, own.shape[0], m0, int(ok[np.argmin(d)]))
            changed += 1
    return changed


def _link_out(a: Any, parent: np.ndarray, u: int, own: int, m0: int, target: int) -> None:
    """Append ``target`` to ``u``'s level-0 list (``own`` links long), or in a full list
    replace a link off the entry's tree (no node is lost), else the last."""
    if own < m0:
        a.links0[u, 1 + own] = target
        a.links0[u, 0] = (a.links0[u, 0] & ~COUNT_MASK) | (own + 1)
    else:
        a.links0[u, _off_tree_slot(a, parent, u) or m0] = target


def _nearest(state: IndexState, store: Any, ids: np.ndarray, row: np.ndarray) -> int:
    """The NodeId of ``ids`` (int32) whose row is nearest ``row`` by L2 (a fallback link's
    target: any metric's nearest would do, this one is cheap)."""
    rows = np.ascontiguousarray(decode_rows(store, ids)[:, : state.config.dim], np.float32)
    return int(ids[np.argmin(((rows - row) ** 2).sum(1))])


def _with_room(a: Any, reach: np.ndarray, n: int, m0: int, sample: int = 4096) -> np.ndarray:
    """Reachable live nodes whose level-0 list has a free slot (int32; a seeded sample of at
    most ``sample``, whose rows a lost node's fallback compares)."""
    ids = np.flatnonzero((reach[:n] != 0) & (a.tombstones[:n] == 0) & ((a.links0[:n, 0] & COUNT_MASK) < m0)).astype(np.int32)
    if ids.shape[0] > sample:
        ids = np.sort(np.random.default_rng(0).choice(ids, sample, replace=False))
    return ids


def _reachable_in_links(a: Any, reach: np.ndarray, n: int) -> np.ndarray:
    """Level-0 in-links of each node from reachable nodes (int64[n])."""
    lists = a.links0[:n]
    counts = (lists[:, 0] & COUNT_MASK).astype(np.int64)
    valid = (np.arange(lists.shape[1] - 1)[None, :] < counts[:, None]) & (reach[:n, None] != 0)
    return np.bincount(lists[:, 1:][valid].astype(np.int64), minlength=n)[:n]


def _relink_dead(state: IndexState, rows: tuple, num_threads: int | None) -> int:
    a = state.graph.arrays
    todo = np.flatnonzero(dead_link_nodes_kernel(a)).astype(np.int32)
    if todo.shape[0] == 0:
        return 0
    counter = np.zeros(1, np.int64)
    changed = np.zeros(1, np.int64)
    code, visited = state.metric.code, state.visited
    efc = state.config.effective_ef_construction

    def work() -> None:
        repair_kernel(a, rows, code, todo, efc, visited.acquire(), counter, changed)

    run_parallel(work, resolve_threads(num_threads, todo.shape[0], 16))
    return int(changed[0])


def _compact_store(store: Any, keep: np.ndarray) -> None:
    """Move rows ``keep`` to the front of the store (in place), clearing the rest."""
    if callable(getattr(store, "compact_rows", None)):
        store.compact_rows(keep)
        return
    k = keep.shape[0]
    for arr in store.rows():
        arr[:k] = arr[keep]
        arr[k:] = 0


def compact_arrays(state: IndexState, store: Any, num_threads: int | None = None
                   ) -> tuple[np.ndarray, tuple[Graph, KeyMap] | None, KeyboardInterrupt | None]:
    """Rebuild the live nodes into a fresh, dense NodeId space; the caller installs the result.

    The store's rows move to the front in NodeId order and a new graph is built over them
    (fresh levels, all cores), so the result has the quality of a fresh build over the
    same contents. The caller holds the exclusive lock. Everything that can fail (the
    arguments, the new graph's and key map's memory, the build, which reads copies of the
    live rows) is done before the store's rows move: moved rows without the graph built
    over them would answer with the wrong keys.

    Returns
    -------
    new_id : int32 (old node count,)
        Old -> new NodeId (-1 for dropped nodes).
    rebuilt : (Graph, KeyMap) or None
        The new graph and key map; None when nothing was deleted (nothing changes).
    interrupted : KeyboardInterrupt or None
        A Ctrl-C that arrived while the graph was built. The build and the move are
        finished first; the caller installs the result, then raises it.
    """
    g = state.graph
    a = g.arrays
    n = g.node_count
    keep = np.flatnonzero(a.tombstones[:n] == 0).astype(np.int64)
    written = getattr(store, "written", None)
    if isinstance(written, np.ndarray) and keep.shape[0] and not written[keep].all():
        missing = int(keep[np.argmin(written[keep])])
        raise InvalidParameterError(f"the store holds no vector for live NodeId {missing}: not this index's store")
    k = keep.shape[0]
    threads = resolve_threads(num_threads, k)
    new_id = np.full(n, -1, np.int32)
    new_id[keep] = np.arange(k, dtype=np.int32)
    if k == n:
        return new_id, None, None
    keymap = KeyMap.from_node_keys(state.keys.node_keys[keep], k, g.capacity)
    fresh = Graph.empty(g.capacity, g.m)
    levels = draw_levels(state.rng, k, state.config.level_mult)
    words = fresh.upper_words_needed(levels)
    if not fresh.upper_fits(words):
        fresh.grow_upper(words)
    nids = fresh.allocate(levels)
    rows = store.rows()
    rows = type(rows)(*(arr[keep] for arr in rows))  # the live rows as they will be once moved
    counter = np.zeros(1, np.int64)
    arrays, code, visited = fresh.arrays, state.metric.code, state.visited
    efc = state.config.effective_ef_construction

    def work() -> None:
        insert_kernel(arrays, rows, code, nids, efc, visited.acquire(), counter)

    interrupted = None
    try:
        run_parallel(work, threads)
    except KeyboardInterrupt as exc:
        interrupted = exc
    # every claimed node is linked once run_parallel returns; a thread stopped before its
    # kernel started left the rest unclaimed
    while counter[0] < k:
        try:
            work()
        except KeyboardInterrupt as exc:
            interrupted = interrupted or exc
    rows = work = None  # the copies go before the move, which makes one of its own
    _compact_store(store, keep)
    return new_id, (fresh, keymap), interrupted


def compact(state: IndexState, store: Any, num_threads: int | None, reorder: bool) -> np.ndarray:
    """``Hnsw.compact``: compaction, then (``reorder``) renumbering, under the exclusive lock
    inside one rewrite epoch (lock-free searches that overlap it run again).

    Returns the old -> new NodeId map (int32, -1 for dropped nodes). Records the NodeIds
    and int keys the dropped nodes had in ``state.dropped_ceiling``.
    """
    # Ctrl-C is held until the compacted (and renumbered) arrays are installed: rows moved
    # under the old graph would answer every key with another key's vector
    with state.lock.exclusive(), state.rewriting(), held_interrupts():
        n = state.node_count
        # the dropped keys are forgotten here: only this bound keeps their numbers from new items
        ceiling = max(n, state.keys.int_ceiling(0, n)) if state.graph.deleted_count else 0
        new_id, rebuilt, interrupted = compact_arrays(state, store, num_threads)
        if rebuilt is not None:
            state.install(graph=rebuilt[0], keys=rebuilt[1])
            state.dropped_ceiling = max(state.dropped_ceiling, ceiling)
            state.renumbered += 1
        if interrupted is not None:
            raise interrupted
        if reorder and state.node_count:
            moved, graph, keys = reorder_arrays(state, store)
            state.install(graph=graph, keys=keys)
            state.renumbered += 1
            new_id = np.where(new_id >= 0, moved[np.maximum(new_id, 0)], -1).astype(np.int32)
        return new_id


def check_integrity(state: IndexState) -> None:
    """Verify the graph and key-map invariants under the exclusive lock.

    Raises IntegrityError naming the first broken one. The key map is checked in full up to
    200,000 nodes and on a seeded sample of 200,000 NodeIds above that (a full pass over a
    large str-keyed map costs seconds).
    """
    with state.lock.exclusive():
        code, node, level = check_graph_kernel(state.graph.arrays)
        if code:
            raise IntegrityError(f"{INTEGRITY_MESSAGES[code]} (node {node}, level {level})")
        n, keys = state.graph.node_count, state.keys
        if len(keys) != n:
            raise IntegrityError(f"key map has {len(keys)} keys for {n} nodes")
        for nid in range(n) if n <= 200_000 else np.random.default_rng(0).integers(0, n, 200_000):
            if keys.get(keys.key(int(nid))) != nid:
                raise IntegrityError(f"key map is not a bijection at NodeId {nid}")
