"""Filtered k-NN kernels: a graph walk that moves through the allowed nodes, and exact search
over a list of allowed NodeIds.

The walk follows ACORN (Patel et al., "ACORN: Performant and Predicate-Agnostic Search Over
Vector Embeddings and Structured Data", SIGMOD 2024): only allowed nodes enter the candidate
and result heaps, and a neighbour that may not be returned is looked through -- its own
neighbours are examined -- so the walk moves over the allowed subgraph even when most
direct neighbours are filtered out. As in ACORN-1 the neighbours examined per expansion are
capped at the graph's level-0 degree, so an expansion computes about as many distances as an
unfiltered one. The walk starts from the node the unfiltered descent reaches and from a few
allowed nodes spread over the filter (``seeds``): when the allowed items lie far from the
query, the descent's neighbourhood holds none of them, and the seeds start the walk inside
the allowed region. A walk that runs out of candidates before its beam fills while more items
are allowed (the part of the allowed subgraph it can reach is exhausted) answers exactly.

A walk planned with ``PLAN_PROBE`` checks the filter's share around the query: its first
expansion (the node the descent reached, its neighbours and, through the filtered-out ones,
theirs) counts the allowed nodes it meets. When that local share is below ``LOCAL_SHORT`` of
the filter's global share (with at least ``PROBE_MIN`` allowed nodes expected, so chance
cannot trigger it), the allowed items lie away from the query (the filter is anti-correlated
with it) and a walk of the planned beam loses recall on the way to them: the query is then
answered exactly, or walked again (ACORN's way) with the beam the plan carries (see
:func:`walk_plan`): with ``PLAN_DESCEND`` from the node a descent through allowed nodes only
reaches (:mod:`.filtered_descent`: the allowed region's edge facing the query), else from the
same start with a wider beam.

A wide filter (most items allowed) is walked as a *post-filter* instead (``PLAN_POST``): the
plain beam search of :func:`.search.search_layer`, which traverses every node and lets only
allowed ones into the results. There the look-through buys nothing (most neighbours are
allowed) and costs its link reads; the plain walk's graph is the one the index was built for.
Its probe reads links only: the allowed share among the level-0 neighbours of the node the
descent reached (and theirs when those are too few to tell), by mask lookups, no distances; a
share short by more than chance (:mod:`.probe`) leaves for exact search or ACORN's walk as above.
The same probe turns an ACORN walk (with ``PLAN_RICH``) into the post-filter where the share
around the query is at least ``POST_RICH`` (a filter correlated with the query).

Exact search (:mod:`.exact`) reads the allowed rows where the store keeps them (the vectors,
not a walk copy), or from ``block``: a copy of them (``*Rows`` of the vectors' class, row ``c``
``ids[c]``'s) when the caller has one; an empty block means "gather". A walk of a walk copy
re-scores its best ``refine_count(k)`` on the vectors (:mod:`.refine`). Both entry points take the plan as an
argument (``PLAN_WALK`` or ``PLAN_EXACT``, with the flags ``PLAN_PROBE``, ``PLAN_POST``,
``PLAN_DESCEND`` and ``PLAN_DEFER`` and the short walk's beam in the bits above them), so one
compiled specialisation per store type serves both.
"""

from __future__ import annotations

import numpy as np

from .atomics import atomic_add
from .distances import dist_query, dist_query4, dist_query_as4
from .exact import SCAN_ROWS, block_top_k, block_top_k_many, exact_top_k
from .filtered_descent import descend_starts
from .heap import heap_pop, heap_push
from .jit import helper, inlined, kernel
from .layout import COUNT_MASK, H_DELETED, H_ENTRY, H_NODES
from .prefetch import prefetch, prefetch_at, prefetch_lines
from .probe import LOCAL_SHORT, POST_LOCAL, POST_RICH, PROBE_MIN, allowed_near, chance_margin
from .refine import exact_view, refine_heap
from .search import ONE_NOT_FINITE, ONE_OK, ONE_STALE, ONE_WRONG_DIM, cand_capacity, greedy_descend, next_tag, prepare_query, search_layer_grow

__all__ = ["PLAN_WALK", "PLAN_EXACT", "PLAN_PROBE", "PLAN_POST", "PLAN_DESCEND", "PLAN_DEFER", "USED_PLANNED", "USED_WIDE", "USED_EXACT",
           "USED_ACORN", "USED_DESCEND", "USED_POST", "PLAN_RICH", "POST_SHIFT", "EF_MASK", "walk_plan", "filtered_layer", "knn_filter_kernel", "knn_filter_one_kernel", "filter_scratch_size"]

PLAN_WALK, PLAN_EXACT = 0, 1
#: Flags of a walk's plan argument: ``PLAN_PROBE`` probes the local allowed share and leaves the
#: walk when it is short; ``PLAN_POST`` walks as a post-filter (the unfiltered beam search, only
#: allowed nodes entering the results) instead of ACORN's walk; with ``PLAN_DESCEND`` a short
#: query walks from the end of the filtered descent; with ``PLAN_DEFER`` a query the probe sends
#: to exact search returns no rows (``used`` = ``USED_EXACT``): the caller answers it by BLAS;
#: with ``PLAN_RICH`` an ACORN walk whose probe meets ``POST_RICH`` of the items allowed walks as the post-filter.
PLAN_PROBE, PLAN_POST, PLAN_DESCEND, PLAN_DEFER, PLAN_RICH = 2, 4, 8, 16, 32
#: Bits of the plan argument below the beam a short walk continues with, and below the beam
#: of a ``PLAN_RICH`` walk's post-filter (the asked one: ACORN's may be wider) or of a
#: ``PLAN_POST`` walk (see :func:`post_beam`); 20 bits each.
WIDE_SHIFT, POST_SHIFT, EF_MASK = 6, 26, (1 << 20) - 1
#: What a query ran (``used`` outputs): the planned plan, the wider walk, exact search,
#: ACORN's walk instead of the post-filter, the filtered descent and ACORN's walk from it, the
#: post-filter instead of ACORN's walk.
USED_PLANNED, USED_WIDE, USED_EXACT, USED_ACORN, USED_DESCEND, USED_POST = 0, 1, 2, 3, 4, 5
INF = np.float32(np.inf)
#: Queries of a batch that read one tile of a block together (see ``block_top_k_many``).
BLOCK_QUERIES = 16


def walk_plan(short_ef: int, post: bool = False, descend: bool = False, rich_ef: int = 0, post_ef: int = 0) -> int:
    """The kernels' ``plan`` argument of a walk that probes the local allowed share
    (``PLAN_PROBE``): on a shortage walked again (ACORN's way) at beam ``short_ef``, or answered
    exactly when it is 0; ``post``, ``descend``: ``PLAN_POST``, ``PLAN_DESCEND``; ``rich_ef`` > 0:
    ``PLAN_RICH``, its post-filter walking at that beam; ``post_ef`` > 0: the post-filter's
    beam where the share around the query is the filter's (see :func:`post_beam`)."""
    flags = (PLAN_POST if post else 0) | (PLAN_DESCEND if descend else 0) | (PLAN_RICH if rich_ef > 0 else 0)
    return PLAN_WALK | PLAN_PROBE | flags | (int(short_ef) << WIDE_SHIFT) | (int(rich_ef or post_ef) << POST_SHIFT)


@helper
def filtered_layer(g, rows, metric, q, ep, ef, visited, mask, seeds, res_d, res_i, cand_d, cand_i, hop, share):
    """Beam search of width ``ef`` on level 0 over the nodes allowed by ``mask`` (ACORN-style).

    ``ep``: the node the unfiltered descent reached (it routes but enters the results only if
    allowed; scored here, by the kernel that scores its neighbours); ``seeds``: allowed NodeIds that start the walk too.
    ``hop``: int32 scratch of the level-0 degree. ``share``: the filter's global allowed
    share when the walk probes (see the module docstring), else 0. Returns ``(size of the
    result heap, local share)``: the size is -1 when the candidate scratch ran short (the
    caller grows it and calls again) and -2 when the probe found the local share short; the
    local share is the first expansion's (-1 if it met nothing new).
    """
    tag = next_tag(visited)
    data0 = rows[0]
    row_bytes = np.int64(data0.shape[1] * data0.itemsize)
    line2, ahead_end = np.int64(64) if row_bytes > 64 else np.int64(0), min(row_bytes, np.int64(2048))
    links0, tomb = g.links0, g.tombstones
    budget = np.int64(links0.shape[1] - 1)
    cap = cand_i.shape[0]
    n_res, n_cand = np.int64(0), np.int64(0)
    lower, local, first = INF, -1.0, True
    visited[ep] = tag
    dep = dist_query_as4(metric, rows, np.uint32(ep), q)  # scored as its neighbours are: its copies tie with it
    n_cand = heap_push(cand_d, cand_i, n_cand, -dep, np.int32(ep))
    if mask[ep] != 0 and tomb[ep] == 0:
        n_res = heap_push(res_d, res_i, n_res, dep, np.int32(ep))
        lower = dep
    for s in range(seeds.shape[0]):
        v = np.uint32(seeds[s])
        if visited[v] == tag or tomb[v] != 0 or n_cand + 1 >= cap:
            continue
        visited[v] = tag
        d = dist_query_as4(metric, rows, v, q)
        n_cand = heap_push(cand_d, cand_i, n_cand, -d, np.int32(v))
        if n_res < ef or d < lower:
            n_res = heap_push(res_d, res_i, n_res, d, np.int32(v))
            if n_res > ef:
                n_res = heap_pop(res_d, res_i, n_res)
            lower = res_d[0]
    while n_cand > 0:
        dc = -cand_d[0]
        c = cand_i[0]
        if dc > lower and n_res >= ef:
            break
        n_cand = heap_pop(cand_d, cand_i, n_cand)
        cnt = links0[c, 0] & COUNT_MASK
        if n_cand + 2 * budget > cap:
            return -1, local
        # Pass 1: claim the allowed unvisited neighbours; remember the others to look through
        top = cap
        n_hop = np.int64(0)
        for j in range(1, cnt + 1):
            nb = np.uint32(links0[c, j])
            if visited[nb] != tag:
                if mask[nb] != 0 and tomb[nb] == 0:
                    visited[nb] = tag
                    top -= 1
                    cand_i[top] = np.int32(nb)
                    prefetch(data0, nb)
                    prefetch_at(data0, nb, line2)
                else:
                    hop[n_hop] = np.int32(nb)
                    n_hop += 1
                    prefetch_lines(links0, nb, 0, links0.shape[1] * 4)
        # ACORN: the neighbours of a filtered-out neighbour, until the expansion holds as
        # many allowed nodes as a list does. A filtered-out node is marked only once looked
        # through, so another expansion may still look through it.
        direct = n_hop + (cap - top)
        claimed = cap - top
        h = np.int64(0)
        met = np.int64(0)  # neighbours the look-through reads, and the allowed ones among them (the probe's
        hit = np.int64(0)  # sample: visited ones included, so a random filter's share comes out unbiased)
        while h < n_hop and cap - top < budget:
            x = np.uint32(hop[h])
            h += 1
            visited[x] = tag
            cnt2 = links0[x, 0] & COUNT_MASK
            for j in range(1, cnt2 + 1):
                nb = np.uint32(links0[x, j])
                met += 1
                if mask[nb] != 0:
                    hit += 1
                    if visited[nb] != tag and tomb[nb] == 0:
                        visited[nb] = tag
                        top -= 1
                        cand_i[top] = np.int32(nb)
                        prefetch(data0, nb)
                        prefetch_at(data0, nb, line2)
                        if cap - top >= budget:
                            break
        if first:
            # the probe: the allowed share of the neighbours the first expansion read
            first = False
            seen = direct + met
            if seen > 0:
                local = (claimed + hit) / seen
                if share > 0.0 and share * seen >= PROBE_MIN and local < LOCAL_SHORT * share:
                    return -2, local
        # Pass 2: distances, four rows per pass over the query (the next group's further lines asked for a step ahead)
        t = cap - 1
        while t >= top:
            for u in range(max(t - 7, top), t - 3):
                prefetch_lines(data0, cand_i[u], 128, ahead_end)
            t1, t2, t3 = max(t - 1, top), max(t - 2, top), max(t - 3, top)
            d0, d1, d2, d3 = dist_query4(metric, rows, np.uint32(cand_i[t]), np.uint32(cand_i[t1]), np.uint32(cand_i[t2]), np.uint32(cand_i[t3]), q)
            cand_d[t3] = d3
            cand_d[t2] = d2
            cand_d[t1] = d1
            cand_d[t] = d0
            t -= 4
        # Pass 3: the heaps (every claimed node is allowed)
        for t in range(cap - 1, top - 1, -1):
            nb = cand_i[t]
            d = cand_d[t]
            if n_res < ef or d < lower:
                n_cand = heap_push(cand_d, cand_i, n_cand, -d, nb)
                prefetch_lines(links0, cand_i[0], 0, links0.shape[1] * 4)
                n_res = heap_push(res_d, res_i, n_res, d, nb)
                if n_res > ef:
                    n_res = heap_pop(res_d, res_i, n_res)
                lower = res_d[0]
    return n_res, local


@helper
def post_beam(ef, beam, k, share, local, seen):
    """The post-filter's beam: the planned ``beam`` (at least ``k``), or the asked ``ef``
    where the share of allowed items around the query (``local`` of ``seen`` links; -1: none
    read) exceeds the filter's ``share`` by more than chance. The beam holds allowed nodes
    only, so at a random filter's share it reaches ``1 / share`` times as far as the
    unfiltered walk at the same beam; the planner's beam makes up for that (see
    ``hnsw_numba.core.planner``). Around a query whose neighbourhood is allowed (a filter
    correlated with it) it reaches no further, and the asked beam keeps its recall."""
    if local >= 0.0 and local >= share + chance_margin(share, seen):
        return np.int64(ef)
    return max(np.int64(k), min(np.int64(ef), np.int64(beam)))


@inlined
def exact_into(g, rows, block, metric, q, ids, k, res_d, res_i):
    """Exact top-``k`` over the allowed ``ids`` (the vectors) into the heap ``res_*``; its size."""
    if block[0].shape[0] == ids.shape[0]:
        return block_top_k(block, metric, q, ids, g.tombstones, np.int64(0), ids.shape[0], k, res_d, res_i, np.int64(0), np.empty(SCAN_ROWS, np.float32))
    return exact_top_k(exact_view(rows), metric, q, ids, g.tombstones, k, res_d, res_i)


@inlined
def filter_one(g, rows, block, metric, q, k, ef, visited, mask, ids, seeds, plan, res_d, res_i, cand_d, cand_i, hop, out_ids, out_d):
    """Filtered k-NN of one prepared query into ``out_ids``/``out_d`` (best first); returns
    ``(count, cand_d, cand_i, used, local)``: the candidate scratch (grown if it ran short),
    what ran (``USED_*``) and the local share the walk's probe measured (-1: none)."""
    n_res = np.int64(0)
    used = USED_PLANNED
    local = -1.0
    if (plan & 1) == PLAN_EXACT:
        n_res = exact_into(g, rows, block, metric, q, ids, k, res_d, res_i)
    else:
        ep = g.header[H_ENTRY]
        if ep >= 0:
            share = 0.0
            if plan & PLAN_PROBE:
                share = ids.shape[0] / max(g.header[H_NODES] - g.header[H_DELETED], 1)
            dep = dist_query(metric, rows, np.uint32(ep), q)
            cur, dcur = greedy_descend(g, rows, metric, q, ep, dep, np.int64(g.levels[ep]), np.int64(0))
            post = (plan & PLAN_POST) != 0
            short = False
            seen = np.int64(0)
            starts = seeds  # the walk's extra starts (the filtered descent's nodes once it ran)
            if post and share > 0.0:  # the post-filter's probe: links only, before any walk
                local, seen = allowed_near(g, mask, cur, share)
                low = local + chance_margin(share, seen)
                if share * seen >= PROBE_MIN and low < POST_LOCAL * share:
                    if low < LOCAL_SHORT * share:
                        short = True
                    else:  # the allowed items thin out around the query: ACORN's walk (it probes again)
                        post = False
                        used = USED_ACORN
            elif share > 0.0 and plan & PLAN_RICH:  # ACORN's walk where most items around the query are allowed: the post-filter
                loc, seen = allowed_near(g, mask, cur, share)
                if loc - chance_margin(POST_RICH, seen) >= POST_RICH:
                    post, used, local, ef = True, USED_POST, loc, (plan >> POST_SHIFT) & EF_MASK
            beam = (plan >> POST_SHIFT) & EF_MASK
            if post and plan & PLAN_POST and beam > 0:  # the planned post-filter's beam (not a rich ACORN walk's)
                p = min(1.0, ids.shape[0] / max(g.header[H_NODES] - g.header[H_DELETED], 1))
                if local < 0.0:  # no probe ran (a forced walk): the beam still needs the share around the query
                    local, seen = allowed_near(g, mask, cur, p)
                ef = post_beam(ef, beam, k, p, local, seen)
            while True:
                if short:
                    n_res = np.int64(-2)
                    short = False
                elif post:
                    # the sorted results of the unfiltered walk (no heap pops), reversed: a
                    # descending array is a max-heap, which the rest of this function reads
                    n_res, cand_d, cand_i = search_layer_grow(g, rows, metric, q, cur, ef, 0, visited, mask, res_d, res_i, cand_d, cand_i, True)
                    for j in range(n_res // 2):
                        a = n_res - 1 - j
                        res_d[j], res_d[a] = res_d[a], res_d[j]
                        res_i[j], res_i[a] = res_i[a], res_i[j]
                else:
                    n_res, loc = filtered_layer(g, rows, metric, q, cur, ef, visited, mask, starts, res_d, res_i, cand_d, cand_i, hop, share)
                    if local < 0.0:
                        local = loc
                if n_res == -2:
                    # the allowed items lie away from the query: answer exactly, or walk
                    # again with the wider beam the plan carries
                    wide = (plan >> WIDE_SHIFT) & EF_MASK
                    if wide == 0:
                        used = USED_EXACT
                        break
                    used, share, post, ef = USED_WIDE, 0.0, False, wide
                    if plan & PLAN_DESCEND:  # from the allowed region's edge facing the query
                        used = USED_DESCEND
                        cur, dcur, starts = descend_starts(g, rows, metric, q, mask, seeds, cur, dcur)
                    if res_d.shape[0] < ef + 1:
                        res_d = np.empty(ef + 1, np.float32)
                        res_i = np.empty(ef + 1, np.int32)
                elif n_res >= 0:
                    break
                else:
                    cand_d = np.empty(2 * cand_d.shape[0], np.float32)
                    cand_i = np.empty(2 * cand_i.shape[0], np.int32)
            if used == USED_EXACT:
                n_res = np.int64(0) if plan & PLAN_DEFER else exact_into(g, rows, block, metric, q, ids, k, res_d, res_i)
            elif n_res < ef and n_res < ids.shape[0]:
                # the walk ran out of candidates before its beam filled, while more items
                # are allowed: the allowed subgraph it could reach is exhausted, so the
                # answer comes from all of them (exact; a thin filter's safety net)
                n_res = exact_into(g, rows, block, metric, q, ids, k, res_d, res_i)
            else:  # a walk of a walk copy: the best refine_count(k) with the vectors' own distances
                n_res = refine_heap(metric, rows, q, res_d, res_i, n_res, k)
            while n_res > k:
                n_res = heap_pop(res_d, res_i, n_res)
    n = n_res
    for j in range(n, k):
        out_ids[j] = -1
        out_d[j] = INF
    while n_res > 0:
        out_ids[n_res - 1] = res_i[0]
        out_d[n_res - 1] = res_d[0]
        n_res = heap_pop(res_d, res_i, n_res)
    return n, cand_d, cand_i, used, local


@kernel
def knn_filter_kernel(g, rows, block, metric, queries, k, ef, mask, ids, seeds, plan, visited, counter, chunk, out_ids, out_d, used, local):
    """Filtered k-NN of prepared ``queries`` (float32[n, dim]) taking work from ``counter``.

    ``plan``: ``PLAN_WALK`` (graph walk over ``mask``, uint8[capacity]; with ``PLAN_PROBE``
    see :func:`walk_plan`) or ``PLAN_EXACT`` (exact over ``ids``, int32 allowed NodeIds;
    deleted ones are skipped), from ``block`` when it holds a row per id (see the module
    docstring), ``BLOCK_QUERIES`` queries per pass over it. Threads share ``counter`` as in
    ``knn_kernel``; ``visited`` is the thread's tag array; outputs int32[n, k] / float32[n, k],
    best first, padded; ``used`` (int8[n]) what ran per query (``USED_*``), ``local``
    (float32[n]) the local share its probe measured (-1: none; both untouched by exact plans).
    """
    n = queries.shape[0]
    if plan == PLAN_EXACT and block[0].shape[0] == ids.shape[0]:  # only a walk probes
        hd = np.empty((BLOCK_QUERIES, k + 1), np.float32)
        hi = np.empty((BLOCK_QUERIES, k + 1), np.int32)
        sizes = np.zeros(BLOCK_QUERIES, np.int64)
        buf = np.empty(SCAN_ROWS, np.float32)
        while True:
            start = atomic_add(counter, 0, BLOCK_QUERIES)
            if start >= n:
                break
            stop = min(start + BLOCK_QUERIES, n)
            block_top_k_many(block, metric, queries[start:stop], ids, g.tombstones, k, hd, hi, sizes, buf)
            for qi in range(start, stop):
                size = sizes[qi - start]
                h_d = hd[qi - start]
                h_i = hi[qi - start]
                for j in range(size, k):
                    out_ids[qi, j] = -1
                    out_d[qi, j] = INF
                while size > 0:
                    out_ids[qi, size - 1] = h_i[0]
                    out_d[qi, size - 1] = h_d[0]
                    size = heap_pop(h_d, h_i, size)
        return
    walk = (plan & 1) == PLAN_WALK
    kk = max(k, ef) if walk else k
    res_d = np.empty(kk + 1, np.float32)
    res_i = np.empty(kk + 1, np.int32)
    m0 = g.links0.shape[1] - 1
    ncand = cand_capacity(ef, m0)
    cand_d = np.empty(ncand, np.float32)
    cand_i = np.empty(ncand, np.int32)
    hop = np.empty(m0 + 1, np.int32)
    if walk and visited.shape[0] <= g.links0.shape[0]:
        visited = np.zeros(g.links0.shape[0] + 1, np.uint16)  # see knn_one_kernel
    while True:
        start = atomic_add(counter, 0, chunk)
        if start >= n:
            break
        for qi in range(start, min(start + chunk, n)):
            _, cand_d, cand_i, u, loc = filter_one(g, rows, block, metric, queries[qi], k, ef, visited, mask, ids, seeds, plan,
                                                   res_d, res_i, cand_d, cand_i, hop, out_ids[qi], out_d[qi])
            used[qi] = u
            local[qi] = loc


def filter_scratch_size(k: int, ef: int, m0: int, dim: int) -> tuple[int, int]:
    """(float32, int32) scratch lengths ``knn_filter_one_kernel`` needs to allocate nothing."""
    kk = max(k, ef)
    n = k + kk + 1 + cand_capacity.py_func(ef, m0)
    return n + dim, n + m0 + 1


@kernel
def knn_filter_one_kernel(g, rows, block, metric, query, dim, k, ef, visited, scratch_f, scratch_i, node_keys, prep, mask, ids, seeds, plan):
    """One raw query, filtered: ``(status, [(key, distance, NodeId), ...], used, local)``.

    ``block``, ``mask``, ``ids``, ``seeds`` and ``plan`` as for :func:`knn_filter_kernel`; the status
    codes are ``knn_one_kernel``'s (``ONE_OK``, ``ONE_NOT_FINITE``, ``ONE_WRONG_DIM``, ``ONE_STALE``);
    ``used`` and ``local``: what ran (``USED_*``) and the local share the walk's probe measured.
    """
    res = [(np.int64(0), np.float32(0.0), np.int32(0)) for _ in range(0)]
    if query.shape[0] != dim or dim > rows[0].shape[1]:
        return ONE_WRONG_DIM, res, USED_PLANNED, -1.0
    if g.header[H_NODES] > rows[0].shape[0]:
        return ONE_STALE, res, USED_PLANNED, -1.0
    if visited.shape[0] <= g.links0.shape[0]:
        visited = np.zeros(g.links0.shape[0] + 1, np.uint16)  # see knn_one_kernel
    m0 = g.links0.shape[1] - 1
    kk = max(k, ef)
    ncand = cand_capacity(ef, m0)
    nf = k + kk + 1 + ncand
    fs, is_ = scratch_f, scratch_i
    if fs.shape[0] < nf + dim or is_.shape[0] < nf + m0 + 1:
        fs = np.empty(nf + dim, np.float32)
        is_ = np.empty(nf + m0 + 1, np.int32)
    qbuf = fs[nf : nf + dim]
    for j in range(dim):
        qbuf[j] = query[j]
    if prep and not prepare_query(qbuf, prep):
        return ONE_NOT_FINITE, res, USED_PLANNED, -1.0
    out_d, out_i = fs[:k], is_[:k]
    n, _, _, used, local = filter_one(g, rows, block, metric, qbuf, k, ef, visited, mask, ids, seeds, plan,
                         fs[k : k + kk + 1], is_[k : k + kk + 1], fs[k + kk + 1 : nf], is_[k + kk + 1 : nf], is_[nf : nf + m0 + 1], out_i, out_d)
    with_keys = node_keys.shape[0] > 0
    for j in range(n):
        nid = out_i[j]
        if with_keys and nid >= node_keys.shape[0]:
            return ONE_STALE, res, used, local  # see knn_one_kernel
        res.append((node_keys[nid] if with_keys else np.int64(nid), out_d[j], nid))
    return ONE_OK, res, used, local
