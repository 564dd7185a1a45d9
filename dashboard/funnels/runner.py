"""``run_funnel(FunnelQuery) -> FunnelResult``: the funnel report of DESIGN §4.2."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Any

from django.db import connection

from . import pg
from .aggregate import (
    friction_step,
    median,
    settled_counts,
    step_results,
    steps_from_outcomes,
    still_converting,
)
from .outcomes import Outcome, allowed_people, collect_outcomes
from .query import FunnelQuery, FunnelQueryError, FunnelResult, StepDef, StepResult


def uses_sql(query: FunnelQuery) -> bool:
    """PostgreSQL aggregates progress rows in SQL; elsewhere (SQLite) Python does."""
    return query.mode != "events" and connection.vendor == "postgresql"


def required_steps(query: FunnelQuery) -> list[StepDef]:
    steps = query.step_defs()
    if not steps:
        raise FunnelQueryError("flow_without_steps", f"flow {query.flow.slug!r} has no steps")
    return steps


def steps_up_to(query: FunnelQuery, step: int) -> list[StepDef]:
    """The query's steps, once ``step`` is one a report can be about (2 to the last)."""
    steps = required_steps(query)
    if not 2 <= step <= len(steps):
        raise FunnelQueryError("invalid_step", f"step must be between 2 and {len(steps)}")
    return steps


def sql_relation(query: FunnelQuery, steps: list[StepDef]) -> pg.Relation:
    """The PostgreSQL outcomes relation: progress rows plus the re-entrants' re-entry rows."""
    return pg.outcomes_cte(query, allowed_people(query), steps[0].event)


@dataclass(frozen=True)
class Gathered:
    """A query's entrants, gathered once for the several reports a page draws from one query
    (funnel, trends, time to convert): the segment's re-entrants are looked up, or (elsewhere) the
    outcomes collected, once instead of once per report.

    On PostgreSQL, the outcomes relation with the breakdown column (``relation``) and without it
    (``plain``, for reports that do not group by it); elsewhere every entrant's outcome."""

    steps: list[StepDef]
    relation: pg.Relation | None = None
    plain: pg.Relation | None = None
    # A sample of ``relation``'s progress rows: the medians' pivots (``pg.funnel_pass``).
    sample: pg.Relation | None = None
    outcomes: list[Outcome] | None = None
    # On PostgreSQL, what one report computed that the next one reads instead of another pass:
    # the funnel's whole-funnel aggregate (the histograms' sizes and ranges) and its per-day
    # counts (the trend), the histograms' bins.
    memo: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)


def gather(query: FunnelQuery) -> Gathered:
    """The entrants of ``query``, to pass to :func:`run_funnel`, ``funnel_trends`` and
    ``time_to_convert`` for that same query."""
    steps = required_steps(query)
    if not uses_sql(query):
        return Gathered(steps, outcomes=collect_outcomes(query, steps, raw=query.mode == "events"))
    allowed = allowed_people(query)
    # The segment's re-entrants, looked up once for every relation built here.
    reentrants = pg.reentrant_members(query, allowed) if allowed is not None else None
    relation = pg.outcomes_cte(query, allowed, steps[0].event, reentrants=reentrants)
    sample = pg.outcomes_cte(
        query,
        allowed,
        steps[0].event,
        sample_percent=pg.SAMPLE_PERCENT,
        reentrants=reentrants,
    )
    if not query.breakdown:
        return Gathered(steps, relation=relation, plain=relation, sample=sample)
    plain = pg.outcomes_cte(query, allowed, steps[0].event, breakdown=False, reentrants=reentrants)
    return Gathered(steps, relation=relation, plain=plain, sample=sample)


def run_funnel(query: FunnelQuery, gathered: Gathered | None = None) -> FunnelResult:
    """The funnel report; ``gathered`` is :func:`gather` of this same query, when the caller
    draws other reports from it too."""
    # Called alone (no gathering shared with the trend), the pass leaves out the entry days.
    by_day = gathered is not None
    gathered = gathered or gather(query)
    steps = gathered.steps
    now = query.clock
    if gathered.relation is not None:
        funnel_pass = pg.funnel_pass(
            gathered.relation,
            len(steps),
            now - query.window,
            by_breakdown=bool(query.breakdown),
            sample=gathered.sample,
            by_day=by_day,
        )
        aggregates = dict(funnel_pass.aggregates)
        total = aggregates.pop(None)
        gathered.memo["funnel"] = total
        if funnel_pass.entrants is not None:
            gathered.memo["days"] = (funnel_pass.entrants, funnel_pass.completions)
        overall = step_results(steps, total.counts, total.medians)
        still = total.still_converting
        settled = total.settled
        groups = {
            value: step_results(steps, agg.counts, agg.medians) for value, agg in aggregates.items()
        }
    else:
        outcomes = gathered.outcomes or []
        overall = steps_from_outcomes(steps, outcomes)
        still = still_converting(outcomes, len(steps), query.window, now)
        settled = settled_counts(outcomes, len(steps), query.window, now)
        by_value: dict[str, list[Outcome]] = defaultdict(list)
        for outcome in outcomes:
            if outcome.breakdown is not None:
                by_value[outcome.breakdown].append(outcome)
        groups = {value: steps_from_outcomes(steps, group) for value, group in by_value.items()}
    return FunnelResult(
        flow=query.flow.slug,
        since=query.since,
        until=query.until,
        window_seconds=int(query.window.total_seconds()),
        segment=query.segment.slug if query.segment is not None else None,
        steps=overall,
        still_converting=still,
        friction_step=friction_step(settled),
        breakdown=_ordered(groups) if query.breakdown else None,
        settled=settled,
    )


def _ordered(groups: dict[str, list[StepResult]]) -> dict[str, list[StepResult]]:
    """Largest groups first, then by value; stable for the same data."""
    return dict(sorted(groups.items(), key=lambda item: (-item[1][0].count, item[0])))


def step_median_seconds(query: FunnelQuery, step: int) -> float | None:
    """The funnel's ``median_seconds_from_previous`` of step ``step`` (≥ 2) alone, exactly as
    :func:`run_funnel` reports it: one sort of that step's gaps instead of the whole report
    (every step's medians, and the breakdown's groups when the query has one)."""
    steps = steps_up_to(query, step)
    if uses_sql(query):
        relation = pg.outcomes_cte(query, allowed_people(query), steps[0].event, breakdown=False)
        return pg.step_median(relation, step)
    outcomes = collect_outcomes(replace(query, breakdown=None), steps, raw=query.mode == "events")
    return median([o.gaps[step - 2] for o in outcomes if o.furthest_step >= step])
