"""Graph search kernels: greedy descent, the beam search of one layer, k-NN entry points
(``knn_kernel`` for batches over threads, ``knn_one_kernel`` for one query from Python).

Readers take no locks (as in hnswlib): a writer stores ids before it publishes a count
with a release store, and every id ever written to a slot is a valid NodeId, so a
concurrent reader sees the old or the new list, always with valid ids. The search starts
from the entry point at *its own* level (``levels[entry]``), so a reader never follows a
level the node does not have even while another thread raises the entry point.
"""

from __future__ import annotations

import numpy as np
from numba import types

from .atomics import atomic_add, fence_acquire
from .jit import helper, inlined, kernel
from .prefetch import prefetch, prefetch_at, prefetch_lines
from .distances import bits_f32, dist_query, dist_query4, dist_query_as4, f32_bits
from .heap import bounded_insert, heap_pop, heap_push
from .layout import COUNT_MASK, H_DELETED, H_ENTRY, H_M, H_NODES, MAX_TAG, PREP_NONE, PREP_NORMALIZE
from .refine import refine_top

__all__ = ["links_view", "next_tag", "greedy_descend", "search_layer", "search_layer_grow", "cand_capacity", "search_one", "prepare_query",
           "prepare_rows", "knn_kernel", "knn_one_kernel", "one_scratch_size", "ONE_OK", "ONE_NOT_FINITE", "ONE_WRONG_DIM", "ONE_STALE"]

INF = np.float32(np.inf)


@helper
def links_view(g, node, level):
    """The ``[count, ids...]`` block of ``node`` at ``level`` as a 1-D int32 view."""
    if level == 0:
        return g.links0[node]
    m = g.header[H_M]
    start = g.upper_start[node] + (level - 1) * (m + 1)
    return g.upper_links[start : start + m + 1]


@helper
def next_tag(visited):
    """Advance the visited tag kept in the last slot; clear the tags on wrap-around."""
    last = visited.shape[0] - 1
    t = np.int64(visited[last]) + 1
    if t > MAX_TAG:
        visited[:] = 0
        t = 1
    visited[last] = t
    return visited[last]


@helper
def greedy_descend(g, rows, metric, q, cur, dcur, top, bottom):
    """Greedy walk from ``cur`` on levels ``top`` down to ``bottom + 1``.

    It never moves to a node with an empty level-0 list: a node being inserted by another
    thread is linked from the top level down, so it can be reached on an upper level
    before its lower lists exist, and a walk that went on from there would find nothing
    else (a search would return 1 of k results while another thread inserts). Every other
    node has level-0 links, so a serial build takes exactly the same steps as hnswlib.
    """
    upper = g.upper_links
    ustart = g.upper_start
    links0 = g.links0
    m = g.header[H_M]
    for level in range(top, bottom, -1):
        changed = True
        while changed:
            changed = False
            # (indexing inline: a helper taking the arrays would cost reference-count
            # round trips per call that LLVM cannot prune across its branch)
            base = ustart[cur] + (level - 1) * (m + 1)
            cnt = upper[base] & COUNT_MASK
            for j in range(1, cnt + 1):
                nb = upper[base + j]
                d = dist_query(metric, rows, np.uint32(nb), q)
                if d < dcur and (links0[nb, 0] & COUNT_MASK) > 0:
                    dcur = d
                    cur = nb
                    changed = True
    return cur, dcur


@helper
def search_layer(g, rows, metric, q, ep, ef, level, visited, mask, res_d, res_i, cand_d, cand_i, ordered=None):
    """Beam search of width ``ef`` on one level (hnswlib ``searchBaseLayerST``).

    Deleted nodes (and nodes outside ``mask`` when it is non-empty) are traversed but never
    enter the result heap, so the filter is applied during the walk; tombstones are read only
    while the index holds deleted nodes (docs/design.md, "Tombstones read after deletions only").

    Parameters
    ----------
    ep : int
        The node the walk starts from (its distance is taken here, see below).
    visited : uint16[cap + 1]
        Visited tags; the last slot holds the current tag.
    mask : uint8[cap] or uint8[0]
        Allow-list over NodeIds; empty means everything is allowed.
    res_d, res_i : float32[ef + 1], int32[ef + 1]
        Receive the results: a max-heap, or with ``ordered`` an array sorted ascending.
    cand_d, cand_i : float32[c], int32[c]
        Candidate scratch.
    ordered : None or True
        None (the default): the result max-heap (the filtered walk's). True: the sorted
        array (``bounded_insert``) that the query paths read their top k from and the
        linking paths select from, without heap pops. ``ordered is None`` is decided at compile time.

    Returns
    -------
    int
        Number of results, or -1 if the candidate scratch ran short: the caller
        grows it and searches again (see ``search_layer_grow``). Growing inside the loop
        would make the arrays loop-carried, which costs an atomic reference-count
        update on every iteration.
    """
    tag = next_tag(visited)
    use_mask = mask.shape[0] > 0
    # the entry scored by the kernel that scores its neighbours (dist_query_as4), so its
    # exact duplicates tie with it
    dep = dist_query_as4(metric, rows, np.uint32(ep), q)
    data0 = rows[0]
    row_bytes = np.int64(data0.shape[1] * data0.itemsize)
    # pass 1 asks for a row's first two lines, pass 2 for the rest up to 2 KiB (the
    # hardware prefetcher streams any further lines; docs/design.md, "Two passes per expanded node")
    line2 = np.int64(64) if row_bytes > 64 else np.int64(0)
    ahead_end = min(row_bytes, np.int64(2048))
    links0 = g.links0
    # every line of a level-0 list (its count and links); above level 0 the walk reads
    # upper lists, and only the level-0 list's first line is asked for
    list_bytes = np.int64(links0.shape[1] * 4) if level == 0 else np.int64(1)
    upper = g.upper_links
    ustart = g.upper_start
    tomb = g.tombstones
    check_tomb = g.header[H_DELETED] != 0  # the count read once: a search overlapping a delete may return its node
    m = g.header[H_M]
    cap = cand_i.shape[0]
    n_res = np.int64(0)
    lower = INF
    if (not check_tomb or tomb[ep] == 0) and (not use_mask or mask[ep] != 0):
        if ordered is None:
            n_res = heap_push(res_d, res_i, np.int64(0), dep, np.int32(ep))
        else:
            res_d[0] = dep
            res_i[0] = np.int32(ep)
            n_res = np.int64(1)
        lower = dep
    n_cand = heap_push(cand_d, cand_i, np.int64(0), -dep, np.int32(ep))
    visited[ep] = tag
    while n_cand > 0:
        dc = -cand_d[0]
        c = cand_i[0]
        if dc > lower and n_res >= ef:
            break
        n_cand = heap_pop(cand_d, cand_i, n_cand)
        # The next candidate's list (every line of it: 132 bytes at M = 16), requested here
        # and again once this expansion's pushes are done (the top may have changed; both
        # measured: docs/design.md, "Two passes per expanded node").
        prefetch_lines(links0, cand_i[0], 0, list_bytes)
        # Lists are indexed inline (level 0 in links0, else upper): a helper taking the
        # arrays would cost reference-count round trips per call that LLVM cannot prune.
        base = np.int64(0) if level == 0 else ustart[c] + (level - 1) * (m + 1)
        cnt = (links0[c, 0] if level == 0 else upper[base]) & COUNT_MASK
        # The unvisited neighbours wait in the free tail of the candidate scratch,
        # cand_i[top:cap], while pass 2 pushes at most as many candidates below it.
        if n_cand + 2 * cnt > cap:
            return -1
        # Pass 1: claim the unvisited neighbours and start loading all their rows at
        # once. Two passes measured 4-10 % faster per query than hnswlib's one
        # neighbour ahead (one process, 384-d cosine and 128-d L2): the loads overlap.
        top = cap
        for j in range(1, cnt + 1):
            # unsigned ids: Numba skips its negative-index wrap-around check
            nb = np.uint32(links0[c, j] if level == 0 else upper[base + j])
            if visited[nb] != tag:
                visited[nb] = tag
                top -= 1
                cand_i[top] = np.int32(nb)
                prefetch(data0, nb)
                prefetch_at(data0, nb, line2)
        # Pass 2: the distances, four rows per pass over the query (dist_query4), into
        # the free tail of cand_d, with the next group's further lines requested one
        # step ahead; then the heaps, in list order, so the walk is the one-row-at-a-time
        # walk (hnswlib's).
        # Measured 4-11 % more queries/s than one row at a time (in-process A/B on the
        # same graph, same answers: 384-d cosine, 128-d and 960-d L2).
        # A last group of one to three rows repeats its last row (a cache hit) rather
        # than taking a one-row loop: every inlined distance loop costs compile time.
        t = cap - 1
        while t >= top:
            if t - 4 >= top:
                for u in range(max(t - 7, top), t - 3):
                    nxt = np.uint32(cand_i[u])
                    for off in range(128, ahead_end, 64):
                        prefetch_at(data0, nxt, off)
            t1 = max(t - 1, top)
            t2 = max(t - 2, top)
            t3 = max(t - 3, top)
            d0, d1, d2, d3 = dist_query4(metric, rows, np.uint32(cand_i[t]), np.uint32(cand_i[t1]), np.uint32(cand_i[t2]), np.uint32(cand_i[t3]), q)
            cand_d[t3] = d3
            cand_d[t2] = d2
            cand_d[t1] = d1
            cand_d[t] = d0
            t -= 4
        for t in range(cap - 1, top - 1, -1):
            nb = np.uint32(cand_i[t])
            d = cand_d[t]
            if n_res < ef or d < lower:
                n_cand = heap_push(cand_d, cand_i, n_cand, -d, np.int32(nb))
                if (not check_tomb or tomb[nb] == 0) and (not use_mask or mask[nb] != 0):
                    if ordered is None:
                        n_res = heap_push(res_d, res_i, n_res, d, np.int32(nb))
                        if n_res > ef:
                            n_res = heap_pop(res_d, res_i, n_res)
                        lower = res_d[0]
                    else:
                        # sorted: no pops, the bound is the last entry, and search_one
                        # reads the top k off the front
                        n_res = bounded_insert(res_d, res_i, n_res, ef, d, np.int32(nb))
                        lower = res_d[n_res - 1]
        prefetch_lines(links0, cand_i[0], 0, list_bytes)
    return n_res


@inlined
def search_layer_grow(g, rows, metric, q, ep, ef, level, visited, mask, res_d, res_i, cand_d, cand_i, ordered=None):
    """``search_layer`` (``ordered`` as there), growing the candidate scratch until it fits.

    Returns ``(n_res, cand_d, cand_i)``; keep the returned arrays for the next call.
    """
    while True:
        n_res = search_layer(g, rows, metric, q, ep, ef, level, visited, mask, res_d, res_i, cand_d, cand_i, ordered)
        if n_res >= 0:
            return n_res, cand_d, cand_i
        cand_d = np.empty(2 * cand_d.shape[0], np.float32)
        cand_i = np.empty(2 * cand_i.shape[0], np.int32)


@helper
def cand_capacity(ef, m0):
    """Initial size of the candidate heap for a search with beam ``ef``.

    Outgrowing it restarts the layer search with twice the room (``search_layer_grow``).
    Each expansion may push up to ``m0`` neighbours before the next pop, so with ``2 * ef``
    nearly every small-ef query (and every single insert) would run twice.
    """
    return 4 * ef + 8 * m0 + 16


@inlined
def search_one(g, rows, metric, q, k, ef, visited, mask, res_d, res_i, cand_d, cand_i, out_ids, out_d, start):
    """k-NN of one prepared query into ``out_ids`` / ``out_d`` (best first); returns count.

    ``start`` < 0: descend from the entry point; else beam-search level 0 from NodeId
    ``start`` (a node known to lie next to the query, e.g. the query's own node).
    """
    ep = g.header[H_ENTRY]
    if ep < 0:
        for j in range(k):
            out_ids[j] = -1
            out_d[j] = INF
        return 0, cand_d, cand_i
    cur = start
    if start < 0:
        dep = dist_query(metric, rows, np.uint32(ep), q)
        cur, _ = greedy_descend(g, rows, metric, q, ep, dep, np.int64(g.levels[ep]), np.int64(0))
    n_res, cand_d, cand_i = search_layer_grow(
        g, rows, metric, q, cur, ef, 0, visited, mask, res_d, res_i, cand_d, cand_i, True
    )
    refine_top(metric, rows, q, res_d, res_i, n_res, k)  # exact distances where the walk read a copy
    n = min(n_res, k)
    for j in range(n):  # sorted ascending (ordered): the best k are in front
        out_ids[j] = res_i[j]
        out_d[j] = res_d[j]
    for j in range(n, k):  # padding: the caller need not pre-fill the outputs
        out_ids[j] = -1
        out_d[j] = INF
    return n, cand_d, cand_i


@helper(locals={"top": types.uint32})
def prepare_query(q, prep):
    """Check one raw query in place for NaN/inf and, if ``prep == PREP_NORMALIZE``, scale it to unit length.

    Returns False for a query a search cannot rank: NaN or inf, or (``PREP_CHECK``) a
    component past ``sqrt(FLT_MAX / (4 dim))``, where float32 distances can overflow
    (``core.store_base.value_limit``). The recipe is ``Metric.prepare``'s (divide by the
    largest magnitude, then by the norm: unit length for any non-zero finite vector; a
    zero vector stays zero). Doing this here spares the single-query path NumPy calls.
    Every loop vectorises: together they cost 0.05 us at 384-d, against 0.9 us with an
    early exit on NaN and a separate output array (in-process A/B).
    """
    dim = q.shape[0]
    # the largest magnitude as an integer maximum over the IEEE bits: with the sign bit
    # cleared they order like the magnitudes, and NaN / inf lie above every finite value
    top = np.uint32(0)
    for j in range(dim):
        top = max(top, f32_bits(q[j]) & np.uint32(0x7FFFFFFF))
    if top >= np.uint32(0x7F800000):  # NaN or inf
        return False
    if prep != PREP_NORMALIZE and np.float64(bits_f32(top)) > np.sqrt(3.4028234663852886e38 / (4.0 * max(dim, 1))):
        return False
    if prep == PREP_NORMALIZE:
        peak = bits_f32(top)
        if peak > 0:
            # fastmath (arcp) divides by multiplying with 1 / peak, which overflows for a
            # subnormal peak (the query came out NaN) and is subnormal, flushed to zero,
            # for a peak above 2**126 (it came out zero). Far from 1, scale by a power of
            # two first: exact for every element that matters, so the result is the same.
            if top < np.uint32(0x0D800000) or top >= np.uint32(0x71800000):  # 2**-100, 2**100
                f = np.float32(2.0**100) if top < np.uint32(0x0D800000) else np.float32(2.0**-100)
                for j in range(dim):
                    q[j] = q[j] * f
                peak = peak * f
            ss = np.float32(0.0)
            for j in range(dim):
                y = q[j] / peak
                q[j] = y
                ss += y * y
            nrm = np.sqrt(ss)
            for j in range(dim):
                q[j] = q[j] / nrm
    return True


@kernel
def prepare_rows(rows, prep):
    """:func:`prepare_query` of every row of ``rows`` (float32, C-contiguous) in place: a
    batch's queries get the values each would get alone. Returns -1, or the first row it
    rejects (the rows after it are left as they were)."""
    for i in range(rows.shape[0]):
        if not prepare_query(rows[i], prep):
            return i
    return -1


@kernel
def knn_kernel(g, rows, metric, queries, k, ef, mask, visited, counter, chunk, out_ids, out_d, starts):
    """Search prepared ``queries`` (float32[n, dim]) taking work from ``counter``.

    Several threads may run this on the same arrays: each claims ``chunk`` queries at a
    time with an atomic fetch-add on ``counter[0]``. ``out_ids`` (int32[n, k], -1) and
    ``out_d`` (float32[n, k], inf) are filled best first. When ``starts`` (int32[n]) is
    not empty, query ``qi`` searches level 0 from NodeId ``starts[qi]`` instead of
    descending from the entry point: the self-join of ``knn_graph`` starts each item at
    its own node.
    """
    n = queries.shape[0]
    with_starts = starts.shape[0] > 0
    if visited.shape[0] <= g.links0.shape[0]:
        visited = np.zeros(g.links0.shape[0] + 1, np.uint16)  # see knn_one_kernel
    res_d = np.empty(ef + 1, np.float32)
    res_i = np.empty(ef + 1, np.int32)
    ncand = cand_capacity(ef, g.links0.shape[1] - 1)
    cand_d = np.empty(ncand, np.float32)
    cand_i = np.empty(ncand, np.int32)
    while True:
        start = atomic_add(counter, 0, chunk)
        if start >= n:
            break
        for qi in range(start, min(start + chunk, n)):
            _, cand_d, cand_i = search_one(
                g, rows, metric, queries[qi], k, ef, visited, mask,
                res_d, res_i, cand_d, cand_i, out_ids[qi], out_d[qi],
                np.int64(starts[qi]) if with_starts else np.int64(-1),
            )


#: ``knn_one_kernel`` status codes.
ONE_OK = 0
ONE_NOT_FINITE = 1
ONE_WRONG_DIM = 2
ONE_STALE = 3


def one_scratch_size(k: int, ef: int, m0: int, dim: int) -> tuple[int, int]:
    """(float32, int32) scratch lengths ``knn_one_kernel`` needs to allocate nothing."""
    n = k + ef + 1 + cand_capacity.py_func(ef, m0)  # outputs, result heap, candidates
    return n + dim, n


@kernel
def knn_one_kernel(g, rows, metric, query, dim, k, ef, visited, scratch_f, scratch_i, node_keys, prep):
    """One raw query for ``Hnsw.search``: ``(status, [(key, distance, NodeId), ...])``.

    The single-query call does all of its work here, because right after a search has
    streamed a megabyte of vectors through the caches each NumPy call made from Python
    costs microseconds (three ``tolist()`` calls on the result buffers measured 4 us): the
    query is checked (``prep`` = ``PREP_CHECK``) or checked and scaled to unit length
    (``PREP_NORMALIZE``) here, keys are looked up here, and the results come back as one
    list of tuples with no padding (``ef >= k``). ``query`` is float32[dim] with any strides
    (``PREP_NONE``: already prepared); ``dim`` is the index's (rows may be wider: the hnswlib loader's rows run on
    over each element's label and links). ``node_keys`` int64[capacity] gives the keys;
    empty, the NodeId stands in for the key. ``scratch_f`` / ``scratch_i`` are used when at
    least ``one_scratch_size`` long, else the kernel allocates its own.

    Status ``ONE_NOT_FINITE``: NaN or inf in the query; ``ONE_WRONG_DIM``: its length is
    not ``dim``, or ``dim`` exceeds the rows' width; ``ONE_STALE``: the index has more
    nodes than ``rows`` cover, or a result's NodeId is past ``node_keys`` (it grew since the
    caller looked). A ``visited`` array shorter than the graph is replaced by a fresh one.
    """
    fence_acquire()  # rows are read after the caller's row-rewrite count (core.rowwrites)
    res = [(np.int64(0), np.float32(0.0), np.int32(0)) for _ in range(0)]
    if query.shape[0] != dim or dim > rows[0].shape[1]:
        return ONE_WRONG_DIM, res
    if g.header[H_NODES] > rows[0].shape[0]:
        return ONE_STALE, res
    if visited.shape[0] <= g.links0.shape[0]:
        # a search that read the graph just after a concurrent resize swapped it in, and
        # the visited pool just before: a fresh array (this happens once per resize)
        visited = np.zeros(g.links0.shape[0] + 1, np.uint16)
    ncand = cand_capacity(ef, g.links0.shape[1] - 1)
    nf = k + ef + 1 + ncand
    fs, is_ = scratch_f, scratch_i
    if fs.shape[0] < nf + dim or is_.shape[0] < nf:
        fs = np.empty(nf + dim, np.float32)
        is_ = np.empty(nf, np.int32)
    # copied first, so prepare_query and the distance loops see the C-contiguous type the
    # batch kernel gives them (a strided query would compile them a second time)
    qbuf = fs[nf : nf + dim]
    for j in range(dim):
        qbuf[j] = query[j]
    if prep != PREP_NONE and not prepare_query(qbuf, prep):
        return ONE_NOT_FINITE, res
    out_d, out_i = fs[:k], is_[:k]
    n, _, _ = search_one(
        g, rows, metric, qbuf, k, ef, visited, np.empty(0, np.uint8),
        fs[k : k + ef + 1], is_[k : k + ef + 1], fs[k + ef + 1 : nf], is_[k + ef + 1 : nf], out_i, out_d, np.int64(-1),
    )
    with_keys = node_keys.shape[0] > 0
    for j in range(n):
        nid = out_i[j]
        if with_keys and nid >= node_keys.shape[0]:
            # a key array read just before a concurrent resize swapped the key map, and a
            # node inserted after it: the caller binds again
            return ONE_STALE, res
        res.append((node_keys[nid] if with_keys else np.int64(nid), out_d[j], nid))
    fence_acquire()  # ... and before the caller reads the count again
    return ONE_OK, res
