"""The filtered walk's local probe: the allowed share around the node the descent reached.

A filter's global share says nothing of where its allowed items lie. The probe counts them
among the links of the node the unfiltered descent reached (and theirs), by mask lookups
only, and the thresholds below turn that count into a decision of :mod:`.filtered`: leave
for exact search where the share is short (the filter avoids the query), walk ACORN's way
where it thins out, walk as the post-filter where most items around the query are allowed.
A count of a few dozen links is noisy, so a decision against chance keeps a margin of
``PROBE_Z`` standard deviations of a random filter's count (:func:`chance_margin`).
"""

from __future__ import annotations

import numpy as np

from .jit import helper
from .layout import COUNT_MASK
from .prefetch import prefetch_lines

__all__ = ["POST_RICH", "POST_LOCAL", "LOCAL_SHORT", "PROBE_MIN", "PROBE_Z", "allowed_near", "chance_margin"]

#: From this allowed share around the query (by more than chance, ``PROBE_Z``) the post-filter
#: walk is the cheaper (the planner's crossover of the two walks, ``POST_SHARE``).
POST_RICH = 0.4
#: A post-filter walk whose probe finds a local share below this fraction of the global one
#: (but not short) walks ACORN's way: the post-filter would traverse many filtered-out nodes.
POST_LOCAL = 0.7
#: A local share below this fraction of the global one is short (the filter avoids the query).
LOCAL_SHORT = 0.5
#: Allowed nodes the probe must expect at the global share before it may call a shortage.
PROBE_MIN = 8.0
#: The post-filter's probe calls a share thin only this many standard deviations of a random
#: filter's count below the line (its sample is a few dozen links: chance must not trigger it).
PROBE_Z = 2.0


@helper
def chance_margin(share, seen):
    """``PROBE_Z`` standard deviations of the allowed share a random filter of ``share``
    shows among ``seen`` links (at least one)."""
    return PROBE_Z * np.sqrt(share * (1.0 - share) / max(seen, 1))


@helper
def _marked(links0, mask, x):
    """``(links, allowed among them)`` of node ``x``'s level-0 list, by mask lookups."""
    cnt = links0[x, 0] & COUNT_MASK
    hit = np.int64(0)
    for j in range(1, cnt + 1):
        if mask[np.uint32(links0[x, j])] != 0:
            hit += 1
    return np.int64(cnt), hit


@helper
def allowed_near(g, mask, node, share):
    """The allowed share among ``node``'s level-0 neighbours, by mask lookups only (no
    distances), and among theirs too when the first are too few to tell (the global
    ``share`` predicts fewer than ``2 * PROBE_MIN`` allowed) or their share is below
    ``POST_LOCAL`` of ``share``, and a third hop's while still too few; returns ``(local
    share, neighbours read)`` (-1: none)."""
    links0 = g.links0
    cnt = links0[node, 0] & COUNT_MASK
    seen, hit = _marked(links0, mask, node)
    if share * seen < 2.0 * PROBE_MIN or hit < POST_LOCAL * share * seen:
        # every neighbour's list asked for at once: their misses overlap (the walk's first
        # expansions read the same lists)
        for j in range(1, cnt + 1):
            prefetch_lines(links0, np.uint32(links0[node, j]), 0, links0.shape[1] * 4)
        for j in range(1, cnt + 1):
            c, h = _marked(links0, mask, np.uint32(links0[node, j]))
            seen += c
            hit += h
    if share * seen < 2.0 * PROBE_MIN:
        # sparse lists (an inner-product graph keeps one or two links on many level-0
        # lists) leave two hops too few to tell: a third, until the share predicts enough
        for j in range(1, cnt + 1):
            x = np.uint32(links0[node, j])
            for i in range(1, (links0[x, 0] & COUNT_MASK) + 1):
                c, h = _marked(links0, mask, np.uint32(links0[x, i]))
                seen += c
                hit += h
                if share * seen >= 2.0 * PROBE_MIN:
                    return hit / seen, seen
    if seen == 0:
        return -1.0, seen
    return hit / seen, seen
