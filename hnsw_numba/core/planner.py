"""The filtered-search planner: graph walk, widened walk or exact search over the allowed rows.

A filtered walk (ACORN-style, see :mod:`hnsw_numba.kernels.filtered`) claims up to ``m0``
allowed nodes per expansion (``m0``: the level-0 degree) from a node's neighbours and, through
the filtered-out ones, their neighbours. With a fraction ``p`` of the items allowed an
expansion meets about ``m0 p`` allowed neighbours and ``(1 - p) m0 * m0 p`` more two hops away;
when that falls short of ``m0`` the allowed subgraph is thin and the beam is widened by
``m0 / reach`` (recall), which costs as much more. A walk computes about ``WALK_PER_EF * m0``
distances per unit of beam, at random rows; exact search reads the allowed rows in order at
``EXACT_ROW`` of that cost each. The cheaper estimate wins; the numbers behind the choice stay
in the :class:`SearchPlan` (``index.last_plan``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

from .config import MAX_EF
from .errors import InvalidParameterError

__all__ = ["SearchPlan", "choose_plan", "check_plan", "PLANS", "WALK_PER_EF", "EXACT_ROW", "MAX_WIDEN"]

PLANS = ("auto", "graph", "exact")
#: Distances a walk computes per unit of beam and per level-0 link (fitted on 384-d and
#: 128-d indexes, m = 16: about 1,500 at ef = 64).
WALK_PER_EF = 0.75
#: Cost of one row of exact search relative to one distance of the walk (rows read in order,
#: four per pass, without heap work for most of them).
EXACT_ROW = 0.3
#: The widened beam is at most this many times the asked one.
MAX_WIDEN = 8
#: Below this fill of an expansion the beam is widened.
FULL = 0.9


class SearchPlan(NamedTuple):
    """Which plan ran for a search and why (``Hnsw.last_plan``, ``search(..., explain=True)``)."""

    plan: str  # "graph", "graph-wide", "exact" or "unfiltered"
    ef: int  # the beam the walk used (the asked one for exact)
    allowed: int  # live items the filter allows
    live: int  # live items in the index
    walk_cost: float  # estimated distances of the walk (at the planned beam)
    exact_cost: float  # estimated cost of exact search, in the same units
    forced: bool  # plan= chose it, not the planner

    @property
    def reason(self) -> str:
        """One line: what ran and why."""
        share = 100.0 * self.allowed / max(self.live, 1)
        head = f"{self.plan} (ef={self.ef}): {self.allowed:,} of {self.live:,} live items allowed ({share:.3g} %)"
        if self.forced:
            return head + "; forced by plan="
        if self.plan == "unfiltered":
            return head + "; no filter"
        cmp = "<=" if self.plan == "exact" else ">"
        return head + f"; exact ~{self.exact_cost:,.0f} {cmp} walk ~{self.walk_cost:,.0f} (distance units)"

    def __str__(self) -> str:
        return self.reason


def check_plan(plan: object) -> str:
    """``plan`` if it is one of ``PLANS``, else InvalidParameterError."""
    if plan not in PLANS:
        raise InvalidParameterError(f"plan must be one of {PLANS}, got {plan!r}")
    return plan  # type: ignore[return-value]


def choose_plan(allowed: int, live: int, m0: int, ef: int, plan: str) -> SearchPlan:
    """The plan for a filter allowing ``allowed`` of ``live`` items at beam ``ef``.

    ``plan``: "auto" (cheapest estimate), "graph" (the walk, widened as the estimate says)
    or "exact".
    """
    p = allowed / max(live, 1)
    m0 = max(m0, 1)
    reach = m0 * p + (1.0 - p) * m0 * m0 * p
    fill = min(1.0, reach / m0)
    widen = 1.0 if fill >= FULL else min(float(MAX_WIDEN), 1.0 / max(fill, 1e-9))
    ef_walk = min(MAX_EF, int(math.ceil(ef * widen)))
    walk = WALK_PER_EF * m0 * ef_walk
    exact = EXACT_ROW * allowed
    if plan == "exact" or (plan == "auto" and exact <= walk):
        return SearchPlan("exact", ef, allowed, live, walk, exact, plan != "auto")
    return SearchPlan("graph" if ef_walk == ef else "graph-wide", ef_walk, allowed, live, walk, exact, plan != "auto")
