"""One exit rule (DESIGN §4.4, ``triggers.rules.exits``): the tick that cancels pending follow-ups
and the delivery pipeline that checks again at send time end the same enrollments, for the same
reason."""

from __future__ import annotations

from datetime import timedelta

import pytest

from triggers.delivery.pipeline import deliver_due
from triggers.models import DecisionLog, Enrollment, Message
from triggers.rules.exits import exit_reason
from triggers.rules.spec import parse_rule

from .conftest import T0, make_rule

pytestmark = pytest.mark.usefixtures("flow", "templates")

M = timedelta(minutes=1)

# (exit_when, events at T0 before the idle spell, events after enrolling, expected exit)
CASES = {
    "progressed_to_the_next_step": ("progressed", ["Signed Up"], ["Email Verified"], "progressed"),
    "progressed_and_completed": (
        "progressed",
        ["Signed Up", "Email Verified"],
        ["Profile Completed"],
        "completed",
    ),
    "progressed_by_activity_only": ("progressed", ["Signed Up"], ["Page Viewed"], None),
    "completed_waits_for_completion": ("completed", ["Signed Up"], ["Email Verified"], None),
    "completed": ("completed", ["Signed Up", "Email Verified"], ["Profile Completed"], "completed"),
    "never": ("never", ["Signed Up", "Email Verified"], ["Profile Completed"], None),
}


def _exit(message: Message) -> str | None:
    if message.status == "cancelled":
        assert message.reason.startswith("exit:")
        return message.reason.removeprefix("exit:")
    assert message.status in {"scheduled", "sent"}
    return None


@pytest.mark.parametrize("sibling", [False, True], ids=["alone", "with-a-sibling-rule"])
@pytest.mark.parametrize("case", CASES)
def test_the_tick_and_the_pipeline_end_the_same_enrollments(timeline, case, sibling):
    """With a sibling rule of the same flow, the tick reads the exit check's candidates (and
    the idle spells) for both rules at once, before claiming them: the same exits."""
    exit_when, before, after, expected = CASES[case]
    for slug, minutes in [("idle", 5)] + ([("idle-later", 600)] if sibling else []):
        make_rule(
            slug,
            {
                "trigger": {"kind": "inactive_in_flow", "flow": "activation", "minutes": minutes},
                "follow_ups": [{"channel": "in_app", "template": "nudge", "delay": "1h"}],
                "exit_when": exit_when,
            },
        )
    for user in ("by-tick", "at-send"):
        for name in before:
            timeline.send(T0, user, name)
    assert timeline.tick(T0 + 5 * M).enrolled == 2  # each enrolled at the step they are at
    messages = {m.person.external_id: m.pk for m in Message.objects.select_related("person")}

    for name in after:
        timeline.send(T0 + 10 * M, "by-tick", name)
    timeline.tick(T0 + 11 * M)  # the engine: people whose progress moved since the last tick
    by_tick = _exit(Message.objects.get(pk=messages["by-tick"]))

    for name in after:
        timeline.send(T0 + 12 * M, "at-send", name)
    deliver_due(now=T0 + 2 * 60 * M)  # no tick since: the pipeline's send-time check decides
    at_send = _exit(Message.objects.get(pk=messages["at-send"]))

    assert by_tick == at_send == expected
    # Both end the enrollment, each logged once as an exit.
    enrollments = [
        Enrollment.objects.get(person__external_id=user) for user in ("by-tick", "at-send")
    ]
    for enrollment in enrollments:
        assert (enrollment.status, enrollment.exit_reason) == (
            ("exited", expected) if expected else ("active", "")
        )
    exited = DecisionLog.objects.filter(outcome="exited").values_list("enrollment_id", "reason")
    assert sorted(exited) == (sorted((e.pk, expected) for e in enrollments) if expected else [])


@pytest.mark.parametrize("case", CASES)
def test_each_case_decides_as_the_rule_says(case):
    exit_when, before, after, expected = CASES[case]
    spec, problems = parse_rule(
        {
            "trigger": {"kind": "inactive_in_flow", "flow": "activation", "minutes": 5},
            "follow_ups": [{"channel": "in_app", "template": "nudge", "delay": "1h"}],
            "exit_when": exit_when,
        }
    )
    assert spec is not None, problems
    steps = ["Signed Up", "Email Verified", "Profile Completed"]
    furthest = sum(1 for name in before + after if name in steps)
    assert (
        exit_reason(
            spec,
            enrolled_at_step=len(before),
            furthest_step=furthest,
            completed=furthest == len(steps),
        )
        == expected
    )
