"""The PostgreSQL fast path: set-based SQL over the narrow progress table.

``outcomes_cte`` is one relation with a row per entrant: progress rows whose first entry is in
range, plus (``UNION ALL``) the outcomes of re-entrants walked in Python, passed as one jsonb
document. Every report (steps, trends, histograms, people) is a query over it, so the few people
walked from raw events are aggregated exactly together with the rest (medians included).
"""

# SQL text here interpolates only table names and integers; every value is a parameter.
# ruff: noqa: S608

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connection, transaction
from django.db.models import QuerySet

from onboarding.models import Event, FlowProgress, Person

from .outcomes import Outcome
from .query import NONE_VALUE, FunnelQuery

PROGRESS = FlowProgress._meta.db_table
EVENTS = Event._meta.db_table
PEOPLE = Person._meta.db_table


@dataclass(frozen=True)
class Relation:
    """``WITH outcomes AS (…)`` and its parameters; ``bd`` is the breakdown column when asked."""

    sql: str
    params: list[Any]


def outcomes_cte(
    query: FunnelQuery,
    allowed: QuerySet[Person] | None,
    extra: Sequence[Outcome],
    entry_event_name: str,
    *,
    breakdown: bool = True,
) -> Relation:
    """The outcomes relation; with ``breakdown`` False it has no ``bd`` column even when the query
    asks for a breakdown (reports that do not group by it skip the join with the entry events)."""
    params: list[Any] = [query.flow.pk, query.entry_from, query.entry_until]
    member_filter = ""
    if allowed is not None:
        sub_sql, sub_params = allowed.values("pk").query.sql_with_params()
        member_filter = f" AND fp.person_id IN ({sub_sql})"
        params += list(sub_params)
    body = (
        "SELECT fp.person_id, fp.entered_at, fp.furthest_step::int AS furthest_step,"
        " fp.step_seconds, fp.reached_at, fp.entry_event_id"
        f" FROM {PROGRESS} fp"
        f" WHERE fp.flow_id = %s AND fp.entered_at >= %s AND fp.entered_at < %s{member_filter}"
    )
    if extra:
        body += (
            " UNION ALL SELECT r.person_id, r.entered_at, r.furthest_step, r.step_seconds,"
            " r.reached_at, r.entry_event_id FROM jsonb_to_recordset(%s::jsonb) AS r("
            "person_id bigint, entered_at timestamptz, furthest_step int, step_seconds jsonb,"
            " reached_at timestamptz, entry_event_id bigint)"
        )
        params.append(json.dumps([o.as_record() for o in extra]))
    if query.breakdown and breakdown:
        # The entry event is by definition a step-1 event in the range: saying so lets the join
        # read only that slice of the event table (event_name_ts) instead of all of it.
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
# disk; JIT compilation costs more (up to ~1 s) than it saves on these short scans.
SESSION = ("SET LOCAL work_mem = '64MB'", "SET LOCAL jit = off")


def fetch(sql: str, params: Sequence[Any]) -> list[tuple]:
    with transaction.atomic(), connection.cursor() as cursor:
        for statement in SESSION:
            cursor.execute(statement)
        cursor.execute(sql, params)
        return cursor.fetchall()


@dataclass(frozen=True)
class StepAggregate:
    counts: list[int]
    medians: list[float | None]
    still_converting: int
    settled: list[int]  # per step, entrants whose window has closed (entry + window ≤ now)


def step_aggregates(
    relation: Relation, n_steps: int, open_after: datetime, *, by_breakdown: bool
) -> dict[str | None, StepAggregate]:
    """One pass: counts per step, median gaps per step, still converting, and the counts per step
    among settled entrants (the friction step's basis); per breakdown value too.

    The key None is the whole funnel; with ``by_breakdown`` every breakdown value has its own key.
    """
    columns = ["count(*)"]
    columns += [f"count(*) FILTER (WHERE furthest_step >= {k})" for k in range(2, n_steps + 1)]
    columns += [
        f"percentile_cont(0.5) WITHIN GROUP (ORDER BY (step_seconds ->> {k - 2})::float8)"
        for k in range(2, n_steps + 1)
    ]
    columns.append(f"count(*) FILTER (WHERE furthest_step < {n_steps} AND entered_at > %s)")
    columns += [
        f"count(*) FILTER (WHERE entered_at <= %s AND furthest_step >= {k})"
        for k in range(1, n_steps + 1)
    ]
    if by_breakdown:
        select = f"SELECT GROUPING(bd) = 1, bd, {', '.join(columns)} FROM outcomes"
        sql = relation.sql + select + " GROUP BY GROUPING SETS ((), (bd))"
    else:
        sql = relation.sql + f"SELECT true, NULL, {', '.join(columns)} FROM outcomes"
    result: dict[str | None, StepAggregate] = {}
    for row in fetch(sql, [*relation.params, *[open_after] * (n_steps + 1)]):
        is_total, value, *numbers = row
        counts = [int(c) for c in numbers[:n_steps]]
        medians = [
            None,
            *(None if m is None else float(m) for m in numbers[n_steps : 2 * n_steps - 1]),
        ]
        still = int(numbers[2 * n_steps - 1])
        settled = [int(c) for c in numbers[2 * n_steps :]]
        aggregate = StepAggregate(counts, medians, still, settled)
        result[None if is_total else value] = aggregate
    return result
