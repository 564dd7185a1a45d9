"""Integrity without some database constraints (migration 0017, docs/architecture.md).

A tick writes a follow-up and a decision per person due; their rule and rule version have no
database constraint, the enrollment carries both with its own (the ledger's two checks alone
were 0.05-0.08 s of a tick's 0.27-0.31 s of database time at scale 1: docs/benchmarks.md).
What still holds:

- rules and rule versions are never deleted by the application (rules are archived; the admin
  is read-only, the lifecycle service deletes flows, segments and templates only); through the
  ORM, a rule with enrollments or messages cannot be deleted at all (their rule version is
  ``PROTECT``, with its constraint), and one without still takes its decisions with it
  (``on_delete`` is Django's, not the database's): no decision is left naming a missing rule or
  version;
- the person references keep their constraint (the tick also writes decisions that have no
  enrollment: skipped people; delivery writes follow-ups of its own), so erasure and merges keep
  their database guard; only the decision log's person index went, its ``(person, at)`` index
  leads with the person.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib import admin
from django.db import connection, transaction
from django.db.models import ProtectedError
from django.test import RequestFactory

from onboarding.models import Person
from onboarding.services.gdpr import person_erase
from onboarding.tracking.identity import _merge_people
from triggers.models import DecisionLog, Enrollment, Message, Rule, RuleVersion
from triggers.services import lifecycle

from .conftest import T0, make_rule

pytestmark = pytest.mark.usefixtures("flow", "templates")

M = timedelta(minutes=1)


def _orphans() -> dict[str, int]:
    """Rows whose reference names a row that does not exist (a LEFT JOIN, so it sees them with
    or without a constraint)."""
    checks = {
        "decision.rule": ("triggers_decisionlog", "rule_id", "triggers_rule"),
        "decision.rule_version": (
            "triggers_decisionlog",
            "rule_version_id",
            "triggers_ruleversion",
        ),
        "decision.person": ("triggers_decisionlog", "person_id", "onboarding_person"),
        "decision.enrollment": ("triggers_decisionlog", "enrollment_id", "triggers_enrollment"),
        "message.person": ("triggers_message", "person_id", "onboarding_person"),
        "message.rule": ("triggers_message", "rule_id", "triggers_rule"),
        "message.rule_version": ("triggers_message", "rule_version_id", "triggers_ruleversion"),
        "message.enrollment": ("triggers_message", "enrollment_id", "triggers_enrollment"),
        "enrollment.person": ("triggers_enrollment", "person_id", "onboarding_person"),
        "enrollment.rule": ("triggers_enrollment", "rule_id", "triggers_rule"),
    }
    found = {}
    with connection.cursor() as cursor:
        for name, (table, column, target) in checks.items():
            cursor.execute(
                f"SELECT count(*) FROM {table} AS t LEFT JOIN {target} AS r "  # noqa: S608
                f"ON r.id = t.{column} WHERE t.{column} IS NOT NULL AND r.id IS NULL"
            )
            found[name] = cursor.fetchone()[0]
    return found


def _ticked(timeline) -> tuple[Rule, Person, Person]:
    """A segment rule that enrolls one person and skips the other (a decision with no
    enrollment), ticked once."""
    from onboarding.models import Segment

    Segment.objects.create(
        slug="pro",
        name="Pro",
        definition={"match": "all", "conditions": [{"trait": "plan", "op": "eq", "value": "pro"}]},
    )
    rule = make_rule(
        "idle",
        {
            "trigger": {"kind": "inactive_in_flow", "flow": "activation", "minutes": 5},
            "segment": "pro",
            "follow_ups": [{"channel": "in_app", "template": "nudge", "delay": "1h"}],
        },
    )
    timeline.send(T0, "in", "Signed Up")
    timeline.send(T0, "out", "Signed Up")
    Person.objects.filter(external_id="in").update(traits={"plan": "pro"})
    report = timeline.tick(T0 + 10 * M)
    assert (report.enrolled, dict(report.rules[0].skipped)) == (1, {"segment": 1})
    return rule, Person.objects.get(external_id="in"), Person.objects.get(external_id="out")


@pytest.mark.postgres
def test_only_the_rule_and_version_of_decisions_and_follow_ups_lost_their_constraint():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT conrelid::regclass::text, a.attname FROM pg_constraint c "
            "JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey) "
            "WHERE c.contype = 'f' AND conrelid::regclass::text IN "
            "('triggers_decisionlog', 'triggers_enrollment', 'triggers_message')"
        )
        constrained = set(cursor.fetchall())
    assert {(t, c) for t, c in constrained if t == "triggers_decisionlog"} == {
        ("triggers_decisionlog", "person_id"),
        ("triggers_decisionlog", "enrollment_id"),
        ("triggers_decisionlog", "message_id"),
    }
    for column in ("rule_id", "rule_version_id", "person_id", "variant_id"):
        assert ("triggers_enrollment", column) in constrained
    assert {(t, c) for t, c in constrained if t == "triggers_message"} == {
        ("triggers_message", "enrollment_id"),
        ("triggers_message", "person_id"),
        ("triggers_message", "template_id"),
        ("triggers_message", "fallback_of_id"),
    }


def test_a_rule_with_history_cannot_be_deleted_even_through_the_orm(timeline):
    rule, _, _ = _ticked(timeline)
    with pytest.raises(ProtectedError):
        rule.delete()
    assert DecisionLog.objects.filter(rule=rule).count() == 2
    assert set(_orphans().values()) == {0}


def test_a_rule_that_only_skipped_deleted_through_the_orm_takes_its_decisions(timeline):
    rule, _, _ = _ticked(timeline)
    Message.objects.all().delete()
    Enrollment.objects.all().delete()
    assert DecisionLog.objects.filter(rule=rule).count() == 1  # the skip
    Rule.objects.filter(pk=rule.pk).update(current_version=None)
    rule.refresh_from_db()
    rule.delete()
    assert not DecisionLog.objects.exists()
    assert not RuleVersion.objects.exists()
    assert set(_orphans().values()) == {0}


def test_a_version_in_use_cannot_be_deleted(timeline):
    rule, _, _ = _ticked(timeline)
    with pytest.raises(ProtectedError):
        rule.current_version.delete()
    assert DecisionLog.objects.filter(rule_version=rule.current_version).count() == 2


def test_the_application_deletes_no_rule():
    model_admin = admin.site._registry[Rule]
    request = RequestFactory().get("/")
    assert not model_admin.has_delete_permission(request)
    assert Rule not in lifecycle.Archivable.__args__
    assert RuleVersion not in admin.site._registry


def test_erasure_after_a_tick_leaves_no_row_of_either_person(timeline):
    _, enrolled, skipped = _ticked(timeline)
    ids = [enrolled.pk, skipped.pk]
    assert DecisionLog.objects.filter(person_id__in=ids).count() == 2
    person_erase(enrolled)
    person_erase(skipped)
    assert not DecisionLog.objects.filter(person_id__in=ids).exists()
    assert not Message.objects.filter(person_id__in=ids).exists()
    assert not Enrollment.objects.filter(person_id__in=ids).exists()
    assert set(_orphans().values()) == {0}


def test_a_merge_after_a_tick_moves_every_row_and_leaves_no_orphan(timeline):
    _, enrolled, skipped = _ticked(timeline)
    with transaction.atomic():  # as ingestion merges: people locked, then moved and deleted
        _merge_people(enrolled.pk, [skipped.pk])
    assert not Person.objects.filter(pk=skipped.pk).exists()
    assert DecisionLog.objects.filter(person=enrolled).count() == 2
    assert not DecisionLog.objects.filter(person_id=skipped.pk).exists()
    assert set(_orphans().values()) == {0}


def test_deleting_a_person_with_only_a_skipped_decision_any_other_way_fails(timeline):
    _, _, skipped = _ticked(timeline)
    with pytest.raises(ProtectedError):
        Person.objects.filter(pk=skipped.pk).delete()
    assert DecisionLog.objects.filter(person=skipped).count() == 1
