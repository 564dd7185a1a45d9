"""Funnel semantics (DESIGN §4.2) on hand-built timelines.

Events go in through the real tracking API, so progress rows are maintained as in production.
Every scenario is checked three ways: the progress-based funnel, the all-raw-events funnel and
``reference_funnel`` below, a deliberately different brute-force coding of §4.2 (it enumerates
every valid chain of events and keeps the furthest, earliest one; it never calls the walk).
"""

from __future__ import annotations

import itertools
import json
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext

from dashboard.funnels import FunnelQuery, run_funnel
from onboarding.models import (
    BREAKDOWN_PROPERTIES,
    Event,
    FlowProgress,
    FlowReentry,
    OnboardingFlow,
    Person,
    Step,
)

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # a Monday
DAY = timedelta(days=1)
_counter = itertools.count()


# --- building timelines ------------------------------------------------------------------------


def track(user: str, name: str, at: datetime, **properties: Any) -> dict:
    return {
        "type": "track",
        "userId": user,
        "event": name,
        "timestamp": at.isoformat(),
        "properties": properties,
    }


def identify(user: str, at: datetime, **traits: Any) -> dict:
    return {"type": "identify", "userId": user, "timestamp": at.isoformat(), "traits": traits}


def send(api, *messages: dict) -> None:
    batch = [{"messageId": f"msg-{next(_counter)}", **m} for m in messages]
    response = api.post("/v1/batch", json.dumps({"batch": batch}), content_type="application/json")
    assert response.status_code == 200, response.content


def make_flow(slug: str, window: timedelta, *steps: tuple[str, dict]) -> OnboardingFlow:
    flow = OnboardingFlow.objects.create(
        slug=slug, name=slug.title(), window_seconds=int(window.total_seconds())
    )
    for position, (event_name, where) in enumerate(steps, start=1):
        Step.objects.create(
            flow=flow,
            position=position,
            name=f"Step {position}",
            event_name=event_name,
            where=where,
        )
    return flow


# --- the reference implementation ----------------------------------------------------------------


@dataclass(frozen=True)
class RefEvent:
    id: int
    name: str
    at: datetime
    properties: dict


@dataclass
class RefFunnel:
    counts: list[int]
    medians: list[float | None]
    still_converting: int
    friction_step: int | None
    breakdown: dict[str, tuple[list[int], list[float | None]]] | None


def _matches(step: tuple[str, dict], event: RefEvent) -> bool:
    name, where = step
    return event.name == name and all(
        key in event.properties and event.properties[key] == value for key, value in where.items()
    )


def _best_chain(
    steps: list[tuple[str, dict]], events: list[RefEvent], entry: RefEvent, deadline: datetime
) -> tuple[datetime, ...]:
    """Every chain from ``entry``: each next step any unused matching event at or after the
    previous one and by the deadline. The furthest wins; among those the earliest times."""
    best: tuple[datetime, ...] = (entry.at,)

    def extend(chain: list[RefEvent]) -> None:
        nonlocal best
        times = tuple(e.at for e in chain)
        if len(times) > len(best) or (len(times) == len(best) and times < best):
            best = times
        if len(chain) == len(steps):
            return
        for candidate in events:
            if (
                candidate not in chain
                and candidate.at >= chain[-1].at
                and candidate.at <= deadline
                and _matches(steps[len(chain)], candidate)
            ):
                extend([*chain, candidate])

    extend([entry])
    return best


def _value(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value)


def _report(
    chains: list[tuple[datetime, ...]], n: int, settled: list[tuple[datetime, ...]]
) -> tuple[list[int], list[float | None], int | None]:
    """Counts and medians over every chain; the friction step over the settled ones only."""
    counts = [len([c for c in chains if len(c) >= k]) for k in range(1, n + 1)]
    medians: list[float | None] = [None]
    for k in range(2, n + 1):
        gaps = [(c[k - 1] - c[k - 2]).total_seconds() for c in chains if len(c) >= k]
        medians.append(statistics.median(gaps) if gaps else None)
    basis = [len([c for c in settled if len(c) >= k]) for k in range(1, n + 1)]
    friction = None
    if basis[0]:
        losses = [
            (1 - (basis[k - 1] / basis[k - 2] if basis[k - 2] else 0.0), -k)
            for k in range(2, n + 1)
        ]
        friction = -max(losses)[1] if losses else None
    return counts, medians, friction


def reference_funnel(
    flow: OnboardingFlow,
    since: date,
    until: date,
    now: datetime,
    breakdown: str | None = None,
    people: Iterable[int] | None = None,
) -> RefFunnel:
    steps = [(s.event_name, s.where) for s in flow.steps.order_by("position")]
    window = timedelta(seconds=flow.window_seconds)
    start = datetime(since.year, since.month, since.day, tzinfo=UTC)
    end = datetime(until.year, until.month, until.day, tzinfo=UTC) + DAY
    allowed = set(people) if people is not None else None
    chains: list[tuple[datetime, ...]] = []
    settled: list[tuple[datetime, ...]] = []  # entrants whose window has closed
    groups: dict[str, list[tuple[datetime, ...]]] = {}
    still = 0
    for person in Person.objects.all():
        if allowed is not None and person.pk not in allowed:
            continue
        events = [
            RefEvent(e.pk, e.name, e.timestamp, e.properties)
            for e in Event.objects.filter(person=person)
        ]
        candidates = [e for e in events if start <= e.at < end and _matches(steps[0], e)]
        if not candidates:
            continue
        entry = min(candidates, key=lambda e: (e.at, e.id))
        chain = _best_chain(steps, events, entry, entry.at + window)
        chains.append(chain)
        if entry.at + window <= now:
            settled.append(chain)
        elif len(chain) < len(steps):
            still += 1
        if breakdown is not None:
            value = _value(entry.properties.get(breakdown))
            if value is None:
                value = _value(person.traits.get(breakdown))
            groups.setdefault(value or "(none)", []).append(chain)
    counts, medians, friction = _report(chains, len(steps), settled)
    by_value = None
    if breakdown is not None:
        by_value = {}
        for value, members in groups.items():
            group_counts, group_medians, _ = _report(members, len(steps), [])
            by_value[value] = (group_counts, group_medians)
    return RefFunnel(counts, medians, still, friction, by_value)


# --- comparing -----------------------------------------------------------------------------------


def _close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return abs(a - b) < 1e-6


def assert_same(result, ref: RefFunnel) -> None:
    assert [s.count for s in result.steps] == ref.counts
    got = [s.median_seconds_from_previous for s in result.steps]
    assert all(_close(a, b) for a, b in zip(got, ref.medians, strict=True)), (got, ref.medians)
    assert result.still_converting == ref.still_converting
    assert result.friction_step == ref.friction_step
    if ref.breakdown is None:
        assert result.breakdown is None
        return
    assert set(result.breakdown) == set(ref.breakdown)
    for value, (counts, medians) in ref.breakdown.items():
        steps = result.breakdown[value]
        assert [s.count for s in steps] == counts, value
        got = [s.median_seconds_from_previous for s in steps]
        assert all(_close(a, b) for a, b in zip(got, medians, strict=True)), (value, got)


def funnel(
    flow: OnboardingFlow,
    since: date,
    until: date,
    *,
    now: datetime,
    breakdown: str | None = None,
    people=None,
):
    """Run the funnel from progress rows and from raw events; both must equal the reference."""
    results = [
        run_funnel(
            FunnelQuery(
                flow=flow,
                since=since,
                until=until,
                now=now,
                breakdown=breakdown,
                people=people,
                mode=mode,
            )
        )
        for mode in ("progress", "events")
    ]
    ids = None if people is None else list(people.values_list("pk", flat=True))
    ref = reference_funnel(flow, since, until, now, breakdown, ids)
    for result in results:
        assert_same(result, ref)
    assert results[0].as_dict() == results[1].as_dict()
    return results[0]


# --- scenarios -----------------------------------------------------------------------------------

LATER = T0 + 30 * DAY  # every window closed


@pytest.fixture
def activation(db) -> OnboardingFlow:
    return make_flow(
        "activation",
        DAY,
        ("Signed Up", {}),
        ("Email Verified", {}),
        ("Profile Completed", {"completionPercentage": 100}),
    )


def test_counts_are_cumulative_and_conversions_relative(api, activation):
    send(
        api,
        track("a", "Signed Up", T0),
        track("a", "Email Verified", T0 + timedelta(minutes=10)),
        track("a", "Profile Completed", T0 + timedelta(minutes=30), completionPercentage=100),
        track("b", "Signed Up", T0),
        track("b", "Email Verified", T0 + timedelta(minutes=20)),
        track("c", "Signed Up", T0),
        track("d", "Signed Up", T0),
    )
    result = funnel(activation, T0.date(), T0.date(), now=LATER)
    assert [s.count for s in result.steps] == [4, 2, 1]
    assert [s.conversion_from_start for s in result.steps] == [1.0, 0.5, 0.25]
    assert [s.conversion_from_previous for s in result.steps] == [1.0, 0.5, 0.5]
    # Even count: the mean of the two middle gaps (600 s and 1200 s).
    assert result.steps[1].median_seconds_from_previous == 900
    assert result.steps[2].median_seconds_from_previous == 1200
    assert result.friction_step == 2  # a tie (50 % lost at 2 and 3): the earliest wins


def test_out_of_order_events_do_not_count_until_in_order(api, activation):
    send(
        api,
        track("a", "Email Verified", T0 - timedelta(minutes=5)),
        track("a", "Signed Up", T0),
        track("b", "Email Verified", T0 - timedelta(minutes=5)),
        track("b", "Signed Up", T0),
        track("b", "Email Verified", T0 + timedelta(minutes=7)),
    )
    result = funnel(activation, T0.date(), T0.date(), now=LATER)
    assert [s.count for s in result.steps] == [2, 1, 0]
    assert result.steps[1].median_seconds_from_previous == 420


def test_repeats_use_the_first_matching_event(api, activation):
    send(
        api,
        track("a", "Signed Up", T0),
        track("a", "Signed Up", T0 + timedelta(minutes=1)),
        track("a", "Email Verified", T0 + timedelta(minutes=3)),
        track("a", "Email Verified", T0 + timedelta(minutes=50)),
        track("a", "Profile Completed", T0 + timedelta(hours=2), completionPercentage=100),
    )
    result = funnel(activation, T0.date(), T0.date(), now=LATER)
    assert [s.count for s in result.steps] == [1, 1, 1]
    assert result.steps[1].median_seconds_from_previous == 180  # from the first sign-up
    assert result.steps[2].median_seconds_from_previous == 2 * 3600 - 180


def test_one_event_is_used_for_at_most_one_step(api, db):
    flow = make_flow(
        "tasks", DAY, ("Signed Up", {}), ("Task Done", {}), ("Task Done", {}), ("Paid", {})
    )
    send(
        api,
        # One task: counts for step 2 only.
        track("a", "Signed Up", T0),
        track("a", "Task Done", T0 + timedelta(minutes=1)),
        track("a", "Paid", T0 + timedelta(minutes=2)),
        # Two tasks at the same instant: both steps, in order.
        track("b", "Signed Up", T0),
        track("b", "Task Done", T0 + timedelta(minutes=1)),
        track("b", "Task Done", T0 + timedelta(minutes=1)),
        track("b", "Paid", T0 + timedelta(minutes=4)),
    )
    result = funnel(flow, T0.date(), T0.date(), now=LATER)
    assert [s.count for s in result.steps] == [2, 2, 1, 1]
    assert result.steps[2].median_seconds_from_previous == 0


def test_equal_timestamps_count_as_in_order(api, activation):
    # Verification sent (and stored) before the sign-up, at the same instant: still in order.
    send(api, track("a", "Email Verified", T0))
    send(api, track("a", "Signed Up", T0))
    send(
        api,
        track("b", "Signed Up", T0),
        track("b", "Email Verified", T0),
        track("b", "Profile Completed", T0, completionPercentage=100),
    )
    result = funnel(activation, T0.date(), T0.date(), now=LATER)
    assert [s.count for s in result.steps] == [2, 2, 1]
    assert result.steps[1].median_seconds_from_previous == 0


def test_the_window_edge_is_inclusive(api, activation):
    send(
        api,
        track("a", "Signed Up", T0),
        track("a", "Email Verified", T0 + DAY),  # exactly entry + window: counts
        track("b", "Signed Up", T0),
        track("b", "Email Verified", T0 + DAY + timedelta(seconds=1)),  # one second late
    )
    result = funnel(activation, T0.date(), T0.date(), now=LATER)
    assert [s.count for s in result.steps] == [2, 1, 0]
    assert result.steps[1].median_seconds_from_previous == 86400


def test_the_range_selects_entries_by_utc_day(api, activation):
    send(
        api,
        track("a", "Signed Up", datetime(2026, 3, 2, 0, 0, tzinfo=UTC)),  # first instant
        track("b", "Signed Up", datetime(2026, 3, 2, 23, 59, 59, tzinfo=UTC)),  # last second
        track("c", "Signed Up", datetime(2026, 3, 3, 0, 0, tzinfo=UTC)),  # the next day
        track("d", "Signed Up", datetime(2026, 3, 1, 23, 59, 59, tzinfo=UTC)),  # the day before
        # A later step after the range still counts.
        track("b", "Email Verified", datetime(2026, 3, 3, 8, 0, tzinfo=UTC)),
    )
    result = funnel(activation, date(2026, 3, 2), date(2026, 3, 2), now=LATER)
    assert result.steps[0].count == 2
    assert result.steps[1].count == 1


def test_entry_before_the_range_with_a_later_entry_inside(api, activation):
    send(
        api,
        # First entry two days before the range, completed then; enters again inside the range.
        track("a", "Signed Up", T0 - 2 * DAY),
        track("a", "Email Verified", T0 - 2 * DAY + timedelta(minutes=5)),
        track("a", "Signed Up", T0),
        track("a", "Signed Up", T0 + timedelta(hours=1)),
        track("a", "Email Verified", T0 + timedelta(hours=3)),
        # Entered before the range only: not an entrant.
        track("b", "Signed Up", T0 - 2 * DAY),
        track("b", "Email Verified", T0),
        # Entered before and after the range, not in it.
        track("c", "Signed Up", T0 - 2 * DAY),
        track("c", "Signed Up", T0 + 3 * DAY),
    )
    progress = FlowProgress.objects.get(person__external_id="a")
    assert progress.entered_at == T0 - 2 * DAY
    assert progress.latest_entry_at == T0 + timedelta(hours=1)
    # Later entries are stored as re-entry rows, one per later UTC day with a sign-up (its
    # earliest): a's at T0 (not T0 + 1 h, the same day), c's three days later; none for b.
    again = FlowReentry.objects.order_by("person__external_id", "entered_at")
    assert [
        (r.person.external_id, r.entered_at, r.furthest_step, r.step_offsets) for r in again
    ] == [
        ("a", T0, 2, [0, 3 * 3600 * 10**6]),
        ("c", T0 + 3 * DAY, 1, [0]),
    ]
    assert {r.first_entered_at for r in again} == {T0 - 2 * DAY}
    result = funnel(activation, T0.date(), (T0 + DAY).date(), now=LATER)
    assert [s.count for s in result.steps] == [1, 1, 0]
    # Judged from the entry inside the range (T0), not the first one.
    assert result.steps[1].median_seconds_from_previous == 3 * 3600


def test_late_events_with_older_timestamps(api, activation):
    send(api, track("a", "Signed Up", T0 + timedelta(hours=5)))
    send(api, track("a", "Email Verified", T0 + timedelta(hours=1)))
    first = funnel(activation, T0.date(), T0.date(), now=LATER)
    assert [s.count for s in first.steps] == [1, 0, 0]
    # The real sign-up arrives late: the entry moves earlier and the verification now counts.
    send(api, track("a", "Signed Up", T0))
    again = funnel(activation, T0.date(), T0.date(), now=LATER)
    assert [s.count for s in again.steps] == [1, 1, 0]
    assert again.steps[1].median_seconds_from_previous == 3600
    # A late sign-up from the day before moves the entry out of the range.
    send(api, track("a", "Signed Up", T0 - DAY))
    assert funnel(activation, T0.date(), T0.date(), now=LATER).steps[0].count == 1
    assert funnel(activation, (T0 - DAY).date(), (T0 - DAY).date(), now=LATER).steps[0].count == 1


def test_where_filters_need_every_property_equal(api, db):
    flow = make_flow(
        "paid",
        DAY,
        ("Signed Up", {"plan": "pro"}),
        ("Checkout", {"currency": "EUR", "step": 2}),
    )
    send(
        api,
        track("a", "Signed Up", T0, plan="free"),
        track("a", "Signed Up", T0 + timedelta(minutes=1), plan="pro"),
        track("a", "Checkout", T0 + timedelta(minutes=2), currency="EUR"),  # missing "step"
        track("a", "Checkout", T0 + timedelta(minutes=3), currency="EUR", step="2"),  # a string
        track("a", "Checkout", T0 + timedelta(minutes=4), currency="EUR", step=2, extra=True),
        track("b", "Signed Up", T0),  # no plan at all
    )
    result = funnel(flow, T0.date(), T0.date(), now=LATER)
    assert [s.count for s in result.steps] == [1, 1]
    assert result.steps[1].median_seconds_from_previous == 180


# "source" is carried on the progress rows (BREAKDOWN_PROPERTIES); "channel" is not, so its
# breakdown reads the entry events: both give the same answer.
@pytest.mark.parametrize("key", ["source", "channel"])
def test_breakdown_by_entry_property_then_trait_then_none(api, activation, key):
    send(
        api,
        identify("b", T0 - DAY, **{key: "ads"}),
        identify("c", T0 - DAY, **{key: "ads"}),
        track("a", "Signed Up", T0, **{key: "newsletter"}),
        track("a", "Email Verified", T0 + timedelta(minutes=2)),
        track("b", "Signed Up", T0),  # no property: the trait
        track("b", "Email Verified", T0 + timedelta(minutes=4)),
        track("c", "Signed Up", T0, **{key: "newsletter"}),  # the entry property wins
        track("c", "Signed Up", T0 + timedelta(minutes=1), **{key: "other"}),  # not the entry
        track("d", "Signed Up", T0),
        track("e", "Signed Up", T0, **{key: 7}),
    )
    result = funnel(activation, T0.date(), T0.date(), now=LATER, breakdown=key)
    assert {value: steps[0].count for value, steps in result.breakdown.items()} == {
        "newsletter": 2,
        "ads": 1,
        "(none)": 1,
        "7": 1,
    }
    assert next(iter(result.breakdown)) == "newsletter"  # largest first
    assert result.breakdown["ads"][1].median_seconds_from_previous == 240
    # A carried property is read from the stored rows; any other from the entry events.
    query = FunnelQuery(flow=activation, since=T0.date(), until=T0.date(), now=LATER, breakdown=key)
    with CaptureQueriesContext(connection) as queries:
        run_funnel(query)
    read_events = any(Event._meta.db_table in q["sql"] for q in queries.captured_queries)
    assert read_events == (key not in BREAKDOWN_PROPERTIES)


def test_still_converting_with_a_pinned_clock(api, activation):
    now = T0 + timedelta(hours=12)
    with time_machine.travel(now, tick=False):
        send(
            api,
            track("a", "Signed Up", T0),  # window open until T0 + 1 day
            track("b", "Signed Up", T0 - timedelta(hours=12)),  # closes exactly now: not open
            track("c", "Signed Up", T0 - timedelta(hours=11)),  # open for another hour
            track("d", "Signed Up", T0 + timedelta(hours=1)),
            track("d", "Email Verified", T0 + timedelta(hours=2)),
            track("d", "Profile Completed", T0 + timedelta(hours=3), completionPercentage=100),
        )
        result = funnel(activation, (T0 - DAY).date(), T0.date(), now=now)
        assert result.still_converting == 2  # a and c; d finished, b's window closed
        # The clock defaults to now.
        default = run_funnel(FunnelQuery(flow=activation, since=(T0 - DAY).date(), until=T0.date()))
        assert default.still_converting == 2


def test_friction_step_ties_and_no_entrants(api, db):
    flow = make_flow(
        "four", DAY, ("A", {}), ("B", {}), ("C", {}), ("D", {})
    )  # losses of 50 % at steps 2 and 4
    empty = funnel(flow, T0.date(), T0.date(), now=LATER)
    assert empty.friction_step is None
    assert [s.count for s in empty.steps] == [0, 0, 0, 0]
    assert [s.conversion_from_previous for s in empty.steps] == [0.0, 0.0, 0.0, 0.0]
    minute = timedelta(minutes=1)
    send(
        api,
        *[track(u, "A", T0) for u in "pqrs"],
        *[track(u, "B", T0 + minute) for u in "pq"],
        *[track(u, "C", T0 + 2 * minute) for u in "pq"],
        track("p", "D", T0 + 3 * minute),
    )
    result = funnel(flow, T0.date(), T0.date(), now=LATER)
    assert [s.count for s in result.steps] == [4, 2, 2, 1]
    assert result.friction_step == 2


def test_friction_is_judged_on_settled_entrants_only(api, db):
    """People still inside their window are not drop-off (DESIGN §4.2): among all entrants step 2
    loses the most (5 of 9), but 5 of those 9 entered an hour ago; among the settled 4, step 2
    loses nobody and step 3 loses half."""
    flow = make_flow("settled", 7 * DAY, ("A", {}), ("B", {}), ("C", {}))
    old, minute = T0 - 10 * DAY, timedelta(minutes=1)
    send(
        api,
        *[track(u, "A", old) for u in "pqrs"],
        *[track(u, "B", old + minute) for u in "pqrs"],
        *[track(u, "C", old + 2 * minute) for u in "pq"],
        *[track(u, "A", T0 - timedelta(hours=1)) for u in "tuvwx"],
    )
    result = funnel(flow, old.date(), T0.date(), now=T0)
    assert [s.count for s in result.steps] == [9, 4, 2]  # counts still include every entrant
    assert result.still_converting == 5
    assert result.settled == [4, 4, 2]
    assert result.friction_step == 3
    # Once the recent five's windows close, they are settled drop-off at step 2.
    later = funnel(flow, old.date(), T0.date(), now=T0 + 8 * DAY)
    assert later.settled == [9, 4, 2]
    assert later.friction_step == 2


def test_no_friction_step_while_nobody_is_settled(api, db):
    flow = make_flow("fresh", 7 * DAY, ("A", {}), ("B", {}))
    send(api, *[track(u, "A", T0) for u in "pq"], track("p", "B", T0 + timedelta(minutes=1)))
    result = funnel(flow, T0.date(), T0.date(), now=T0 + DAY)
    assert [s.count for s in result.steps] == [2, 1]
    assert result.settled == [0, 0]
    assert result.friction_step is None


def test_person_filter_restricts_entrants(api, activation):
    send(
        api,
        identify("a", T0 - DAY, plan="pro"),
        track("a", "Signed Up", T0),
        track("b", "Signed Up", T0),
    )
    pro = Person.objects.filter(traits__plan="pro")
    result = funnel(activation, T0.date(), T0.date(), now=LATER, people=pro)
    assert result.steps[0].count == 1


def test_json_shape(api, activation):
    send(api, track("a", "Signed Up", T0), track("a", "Email Verified", T0 + timedelta(seconds=90)))
    result = funnel(activation, T0.date(), T0.date(), now=LATER)
    assert result.as_dict() == {
        "flow": "activation",
        "since": "2026-03-02",
        "until": "2026-03-02",
        "window_seconds": 86400,
        "segment": None,
        "steps": [
            {
                "index": 1,
                "name": "Step 1",
                "event": "Signed Up",
                "count": 1,
                "conversion_from_start": 1.0,
                "conversion_from_previous": 1.0,
                "median_seconds_from_previous": None,
            },
            {
                "index": 2,
                "name": "Step 2",
                "event": "Email Verified",
                "count": 1,
                "conversion_from_start": 1.0,
                "conversion_from_previous": 1.0,
                "median_seconds_from_previous": 90,
            },
            {
                "index": 3,
                "name": "Step 3",
                "event": "Profile Completed",
                "count": 0,
                "conversion_from_start": 0.0,
                "conversion_from_previous": 0.0,
                "median_seconds_from_previous": None,
            },
        ],
        "still_converting": 0,
        "friction_step": 3,
        "breakdown": None,
    }
