"""History is not live activity (DESIGN §4.1): idle time counts from when the last event happened,
an occurrence whose deadline passed before we knew of it is recorded (``skipped``, ``late_data``)
and never sent, and ``/v1/import`` never starts a rule — for every trigger kind."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import pytest
import time_machine
from django.core.management import call_command

from onboarding.models import Event, FlowProgress, Person
from triggers.models import DecisionLog, Enrollment, Message

from .conftest import T0, make_rule

pytestmark = pytest.mark.usefixtures("flow", "templates")

M = timedelta(minutes=1)
S = timedelta(seconds=1)
D = timedelta(days=1)
NOW = T0 + 7 * D  # when the team adopting Onramp backfills last week
IN_APP = [{"channel": "in_app", "template": "nudge", "delay": "0s"}]

# One active rule of each trigger kind.
RULES = {
    "idle": {"kind": "inactive_in_flow", "flow": "activation", "minutes": 5},
    "abandoned": {
        "kind": "step_abandoned",
        "flow": "activation",
        "did": 1,
        "missing": 2,
        "within": "1h",
    },
    "failures": {"kind": "repeated_event", "event": "Task Failed", "times": 3, "within": "10m"},
    "sessions": {"kind": "inactive_sessions", "flow": "activation", "sessions": 2},
    "milestone": {"kind": "milestone", "event": "Report Shared", "times": 2},
    "event": {"kind": "event", "event": "Trial Ending"},
}


def _rules(active_from):
    for slug, trigger in RULES.items():
        make_rule(slug, {"trigger": trigger, "follow_ups": IN_APP}, active_from=active_from)


def _track(user, at, name, n):
    return {
        "type": "track",
        "userId": user,
        "event": name,
        "timestamp": at.isoformat(),
        "messageId": f"{user}-{n}",
    }


def journey(user, start):
    """A week-old journey that would start every rule if it were live: signed up and stopped
    (idle, abandoned), three failures in five minutes, two later sessions without progress, a
    milestone and a trial-ending event."""
    steps = [
        (0 * M, "Signed Up"),
        (1 * M, "Task Failed"),
        (2 * M, "Task Failed"),
        (3 * M, "Task Failed"),
        (60 * M, "Page Viewed"),  # session 1 after the stall
        (120 * M, "Page Viewed"),  # session 2
        (121 * M, "Report Shared"),
        (122 * M, "Report Shared"),
        (123 * M, "Trial Ending"),
    ]
    return [_track(user, start + at, name, n) for n, (at, name) in enumerate(steps)]


def history(*, recent: bool = False):
    """Seven days of history: four people, starting 6, 5, 4 and 3 days ago (their conversion
    windows still open). With ``recent``, a fifth whose events are a minute old."""
    events = []
    for i in range(4):
        events += journey(f"past-{i}", NOW - 6 * D + i * D)
    if recent:
        events += [
            _track("just-now", NOW - M, "Signed Up", 0),
            _track("just-now", NOW - M, "Trial Ending", 1),
        ]
    return events


def post(api, path, events, at):
    with time_machine.travel(at, tick=False):
        response = api.post(path, json.dumps({"batch": events}), content_type="application/json")
    assert response.status_code == 200, response.content


def tick_through(timeline, start, until, every=30 * S):
    moment = start
    while moment <= until:
        timeline.tick(moment)
        moment += every


def _funnel():
    out = io.StringIO()
    with time_machine.travel(NOW + 10 * M, tick=False):
        call_command(
            "funnel",
            "activation",
            "--since",
            (NOW - 7 * D).date().isoformat(),
            "--until",
            NOW.date().isoformat(),
            "--format",
            "json",
            stdout=out,
        )
    return json.loads(out.getvalue())


def test_a_backfill_through_import_starts_no_rule_and_updates_progress_and_funnels(timeline, api):
    _rules(NOW - 10 * M)
    timeline.tick(NOW - 5 * M)  # the rules are live before the backfill
    post(api, "/v1/import", history(recent=True), NOW)
    tick_through(timeline, NOW, NOW + 15 * M)
    timeline.tick(NOW + 2 * 60 * M)

    assert Enrollment.objects.count() == 0
    assert Message.objects.count() == 0
    assert not DecisionLog.objects.exists()  # history writes no decision rows either
    # History feeds people, progress and funnels all the same.
    assert Person.objects.count() == 5
    assert FlowProgress.objects.filter(flow__slug="activation").count() == 5
    assert set(FlowProgress.objects.values_list("furthest_step", flat=True)) == {1}
    funnel = _funnel()
    assert funnel["steps"][0]["count"] == 5
    assert Event.objects.filter(imported=True).count() == Event.objects.count() == 38
    # ... and moves no one's last activity: idle time is about live activity.
    assert not Person.objects.filter(last_event_at__isnull=False).exists()


def test_history_through_batch_never_fires_in_the_past_and_a_live_person_is_caught(timeline, api):
    _rules(NOW - 10 * M)
    timeline.tick(NOW - 5 * M)
    post(api, "/v1/batch", history(), NOW)
    timeline.send(NOW, "live", "Signed Up")  # someone signing up as the backfill lands
    timeline.tick(NOW + 30 * S)
    timeline.tick(NOW + 4 * M + 59 * S)
    assert not Enrollment.objects.exists()
    timeline.tick(NOW + 5 * M)
    enrolled = list(
        Enrollment.objects.values_list("rule__slug", "person__external_id", "enrolled_at")
    )
    assert enrolled == [("idle", "live", NOW + 5 * M)]  # caught at the 5-minute mark
    tick_through(timeline, NOW + 5 * M + 30 * S, NOW + 15 * M, every=M)
    timeline.tick(NOW + 2 * 60 * M)

    # Each spell we learnt of too late is recorded instead, once, for every kind.
    late = DecisionLog.objects.filter(outcome="skipped", reason="late_data")
    by_rule = {slug: late.filter(rule__slug=slug).count() for slug in RULES}
    assert by_rule == dict.fromkeys(RULES, 4)
    assert set(late.values_list("person__external_id", flat=True)) == {
        f"past-{i}" for i in range(4)
    }

    # The same batch again (a client retrying) changes nothing.
    post(api, "/v1/batch", history(), NOW + 20 * M)
    timeline.tick(NOW + 20 * M + 30 * S)
    timeline.tick(NOW + 2 * 60 * M)
    assert late.count() == 6 * 4

    # No occurrence whose deadline passed before receipt: only the live person's, after NOW
    # (idle at 5 minutes, and the sign-up not followed by a verification within the hour).
    assert sorted(
        Enrollment.objects.values_list("rule__slug", "person__external_id", "enrolled_at")
    ) == [("abandoned", "live", NOW + 60 * M), ("idle", "live", NOW + 5 * M)]


def test_a_batch_two_minutes_late_fires_at_its_true_deadline_once(timeline, api):
    _rules(NOW - 10 * M)
    timeline.tick(NOW - 5 * M)
    events = [
        _track("offline", NOW - 2 * M, "Signed Up", 0),
        _track("offline", NOW - 2 * M + S, "Trial Ending", 1),
    ]
    post(api, "/v1/batch", events, NOW)  # flushed two minutes after it happened

    timeline.tick(NOW + 30 * S)
    # The event rule: two minutes late is within the allowance, so it fires, at its receipt.
    assert list(Enrollment.objects.values_list("rule__slug", "enrolled_at")) == [("event", NOW)]
    timeline.tick(NOW + 3 * M)
    assert Enrollment.objects.filter(rule__slug="idle").count() == 0
    timeline.tick(NOW + 3 * M + 30 * S)  # idle since NOW − 1:59: due at NOW + 3:01
    idle = Enrollment.objects.get(rule__slug="idle")
    assert idle.enrolled_at == NOW + 3 * M + S  # its true deadline, not receipt + 5 minutes
    assert Message.objects.get(enrollment=idle).due_at == NOW + 3 * M + S

    post(api, "/v1/batch", events, NOW + 4 * M)  # retried: stored once, nothing moves
    tick_through(timeline, NOW + 4 * M, NOW + 12 * M, every=M)
    assert Enrollment.objects.count() == 2
    assert not DecisionLog.objects.filter(reason="late_data").exists()
    person = Person.objects.get(external_id="offline")
    assert (person.last_event_at, person.last_event_received_at) == (NOW - 2 * M + S, NOW)


def test_a_late_event_moves_last_activity_only_to_when_it_happened(timeline, api):
    make_rule(
        "idle",
        {"trigger": RULES["idle"], "follow_ups": IN_APP, "reentry": {"once_per": "1m"}},
        active_from=T0 - M,
    )
    timeline.tick(T0)
    timeline.send(T0 + M, "u", "Signed Up")
    # An offline queue flushed at 09:04 with an event of 08:59: activity stays at 09:01.
    post(api, "/v1/batch", [_track("u", T0 - M, "Page Viewed", 9)], T0 + 4 * M)
    timeline.tick(T0 + 5 * M + 59 * S)
    assert not Enrollment.objects.exists()
    timeline.tick(T0 + 6 * M)  # 5 minutes after 09:01, not after 09:04
    assert Enrollment.objects.get().enrolled_at == T0 + 6 * M
    person = Person.objects.get(external_id="u")
    assert (person.last_event_at, person.last_seen) == (T0 + M, T0 + 4 * M)
    # An event stamped in the future counts from its receipt, never later.
    post(api, "/v1/batch", [_track("u", T0 + 3 * 60 * M, "Page Viewed", 10)], T0 + 10 * M)
    assert Person.objects.get(external_id="u").last_event_at == T0 + 10 * M
    timeline.tick(T0 + 15 * M)
    assert Enrollment.objects.count() == 2


def test_imported_events_count_but_only_a_live_one_completes_a_streak(timeline, api):
    _rules(NOW - 10 * M)
    timeline.tick(NOW - 5 * M)
    post(
        api,
        "/v1/import",
        [
            _track("u", NOW - 2 * M, "Task Failed", 0),
            _track("u", NOW - 2 * M, "Report Shared", 1),
            _track("u", NOW - M, "Task Failed", 2),
        ],
        NOW,
    )
    timeline.tick(NOW + 30 * S)
    assert not Enrollment.objects.exists()
    timeline.send(NOW + M, "u", "Task Failed")  # the third failure in 10 minutes, live
    timeline.send(NOW + M, "u", "Report Shared")  # the second share, live
    timeline.tick(NOW + M + 30 * S)
    assert sorted(Enrollment.objects.values_list("rule__slug", "enrolled_at")) == [
        ("failures", NOW + M),
        ("milestone", NOW + M),
    ]
