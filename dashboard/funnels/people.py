"""The people behind a funnel count: who reached step k, who dropped at step k; CSV export."""

# SQL text here interpolates only table names and integers; every value is a parameter.
# ruff: noqa: S608

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from onboarding.csvsafe import csv_lines
from onboarding.models import Person

from . import pg
from .outcomes import Outcome, collect_outcomes
from .query import FunnelQuery, FunnelQueryError
from .runner import required_steps, sql_relation, uses_sql

PeopleOutcome = Literal["reached", "dropped"]
# Far past any real list; keeps the SQL OFFSET within a bigint (a 20-digit ?page= was a 500).
MAX_PAGE = 1_000_000
CSV_COLUMNS = [
    "person_id",
    "external_id",
    "email",
    "entered_at",
    "furthest_step",
    "reached_at",
    "still_converting",
]


@dataclass(frozen=True, slots=True)
class FunnelPerson:
    id: int
    external_id: str | None
    email: str
    entered_at: datetime
    furthest_step: int
    reached_at: datetime
    # Not finished and still inside the conversion window (DESIGN §4.2): not drop-off (yet).
    still_converting: bool = False


@dataclass(frozen=True, slots=True)
class PeoplePage:
    total: int
    page: int
    page_size: int
    people: list[FunnelPerson]

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.page_size))


def _condition(step: int, outcome: PeopleOutcome, n_steps: int) -> tuple[int, int]:
    """Bounds (inclusive) on the furthest step: reached k = [k, n]; dropped at k = [k-1, k-1]."""
    if not 1 <= step <= n_steps:
        raise FunnelQueryError("invalid_step", f"step must be between 1 and {n_steps}")
    if outcome == "reached":
        return step, n_steps
    if outcome == "dropped":
        if step < 2:
            raise FunnelQueryError("invalid_step", "nobody drops at step 1: entry is step 1")
        return step - 1, step - 1
    raise FunnelQueryError("invalid_outcome", "outcome must be reached or dropped")


def _people_rows(
    query: FunnelQuery,
    step: int,
    outcome: PeopleOutcome,
    breakdown_value: str | None,
    *,
    after: tuple[datetime, int] | None,
    offset: int,
    limit: int | None,
    count: bool,
) -> tuple[list[FunnelPerson], int | None]:
    """One page ordered by (entered_at, person id) after the keyset ``after``; the total if asked."""
    steps = required_steps(query)
    low, high = _condition(step, outcome, len(steps))
    if breakdown_value is not None and not query.breakdown:
        raise FunnelQueryError("invalid_breakdown", "a breakdown value needs a breakdown")
    if uses_sql(query):
        relation = sql_relation(query, steps)
        where = "o.furthest_step BETWEEN %s AND %s"
        params: list = [low, high]
        if breakdown_value is not None:
            where += " AND o.bd = %s"
            params.append(breakdown_value)
        total = None
        if count:
            ((total,),) = pg.fetch(
                relation.sql + f"SELECT count(*) FROM outcomes o WHERE {where}",
                [*relation.params, *params],
            )
        page_where = where
        page_params = list(params)
        if after is not None:
            page_where += " AND (o.entered_at, o.person_id) > (%s, %s)"
            page_params += list(after)
        rows = pg.fetch(
            relation.sql + "SELECT o.person_id, p.external_id, p.email, o.entered_at,"
            f" o.furthest_step, o.reached_at FROM outcomes o JOIN {pg.PEOPLE} p"
            f" ON p.id = o.person_id WHERE {page_where}"
            " ORDER BY o.entered_at, o.person_id LIMIT %s OFFSET %s",
            [*relation.params, *page_params, limit, offset],
        )
        return _marked([FunnelPerson(*row) for row in rows], query, len(steps)), total
    outcomes = [
        o
        for o in collect_outcomes(query, steps, raw=query.mode == "events")
        if low <= o.furthest_step <= high
        and (breakdown_value is None or o.breakdown == breakdown_value)
    ]
    outcomes.sort(key=lambda o: (o.entered_at, o.person_id))
    total = len(outcomes) if count else None
    if after is not None:
        outcomes = [o for o in outcomes if (o.entered_at, o.person_id) > after]
    chosen = outcomes[offset : None if limit is None else offset + limit]
    return _marked(_with_people(chosen), query, len(steps)), total


def _marked(people: list[FunnelPerson], query: FunnelQuery, n_steps: int) -> list[FunnelPerson]:
    """Each person with ``still_converting`` set: not at the last step, window still open."""
    open_after = query.clock - query.window
    return [
        replace(p, still_converting=p.furthest_step < n_steps and p.entered_at > open_after)
        for p in people
    ]


def _with_people(outcomes: list[Outcome]) -> list[FunnelPerson]:
    people = Person.objects.in_bulk([o.person_id for o in outcomes])
    return [
        FunnelPerson(
            id=o.person_id,
            external_id=people[o.person_id].external_id,
            email=people[o.person_id].email,
            entered_at=o.entered_at,
            furthest_step=o.furthest_step,
            reached_at=o.reached_at,
        )
        for o in outcomes
    ]


def funnel_people(
    query: FunnelQuery,
    *,
    step: int,
    outcome: PeopleOutcome = "reached",
    breakdown_value: str | None = None,
    page: int = 1,
    page_size: int = 50,
) -> PeoplePage:
    """The entrants who reached step ``step`` (counted in it), or dropped at it (reached
    ``step - 1`` and went no further), oldest entry first; optionally within one breakdown value.
    """
    if not 1 <= page <= MAX_PAGE or not 1 <= page_size <= 10_000:
        raise FunnelQueryError("invalid_page", f"page must be 1..{MAX_PAGE} and page_size 1..10000")
    rows, total = _people_rows(
        query,
        step,
        outcome,
        breakdown_value,
        after=None,
        offset=(page - 1) * page_size,
        limit=page_size,
        count=True,
    )
    return PeoplePage(total=total or 0, page=page, page_size=page_size, people=rows)


def iter_funnel_people(
    query: FunnelQuery,
    *,
    step: int,
    outcome: PeopleOutcome = "reached",
    breakdown_value: str | None = None,
    chunk: int = 5000,
) -> Iterator[FunnelPerson]:
    """Every person of :func:`funnel_people`, fetched in keyset-paginated chunks."""
    after = None
    while True:
        rows, _ = _people_rows(
            query, step, outcome, breakdown_value, after=after, offset=0, limit=chunk, count=False
        )
        yield from rows
        if len(rows) < chunk:
            return
        after = (rows[-1].entered_at, rows[-1].id)


def people_csv_lines(
    query: FunnelQuery,
    *,
    step: int,
    outcome: PeopleOutcome = "reached",
    breakdown_value: str | None = None,
) -> Iterator[str]:
    """CSV text line by line (header first), for a ``StreamingHttpResponse`` or a file."""
    people = iter_funnel_people(query, step=step, outcome=outcome, breakdown_value=breakdown_value)
    return csv_lines(
        CSV_COLUMNS,
        (
            [
                [
                    person.id,
                    person.external_id or "",
                    person.email,
                    person.entered_at.isoformat(),
                    person.furthest_step,
                    person.reached_at.isoformat(),
                    "true" if person.still_converting else "false",
                ]
            ]
            for person in people
        ),
    )


# Knuth's multiplicative hash of the person id, modulo 2³²: the same order in SQL and Python.
_SAMPLE_ORDER_SQL = "(o.person_id * 2654435761) %% 4294967296, o.person_id"


def _sample_key(person_id: int) -> tuple[int, int]:
    return (person_id * 2654435761) % 4294967296, person_id


def settled_sample(
    query: FunnelQuery, *, step: int, limit: int
) -> tuple[int, list[tuple[int, datetime, int]]]:
    """The settled entrants (entry + window ≤ now) who reached ``step``: how many there are, and a
    fixed sample of at most ``limit`` of them as (person id, entered at, furthest step), the same
    people on every call. On PostgreSQL one count and one ordered ``LIMIT`` in SQL: a large flow's
    entrants are never all fetched."""
    steps = required_steps(query)
    low, high = _condition(step, "reached", len(steps))
    settled_before = query.clock - query.window
    if uses_sql(query):
        relation = sql_relation(query, steps)
        where = "o.furthest_step BETWEEN %s AND %s AND o.entered_at <= %s"
        params = [*relation.params, low, high, settled_before]
        ((total,),) = pg.fetch(
            relation.sql + f"SELECT count(*) FROM outcomes o WHERE {where}", params
        )
        rows = pg.fetch(
            relation.sql + "SELECT o.person_id, o.entered_at, o.furthest_step FROM outcomes o"
            f" WHERE {where} ORDER BY {_SAMPLE_ORDER_SQL} LIMIT %s",
            [*params, limit],
        )
        return total, [tuple(row) for row in rows]
    chosen = [
        (o.person_id, o.entered_at, o.furthest_step)
        for o in collect_outcomes(query, steps, raw=query.mode == "events")
        if low <= o.furthest_step <= high and o.entered_at <= settled_before
    ]
    chosen.sort(key=lambda row: _sample_key(row[0]))
    return len(chosen), chosen[:limit]
