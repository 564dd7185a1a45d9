"""The PostgreSQL fast path: set-based SQL over the narrow, typed entry rows.

``outcomes_cte`` is one relation with a row per entrant: progress rows whose first entry is in
range, plus (``UNION ALL``) for people whose first entry is before the range, their earliest
re-entry row inside it. Both tables are maintained at ingestion with the same walk, so every report
(steps, trends, histograms, people) is a query over stored rows; raw events are read only for a
breakdown by a property that is not carried on the rows (``BREAKDOWN_PROPERTIES``). Step times are
integer offsets from entry in microseconds, a typed column per step (``offset(k)``).
"""

# SQL text here interpolates only table and column names and integers; every value is a parameter.
# ruff: noqa: S608

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from django.db import connection, transaction
from django.db.models import QuerySet

from onboarding.models import (
    BREAKDOWN_PROPERTIES,
    OFFSET_FIELDS,
    TYPED_STEPS,
    Event,
    FlowProgress,
    FlowReentry,
    Person,
)

from .query import NONE_VALUE, FunnelQuery

PROGRESS = FlowProgress._meta.db_table
REENTRY = FlowReentry._meta.db_table
EVENTS = Event._meta.db_table
PEOPLE = Person._meta.db_table
_CHUNK = 2000


@dataclass(frozen=True)
class Relation:
    """``WITH outcomes AS (…)`` and its parameters; ``bd`` is the breakdown column when asked."""

    sql: str
    params: list[Any]


def offset(k: int, alias: str = "") -> str:
    """Step k's offset from entry in microseconds (null when step k was not reached)."""
    if k == 1:
        return "0"
    if k <= TYPED_STEPS:
        return f"{alias}offset_{k}"
    return f"{alias}offsets_after[{k - TYPED_STEPS}]"


def gap(k: int, alias: str = "") -> str:
    """The step-(k-1)→k gap in microseconds (null when step k was not reached)."""
    if k == 2:
        return f"{alias}offset_2"
    return f"({offset(k, alias)} - {offset(k - 1, alias)})"


def reentrant_members(query: FunnelQuery, allowed: QuerySet[Person]) -> list[int]:
    """Among people whose first entry is before the range and who entered again inside it, the
    allowed ones. The segment is evaluated on these few people only, by primary key: as one query
    (``person_id IN (segment)``) the planner cannot tell how few they are and evaluates the
    segment over every person to hash-join them."""
    ids = list(
        FlowReentry.objects.filter(
            flow=query.flow,
            entered_at__gte=query.entry_from,
            entered_at__lt=query.entry_until,
            first_entered_at__lt=query.entry_from,
        )
        .values_list("person_id", flat=True)
        .distinct()
    )
    members: list[int] = []
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        members += allowed.filter(pk__in=chunk).values_list("pk", flat=True)
    return members


def outcomes_cte(
    query: FunnelQuery,
    allowed: QuerySet[Person] | None,
    entry_event_name: str,
    *,
    breakdown: bool = True,
) -> Relation:
    """The outcomes relation; with ``breakdown`` False it has no ``bd`` column even when the query
    asks for a breakdown (reports that do not group by it skip it)."""
    stored = query.breakdown in BREAKDOWN_PROPERTIES and breakdown
    carried = f", {{t}}.entry_{query.breakdown} AS bp" if stored else ""
    columns = (
        "{t}.person_id, {t}.entered_at, {t}.furthest_step::int AS furthest_step,"
        + "".join(f" {{t}}.{name}," for name in OFFSET_FIELDS)
        + " {t}.reached_at, {t}.entry_event_id"
        + carried
    )
    bounds = [query.flow.pk, query.entry_from, query.entry_until]
    params: list[Any] = list(bounds)
    member_filter = ""
    reentry_filter = ""
    reentry_params: list[Any] = [*bounds, query.entry_from]
    if allowed is not None:
        sub_sql, sub_params = allowed.values("pk").query.sql_with_params()
        member_filter = f" AND fp.person_id IN ({sub_sql})"
        params += list(sub_params)
        reentry_filter = " AND r.person_id = ANY(%s::bigint[])"
        reentry_params.append(reentrant_members(query, allowed))
    body = (
        f"SELECT {columns.format(t='fp')} FROM {PROGRESS} fp"
        f" WHERE fp.flow_id = %s AND fp.entered_at >= %s AND fp.entered_at < %s{member_filter}"
        f" UNION ALL (SELECT DISTINCT ON (r.person_id) {columns.format(t='r')} FROM {REENTRY} r"
        " WHERE r.flow_id = %s AND r.entered_at >= %s AND r.entered_at < %s"
        f" AND r.first_entered_at < %s{reentry_filter} ORDER BY r.person_id, r.entered_at)"
    )
    params += reentry_params
    if stored:
        # The entry's property is on the row; the person's trait is read only where it is absent.
        body = (
            "SELECT o.*, COALESCE(o.bp,"
            f" (SELECT p.traits ->> %s FROM {PEOPLE} p WHERE p.id = o.person_id), %s) AS bd"
            f" FROM ({body}) o"
        )
        params = [query.breakdown, NONE_VALUE, *params]
    elif query.breakdown and breakdown:
        # Not carried on the rows: the entry events' properties. The entry event is by definition
        # a step-1 event in the range: saying so lets the join read only that slice of the event
        # table (event_name_ts) instead of all of it.
        body = (
            "SELECT o.*, COALESCE(e.properties ->> %s, p.traits ->> %s, %s) AS bd"
            f" FROM ({body}) o"
            f" LEFT JOIN {EVENTS} e ON e.id = o.entry_event_id AND e.name = %s"
            " AND e.timestamp >= %s AND e.timestamp < %s"
            f" LEFT JOIN {PEOPLE} p ON p.id = o.person_id"
        )
        params = [
            query.breakdown,
            query.breakdown,
            NONE_VALUE,
            *params,
            entry_event_name,
            query.entry_from,
            query.entry_until,
        ]
    return Relation(f"WITH outcomes AS ({body}) ", params)


# Sorts for the medians and the hash joins of a breakdown fit in memory instead of spilling to
# disk; JIT compilation costs more (up to ~1 s) than it saves on these short scans. Cheaper
# parallel workers than the defaults (1000 and 0.1): the narrow rows scan and join in parallel
# under the serial median aggregate (the segment's join with the people: 0.86–1.2 s serial,
# 0.38–0.68 s with two workers, at 300 k entrants on the shared machine).
SESSION = (
    "SET LOCAL work_mem = '64MB'",
    "SET LOCAL jit = off",
    "SET LOCAL parallel_setup_cost = 100",
    "SET LOCAL parallel_tuple_cost = 0.01",
)


def fetch(sql: str, params: Sequence[Any]) -> list[tuple]:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("; ".join(SESSION))  # one round trip
        cursor.execute(sql, params)
        return cursor.fetchall()


@dataclass(frozen=True)
class StepAggregate:
    counts: list[int]
    medians: list[float | None]
    still_converting: int
    settled: list[int]  # per step, entrants whose window has closed (entry + window ≤ now)
    # Per step k ≥ 2 (index k - 2), the largest step-(k-1)→k gap in µs (0 when nobody reached
    # step k): the range of the time-to-convert histograms, which the page draws next.
    maxima: list[int]


# percentile_disc at these fractions, from one sort: row ceil(n / 2) and, for an even n, row
# n / 2 + 1 (ceil(n / 2 + 1e-10 n) for n up to 10^10): the two middle values, exact integers.
_MIDDLE = "percentile_disc(ARRAY[0.5, 0.5000000001]) WITHIN GROUP (ORDER BY {gap})"


def median_of_middle(n: int, middle: Sequence[int] | None) -> float | None:
    """The median in seconds from the middle values in microseconds; the mean of the two middle
    values for an even count, computed as :func:`~.aggregate.median` does over seconds."""
    if not n or middle is None:
        return None
    low, high = middle
    if n % 2:
        return low / 1e6
    return (low / 1e6 + high / 1e6) / 2


def step_aggregates(
    relation: Relation, n_steps: int, open_after: datetime, *, by_breakdown: bool
) -> dict[str | None, StepAggregate]:
    """One pass: counts per step, median gaps per step, still converting, the counts per step
    among settled entrants (the friction step's basis) and the largest gap per step; per
    breakdown value too.

    The key None is the whole funnel; with ``by_breakdown`` every breakdown value has its own key.
    The medians sort integer columns (``percentile_disc`` over bigint, the two middle rows from
    one sort), not floats computed per row.
    """
    columns = ["count(*)"]
    columns += [f"count(*) FILTER (WHERE furthest_step >= {k})" for k in range(2, n_steps + 1)]
    columns += [_MIDDLE.format(gap=gap(k)) for k in range(2, n_steps + 1)]
    columns.append(f"count(*) FILTER (WHERE furthest_step < {n_steps} AND entered_at > %s)")
    columns += [
        f"count(*) FILTER (WHERE entered_at <= %s AND furthest_step >= {k})"
        for k in range(1, n_steps + 1)
    ]
    columns += [f"COALESCE(max({gap(k)}), 0)" for k in range(2, n_steps + 1)]
    if by_breakdown:
        select = f"SELECT GROUPING(bd) = 1, bd, {', '.join(columns)} FROM outcomes"
        sql = relation.sql + select + " GROUP BY GROUPING SETS ((), (bd))"
    else:
        sql = relation.sql + f"SELECT true, NULL, {', '.join(columns)} FROM outcomes"
    result: dict[str | None, StepAggregate] = {}
    for row in fetch(sql, [*relation.params, *[open_after] * (n_steps + 1)]):
        is_total, value, *numbers = row
        counts = [int(c) for c in numbers[:n_steps]]
        middles = numbers[n_steps : 2 * n_steps - 1]
        medians = [
            None,
            *(median_of_middle(counts[k - 1], middles[k - 2]) for k in range(2, n_steps + 1)),
        ]
        still = int(numbers[2 * n_steps - 1])
        settled = [int(c) for c in numbers[2 * n_steps : 3 * n_steps]]
        maxima = [int(m) for m in numbers[3 * n_steps :]]
        aggregate = StepAggregate(counts, medians, still, settled, maxima)
        result[None if is_total else value] = aggregate
    return result


def step_median(relation: Relation, step: int) -> float | None:
    """The median step-(k-1)→k gap in seconds among the entrants who reached step k = ``step``."""
    ((n, middle),) = fetch(
        relation.sql + f"SELECT count(*) FILTER (WHERE furthest_step >= {step}),"
        f" {_MIDDLE.format(gap=gap(step))} FROM outcomes",
        relation.params,
    )
    return median_of_middle(n, middle)


@dataclass(frozen=True)
class DaysAndBins:
    """Entrants and completions (reached the last step) per UTC entry day, and per step k ≥ 2
    (index k - 2) how many gaps fall in each time-to-convert bin."""

    entrants: Counter[date]
    completions: Counter[date]
    bins: list[Counter[int]]


def days_and_bins(
    relation: Relation, n_steps: int, widths: Sequence[int], n_bins: Sequence[int]
) -> DaysAndBins:
    """The trend's per-day counts and the time-to-convert histograms, in one pass.

    Bin i of step k holds the whole-second gaps in [i × width, (i + 1) × width), the last bin
    everything above. Each is a grouping set of one hashed aggregate (the entry day; each step's
    bin), instead of a pass for the days and a row per entrant and step for the bins."""
    keys = ["(entered_at AT TIME ZONE 'UTC')::date AS day"]
    keys += [
        f"CASE WHEN furthest_step >= {k} THEN LEAST(floor({gap(k)}::float8 / 1e6 / %s)::int, %s)"
        f" END AS b{k}"
        for k in range(2, n_steps + 1)
    ]
    names = ["day", *(f"b{k}" for k in range(2, n_steps + 1))]
    # Which grouping set a row belongs to: 0 the day, k the bins of step k.
    which = " ".join(
        f"WHEN GROUPING({name}) = 0 THEN {k}"
        for k, name in zip([0, *range(2, n_steps + 1)], names, strict=True)
    )
    sql = relation.sql + (
        f"SELECT CASE {which} END, day, COALESCE({', '.join(['NULL::int', *names[1:]])}),"
        f" count(*), count(*) FILTER (WHERE furthest_step >= {n_steps})"
        f" FROM (SELECT furthest_step, {', '.join(keys)} FROM outcomes) o"
        f" GROUP BY GROUPING SETS ({', '.join(f'({name})' for name in names)})"
    )
    params = [*relation.params]
    for width, bins in zip(widths, n_bins, strict=True):
        params += [width, bins - 1]
    result = DaysAndBins(Counter(), Counter(), [Counter() for _ in range(n_steps - 1)])
    for k, day, bucket, count, completed in fetch(sql, params):
        if k == 0:
            result.entrants[day] = count
            result.completions[day] = completed
        elif bucket is not None:  # None: the entrants who did not reach step k
            result.bins[k - 2][bucket] = count
    return result
