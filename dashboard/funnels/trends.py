"""Conversion by entry period, and time-to-convert histograms per step (DESIGN §4.2)."""

# SQL text here interpolates only table names and integers; every value is a parameter.
# ruff: noqa: S608

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal

from . import pg
from .query import FunnelQuery, FunnelQueryError
from .runner import Gathered, gather, required_steps

Interval = Literal["day", "week"]


@dataclass(frozen=True, slots=True)
class TrendPoint:
    period_start: date
    entrants: int
    completions: int
    conversion: float
    # The window of this period's last possible entrant is still open: the rate can still rise.
    incomplete: bool


def _period_start(day: date, interval: Interval) -> date:
    return day - timedelta(days=day.weekday()) if interval == "week" else day


def _entry_days(gathered: Gathered) -> tuple[Counter[date], Counter[date]]:
    """Entrants and completions per UTC entry day."""
    n = len(gathered.steps)
    relation = gathered.plain
    if relation is not None:
        if "funnel" in gathered.memo:  # the page: the days come with the histograms' bins
            days = _days_and_bins(gathered, None)[0]
            return days.entrants, days.completions
        rows = pg.fetch(
            relation.sql + "SELECT (entered_at AT TIME ZONE 'UTC')::date, count(*),"
            f" count(*) FILTER (WHERE furthest_step >= {n}) FROM outcomes GROUP BY 1",
            relation.params,
        )
        return Counter({d: e for d, e, _ in rows}), Counter({d: c for d, _, c in rows})
    entrants: Counter[date] = Counter()
    completions: Counter[date] = Counter()
    for outcome in gathered.outcomes or []:
        day = outcome.entered_at.astimezone(UTC).date()
        entrants[day] += 1
        completions[day] += outcome.furthest_step >= n
    return entrants, completions


def funnel_trends(
    query: FunnelQuery, interval: Interval = "day", gathered: Gathered | None = None
) -> list[TrendPoint]:
    """Entrants and completions (reached the last step) per entry day or ISO week (Monday).

    ``gathered`` is :func:`~.runner.gather` of this same query, when the caller has it."""
    if interval not in ("day", "week"):
        raise FunnelQueryError("invalid_interval", "interval must be day or week")
    entrants, completions = _entry_days(gathered or gather(query))
    now = query.clock
    step = timedelta(days=7 if interval == "week" else 1)
    points = []
    start = _period_start(query.since, interval)
    while start <= query.until:
        days = [start + timedelta(days=i) for i in range(step.days)]
        n_in = sum(entrants[d] for d in days if query.since <= d <= query.until)
        n_done = sum(completions[d] for d in days if query.since <= d <= query.until)
        last_entry = min(datetime.combine(start + step, time(0), tzinfo=UTC), query.entry_until)
        points.append(
            TrendPoint(
                period_start=start,
                entrants=n_in,
                completions=n_done,
                conversion=n_done / n_in if n_in else 0.0,
                incomplete=last_entry + query.window > now,
            )
        )
        start += step
    return points


@dataclass(frozen=True, slots=True)
class Bin:
    start_seconds: int
    end_seconds: int
    count: int


@dataclass(frozen=True, slots=True)
class StepHistogram:
    """Seconds from step ``index - 1`` to step ``index`` among people who reached ``index``."""

    index: int
    name: str
    count: int
    bins: list[Bin]


def auto_bin_count(n: int) -> int:
    return min(60, max(1, math.ceil(n ** (1 / 3)))) if n else 1


def _bins(counts: Counter[int], width: int, n_bins: int) -> list[Bin]:
    return [Bin(i * width, (i + 1) * width, counts.get(i, 0)) for i in range(n_bins)]


def time_to_convert(
    query: FunnelQuery, bins: int | None = None, gathered: Gathered | None = None
) -> list[StepHistogram]:
    """Histogram per step k ≥ 2 of the chosen step-(k-1)→k gaps, in equal whole-second bins from 0.

    With ``bins`` None the count is chosen from the data (cube root of n, 1..60). The last bin
    includes the largest gap. ``gathered`` is :func:`~.runner.gather` of this same query, when
    the caller has it.
    """
    if bins is not None and bins < 1:
        raise FunnelQueryError("invalid_bins", "bins must be at least 1")
    steps = required_steps(query)
    n = len(steps)
    if n < 2:
        return []
    gathered = gathered or gather(query)
    if gathered.plain is not None:
        days_and_bins, sizes, widths, n_bins = _days_and_bins(gathered, bins)
        per_step = days_and_bins.bins
    else:
        outcomes = gathered.outcomes or []
        gaps = [[o.gaps[k - 2] for o in outcomes if o.furthest_step >= k] for k in range(2, n + 1)]
        sizes = [len(g) for g in gaps]
        widths, n_bins = _layout([max(g, default=0.0) for g in gaps], sizes, bins)
        per_step = [
            Counter(min(int(gap // w), b - 1) for gap in g)
            for g, w, b in zip(gaps, widths, n_bins, strict=True)
        ]
    return [
        StepHistogram(step.index, step.name, sizes[i], _bins(per_step[i], widths[i], n_bins[i]))
        for i, step in enumerate(steps[1:])
    ]


def _layout(maxima: list[float], sizes: list[int], bins: int | None) -> tuple[list[int], list[int]]:
    """Each step's bin width (whole seconds) and bin count: ``bins``, else from the data."""
    n_bins = [bins or auto_bin_count(size) for size in sizes]
    widths = [max(1, math.ceil(m / b)) for m, b in zip(maxima, n_bins, strict=True)]
    return widths, n_bins


def _days_and_bins(
    gathered: Gathered, bins: int | None
) -> tuple[pg.DaysAndBins, list[int], list[int], list[int]]:
    """PostgreSQL: the per-day counts and the histograms' bins, one pass shared by the trend and
    the time-to-convert report; the histograms' sizes and ranges come from the funnel's own pass
    when it ran on this gathering, else from one query of counts and maxima."""
    key = ("days_and_bins", bins)
    if key not in gathered.memo:
        relation = gathered.plain
        assert relation is not None
        n = len(gathered.steps)
        funnel = gathered.memo.get("funnel")
        if funnel is not None:
            sizes, maxima_us = funnel.counts[1:], funnel.maxima
        else:
            columns = ", ".join(
                f"count(*) FILTER (WHERE furthest_step >= {k}), COALESCE(max({pg.gap(k)}), 0)"
                for k in range(2, n + 1)
            )
            (stats,) = pg.fetch(relation.sql + f"SELECT {columns} FROM outcomes", relation.params)
            sizes = [int(stats[2 * i]) for i in range(n - 1)]
            maxima_us = [int(stats[2 * i + 1]) for i in range(n - 1)]
        widths, n_bins = _layout([m / 1e6 for m in maxima_us], sizes, bins)
        gathered.memo[key] = (pg.days_and_bins(relation, n, widths, n_bins), sizes, widths, n_bins)
    return gathered.memo[key]
