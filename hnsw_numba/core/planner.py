"""The filtered-search planner: graph walk, widened walk or exact search over the allowed rows.

A filtered walk (ACORN-style, see :mod:`hnsw_numba.kernels.filtered`) claims up to ``m0``
allowed nodes per expansion (``m0``: the level-0 degree) from a node's neighbours and, through
the filtered-out ones, their neighbours. With a fraction ``p`` of the items allowed an
expansion meets about ``m0 p`` allowed neighbours and ``(1 - p) m0 * m0 p`` more two hops away;
when that falls short of ``m0`` the allowed subgraph is thin and the beam is widened by
``m0 / reach`` (recall), which costs as much more. On a large index ACORN's walk also needs a
wider beam than the unfiltered one to keep recall: on clustered 128-d vectors, 10-39 % of the
items allowed at random, ef = 64 finds 0.987-0.997 of the exact top-10 at 100,000 items but
0.927-0.978 at 1,000,000 (ef = 96 there: 0.972-0.988), so above ``ACORN_LIVE`` live items the
beam grows by ``ACORN_GROW`` per decade of them. The unfiltered walk computes about
``WALK_PER_EF * m0`` distances per unit of beam, at random rows: the unit of every estimate.
ACORN's walk computes as many at ``ACORN_COST`` times the price each (its look-through reads
links, and its claimed nodes lie two hops apart). From ``POST_SHARE`` of the items allowed the
walk is the post-filter instead: the unfiltered walk keeping allowed nodes only. Its beam
holds allowed nodes, so it reaches ``1 / p`` times as far as the unfiltered walk at the same
beam; where the share around the query is the filter's, the beam is ``ef * p``, grown on a
large index (:func:`planned_post_beam`), and reaches as far as the unfiltered walk would (a
filter correlated with the query keeps the asked beam). Below ``POST_SHARE`` it is chosen on
an index of more than ``ACORN_LIVE`` live items where its estimate is the cheaper (it is, down
to ``ACORN_MIN_SHARE``). Exact
search reads the allowed rows in order at ``EXACT_ROW + EXACT_DIM * dim`` units each (a row
streams its bytes; a walk's distance waits for memory whatever its size). The cheaper
estimate wins, except that below ``ACORN_MIN_SHARE`` of the items allowed the auto plan is
exact whatever the estimates (ACORN's walk then loses recall on a large index at any beam);
the numbers behind the choice stay in the :class:`SearchPlan` (``index.last_plan``).

The global share says nothing of where the allowed items lie. When they lie away from the
query (a filter anti-correlated with it) the walk starts among filtered-out nodes and, at the
planned beam, loses recall on its way to them (clustered 100,000 x 128, half the items
allowed on the far side: recall@10 0.933 at ef = 64; a tenth: 0.853; a wider beam helps only
partly). So every walk probes: its first expansion (the post-filter: the links around the node
the descent reached) measures the allowed share around the query, and where that is below ``LOCAL_SHORT`` of the global share (see
:mod:`hnsw_numba.kernels.filtered`) the query leaves the planned walk for exact search (a
forced walk for a walk with ``SHORT_WIDEN`` times the beam instead). The plan fixes the choice beforehand; which queries took it, and the share they met, come back
in the call's :class:`SearchPlan` (plan ``"graph->exact"`` or ``"graph->wide"``; a post-filter
walk meeting a share below ``POST_LOCAL`` of the global one walks ACORN's way: ``"graph->acorn"``;
a planned ACORN walk meeting ``POST_SHARE`` or more, a filter correlated with the query, walks as
the post-filter: ``"graph->post"``).

A wider beam from the same start travels through the filtered-out nodes too. The third way out
(``"graph->descend"``, :mod:`hnsw_numba.kernels.filtered_descent`) descends the upper levels
again through allowed nodes only and walks ACORN's way from the nodes that descent keeps, at
``DESCEND_WIDEN`` times the planned beam: about ``DESCEND_PER_M0 * m0`` distances more than that
walk. Neither keeps recall once the index is large: with the far half of 1,000,000 × 128
clustered vectors allowed, a short query's wider walk found 0.82 of the exact top-10, the
descent 0.57 and the post-filter walk 0.88 (exact search 1.0, and faster than the first and
the last), against 0.96 for the descent at 100,000. So the auto plan answers a short query
exactly whatever the estimates say; ``plan="graph"`` (the wider walk) and ``plan="descend"``
trade recall for speed on request.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from ..kernels.filtered import EF_MASK, PLAN_EXACT, PLAN_POST, PLAN_WALK, POST_SHIFT, USED_ACORN, USED_DESCEND, USED_EXACT, USED_POST, walk_plan
from ..kernels.probe import LOCAL_SHORT, POST_LOCAL, POST_RICH
from .config import MAX_EF
from .errors import InvalidParameterError

__all__ = ["SearchPlan", "choose_plan", "check_plan", "acorn_growth", "planned_post_beam", "PLANS", "WALK_PER_EF", "EXACT_ROW", "EXACT_DIM", "SKETCH_ROW", "SKETCH_DIM", "ACORN_COST", "MAX_WIDEN", "SHORT_WIDEN",
           "POST_SHARE", "POST_EXP", "DESCEND_WIDEN", "DESCEND_PER_M0", "ACORN_MIN_SHARE", "ACORN_LIVE", "ACORN_GROW", "POST_GROW", "POST_MIN"]

#: "graph" walks as the planner says; "post" and "acorn" force that walk; "descend" walks as
#: "graph" does and sends a short query down the filtered descent.
PLANS = ("auto", "graph", "exact", "post", "acorn", "descend")
#: From this share of the live items allowed the walk is the post-filter (the unfiltered
#: beam search keeping allowed nodes only); below it, down to ``ACORN_MIN_SHARE`` on an index
#: of more than ``ACORN_LIVE`` live items (where ACORN's beam grows), where the post-filter's
#: estimate is the cheaper (1,000,000 x 128, random 10-20 %: 270-283 against ACORN's 398-411 us
#: a query, recall 0.991-0.998 against 0.972-0.980). On smaller indexes ACORN's walk keeps
#: recall the post-filter's planned beam loses on hubs and duplicates (10,000 x 32 inner
#: product, lognormal norms, 30 %: 0.974 against 0.942).
POST_SHARE = POST_RICH
#: The post-filter walk of beam ``b`` at share ``p`` reaches ``b / p`` nodes and costs
#: ``(b / (p ef)) ** POST_EXP`` times the unfiltered walk at ``ef`` (fitted at p = 0.4-0.9 with
#: b = ef: 0.5 at 128-d, 0.7 at 384-d; 1,000,000 x 128, p = 0.1-0.5 at the planned beams, all
#: reaching ~130 nodes at ef 64: 262-283 us a query each).
POST_EXP = 0.6
#: Cost of one distance of ACORN's walk relative to one of the unfiltered walk (1.1-1.8
#: measured at p = 0.05-0.3).
ACORN_COST = 1.5
#: Distances a walk computes per unit of beam and per level-0 link (fitted on 384-d and
#: 128-d indexes, m = 16: about 1,500 at ef = 64).
WALK_PER_EF = 0.75
#: Cost of one row of exact search relative to one distance of the unfiltered walk is
#: ``EXACT_ROW + EXACT_DIM * dim`` (rows read in order; fitted: 0.19 at 128-d, 0.39 at 384-d).
EXACT_ROW = 0.09
EXACT_DIM = 0.00078
#: ... and ``SKETCH_ROW + SKETCH_DIM * dim`` through a kept Filter's block and its int8 sketch
#: (a quarter of the bytes, in order; fitted: 0.084 at 128-d, 0.091 at 384-d).
SKETCH_ROW = 0.081
SKETCH_DIM = 0.000027
#: Below this share of the live items allowed the auto plan answers exactly: ACORN's walk over
#: so thin a filter loses recall on a large index whatever its beam (1,000,000 x 128 clustered,
#: random filters, ef 64 x 1-8: 0.76-0.93 of the exact top-10 at 5 %, 0.71-0.86 at 2 %,
#: 0.81 at 7 % and 0.89 at 10 % against 0.92 for the unfiltered walk at ef 64).
ACORN_MIN_SHARE = 0.08
#: Above this many live items ACORN's beam grows by ``ACORN_GROW`` times the asked one per
#: decade of them (``1 + ACORN_GROW * log10(live / ACORN_LIVE)``: 1.5 at 1,000,000).
ACORN_LIVE = 100_000
ACORN_GROW = 0.5
#: The post-filter's beam reaches as far as the unfiltered walk at the asked ``ef`` up to
#: ``ACORN_LIVE`` live items, and this many times ``ef`` further per decade of them
#: (:func:`planned_post_beam`; 1,000,000 x 128 clustered, random filters of 10-50 %: a reach of
#: 1.5 ef finds 0.94-0.97 of the exact top-10, of 2 ef 0.990-1.000).
POST_GROW = 1.0
#: The post-filter's planned beam is at least ``2 k`` and this (never past ``ef``): a heap of a
#: few allowed nodes ends at the first local minimum (12,000 x 128, half allowed, k = 1, ef 10:
#: beam 5 found 0.945 of the top-1, ef 10 0.985; k = 3 at 30 %, ef 12: beam 4 0.942).
POST_MIN = 16
#: The widened beam is at most this many times the asked one.
MAX_WIDEN = 8
#: Below this fill of an expansion the beam is widened.
FULL = 0.9
#: A walk whose probe finds the allowed items away from the query continues with this many
#: times the asked beam (or answers exactly where that is cheaper).
SHORT_WIDEN = 16
#: A short query's walk from the end of the filtered descent has this many times the planned beam.
DESCEND_WIDEN = 1.5
#: Distances of the filtered descent, per level-0 link (a few greedy steps on each upper level).
DESCEND_PER_M0 = 4.0


class SearchPlan(NamedTuple):
    """Which plan ran for a search and why (``Hnsw.last_plan``, ``search(..., explain=True)``)."""

    plan: str  # "graph", "graph-wide", "exact" or "unfiltered"; "<walk>->exact" / "->wide" / "->descend" / "->acorn" / "->post" when queries left the planned walk
    ef: int  # the beam the walk used (the asked one for exact; the wider one after "->wide")
    allowed: int  # live items the filter allows
    live: int  # live items in the index
    walk_cost: float  # estimated distances of the walk (at the planned beam)
    exact_cost: float  # estimated cost of exact search, in the same units
    forced: bool  # plan= chose it, not the planner
    probe: float = 0.0  # a walk leaves where the allowed share around the query is below this (0: no probe)
    short_plan: str = ""  # what it leaves for: "exact", "wide" (a walk at short_ef) or "descend" (the filtered descent, then a walk at short_ef)
    short_ef: int = 0  # the short walk's beam
    short_cost: float = 0.0  # estimated cost of the short walk (with the descent for "descend")
    switched: int = 0  # queries of the call that left the planned walk
    queries: int = 1  # queries of the call
    local: float = -1.0  # the allowed share their probe met (mean over them; with explain=True a single query's always; -1: none)
    code: int = PLAN_WALK  # the kernels' plan argument
    walk: str = ""  # the walk: "post" (post-filter) or "acorn" (over the allowed nodes); "" for exact / unfiltered

    @property
    def reason(self) -> str:
        """One line: what ran and why."""
        share = 100.0 * self.allowed / max(self.live, 1)
        walk = f", {self.walk} walk" if self.walk else ""
        head = f"{self.plan} (ef={self.ef}{walk}): {self.allowed:,} of {self.live:,} live items allowed ({share:.3g} %)"
        if self.plan == "unfiltered":
            return head + "; no filter"
        if self.forced:
            why = head + "; forced by plan="
        else:
            cmp = "<=" if self.plan == "exact" else ">"
            why = head + f"; exact ~{self.exact_cost:,.0f} {cmp} walk ~{self.walk_cost:,.0f} (distance units)"
            if self.plan == "exact" and self.exact_cost > self.walk_cost:
                why = head + f"; below {100.0 * ACORN_MIN_SHARE:g} % allowed a walk loses recall: exact (~{self.exact_cost:,.0f} against a walk's ~{self.walk_cost:,.0f})"
        beam = (self.code >> POST_SHIFT) & EF_MASK if self.code & PLAN_POST and "->" not in self.plan else 0
        if 0 < beam < self.ef:
            why += f"; the post walk keeps {beam} allowed items (ef x the share, grown on a large index, at least 2k and {POST_MIN}), ef={self.ef} where the share around the query exceeds the filter's by more than chance"
        if self.probe <= 0.0:
            return why
        exact = self.short_plan == "exact"
        then = "exact" if exact else f"a walk at ef={self.short_ef}"
        if self.short_plan == "descend":
            then = f"the filtered descent and a walk from it at ef={self.short_ef}"
        rule = f"exact ~{self.exact_cost:,.0f} {'<=' if exact else '>'} walk at ef={self.short_ef} ~{self.short_cost:,.0f}"
        if self.forced:
            rule = "a forced walk keeps walking"
        if self.switched:
            of, them = ("the query", "it") if self.queries == 1 else (f"{self.switched:,} of {self.queries:,} queries", "them")
            if self.plan.endswith("->acorn"):
                return why + f"; {of} met {100.0 * self.local:.3g} % allowed around {them} (< {100.0 * self.probe * POST_LOCAL / LOCAL_SHORT:.3g} %): ACORN's walk"
            if self.plan.endswith("->post"):
                return why + f"; {of} met {100.0 * self.local:.3g} % allowed around {them} (>= {100.0 * POST_RICH:.3g} %): the post-filter walk"
            return why + f"; {of} met {100.0 * self.local:.3g} % allowed around {them} (< {100.0 * self.probe:.3g} %): {then} ({rule})"
        met = f"; it met {100.0 * self.local:.3g} % allowed around it" if self.local >= 0.0 else ""
        if 0.0 <= self.local < self.probe:  # it walked on: the probe's margin for chance, or a sample too small to tell
            met += " (within chance of the line, or too few links read to tell: it kept walking)"
        return why + f"{met}; a query meeting < {100.0 * self.probe:.3g} % leaves for {then} ({rule})"

    def left(self, switched: int, queries: int, local: float, used: int) -> SearchPlan:
        """This plan after ``switched`` of ``queries`` queries left the walk (``used``: what they ran)."""
        if used == USED_EXACT:
            return self._replace(plan=self.plan + "->exact", switched=switched, queries=queries, local=local)
        if used == USED_DESCEND:
            return self._replace(plan=self.plan + "->descend", ef=self.short_ef, switched=switched, queries=queries, local=local, walk="acorn")
        if used == USED_ACORN:
            return self._replace(plan=self.plan + "->acorn", switched=switched, queries=queries, local=local, walk="acorn")
        if used == USED_POST:
            return self._replace(plan=self.plan + "->post", ef=(self.code >> POST_SHIFT) & EF_MASK, switched=switched, queries=queries, local=local, walk="post")
        return self._replace(plan=self.plan + "->wide", ef=self.short_ef, switched=switched, queries=queries, local=local, walk="acorn")

    def __str__(self) -> str:
        return self.reason


def acorn_growth(live: int) -> float:
    """How many times the asked beam ACORN's walk needs over ``live`` items to keep recall
    (1 up to ``ACORN_LIVE``, then ``ACORN_GROW`` more per decade)."""
    return 1.0 + ACORN_GROW * max(0.0, math.log10(max(live, 1) / ACORN_LIVE))


def planned_post_beam(ef: int, share: float, live: int) -> int:
    """The post-filter's beam at the asked ``ef`` over a filter allowing ``share`` of ``live``
    items, where the share around the query is the filter's: its heap holds allowed nodes only,
    so it reaches ``beam / share`` nodes, which is ``ef`` up to ``ACORN_LIVE`` live items and
    ``POST_GROW`` times ``ef`` more per decade of them (at most ``ef``, at least 1)."""
    grow = 1.0 + POST_GROW * max(0.0, math.log10(max(live, 1) / ACORN_LIVE))
    return max(1, min(ef, int(math.ceil(ef * share * grow))))


def check_plan(plan: object) -> str:
    """``plan`` if it is one of ``PLANS``, else InvalidParameterError."""
    if plan not in PLANS:
        raise InvalidParameterError(f"plan must be one of {PLANS}, got {plan!r}")
    return plan  # type: ignore[return-value]


def choose_plan(allowed: int, live: int, m0: int, ef: int, plan: str, dim: int = 128, sketched: bool = False, k: int = 1) -> SearchPlan:
    """The plan for a filter allowing ``allowed`` of ``live`` items at beam ``ef``.

    Parameters
    ----------
    allowed, live : int
        Live items the filter allows; live items in the index.
    m0 : int
        The graph's level-0 degree.
    ef : int
        The asked beam.
    plan : str
        "auto" (cheapest estimate), "graph" (a walk: the post-filter from ``POST_SHARE`` or
        where estimated cheaper, else ACORN's, widened as the estimate says), "post" / "acorn"
        (that walk), "descend" (a walk whose short queries take the filtered descent) or "exact".
    dim : int
        The vectors' dimension (the price of an exact row).
    sketched : bool
        Whether exact search reads a kept block's int8 sketch (priced ``SKETCH_ROW``,
        ``SKETCH_DIM``) rather than the rows themselves.
    k : int
        Results asked for: the post-filter's beam holds at least ``k``.

    Returns
    -------
    SearchPlan
        The choice, its estimates and the kernels' plan argument (``code``).
    """
    p = allowed / max(live, 1)
    m0 = max(m0, 1)
    forced = plan != "auto"
    reach = m0 * p + (1.0 - p) * m0 * m0 * p
    fill = min(1.0, reach / m0)
    widen = acorn_growth(live) / (1.0 if fill >= FULL else max(fill, 1e-9))
    acorn_ef = min(MAX_EF, int(math.ceil(ef * min(float(MAX_WIDEN), widen))))
    acorn = ACORN_COST * WALK_PER_EF * m0 * acorn_ef
    post_ef = max(min(ef, max(2 * k, POST_MIN)), planned_post_beam(ef, p, live))
    post_cost = WALK_PER_EF * m0 * ef * (post_ef / (ef * max(p, 1e-9))) ** POST_EXP  # the walk reaches post_ef / p nodes
    cheaper = live > ACORN_LIVE and p >= ACORN_MIN_SHARE and post_cost <= acorn  # where ACORN's beam grows
    post = plan == "post" or (plan in ("auto", "graph", "descend") and (p >= POST_SHARE or cheaper))
    ef_walk, walk = (ef, post_cost) if post else (acorn_ef, acorn)
    exact = ((SKETCH_ROW + SKETCH_DIM * dim) if sketched else (EXACT_ROW + EXACT_DIM * dim)) * allowed
    if plan == "exact" or (plan == "auto" and (exact <= walk or p < ACORN_MIN_SHARE)):
        return SearchPlan("exact", ef, allowed, live, walk, exact, forced, code=PLAN_EXACT)
    name = "graph" if ef_walk == ef else "graph-wide"
    rich = 0 if post or plan == "acorn" else ef  # a planned ACORN walk meeting a rich share around the query walks as the post-filter
    beam = post_ef if post else 0
    kind = "post" if post else "acorn"
    short_ef = min(MAX_EF, max(ef_walk, ef * SHORT_WIDEN))
    short = ACORN_COST * WALK_PER_EF * m0 * short_ef  # the wider walk is ACORN's
    desc_ef = min(MAX_EF, int(ef_walk * DESCEND_WIDEN))
    desc = DESCEND_PER_M0 * m0 + ACORN_COST * WALK_PER_EF * m0 * desc_ef
    if plan == "descend":
        return SearchPlan(name, ef_walk, allowed, live, walk, exact, forced, LOCAL_SHORT * p, "descend", desc_ef, desc, code=walk_plan(desc_ef, post, True, rich, beam), walk=kind)
    if plan == "auto":  # a short query is answered exactly, whatever the price (see the module docstring)
        return SearchPlan(name, ef_walk, allowed, live, walk, exact, forced, LOCAL_SHORT * p, "exact", short_ef, short, code=walk_plan(0, post, rich_ef=rich, post_ef=beam), walk=kind)
    if short_ef > ef_walk:  # a forced walk never leaves for exact search, but may widen
        return SearchPlan(name, ef_walk, allowed, live, walk, exact, forced, LOCAL_SHORT * p, "wide", short_ef, short, code=walk_plan(short_ef, post, rich_ef=rich, post_ef=beam), walk=kind)
    return SearchPlan(name, ef_walk, allowed, live, walk, exact, forced, code=PLAN_WALK | (PLAN_POST | beam << POST_SHIFT if post else 0), walk=kind)
