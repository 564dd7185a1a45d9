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
        if "days" in gathered.memo:  # the page: the days came with the funnel's grouped pass
            return gathered.memo["days"]
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
    query: FunnelQuery,
    bins: int | None = None,
    gathered: Gathered | None = None,
    *,
    step: int | None = None,
) -> list[StepHistogram]:
    """Histogram per step k ≥ 2 of the chosen step-(k-1)→k gaps, in equal whole-second bins from 0.

    With ``bins`` None the count is chosen from the data (cube root of n, 1..60). The last bin
    includes the largest gap. ``gathered`` is :func:`~.runner.gather` of this same query, when
    the caller has it. With ``step``, only that step's histogram (an empty list when it is not a
    step k ≥ 2): the page draws one at a time.
    """
    if bins is not None and bins < 1:
        raise FunnelQueryError("invalid_bins", "bins must be at least 1")
    steps = required_steps(query)
    n = len(steps)
    wanted = [k for k in range(2, n + 1) if step is None or k == step]
    if not wanted:
        return []
    gathered = gathered or gather(query)
    if gathered.plain is not None:
        sizes, widths, n_bins = _sizes_and_layout(gathered, bins)
        per_step = _binned(gathered, bins, wanted, widths, n_bins)
    else:
        outcomes = gathered.outcomes or []
        gaps = [[o.gaps[k - 2] for o in outcomes if o.furthest_step >= k] for k in range(2, n + 1)]
        sizes = [len(g) for g in gaps]
        widths, n_bins = _layout([max(g, default=0.0) for g in gaps], sizes, bins)
        per_step = {
            k: Counter(min(int(gap // widths[k - 2]), n_bins[k - 2] - 1) for gap in gaps[k - 2])
            for k in wanted
        }
    return [
        StepHistogram(
            k, steps[k - 1].name, sizes[k - 2], _bins(per_step[k], widths[k - 2], n_bins[k - 2])
        )
        for k in wanted
    ]


def _layout(maxima: list[float], sizes: list[int], bins: int | None) -> tuple[list[int], list[int]]:
    """Each step's bin width (whole seconds) and bin count: ``bins``, else from the data."""
    n_bins = [bins or auto_bin_count(size) for size in sizes]
    widths = [max(1, math.ceil(m / b)) for m, b in zip(maxima, n_bins, strict=True)]
    return widths, n_bins


def _sizes_and_layout(
    gathered: Gathered, bins: int | None
) -> tuple[list[int], list[int], list[int]]:
    """PostgreSQL: each step's histogram size, bin width and bin count; the sizes and ranges come
    from the funnel's own pass when it ran on this gathering, else from one query of counts and
    maxima."""
    relation = gathered.plain
    assert relation is not None
    n = len(gathered.steps)
    funnel = gathered.memo.get("funnel")
    if funnel is not None and funnel.maxima is not None:  # None: the funnel's pass alone
        sizes, maxima_us = funnel.counts[1:], funnel.maxima
    else:
        if "maxima" not in gathered.memo:
            columns = ", ".join(
                f"count(*) FILTER (WHERE furthest_step >= {k}), COALESCE(max({pg.gap(k)}), 0)"
                for k in range(2, n + 1)
            )
            (stats,) = pg.fetch(relation.sql + f"SELECT {columns} FROM outcomes", relation.params)
            gathered.memo["maxima"] = (
                [int(stats[2 * i]) for i in range(n - 1)],
                [int(stats[2 * i + 1]) for i in range(n - 1)],
            )
        sizes, maxima_us = gathered.memo["maxima"]
    widths, n_bins = _layout([m / 1e6 for m in maxima_us], sizes, bins)
    return list(sizes), widths, n_bins


def _binned(
    gathered: Gathered, bins: int | None, wanted: list[int], widths: list[int], n_bins: list[int]
) -> dict[int, Counter[int]]:
    """PostgreSQL: the bins' counts of the ``wanted`` steps, kept on the gathering per step."""
    missing = [k for k in wanted if ("bins", bins, k) not in gathered.memo]
    if missing:
        relation = gathered.plain
        assert relation is not None
        counted = pg.step_bins(
            relation,
            missing,
            [widths[k - 2] for k in missing],
            [n_bins[k - 2] for k in missing],
        )
        for k in missing:
            gathered.memo[("bins", bins, k)] = counted[k]
    return {k: gathered.memo[("bins", bins, k)] for k in wanted}
