"""Activation's "also enroll people who are idle right now" (triggers.services.activation): who
it enrolls, how it is logged and scheduled, and that the live detector never enrolls them again."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine

from onboarding.models import Person, Segment
from triggers.models import AuditLog, DecisionLog, Enrollment, Message, Rule
from triggers.rules.spec import parse_rule
from triggers.services.activation import (
    BackfillError,
    activation_backfill,
    backfill_candidates,
)
from triggers.services.rules import rule_save, rule_set_status

from .conftest import T0

pytestmark = pytest.mark.django_db

NOW = T0 + timedelta(days=2)
IDLE_RULE = {
    "trigger": {"kind": "inactive_in_flow", "flow": "activation", "minutes": 5},
    "follow_ups": [
        {"channel": "in_app", "template": "nudge", "delay": "0m"},
        {"channel": "email", "template": "reminder", "delay": "1h"},
    ],
    "exit_when": "progressed",
    "reentry": "once",
}


@pytest.fixture
def people(flow, templates, timeline) -> None:
    """Last activity before NOW: recent 2 h ago, stale 30 h ago, fresh 2 min ago (not idle 5 min
    yet), done completed the flow 3 h ago."""
    timeline.send(NOW - timedelta(hours=2), "recent", "Signed Up")
    timeline.send(NOW - timedelta(hours=30), "stale", "Signed Up")
    timeline.send(NOW - timedelta(minutes=2), "fresh", "Signed Up")
    timeline.send(NOW - timedelta(hours=4), "done", "Signed Up")
    timeline.send(NOW - timedelta(hours=3, minutes=30), "done", "Email Verified")
    timeline.send(NOW - timedelta(hours=3), "done", "Profile Completed")


def activate(definition=IDLE_RULE, *, slug="idle-5", at=NOW) -> Rule:
    rule, _ = rule_save(slug=slug, name="Idle 5", definition=definition)
    with time_machine.travel(at, tick=False):
        return rule_set_status(rule=rule, status="active")


def enrolled_people(rule: Rule) -> list[str]:
    return sorted(
        Enrollment.objects.filter(rule=rule).values_list("person__external_id", flat=True)
    )


def test_enrolls_only_people_idle_now_within_the_hours(people):
    rule = activate()
    report = activation_backfill(rule=rule, max_idle_hours=24, actor=None)

    assert (report.enrolled, report.candidates, report.at) == (1, 1, NOW)
    assert enrolled_people(rule) == ["recent"]
    enrollment = Enrollment.objects.get(rule=rule)
    assert enrollment.enrolled_at == NOW  # they enter at activation
    assert enrollment.context["backfill"] is True
    assert enrollment.context["idle_seconds"] == 2 * 3600
    decision = DecisionLog.objects.get(rule=rule, outcome="enrolled")
    assert decision.reason == "activation_backfill"
    # The follow-ups' delays count from activation, not from the idle mark two hours ago.
    due = dict(Message.objects.filter(enrollment=enrollment).values_list("step", "due_at"))
    assert due == {0: NOW, 1: NOW + timedelta(hours=1)}
    audit = AuditLog.objects.get(action="activation_backfill")
    assert audit.changes == {"max_idle_hours": 24, "enrolled": 1}


def test_the_hours_bound_who_enters(people):
    rule = activate()
    activation_backfill(rule=rule, max_idle_hours=48, actor=None)
    assert enrolled_people(rule) == ["recent", "stale"]


def test_off_by_default_nobody_idle_before_activation_enters(people, timeline):
    rule = activate()
    timeline.tick(NOW + timedelta(seconds=30))
    timeline.tick(NOW + timedelta(minutes=10))
    # Only "fresh", whose 5-minute mark passed after activation (DESIGN §4.1).
    assert enrolled_people(rule) == ["fresh"]


def test_the_live_detector_does_not_enroll_them_again(people, timeline):
    rule = activate()
    activation_backfill(rule=rule, max_idle_hours=24, actor=None)
    timeline.tick(NOW + timedelta(seconds=30))
    timeline.tick(NOW + timedelta(minutes=10))
    timeline.tick(NOW + timedelta(hours=3))
    assert enrolled_people(rule) == ["fresh", "recent"]
    assert Enrollment.objects.filter(rule=rule, person__external_id="recent").count() == 1
    # Backfilling again finds the same spell: the engine refuses a second enrollment.
    report = activation_backfill(rule=rule, max_idle_hours=24, actor=None)
    assert report.enrolled == 0
    assert Enrollment.objects.filter(rule=rule).count() == 2


def test_a_new_spell_after_activity_is_the_live_detectors(people, timeline):
    rule = activate({**IDLE_RULE, "reentry": {"once_per": "1h"}})
    activation_backfill(rule=rule, max_idle_hours=24, actor=None)
    timeline.send(NOW + timedelta(hours=2), "recent", "Email Verified")
    timeline.tick(NOW + timedelta(hours=2, minutes=6))
    keys = list(
        Enrollment.objects.filter(rule=rule, person__external_id="recent")
        .order_by("enrolled_at")
        .values_list("occurrence_key", flat=True)
    )
    assert len(keys) == 2 and keys[0] != keys[1]


def test_segment_and_reentry_are_honoured(people, timeline):
    segment = Segment.objects.create(
        slug="nobody",
        name="Nobody",
        definition={
            "match": "all",
            "conditions": [{"trait": "plan", "op": "eq", "value": "enterprise"}],
        },
    )
    rule = activate({**IDLE_RULE, "segment": segment.slug})
    assert activation_backfill(rule=rule, max_idle_hours=24, actor=None).enrolled == 0

    once = activate(slug="idle-once")
    Enrollment.objects.create(
        rule=once,
        rule_version=once.current_version,
        person_id=_person("recent"),
        occurrence_key="idle:earlier",
        enrolled_at=NOW - timedelta(days=1),
    )
    spec, _ = parse_rule(once.current_version.definition)
    assert backfill_candidates(spec, rule=once, now=NOW, max_idle_hours=24) == []
    assert activation_backfill(rule=once, max_idle_hours=24, actor=None).enrolled == 0


def _person(external_id: str) -> int:
    return Person.objects.get(external_id=external_id).pk


def test_refused_for_other_kinds_drafts_and_bad_hours(people):
    event_rule = activate(
        {
            "trigger": {"kind": "event", "event": "Signed Up"},
            "follow_ups": [{"channel": "in_app", "template": "nudge", "delay": "0m"}],
            "exit_when": "never",
        },
        slug="event-rule",
    )
    with pytest.raises(BackfillError) as error:
        activation_backfill(rule=event_rule, max_idle_hours=24)
    assert error.value.code == "not_idle"
    draft, _ = rule_save(slug="draft", name="Draft", definition=IDLE_RULE)
    with pytest.raises(BackfillError) as error:
        activation_backfill(rule=draft, max_idle_hours=24)
    assert error.value.code == "not_active"
    with pytest.raises(BackfillError):
        activation_backfill(rule=activate(slug="idle-bad"), max_idle_hours=0)
    assert not Enrollment.objects.exists()
