"""The backtest makes the live engine's decisions: the same timeline replayed twice — once by the
backtest over stored events, once by ticking ``evaluate_rules`` every 30 s while the events arrive
at their times — gives the same enrollments (person, occurrence key, time) and the same follow-ups
per day and channel."""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta

import pytest
import time_machine
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onboarding.models import Event, Segment
from triggers.models import Enrollment, Message
from triggers.simulation.backtest import run_backtest

from .conftest import T0, make_rule

pytestmark = pytest.mark.usefixtures("flow", "templates")

M = timedelta(minutes=1)
TICK = timedelta(seconds=30)
IN_APP = [{"channel": "in_app", "template": "nudge", "delay": "0s"}]
TWO = [
    {"channel": "in_app", "template": "nudge", "delay": "0s"},
    {"channel": "email", "template": "reminder", "delay": "1d", "at": "10:00"},
]


def _identify(timeline, at, user, **traits):
    timeline.counter += 1
    payload = {
        "type": "identify",
        "userId": user,
        "traits": traits,
        "timestamp": at.isoformat(),
        "messageId": f"m{timeline.counter}",
    }
    with time_machine.travel(at, tick=False):
        response = timeline.api.post(
            "/v1/identify", json.dumps(payload), content_type="application/json"
        )
    assert response.status_code == 200, response.content


def _send(timeline, item):
    at, user, name, props = item
    if name == "$identify":
        _identify(timeline, at, user, **props)
    else:
        timeline.send(at, user, name, **props)


def _normalise(keys):
    """Event ids differ between the two replays; message ids (the send order) do not."""
    ids = dict(Event.objects.values_list("id", "message_id"))

    def key(occurrence):
        kind, _, value = occurrence.partition(":")
        if kind in {"abandon", "repeat", "event"}:
            return f"{kind}:{ids[int(value)]}"
        return occurrence

    return {(user, key(occurrence), at) for user, occurrence, at in keys}


def live(timeline, definition, events, since, until):
    """Tick the live engine every 30 s while the events arrive at their times."""
    timeline.counter = 0
    with transaction.atomic():
        make_rule("live", definition, active_from=since - M)
        pending = sorted(events, key=lambda e: e[0])
        moment = since
        while True:
            while pending and pending[0][0] <= moment:
                _send(timeline, pending.pop(0))
            timeline.tick(moment)
            if moment + TICK > until:
                break
            moment += TICK
        enrolled = _normalise(
            (e.person.external_id, e.occurrence_key, e.enrolled_at)
            for e in Enrollment.objects.select_related("person")
        )
        sends = Counter((m.due_at.date().isoformat(), m.channel) for m in Message.objects.all())
        transaction.set_rollback(True)
    return enrolled, sends


def backtest(timeline, definition, events, since, until):
    timeline.counter = 0
    with transaction.atomic():
        for item in sorted(events, key=lambda e: e[0]):
            _send(timeline, item)
        result = run_backtest(definition=definition, since=since, until=until, now=until)
        enrolled = _normalise((e.external_id, e.occurrence, e.at) for e in result.entries)
        transaction.set_rollback(True)
    sends = Counter(
        {
            (day, channel): n
            for day, c in result.scheduled_per_day.items()
            for channel, n in c.items()
        }
    )
    return enrolled, sends, result


def assert_same(timeline, definition, events, since, until, *, expect_some=True):
    ours, our_sends, result = backtest(timeline, definition, events, since, until)
    theirs, their_sends = live(timeline, definition, events, since, until)
    assert ours == theirs
    assert our_sends == their_sends
    if expect_some:
        assert ours, "the timeline should make the rule fire"
    return result


def ev(minutes, user, name, **props):
    return (T0 + timedelta(minutes=minutes), user, name, props)


def late(minutes, received, user, name, **props):
    """An event that happened at ``minutes`` and was received at ``received`` (an offline queue
    flushed late, a backfill through /v1/batch)."""
    return (
        T0 + timedelta(minutes=received),
        user,
        name,
        {**props, "happened_at": T0 + timedelta(minutes=minutes)},
    )


def test_inactive_in_flow(timeline):
    definition = {
        "trigger": {"kind": "inactive_in_flow", "flow": "activation", "minutes": 5},
        "follow_ups": TWO,
        "reentry": {"once_per": "10m"},
    }
    events = [
        ev(0, "a", "Signed Up"),
        ev(7, "a", "Page Viewed"),  # after the first spell: a second one
        ev(9.1, "a", "Email Verified"),
        ev(30, "a", "Profile Completed"),  # completed: no more spells
        ev(1, "b", "Signed Up"),
        ev(5.9, "b", "Page Viewed"),  # just before the deadline
        ev(11.2, "b", "Page Viewed"),  # after the deadline but before the tick? (11:00 + 30 s)
        ev(2, "c", "Page Viewed"),  # not in the flow
        ev(40, "d", "Signed Up"),
        ev(40, "d", "Page Viewed"),
    ]
    result = assert_same(timeline, definition, events, T0, T0 + 60 * M)
    assert result.skipped["reentry"] >= 0


def test_inactive_at_a_step(timeline):
    definition = {
        "trigger": {"kind": "inactive_in_flow", "flow": "activation", "step": 2, "minutes": 3},
        "follow_ups": IN_APP,
    }
    events = [
        ev(0, "a", "Signed Up"),
        ev(1, "b", "Signed Up"),
        ev(2, "b", "Email Verified"),
        ev(4.5, "c", "Signed Up"),
        ev(20, "a", "Page Viewed"),
    ]
    assert_same(timeline, definition, events, T0, T0 + 30 * M)


def test_inactive_until_the_conversion_window_closes(timeline, flow):
    flow.window_seconds = 10 * 60
    flow.save()
    definition = {
        "trigger": {"kind": "inactive_in_flow", "flow": "activation", "minutes": 3},
        "follow_ups": IN_APP,
        "reentry": {"once_per": "1m"},
    }
    events = [
        ev(0, "open", "Signed Up"),  # due 3:00
        ev(5, "open", "Page Viewed"),  # due 8:00, the window ends at 10:00
        ev(8.5, "open", "Page Viewed"),  # due 11:30: the window has closed, no longer onboarding
        ev(0, "done", "Signed Up"),
        ev(1, "done", "Email Verified"),
        ev(2, "done", "Profile Completed"),
        ev(4, "done", "Page Viewed"),  # due 7:00 inside the window, but completed
    ]
    result = assert_same(timeline, definition, events, T0, T0 + 20 * M)
    assert [(e.external_id, e.at) for e in result.entries] == [
        ("open", T0 + 3 * M),
        ("open", T0 + 8 * M),
    ]


def test_step_abandoned(timeline):
    definition = {
        "trigger": {
            "kind": "step_abandoned",
            "flow": "activation",
            "did": 2,
            "missing": 3,
            "within": "20m",
        },
        "follow_ups": TWO,
    }
    events = []
    for i, user in enumerate(["quits", "finishes", "late"]):
        events += [ev(i, user, "Signed Up"), ev(i + 1, user, "Email Verified")]
    events += [ev(10, "finishes", "Profile Completed"), ev(40, "late", "Profile Completed")]
    assert_same(timeline, definition, events, T0, T0 + 60 * M)


def test_repeated_event(timeline):
    definition = {
        "trigger": {"kind": "repeated_event", "event": "Task Failed", "times": 3, "within": "10m"},
        "follow_ups": IN_APP,
        "reentry": {"once_per": "1m"},
    }
    events = [ev(m, "struggles", "Task Failed") for m in (0, 2, 4, 5, 30, 31, 32)]
    events += [ev(m, "slow", "Task Failed") for m in (0, 11, 22)]
    events += [ev(1, "other", "Task Failed", code="x"), ev(1.2, "other", "Task Failed")]
    events += [ev(1.3, "other", "Task Failed")]
    assert_same(timeline, definition, events, T0, T0 + 45 * M)


def test_repeated_event_with_a_filter(timeline):
    definition = {
        "trigger": {
            "kind": "repeated_event",
            "event": "Task Failed",
            "times": 2,
            "within": "5m",
            "where": {"code": "x"},
        },
        "follow_ups": IN_APP,
    }
    events = [ev(0, "u", "Task Failed", code="x"), ev(1, "u", "Task Failed", code="y")]
    events += [ev(2, "u", "Task Failed", code="x"), ev(2, "v", "Task Failed", code="x")]
    assert_same(timeline, definition, events, T0, T0 + 10 * M)


def test_inactive_sessions(timeline):
    definition = {
        "trigger": {"kind": "inactive_sessions", "flow": "activation", "sessions": 2},
        "follow_ups": IN_APP,
        "reentry": {"once_per": "1h"},
    }
    events = [ev(0, "u1", "Signed Up")]
    events += [ev(m, "u1", "Logged In") for m in (45, 90, 95, 140)]
    events += [ev(150, "u1", "Email Verified"), ev(190, "u1", "Logged In")]
    events += [ev(230, "u1", "Logged In"), ev(231, "u1", "Logged In")]
    events += [ev(0, "u2", "Signed Up")] + [ev(m, "u2", "Logged In") for m in (20, 60, 100)]
    assert_same(timeline, definition, events, T0, T0 + 240 * M)


def test_milestone(timeline):
    definition = {
        "trigger": {
            "kind": "milestone",
            "event": "Report Shared",
            "times": 2,
            "flow": "activation",
        },
        "follow_ups": IN_APP,
        "reentry": {"once_per": "5m"},
    }
    events = [
        ev(0, "u1", "Report Shared"),
        ev(1, "u1", "Signed Up"),
        ev(1, "u1", "Email Verified"),
        ev(2, "u1", "Profile Completed"),
        ev(3, "u1", "Report Shared"),
        ev(5, "u1", "Report Shared"),
        ev(6, "u1", "Report Shared"),
        ev(15, "u1", "Report Shared"),
        ev(0, "u2", "Report Shared"),
        ev(1, "u2", "Report Shared"),
    ]
    assert_same(timeline, definition, events, T0, T0 + 20 * M)


def test_event_with_a_segment_filter(timeline):
    Segment.objects.create(
        slug="pro",
        name="Pro",
        definition={"match": "all", "conditions": [{"trait": "plan", "op": "eq", "value": "pro"}]},
    )
    definition = {
        "trigger": {"kind": "event", "event": "Trial Ending", "where": {"tier": "paid"}},
        "segment": "pro",
        "follow_ups": TWO,
        "reentry": {"once_per": "2m"},
    }
    events = [
        ev(0, "pro", "$identify", plan="pro"),
        ev(0, "free", "$identify", plan="free"),
        ev(1, "pro", "Trial Ending", tier="paid"),
        ev(1.1, "pro", "Trial Ending", tier="paid"),  # the same tick: one per person per tick
        ev(2, "pro", "Trial Ending", tier="paid"),  # within 2 minutes: re-entry
        ev(4, "pro", "Trial Ending", tier="paid"),
        ev(4, "pro", "Trial Ending", tier="free"),
        ev(1, "free", "Trial Ending", tier="paid"),
    ]
    result = assert_same(timeline, definition, events, T0, T0 + 10 * M)
    assert result.skipped["segment"] == 1
    assert result.skipped["reentry"] == 2


def test_reentry_once(timeline):
    definition = {
        "trigger": {"kind": "inactive_in_flow", "flow": "activation", "minutes": 2},
        "follow_ups": IN_APP,
        "reentry": "once",
    }
    events = [ev(0, "u1", "Signed Up"), ev(10, "u1", "Page Viewed"), ev(0, "u2", "Signed Up")]
    result = assert_same(timeline, definition, events, T0, T0 + 20 * M)
    assert result.entered == 2 and result.skipped["reentry"] == 1


USERS = ["a", "b", "c"]
NAMES = ["Signed Up", "Email Verified", "Profile Completed", "Page Viewed", "Page Viewed"]


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    raw=st.lists(
        st.tuples(
            st.integers(0, 40 * 4),  # quarter minutes
            st.sampled_from(USERS),
            st.sampled_from(NAMES),
        ),
        min_size=1,
        max_size=12,
    ),
    minutes=st.integers(1, 6),
    step=st.one_of(st.none(), st.integers(2, 3)),
    reentry=st.sampled_from(["once", {"once_per": "3m"}, {"once_per": "1h"}]),
)
def test_inactive_in_flow_random_timelines(timeline, raw, minutes, step, reentry):
    trigger = {"kind": "inactive_in_flow", "flow": "activation", "minutes": minutes}
    if step is not None:
        trigger["step"] = step
    definition = {"trigger": trigger, "follow_ups": IN_APP, "reentry": reentry}
    events = [(T0 + q * timedelta(seconds=15), user, name, {}) for q, user, name in raw]
    assert_same(timeline, definition, events, T0, T0 + 50 * M, expect_some=False)


# --- late events: the backtest replays in event time and skips late data as the engine does ----


def test_inactive_in_flow_with_late_events(timeline):
    definition = {
        "trigger": {"kind": "inactive_in_flow", "flow": "activation", "minutes": 5},
        "follow_ups": TWO,
        "reentry": {"once_per": "1m"},
    }
    events = [
        late(0, 2, "two-late", "Signed Up"),  # due at 5:00, known at 2:00: fires at 5:00
        late(0, 8, "too-late", "Signed Up"),  # due at 5:00, known at 8:00: late data
        late(10, 17, "too-late", "Page Viewed"),  # late again
        ev(20, "too-late", "Page Viewed"),  # live: fires at 25:00
        ev(1, "reordered", "Signed Up"),
        late(0.5, 3, "reordered", "Page Viewed"),  # older than 1:00: activity stays at 1:00
        ev(4, "future", "Signed Up"),
        late(50, 9, "future", "Page Viewed"),  # stamped ahead: counts from its receipt, 9:00
        ev(30, "skewed", "Signed Up"),
        late(33, 37.5, "skewed", "Page Viewed"),  # unknown at 35:00; due 38:00, known 37:30
        late(40, 44, "skewed", "Page Viewed"),  # a later spell, known a minute before it is due
    ]
    result = assert_same(timeline, definition, events, T0, T0 + 60 * M)
    at = {}
    for entry in result.entries:
        at.setdefault(entry.external_id, []).append(entry.at)
    assert at["two-late"] == [T0 + 5 * M]  # its true deadline, not receipt + 5 minutes
    assert at["too-late"] == [T0 + 25 * M]  # only the live spell
    assert at["future"] == [T0 + 14 * M]
    # 30:00 is due at 35:00 before the event of 33:00 arrives; that one is due at 38:00, known at
    # 37:30; 40:00 is due at 45:00, known at 44:00.
    assert at["skewed"] == [T0 + 35 * M, T0 + 38 * M, T0 + 45 * M]


@pytest.mark.parametrize(
    "trigger, events",
    [
        (
            {
                "kind": "step_abandoned",
                "flow": "activation",
                "did": 1,
                "missing": 2,
                "within": "10m",
            },
            [
                late(0, 3, "a", "Signed Up"),  # due 10:00, known 3:00: fires
                late(0, 12, "b", "Signed Up"),  # due 10:00, known 12:00: late
                ev(5, "c", "Signed Up"),
                late(8, 20, "c", "Email Verified"),  # did it in time, told us late: fires at 15
            ],
        ),
        (
            {"kind": "repeated_event", "event": "Task Failed", "times": 2, "within": "10m"},
            [
                ev(0, "a", "Task Failed"),
                late(1, 3, "a", "Task Failed"),  # within the allowance: fires
                late(0, 20, "b", "Task Failed"),
                late(2, 20, "b", "Task Failed"),  # 18 minutes late: late data
                ev(30, "c", "Task Failed"),
                late(25, 31, "c", "Task Failed"),  # in event time 25 comes first: no new pair
            ],
        ),
        (
            {"kind": "inactive_sessions", "flow": "activation", "sessions": 2},
            [
                ev(0, "a", "Signed Up"),
                late(40, 41, "a", "Logged In"),
                late(80, 82, "a", "Logged In"),  # second session, two minutes late: fires
                ev(0, "b", "Signed Up"),
                late(40, 100, "b", "Logged In"),
                late(80, 100, "b", "Logged In"),  # a backfill: late data
                ev(110, "b", "Logged In"),  # a third session, live: the occurrence stays late
            ],
        ),
        (
            {"kind": "milestone", "event": "Report Shared", "times": 2},
            [
                ev(0, "a", "Report Shared"),
                late(1, 4, "a", "Report Shared"),  # fires
                late(0, 30, "b", "Report Shared"),
                late(1, 30, "b", "Report Shared"),  # reached half an hour ago: late data
                ev(35, "b", "Report Shared"),
            ],
        ),
        (
            {"kind": "event", "event": "Trial Ending"},
            [
                late(0, 2, "a", "Trial Ending"),  # fires
                late(0, 15, "b", "Trial Ending"),  # late data
                late(20, 19, "c", "Trial Ending"),  # stamped ahead of its receipt: live
            ],
        ),
    ],
    ids=["step_abandoned", "repeated_event", "inactive_sessions", "milestone", "event"],
)
def test_late_events_of_every_kind(timeline, trigger, events):
    definition = {"trigger": trigger, "follow_ups": IN_APP, "reentry": {"once_per": "1m"}}
    result = assert_same(timeline, definition, events, T0, T0 + 130 * M)
    assert result.skipped["late_data"] >= 1
    assert "b" not in {e.external_id for e in result.entries}  # learnt of too late


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    raw=st.lists(
        st.tuples(
            st.integers(0, 40 * 4),  # quarter minutes
            st.sampled_from([0, 0, 0, 4, 8, 12, 40, -8]),  # quarter minutes late (or ahead)
            st.sampled_from(USERS),
            st.sampled_from(NAMES),
        ),
        min_size=1,
        max_size=12,
    ),
    minutes=st.integers(1, 6),
    reentry=st.sampled_from(["once", {"once_per": "3m"}]),
)
def test_inactive_in_flow_random_late_timelines(timeline, raw, minutes, reentry):
    trigger = {"kind": "inactive_in_flow", "flow": "activation", "minutes": minutes}
    definition = {"trigger": trigger, "follow_ups": IN_APP, "reentry": reentry}
    quarter = timedelta(seconds=15)
    events = [
        (T0 + (q + delay) * quarter, user, name, {"happened_at": T0 + q * quarter})
        for q, delay, user, name in raw
        if q + delay >= 0
    ]
    assert_same(timeline, definition, events, T0, T0 + 50 * M, expect_some=False)
