"""Each trigger kind fires at its threshold and not before, once per occurrence (pinned clock)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from onboarding.models import Segment
from triggers.models import DecisionLog, Enrollment, Message
from triggers.models.messages import MessageStatus

from .conftest import T0, make_rule

pytestmark = pytest.mark.usefixtures("flow", "templates")

M = timedelta(minutes=1)
IN_APP = [{"channel": "in_app", "template": "nudge", "delay": "0s"}]


def idle_rule(minutes=5, **extra):
    return make_rule(
        "idle",
        {
            "trigger": {"kind": "inactive_in_flow", "flow": "activation", "minutes": minutes},
            "follow_ups": IN_APP,
            "reentry": {"once_per": "1m"},
            **extra,
        },
    )


def test_inactive_fires_at_the_threshold_not_before_and_once_per_spell(timeline):
    rule = idle_rule()
    timeline.send(T0, "u1", "Signed Up")
    assert timeline.tick(T0 + 4 * M + timedelta(seconds=59)).enrolled == 0
    assert timeline.tick(T0 + 5 * M).enrolled == 1
    assert timeline.tick(T0 + 6 * M).enrolled == 0
    assert timeline.tick(T0 + 30 * M).enrolled == 0

    timeline.send(T0 + 40 * M, "u1", "Page Viewed")  # a new spell of activity
    assert timeline.tick(T0 + 44 * M).enrolled == 0
    assert timeline.tick(T0 + 45 * M).enrolled == 1

    enrollments = Enrollment.objects.filter(rule=rule).order_by("enrolled_at")
    assert [e.enrolled_at for e in enrollments] == [T0 + 5 * M, T0 + 45 * M]
    message = Message.objects.get(enrollment=enrollments[0])
    assert (message.channel, message.status, message.due_at) == ("in_app", "scheduled", T0 + 5 * M)


def test_inactive_only_at_the_given_step_and_not_after_completion(timeline):
    make_rule(
        "idle-at-profile",
        {
            "trigger": {"kind": "inactive_in_flow", "flow": "activation", "step": 3, "minutes": 3},
            "follow_ups": IN_APP,
        },
    )
    timeline.send(T0, "signed-up-only", "Signed Up")
    timeline.send(T0, "verified", "Signed Up")
    timeline.send(T0 + M, "verified", "Email Verified")
    timeline.send(T0, "done", "Signed Up")
    timeline.send(T0, "done", "Email Verified")
    timeline.send(T0 + M, "done", "Profile Completed")
    timeline.tick(T0 + 10 * M)
    assert list(Enrollment.objects.values_list("person__external_id", flat=True)) == ["verified"]


def test_step_abandoned_fires_when_the_next_step_is_missing_within_the_window(timeline):
    make_rule(
        "abandoned",
        {
            "trigger": {
                "kind": "step_abandoned",
                "flow": "activation",
                "did": 2,
                "missing": 3,
                "within": "1h",
            },
            "follow_ups": [{"channel": "email", "template": "reminder", "delay": "0s"}],
        },
    )
    for user in ("quits", "finishes"):
        timeline.send(T0, user, "Signed Up")
        timeline.send(T0 + M, user, "Email Verified")
    timeline.send(T0 + 30 * M, "finishes", "Profile Completed")
    assert timeline.tick(T0 + 60 * M).enrolled == 0
    assert timeline.tick(T0 + 61 * M).enrolled == 1
    assert timeline.tick(T0 + 120 * M).enrolled == 0
    assert list(Enrollment.objects.values_list("person__external_id", flat=True)) == ["quits"]


def test_repeated_failures_fire_on_the_third_within_the_window_only(timeline):
    make_rule(
        "failures",
        {
            "trigger": {
                "kind": "repeated_event",
                "event": "Task Failed",
                "times": 3,
                "within": "10m",
            },
            "follow_ups": IN_APP,
            "reentry": {"once_per": "1m"},
        },
    )
    for minute in (0, 2, 4, 5):  # the fourth failure belongs to the same streak
        timeline.send(T0 + minute * M, "struggles", "Task Failed")
    for minute in (0, 11, 22):  # never three within 10 minutes
        timeline.send(T0 + minute * M, "slow", "Task Failed")
    timeline.tick(T0 + 30 * M)
    enrollment = Enrollment.objects.get()
    assert enrollment.person.external_id == "struggles"
    assert enrollment.enrolled_at == T0 + 4 * M


def test_inactive_across_sessions_counts_sessions_since_the_last_progress(timeline):
    make_rule(
        "sessions",
        {
            "trigger": {"kind": "inactive_sessions", "flow": "activation", "sessions": 3},
            "follow_ups": IN_APP,
        },
    )
    timeline.send(T0, "u1", "Signed Up")
    for hours in (1, 2):
        timeline.send(T0 + timedelta(hours=hours), "u1", "Logged In")
    assert timeline.tick(T0 + timedelta(hours=2, minutes=1)).enrolled == 0
    timeline.send(T0 + timedelta(hours=3), "u1", "Logged In")
    assert timeline.tick(T0 + timedelta(hours=3, minutes=1)).enrolled == 1
    timeline.send(T0 + timedelta(hours=4), "u1", "Logged In")
    assert timeline.tick(T0 + timedelta(hours=4, minutes=1)).enrolled == 0


def test_milestone_after_onboarding_fires_once(timeline):
    make_rule(
        "power-user",
        {
            "trigger": {
                "kind": "milestone",
                "event": "Report Shared",
                "times": 2,
                "flow": "activation",
            },
            "follow_ups": IN_APP,
        },
    )
    timeline.send(T0, "u1", "Report Shared")  # before onboarding: does not count
    timeline.send(T0 + M, "u1", "Signed Up")
    timeline.send(T0 + M, "u1", "Email Verified")
    timeline.send(T0 + 2 * M, "u1", "Profile Completed")
    timeline.send(T0 + 3 * M, "u1", "Report Shared")
    assert timeline.tick(T0 + 4 * M).enrolled == 0
    timeline.send(T0 + 5 * M, "u1", "Report Shared")
    timeline.send(T0 + 6 * M, "u1", "Report Shared")
    assert timeline.tick(T0 + 7 * M).enrolled == 1
    assert timeline.tick(T0 + 8 * M).enrolled == 0


def test_event_trigger_matches_properties(timeline):
    make_rule(
        "trial",
        {
            "trigger": {"kind": "event", "event": "Trial Ending", "where": {"plan": "pro"}},
            "follow_ups": IN_APP,
        },
    )
    timeline.send(T0, "pro", "Trial Ending", plan="pro")
    timeline.send(T0, "free", "Trial Ending", plan="free")
    timeline.tick(T0 + M)
    assert list(Enrollment.objects.values_list("person__external_id", flat=True)) == ["pro"]


def test_segment_filter_skips_with_a_logged_reason(timeline):
    Segment.objects.create(
        slug="pro",
        name="Pro",
        definition={"match": "all", "conditions": [{"trait": "plan", "op": "eq", "value": "pro"}]},
    )
    make_rule(
        "trial-pro",
        {
            "trigger": {"kind": "event", "event": "Trial Ending"},
            "segment": "pro",
            "follow_ups": IN_APP,
        },
    )
    timeline.send(T0, "someone", "Trial Ending")
    timeline.tick(T0 + M)
    assert not Enrollment.objects.exists()
    decision = DecisionLog.objects.get()
    assert (decision.outcome, decision.reason, decision.person.external_id) == (
        "skipped",
        "segment",
        "someone",
    )


def test_reentry_once_skips_later_occurrences(timeline):
    idle_rule(minutes=2, reentry="once")
    timeline.send(T0, "u1", "Signed Up")
    timeline.tick(T0 + 3 * M)
    timeline.send(T0 + 10 * M, "u1", "Page Viewed")
    timeline.tick(T0 + 13 * M)
    assert Enrollment.objects.count() == 1
    assert DecisionLog.objects.filter(outcome="skipped", reason="reentry").count() == 1


def test_progress_cancels_pending_follow_ups(timeline):
    make_rule(
        "stalled-reminders",
        {
            "trigger": {"kind": "inactive_in_flow", "flow": "activation", "minutes": 5},
            "follow_ups": [
                {"channel": "email", "template": "reminder", "delay": "1h"},
                {"channel": "email", "template": "reminder", "delay": "3d"},
            ],
            "exit_when": "progressed",
        },
    )
    timeline.send(T0, "u1", "Signed Up")
    timeline.tick(T0 + 5 * M)
    assert Message.objects.filter(status=MessageStatus.SCHEDULED).count() == 2
    timeline.send(T0 + 20 * M, "u1", "Email Verified")
    report = timeline.tick(T0 + 21 * M)
    assert report.rules[0].exited == 1
    assert set(Message.objects.values_list("status", "reason")) == {
        ("cancelled", "exit:progressed")
    }
    assert Enrollment.objects.get().status == "exited"


def test_an_exit_found_at_send_time_ends_the_enrollment(timeline):
    """The person progresses just before the follow-up is due and delivery runs before the next
    tick: delivery's own exit check cancels the follow-up, and the enrollment exits there and
    then, logged once as an exit (as the tick logs one). The tick after it, finding nothing pending, never
    would have: the enrollment stayed active for good."""
    from triggers.delivery.pipeline import deliver_due

    make_rule(
        "stalled-reminder",
        {
            "trigger": {"kind": "inactive_in_flow", "flow": "activation", "minutes": 5},
            "follow_ups": [{"channel": "in_app", "template": "nudge", "delay": "1h"}],
            "exit_when": "progressed",
        },
    )
    timeline.send(T0, "u1", "Signed Up")
    timeline.tick(T0 + 5 * M)
    timeline.send(T0 + 64 * M, "u1", "Email Verified")
    report = deliver_due(now=T0 + 65 * M)  # due at T0+1h05m, before the next tick
    assert report.sent == 0 and report.outcomes["cancelled"] == 1
    assert Message.objects.get().reason == "exit:progressed"
    enrollment = Enrollment.objects.get()
    assert (enrollment.status, enrollment.exit_reason) == ("exited", "progressed")
    assert enrollment.exited_at == T0 + 65 * M
    assert timeline.tick(T0 + 66 * M).rules[0].exited == 0  # nothing left for the tick to do
    # Logged once, as the exit, naming the follow-up it cancelled (no separate "cancelled" row).
    [logged] = DecisionLog.objects.filter(enrollment=enrollment).exclude(outcome="enrolled")
    assert (logged.outcome, logged.reason) == ("exited", "progressed")
    assert logged.message_id == Message.objects.get().pk


def test_dry_run_changes_nothing(timeline):
    idle_rule()
    timeline.send(T0, "u1", "Signed Up")
    report = timeline.tick(T0 + 6 * M, dry_run=True)
    assert report.enrolled == 1
    assert not Enrollment.objects.exists() and not Message.objects.exists()
    assert timeline.tick(T0 + 6 * M).enrolled == 1


def test_repeated_and_overlapping_ticks_enroll_once(timeline):
    idle_rule()
    timeline.send(T0, "u1", "Signed Up")
    for _ in range(3):
        timeline.tick(T0 + 6 * M)
    timeline.tick(T0 + 5 * M)  # a late tick with an older clock
    assert Enrollment.objects.count() == 1
    assert Message.objects.count() == 1


def test_paused_rule_is_not_evaluated(timeline):
    from triggers.services.rules import rule_set_status

    rule = idle_rule()
    rule_set_status(rule=rule, status="paused")
    timeline.send(T0, "u1", "Signed Up")
    assert timeline.tick(T0 + 6 * M).rules == []
