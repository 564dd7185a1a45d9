"""The backtest's executor of idle spells (:class:`triggers.engine.spells.IdleSpec`, the same
specification the live detector reads), at scale: spells found and filtered in SQL.

Fetching every gap longer than N minutes as datetimes and deciding each in Python is too slow:
with noise events nearly every gap is one (about 1.6 M for a week of 10 M events). Here the
database does the per-spell arithmetic and the result is integers (microseconds since the epoch,
tick numbers), decided as the live engine does:

1. spells (:func:`spells_sql`), in event time as the live detector counts them: the activity
   times ``e = min(timestamp, received_at)`` of a person's live events (never imported ones),
   each with ``r`` the first receipt of that activity time. At a tick the live engine sees
   ``last_event_at`` = the greatest ``e`` received by then. The spell from ``e`` is due at
   ``e + N`` and seen at the tick ``since + k·30 s`` with ``k = ceil((e + N − since) / 30 s)``;
   it fires when it was known before its deadline (``r < e + N``; otherwise it is late data) and
   no event with a later activity time had been received by that tick (the earliest receipt
   among them is after the tick; one received exactly at the tick is seen by it).
   ``tests/triggers/test_backtest_idle.py`` holds the same filter in Python, as the reference;
2. progress at the tick: the stored ``FlowProgress`` row when all the person's step events had
   arrived by the tick (it is then the chain walk over all of them, as ingestion stored it),
   else the walk over the step events received by the tick (:class:`.history.StepHistory`);
3. enrollment (:func:`enroll_spells`): re-entry on integers; only enrolled spells become
   ``Occurrence`` objects, the others are counted.

Two executors of steps 1–2. SQLite (and the tests' reference) go a batch of people at a time
(:func:`found_spells`: the spells, then the stored rows, in separate queries). On PostgreSQL one
query finds everyone's spells (:func:`found_spells_set`), gathered per person into two arrays with
the person's stored row and last step-event arrival, streamed from a server-side cursor; the
spells seen after that arrival are judged per person by two bisections (the rule's step and
completion are per person, the window's end cuts a prefix of the spells, ordered by ``e``); only
the people with a step event arriving after one of their spells are walked. ``part`` splits the
people by id modulo n, for :mod:`.backtest`'s processes.
"""

# SQL here is built from this module's constants and the ORM's own SQL.
# ruff: noqa: S608, S611

from __future__ import annotations

from bisect import bisect_left
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from django.db import connection
from django.db.models import Max
from django.db.models.expressions import RawSQL
from django.db.models.functions import Mod

from onboarding.flows.progress import FlowSpec
from onboarding.models import Event, FlowProgress
from triggers.engine.occurrences import Occurrence
from triggers.engine.spells import IdleSpec
from triggers.rules.spec import RuleSpec

from .detection import chunks, flow_people
from .history import (
    EPOCH_SQL,
    Progress,
    Replay,
    StepHistory,
    TickGrid,
    flow_spec,
    for_people,
    micros,
    moment,
    step_histories,
)

US = 1_000_000

# (tick number k, activity time e in µs, furthest step at the tick)
Spell = tuple[int, int, int]


def _epoch(column: str) -> RawSQL:
    return RawSQL(EPOCH_SQL[connection.vendor].format(column), [])


@dataclass(frozen=True)
class Clock:
    """The tick grid in microseconds."""

    since: int
    last: int
    idle: int
    step: int

    @classmethod
    def of(cls, grid: TickGrid, idle: timedelta) -> Clock:
        return cls(
            micros(grid.since),
            micros(grid.last),
            idle // timedelta(microseconds=1),
            grid.step // timedelta(microseconds=1),
        )

    def tick(self, k: int) -> int:
        return self.since + k * self.step


def _arrivals(people: list[int] | None, clock: Clock, part: tuple[int, int] | None = None):
    """The live events that can start or end a spell due in the period: activity time after
    ``since − N`` (both the timestamp and the receipt after it), received by the last tick
    (of these people; of everyone when ``people`` is None; ``part`` (i, n): of the people whose
    id is i modulo n)."""
    after = moment(clock.since - clock.idle)
    events = IdleSpec.activity(
        Event.objects.filter(
            timestamp__gt=after, received_at__gt=after, received_at__lte=moment(clock.last)
        )
    )
    if part is not None:
        events = events.alias(part=Mod("person_id", part[1])).filter(part=part[0])
    return events if people is None else for_people(events, "person_id", people)


_LEAST = {"postgresql": "LEAST", "sqlite": "MIN"}


def _spells_query(
    people: list[int] | None, clock: Clock, part: tuple[int, int] | None = None
) -> tuple[str, list]:
    """SQL of (person_id, e, k) of the spells that a tick in the period sees."""
    inner = _arrivals(people, clock, part).annotate(
        t=_epoch('"onboarding_event"."timestamp"'), r=_epoch('"onboarding_event"."received_at"')
    )
    sql, params = inner.values_list("person_id", "t", "r").query.sql_with_params()
    step = clock.step
    least = _LEAST[connection.vendor]
    query = f"""
        SELECT person_id, e, k FROM (
            SELECT person_id, e, known, nxt, (e + %s - %s + {step - 1}) / {step} AS k
            FROM (
                SELECT person_id, e, known, MIN(known) OVER (
                    PARTITION BY person_id ORDER BY e
                    ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING
                ) AS nxt
                FROM (
                    SELECT person_id, {least}(t, r) AS e, MIN(r) AS known
                    FROM ({sql}) arrivals GROUP BY person_id, {least}(t, r)
                ) activity
            ) ordered
            WHERE e + %s > %s AND e + %s <= %s AND known < e + %s
        ) due
        WHERE nxt IS NULL OR nxt > %s + k * {step}
    """
    return query, [
        clock.idle,
        clock.since,
        *params,
        clock.idle,
        clock.since,
        clock.idle,
        clock.last,
        clock.idle,
        clock.since,
    ]


def spells_sql(people: list[int], clock: Clock) -> list[tuple[int, int, int]]:
    """(person, e, k) of the spells that a tick in the period sees, filtered in the database."""
    query, params = _spells_query(people, clock)
    with connection.cursor() as cursor:
        cursor.execute(query, params)
        return cursor.fetchall()


@dataclass(slots=True)
class Stored:
    """A person's ``FlowProgress`` row in microseconds, and their last step-event arrival: from
    that moment on, their progress is the stored row (the walk over all their step events).

    Stands in for :class:`.history.StepHistory` in the delivery estimate of people whose
    enrolled spells all came after that moment (every later question is about a later moment).
    """

    furthest_step: int
    entered: int
    reached: int
    completed: int | None
    window_ends: int
    settled_from: int
    walk: Callable[[], StepHistory | None] | None = (
        None  # for earlier moments (``now`` < ``until``)
    )
    _progress: Progress | None = None

    def progress_at(self, at: datetime) -> Progress | None:
        if micros(at) < self.settled_from:
            history = self.walk() if self.walk is not None else None
            return history.progress_at(at) if history is not None else None
        if self._progress is None:
            self._progress = Progress(
                furthest_step=self.furthest_step,
                entered_at=moment(self.entered),
                reached_at=moment(self.reached),
                completed_at=None if self.completed is None else moment(self.completed),
                window_ends_at=moment(self.window_ends),
            )
        return self._progress


def _walk(flow: FlowSpec, person_id: int, horizon: datetime) -> StepHistory | None:
    return step_histories(flow, [person_id], horizon).get(person_id)


def _rows(query) -> list[tuple]:
    """The rows of an ORM query of numbers, without per-row conversion."""
    sql, params = query.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def _stored(flow: FlowSpec, people: list[int]) -> dict[int, Stored]:
    if not people:
        return {}
    last_arrival = dict(
        _rows(
            for_people(Event.objects.filter(name__in=flow.event_names), "person_id", people)
            .values("person_id")
            .annotate(last=Max(_epoch('"onboarding_event"."received_at"')))
            .values_list("person_id", "last")
        )
    )
    rows = for_people(FlowProgress.objects.filter(flow_id=flow.id), "person_id", people)
    columns = ("entered_at", "reached_at", "completed_at", "window_ends_at")
    epochs = {f"_{c}": _epoch(f'"onboarding_flowprogress"."{c}"') for c in columns}
    values = rows.annotate(**epochs).values_list(
        "person_id", "furthest_step", *(f"_{c}" for c in columns)
    )
    return {
        person_id: Stored(furthest, entered, reached, completed, ends, last_arrival[person_id])
        for person_id, furthest, entered, reached, completed, ends in _rows(values)
        if person_id in last_arrival
    }


def found_spells(
    people: list[int], clock: Clock, flow: FlowSpec, at_step: int | None, replay: Replay
) -> dict[int, list[Spell]]:
    """These people's spells that the live detector would have found, by person, in order
    (``at_step``: :attr:`IdleSpec.at_step`)."""
    rows = spells_sql(people, clock)
    wanted = set(people)
    by_person: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for person_id, r, k in rows:
        if person_id in wanted:
            by_person[person_id].append((k, r))
    stored = _stored(flow, sorted(by_person))
    walking = [
        p
        for p, spells in by_person.items()
        if p in stored and clock.tick(min(spells)[0]) < stored[p].settled_from
    ]
    histories = replay.histories(flow, walking) if walking else {}
    out: dict[int, list[Spell]] = {}
    for person_id, spells in by_person.items():
        row = stored.get(person_id)
        if row is None:
            continue  # never in the flow: no progress at any tick
        spells.sort()
        history = histories.get(person_id)
        kept: list[Spell] = []
        for k, r in spells:
            tick = clock.tick(k)
            if tick >= row.settled_from:
                if row.completed is not None:
                    continue
                furthest, window_ends = row.furthest_step, row.window_ends
            else:
                progress = history.progress_at(moment(tick)) if history is not None else None
                if progress is None or progress.completed_at is not None:
                    continue
                furthest, window_ends = progress.furthest_step, micros(progress.window_ends_at)
            # IdleSpec.waiting and IdleSpec.window_open, on integers (once per spell).
            if at_step is not None and furthest != at_step:
                continue
            if window_ends <= r + clock.idle:
                continue
            kept.append((k, r, furthest))
        if kept:
            out[person_id] = kept
            if history is None:  # all kept spells came after the last step event
                row.walk = partial(_walk, flow, person_id, replay.horizon)
                replay.cache[person_id] = row
    return out


def enroll_spells(
    spec: RuleSpec,
    idle: IdleSpec,
    person_id: int,
    spells: list[Spell],
    member: bool,
    clock: Clock,
    skipped: Counter,
) -> Iterator[tuple[Occurrence, datetime]]:
    """(occurrence, tick) of the enrolled spells, decided as ``_enroll_person`` decides them
    (each spell has its own tick, and deadlines grow with the ticks, so the last enrollment is
    the latest one re-entry compares with)."""
    if not member:
        skipped["segment"] += len(spells)
        return
    every = (spec.reentry_every or 0) * US
    last: int | None = None
    blocked = 0
    for k, r, furthest in spells:
        tick = clock.tick(k)
        if last is not None and (spec.reentry_once or last > tick - every):
            blocked += 1
            continue
        last = r + clock.idle
        yield idle.occurrence(person_id, moment(r), furthest), moment(tick)
    if blocked:
        skipped["reentry"] += blocked


def _spells_with_progress(
    flow: FlowSpec, clock: Clock, part: tuple[int, int] | None = None
) -> tuple[str, list]:
    """SQL of one row per person of the flow with spells in the period: their stored progress
    (``FlowProgress`` in µs), last step-event arrival, and the k and e of their spells in order
    (two arrays). Spells are gathered per person before the joins: one lookup per person, not
    per spell."""
    spells, params = _spells_query(None, clock, part)
    names = sorted(flow.event_names)
    epoch = EPOCH_SQL["postgresql"]
    share = "" if part is None else f" AND MOD(person_id, {int(part[1])}) = {int(part[0])}"
    query = f"""
        SELECT s.person_id, p.furthest_step, {epoch.format("p.entered_at")},
            {epoch.format("p.reached_at")}, {epoch.format("p.completed_at")},
            {epoch.format("p.window_ends_at")}, {epoch.format("l.last")}, s.ks, s.es
        FROM (
            SELECT person_id, array_agg(k ORDER BY e) AS ks, array_agg(e ORDER BY e) AS es
            FROM ({spells}) spells GROUP BY person_id
        ) s
        JOIN onboarding_flowprogress p ON p.person_id = s.person_id AND p.flow_id = %s
        JOIN (
            SELECT person_id, MAX(received_at) AS last FROM onboarding_event
            WHERE name IN ({", ".join(["%s"] * len(names))}){share} GROUP BY person_id
        ) l ON l.person_id = s.person_id
        ORDER BY s.person_id
    """
    return query, [*params, flow.id, *names]


def found_spells_set(
    flow: FlowSpec,
    clock: Clock,
    at_step: int | None,
    replay: Replay,
    part: tuple[int, int] | None = None,
    size: int = 20000,
) -> Iterator[dict[int, list[Spell]]]:
    """:func:`found_spells` for everyone in the flow at once (PostgreSQL): one query, streamed
    from a server-side cursor, with the stored-progress judgement in SQL; only the people with
    step events arriving after one of their spells' ticks are walked here, a batch at a time.
    ``part`` (i, n): only the people whose id is i modulo n."""
    query, params = _spells_with_progress(flow, clock, part)
    people = FlowProgress.objects.filter(flow_id=flow.id).count() // (part[1] if part else 1)
    people = max(1, people)
    settled: dict[int, list[Spell]] = {}
    walking: dict[int, tuple] = {}
    with _planned_for_one_big_query(), connection.chunked_cursor() as cursor:
        cursor.execute(query, params)
        while True:
            rows = cursor.fetchmany(5000)
            for row in rows:
                person_id, furthest, entered, reached, completed, ends, last, ks, es = row
                stored = Stored(furthest, entered, reached, completed, ends, last)
                # Spells from ks[j] on are seen at or after the last step-event arrival: the
                # stored row judges them (IdleSpec.waiting), with the window still open after
                # the deadline (IdleSpec.window_open) for e < window end − N: a prefix, e ascends.
                j = bisect_left(ks, -((clock.since - last) // clock.step))
                waiting = completed is None and (at_step is None or furthest == at_step)
                m = bisect_left(es, ends - clock.idle, j) if waiting else j
                if j == 0:
                    if m:
                        settled[person_id] = [(ks[i], es[i], furthest) for i in range(m)]
                        stored.walk = partial(_walk, flow, person_id, replay.horizon)
                        replay.cache[person_id] = stored
                else:
                    walking[person_id] = (stored, ks[:j], es[:j], ks[j:m], es[j:m])
            if len(settled) + len(walking) >= size or (not rows and (settled or walking)):
                settled.update(_walked(flow, clock, at_step, replay, walking))
                yield settled
                settled, walking = {}, {}
            if not rows:
                break
            replay.done = min(0.99, replay.done + len(rows) / people)


@contextmanager
def _planned_for_one_big_query() -> Iterator[None]:
    """One query over everyone: JIT compilation costs more than it saves here (about a second),
    and its sorts and hashes fit in memory with more than the default 4 MB. Session settings,
    restored afterwards."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('jit'), current_setting('work_mem')")
        jit, work_mem = cursor.fetchone()
        cursor.execute("SET jit = off; SET work_mem = '256MB'")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT set_config('jit', %s, false), set_config('work_mem', %s, false)",
                [jit, work_mem],
            )


def _walked(
    flow: FlowSpec, clock: Clock, at_step: int | None, replay: Replay, walking: dict[int, tuple]
) -> dict[int, list[Spell]]:
    """The spells of people whose step events arrived after some of their spells' ticks: those
    judged by the chain walk over the step events received by the tick, the later ones (already
    judged in SQL) by the stored row."""
    histories = replay.histories(flow, list(walking)) if walking else {}
    out: dict[int, list[Spell]] = {}
    for person_id, (row, ks, es, later_ks, later_es) in walking.items():
        history = histories.get(person_id)
        kept: list[Spell] = []
        for k, e in zip(ks, es, strict=True):
            progress = history.progress_at(moment(clock.tick(k))) if history is not None else None
            if progress is None or progress.completed_at is not None:
                continue
            if at_step is not None and progress.furthest_step != at_step:
                continue
            if micros(progress.window_ends_at) <= e + clock.idle:
                continue
            kept.append((k, e, progress.furthest_step))
        kept += [(k, e, row.furthest_step) for k, e in zip(later_ks, later_es, strict=True)]
        if kept:
            out[person_id] = kept
            if history is None:  # no step event by the horizon: the stored row, as found_spells
                row.walk = partial(_walk, flow, person_id, replay.horizon)
                replay.cache[person_id] = row
    return out


def set_based() -> bool:
    return SET_BASED and connection.vendor == "postgresql"


def detect_spells(
    idle: IdleSpec, replay: Replay, part: tuple[int, int] | None = None
) -> Iterator[dict[int, list[Spell]]]:
    """The found spells of the rule's flow, one batch of people at a time (``part``: of a share
    of the people, see :func:`found_spells_set`; PostgreSQL only)."""
    flow = flow_spec(idle.flow)
    clock = Clock.of(replay.grid, idle.threshold)
    if set_based():
        yield from found_spells_set(flow, clock, idle.at_step, replay, part)
        return
    assert part is None, "shares of people: PostgreSQL only"
    for people in chunks(flow_people(flow.id), replay=replay):
        yield found_spells(people, clock, flow, idle.at_step, replay)


# PostgreSQL finds everyone's spells in one query (:func:`found_spells_set`); False makes it take
# the batch-by-batch path of SQLite (tests compare both).
SET_BASED = True
