"""The backtest's executor of idle spells (``triggers.simulation.idle``) and its shortcuts:
spells filtered in SQL equal the same filter written plainly in Python (the reference below), at
the edges of the tick grid too; stored progress stands in for the chain walk only once every step
event had arrived; and whole backtests agree with the reference and the walk everywhere (the
equivalence tests compare with the live engine)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onboarding.models import Event, Person
from triggers.simulation import idle
from triggers.simulation.backtest import run_backtest
from triggers.simulation.history import Replay, TickGrid, flow_spec, for_people

from .conftest import T0
from .test_backtest_equivalence import assert_same

pytestmark = pytest.mark.usefixtures("flow", "templates")

M = timedelta(minutes=1)
S = timedelta(seconds=1)
US = timedelta(microseconds=1)
IN_APP = [{"channel": "in_app", "template": "nudge", "delay": "0s"}]


def activity_spells(
    rows: Iterable[tuple[int, datetime, datetime]],
) -> Iterator[tuple[int, datetime, datetime, datetime | None]]:
    """(person, e, r, next) per activity time: ``rows`` are (person, timestamp, received_at) of
    live events; ``e`` is an activity time, ``r`` its first receipt and ``next`` the earliest
    receipt of a later activity time (None if there is none)."""
    first: dict[int, dict[datetime, datetime]] = defaultdict(dict)
    for person_id, timestamp, received_at in rows:
        e = min(timestamp, received_at)
        known = first[person_id]
        if e not in known or received_at < known[e]:
            known[e] = received_at
    for person_id in sorted(first):
        times = sorted(first[person_id].items())
        following: datetime | None = None
        out = []
        for e, r in reversed(times):
            out.append((person_id, e, r, following))
            following = r if following is None else min(following, r)
        yield from reversed(out)


def spells_python(people: list[int], clock: idle.Clock) -> list[tuple[int, int, int]]:
    """The reference: :func:`idle.spells_sql` with the arithmetic in Python, row by row."""
    rows = idle._arrivals(people, clock).values_list("person_id", "timestamp", "received_at")
    out = []
    for person_id, e, r, following in activity_spells(rows):
        happened = idle.micros(e)
        due = happened + clock.idle
        if due <= clock.since or due > clock.last or idle.micros(r) >= due:
            continue
        k = -((clock.since - due) // clock.step)
        if following is not None and idle.micros(following) <= clock.tick(k):
            continue
        out.append((person_id, happened, k))
    return out


def _clock(minutes: int, until) -> idle.Clock:
    return idle.Clock.of(TickGrid(T0, until), timedelta(minutes=minutes))


def _ids(*users: str) -> dict[str, int]:
    return dict(Person.objects.filter(external_id__in=users).values_list("external_id", "pk"))


# Idle 5 min, ticks every 30 s from T0. A spell from r is seen at the tick at or after r + 5 min,
# unless the next arrival is at or before that tick.
EDGES = {
    # (first arrival, next arrival or None)
    "next_at_the_tick": (M + 100 * US, 6 * M + 30 * S),  # due 06:00.0001, tick 06:30: seen
    "next_just_after": (M + 100 * US, 6 * M + 30 * S + US),  # one µs later: a spell
    "next_before_the_tick": (M, 6 * M - US),  # before the deadline: no spell
    "on_the_grid_next_at": (2 * M, 7 * M),  # due exactly on a tick, next arrival then: none
    "on_the_grid_next_after": (2 * M, 7 * M + US),
    "due_at_since": (-5 * M, None),  # due at T0: no tick in the period sees it
    "due_just_after_since": (-5 * M + US, None),  # the first tick does
    "due_at_the_last_tick": (55 * M, None),  # until = T0 + 60 min: the last tick sees it
    "due_after_the_last_tick": (55 * M + US, None),
}


@pytest.fixture
def edges(timeline):
    for user, (first, following) in EDGES.items():
        timeline.send(T0 - 10 * M, user, "Signed Up")
        timeline.send(T0 + first, user, "Page Viewed")
        if following is not None:
            timeline.send(T0 + following, user, "Page Viewed")
    return _ids(*EDGES)


def test_sql_and_python_spells_agree_at_the_edges_of_the_grid(edges):
    clock = _clock(5, T0 + 60 * M)
    people = sorted(edges.values())
    in_sql = sorted(idle.spells_sql(people, clock))
    in_python = sorted(spells_python(people, clock))
    assert in_sql == in_python
    names = {pk: user for user, pk in edges.items()}
    first = {(names[p], r) for p, r, _ in in_sql if r == idle.micros(T0 + EDGES[names[p]][0])}
    assert {user for user, _ in first} == {
        "next_just_after",
        "on_the_grid_next_after",
        "due_just_after_since",
        "due_at_the_last_tick",
    }
    # Exact to the microsecond, and the tick number of each spell is the grid's.
    grid = TickGrid(T0, T0 + 60 * M)
    for person_id, r, k in in_sql:
        due = idle.moment(r) + 5 * M
        assert grid.tick_of(due) == T0 + k * 30 * S, names[person_id]
    ticks = {names[p]: k for p, r, k in in_sql if r == idle.micros(T0 + EDGES[names[p]][0])}
    assert ticks["next_just_after"] == 13  # due 09:06:00.0001, seen at 09:06:30
    assert ticks["on_the_grid_next_after"] == 14  # due at 09:07:00 exactly, seen then
    assert ticks["due_at_the_last_tick"] == 120


def test_the_edges_decide_as_the_live_engine(timeline):
    definition = {
        "trigger": {"kind": "inactive_in_flow", "flow": "activation", "minutes": 5},
        "follow_ups": IN_APP,
        "reentry": {"once_per": "1m"},
    }
    events = []
    for user, (first, following) in EDGES.items():
        if first < 0 * M:
            continue  # before the live rule is active
        events += [(T0 + first, user, "Signed Up", {})]
        if following is not None:
            events.append((T0 + following, user, "Page Viewed", {}))
    assert_same(timeline, definition, events, T0, T0 + 60 * M)


def test_stored_progress_stands_in_only_once_all_step_events_arrived(timeline, monkeypatch):
    for user in ("settled", "walking"):
        timeline.send(T0, user, "Signed Up")
        timeline.send(T0 + 20 * M, user, "Page Viewed")  # the spell: 09:00 to 09:20
    timeline.send(T0 + 40 * M, "walking", "Email Verified")  # arrives after that spell
    people = _ids("settled", "walking")
    grid = TickGrid(T0, T0 + 60 * M)
    replay = Replay(grid, grid.last)
    walked: list[int] = []
    load = replay.histories
    monkeypatch.setattr(
        replay, "histories", lambda flow, ids: walked.extend(ids) or load(flow, ids)
    )
    found = idle.found_spells(
        sorted(people.values()), idle.Clock.of(grid, 5 * M), flow_spec("activation"), None, replay
    )
    assert walked == [people["walking"]]
    # At the first spell both are at step 1 (the walk for one, the stored row for the other);
    # the spell after 09:40 is judged at step 2 for "walking" from its stored row.
    assert [f for _, _, f in found[people["settled"]]] == [1, 1]
    assert [f for _, _, f in found[people["walking"]]] == [1, 1, 2]


def _summary(result):
    return (
        [(e.person_id, e.occurrence, e.at) for e in result.entries],
        dict(result.skipped),
        {day: dict(c) for day, c in result.scheduled_per_day.items()},
        dict(result.outcomes),
        result.progressed_anyway,
        result.attribution_open,
    )


USERS = ["a", "b", "c"]
NAMES = ["Signed Up", "Email Verified", "Profile Completed", "Page Viewed", "Page Viewed"]


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    raw=st.lists(
        st.tuples(st.integers(0, 60 * 4), st.sampled_from(USERS), st.sampled_from(NAMES)),
        min_size=1,
        max_size=14,
    ),
    minutes=st.integers(1, 6),
    step=st.one_of(st.none(), st.integers(2, 3)),
    reentry=st.sampled_from(["once", {"once_per": "3m"}, {"once_per": "1h"}, {"once_per": "1s"}]),
    now=st.sampled_from([20, 70]),  # before the end of the period: attribution asks about then
)
def test_sql_spells_and_stored_progress_decide_as_the_reference_and_the_walk(
    timeline, monkeypatch, raw, minutes, step, reentry, now
):
    from django.db import transaction

    trigger = {"kind": "inactive_in_flow", "flow": "activation", "minutes": minutes}
    if step is not None:
        trigger["step"] = step
    definition = {"trigger": trigger, "follow_ups": IN_APP, "reentry": reentry}
    with transaction.atomic():
        for q, user, name in sorted(raw):
            timeline.send(T0 + q * timedelta(seconds=15), user, name)
        period = {"since": T0, "until": T0 + 50 * M, "now": T0 + now * M}
        fast = run_backtest(definition=definition, **period)
        stored = idle._stored

        def walk_everyone(flow, people):  # stored rows that never stand in for the walk
            rows = stored(flow, people)
            for row in rows.values():
                row.settled_from = idle.micros(T0 + 365 * 24 * 60 * M)
            return rows

        with monkeypatch.context() as patch:
            patch.setattr(idle, "SET_BASED", False)  # PostgreSQL: the batch path, as SQLite
            patch.setattr(idle, "spells_sql", spells_python)
            patch.setattr(idle, "_stored", walk_everyone)
            reference = run_backtest(definition=definition, **period)
        transaction.set_rollback(True)
    assert _summary(fast) == _summary(reference)


SPLIT_DEFINITION = {
    "trigger": {"kind": "inactive_in_flow", "flow": "activation", "minutes": 5},
    "follow_ups": IN_APP,
    "reentry": {"once_per": "20m"},
}


def send_split_spells(timeline) -> list[str]:
    """Eight people with idle spells of every kind the split backtest decides; their ids."""
    users = [f"p{n}" for n in range(8)]
    for n, user in enumerate(users):
        timeline.send(T0 + n * M, user, "Signed Up")
        timeline.send(T0 + (n + 9) * M, user, "Page Viewed")  # a spell before it
        if n % 3 == 0:  # a step event after a spell: walked, not judged by the stored row
            timeline.send(T0 + 22 * M, user, "Email Verified")
        if n % 4 == 1:  # completed before a later spell: no spell from the stored row
            timeline.send(T0 + 30 * M, user, "Email Verified")
            timeline.send(T0 + 31 * M, user, "Profile Completed")
        timeline.send(T0 + 40 * M, user, "Page Viewed")
    return users


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_processes_and_one_query_decide_as_the_batches(timeline, monkeypatch, settings):
    """PostgreSQL: everyone's spells in one query (the stored-progress judgement in SQL), and
    that in two processes (each for half of the people, by id), decide as the batch path."""
    from triggers.simulation import backtest

    users = send_split_spells(timeline)
    definition = SPLIT_DEFINITION
    period = {"since": T0, "until": T0 + 60 * M, "now": T0 + 70 * M}
    forked: list[bool] = []
    in_processes = backtest._run_idle_in_processes
    monkeypatch.setattr(
        backtest,
        "_run_idle_in_processes",
        lambda context, progress: forked.append(True) or in_processes(context, progress),
    )
    settings.ONRAMP_BACKTEST_PROCESSES_FROM = 1
    # A closure for progress, as the task passes: the processes inherit it, it is not pickled.
    split = run_backtest(definition=definition, progress=lambda percent: None, **period)
    assert forked == [True]
    settings.ONRAMP_BACKTEST_PROCESSES = 1
    one_query = run_backtest(definition=definition, **period)
    monkeypatch.setattr(idle, "SET_BASED", False)
    batches = run_backtest(definition=definition, **period)
    assert forked == [True]
    assert _summary(split) == _summary(batches) == _summary(one_query)
    assert split.entered and split.skipped["reentry"]
    assert {e.person_id for e in split.entries} == set(_ids(*users).values())


def test_sparse_batches_of_people_select_exactly_those_people(timeline):
    users = [f"u{i}" for i in range(12)]
    for user in users:
        timeline.send(T0, user, "Signed Up")
    ids = _ids(*users)
    sparse = sorted([ids["u0"], ids["u11"]])  # far apart: an array or IN list, not a range
    assert sparse[-1] - sparse[0] >= 4 * len(sparse)
    events = for_people(Event.objects.all(), "person_id", sparse)
    assert set(events.values_list("person_id", flat=True)) == set(sparse)
    people = for_people(Person.objects.all(), "pk", sparse)
    assert sorted(people.values_list("pk", flat=True)) == sparse
