"""GDPR coverage: every table that can hold a person's data is exported and erased, or excluded
on purpose, and an erasure leaves no trace of the person in any table.

``holds_person_data`` walks every model's fields (``django.apps.apps.get_models()``): a model holds
person data when it points at ``Person`` (directly or through another such model), or when it has
a field that stores identifiers or free-form content (JSON, long text, or a name like ``email``).
Each such model must be in ``COVERED`` (with the export section that lists its rows), in
``EXCLUDED`` (with the reason) or in ``DERIVED`` (a copy the database keeps of a covered table's
data, with the test that proves an erasure removes it). A new model fails ``test_every_model_with_person_data_is_reviewed``
until someone decides which, and covered tables are then checked for real: the export has rows from
each, and after the erasure no row of any table mentions the person.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.apps import apps
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.db import models

from onboarding.models import EventDedupe, FailedEvent, Person
from onboarding.services.gdpr import person_erase, person_export
from triggers.models import BacktestRun, Enrollment, MessageTemplate, ReviewItem
from triggers.services.audit import audit

from .conftest import T0, track

# Field names that store a person's identifiers or what they sent, whatever the field type.
IDENTIFIER_NAMES = {
    "user_id",
    "anonymous_id",
    "message_id",
    "external_id",
    "email",
    "phone",
    "payload",
    "traits",
    "properties",
    "context",
}

# Tables erased and exported for a person, with the export section that lists their rows.
COVERED = {
    "onboarding.Person": "profile",
    "onboarding.Identity": "identities",
    "onboarding.Event": "events",
    "onboarding.EventDedupe": "dedupe_keys",
    "onboarding.FailedEvent": "failed_events",
    "onboarding.FlowProgress": "flow_progress",
    "onboarding.FlowReentry": "flow_reentries",
    "triggers.Enrollment": "enrollments",
    "triggers.Message": "messages",
    "triggers.ReviewItem": "review_items",
    "triggers.Assignment": "experiment_assignments",
    "triggers.DecisionLog": "decisions",
    "triggers.BacktestRun": "backtest_entries",  # the entries of saved reports that name them
    "triggers.AuditLog": "audit_entries",  # entries about their review items and test sends
    "admin.LogEntry": "admin_history",  # the admin's history of their person page
}

# Tables that hold identifiers or free-form content, but not about the people who use the apps.
EXCLUDED = {
    "auth.User": "dashboard and admin staff, not people tracked by the API",
    "sessions.Session": "staff login sessions; the API never sets cookies",
    "django_celery_beat.PeriodicTask": "beat schedule: task names and constant arguments",
    "onboarding.Erasure": "the audit record of an erasure: who erased, the old pk, row counts",
    "onboarding.ErasedIdentity": "keyed hashes of erased ids, kept to refuse re-sent events",
    "onboarding.Step": "flow definitions written by marketers",
    "onboarding.Segment": "segment definitions written by marketers",
    "triggers.RuleVersion": "rule definitions written by marketers",
    "triggers.MessageTemplate": "templates written by marketers (variables, not values)",
    "triggers.Experiment": "experiment settings (metric definition)",
    "triggers.Variant": "experiment arms (follow-up definitions)",
    "dashboard.RuleDailyKpi": "daily counts per rule: aggregates that name nobody",
}

# Copies of a covered table's data that the database keeps itself, with the test that proves an
# erasure removes them: exported as the table they copy.
DERIVED = {
    # The segments' trait index: the person's string and boolean traits (exported in "profile"),
    # kept by triggers on onboarding_person, so deleting the person deletes them.
    "onboarding.PersonTrait": "tests/onboarding/test_segment_trait_index.py::"
    "test_the_index_follows_ingestion_merges_and_erasure",
}


def _links_to_person(model: type[models.Model], seen: set[type[models.Model]]) -> bool:
    if model is Person:
        return True
    seen = seen | {model}
    return any(
        field.is_relation
        and field.related_model is not None
        and (field.many_to_one or field.one_to_one)
        and field.related_model not in seen
        and _links_to_person(field.related_model, seen)
        for field in model._meta.concrete_fields
    )


def holds_person_data(model: type[models.Model]) -> bool:
    if _links_to_person(model, set()):
        return True
    return any(
        field.name in IDENTIFIER_NAMES or isinstance(field, models.JSONField | models.TextField)
        for field in model._meta.concrete_fields
    )


def test_every_model_with_person_data_is_reviewed():
    labels = {model._meta.label for model in apps.get_models()}
    flagged = {model._meta.label for model in apps.get_models() if holds_person_data(model)}
    unreviewed = sorted(flagged - set(COVERED) - set(EXCLUDED) - set(DERIVED))
    assert not unreviewed, (
        f"{unreviewed} may hold a person's data: erase and export it in onboarding/services/gdpr.py"
        " (or a person_erasing/person_exporting receiver) and add it to COVERED, or add it to"
        " EXCLUDED with the reason"
    )
    assert not set(COVERED) & set(EXCLUDED)
    assert set(COVERED) | set(EXCLUDED) | set(DERIVED) <= labels, "a listed model no longer exists"
    assert set(COVERED) <= flagged, "the introspection misses a covered table"


@pytest.fixture
def person_everywhere(rich_person, tracking, bob, alice):
    """Dana with rows in every covered table, and Erin, whose rows must survive Dana's erasure."""
    # An earlier sign-up of Dana's, arriving late: her first one becomes a re-entry (FlowReentry).
    earlier = {"timestamp": "2026-01-05T09:00:00Z"}
    assert track(tracking, "dana", "Signed Up", 3, **earlier).status_code == 200
    # Rejected events naming Dana: by userId (no event name), by anonymousId in a batch, by email.
    assert tracking.post("/v1/track", {"type": "track", "userId": "dana"}).status_code == 400
    batch = {
        "batch": [
            {"type": "page", "anonymousId": "anon-dana", "name": "Docs", "messageId": "dana-7"},
            {"type": "track", "anonymousId": "anon-dana", "event": 42},
        ]
    }
    assert tracking.post("/v1/batch", batch).status_code == 200
    by_email = {"type": "identify", "traits": {"email": "DANA@example.com", "name": "Dana"}}
    assert tracking.post("/v1/identify", by_email).status_code == 400
    # Erin: stored and rejected events of her own.
    assert track(tracking, "erin", "Signed Up", 1).status_code == 200
    assert tracking.post("/v1/track", {"type": "track", "userId": "erin"}).status_code == 400

    item = ReviewItem.objects.get(message__person=rich_person)
    audit(actor=bob, action="review:dismissed", obj=item, changes={"note": "Dana phoned"})
    template = MessageTemplate.objects.get(slug="reminder")
    changes = {"to": "alice@corp.example", "person": rich_person.pk}
    audit(actor=alice, action="template.test_send", obj=template, changes=changes)
    LogEntry.objects.create(
        user=bob,
        content_type=ContentType.objects.get_for_model(Person),
        object_id=str(rich_person.pk),
        object_repr=str(rich_person),
        action_flag=CHANGE,
        change_message="Changed email of dana@example.com",
    )
    enrollment = Enrollment.objects.get(person=rich_person)
    BacktestRun.objects.create(
        rule=enrollment.rule,
        definition={},
        since=T0 - timedelta(days=30),
        until=T0,
        status="done",
        result={"entries": [{"person_id": rich_person.pk, "external_id": "dana"}]},
    )
    return rich_person


@pytest.mark.postgres  # the dedupe table is filled on PostgreSQL only
def test_the_export_has_rows_from_every_covered_table(person_everywhere):
    export = person_export(person_everywhere)
    empty = [f"{label} ({section})" for label, section in COVERED.items() if not export[section]]
    assert not empty, f"nothing exported from {empty}"
    payloads = [json.loads(failed["payload"]) for failed in export["failed_events"]]
    assert len(payloads) == 3
    assert {"type": "track", "userId": "dana"} in payloads
    assert {row["message_id"] for row in export["dedupe_keys"]} == {
        "dana-0",
        "dana-1",
        "dana-2",
        "dana-3",
        "dana-7",
    }
    assert "erin" not in json.dumps(export, default=str)


@pytest.mark.postgres
def test_the_erasure_leaves_no_trace_in_any_table(person_everywhere, bob):
    erin_failed = FailedEvent.objects.filter(payload__contains='"erin"').count()
    erin_dedupe = EventDedupe.objects.filter(message_id="erin-1").count()
    assert erin_failed == erin_dedupe == 1

    erasure = person_erase(person_everywhere, actor=bob)

    traces = []
    for model in apps.get_models():
        if not model._meta.managed:  # no table (dashboard's permission holder)
            continue
        for row in model._default_manager.values():
            text = json.dumps(row, default=str).casefold()
            if "dana" in text:
                traces.append(f"{model._meta.label}: {text[:200]}")
    assert not traces, "\n".join(traces)
    assert erasure.deleted["onboarding.FailedEvent"] == 3
    assert erasure.deleted["onboarding.EventDedupe"] == 5
    assert erasure.deleted["onboarding.FlowReentry"] == 1
    # Erin's rows are untouched.
    assert FailedEvent.objects.filter(payload__contains='"erin"').count() == erin_failed
    assert EventDedupe.objects.filter(message_id="erin-1").count() == erin_dedupe


@pytest.mark.parametrize(
    ("payload", "names"),
    [
        ('{"userId": 7, "event": 1}', True),  # ids sent as numbers are stored as their text
        ('{"userId": 7.0}', True),
        ('{"userId": "77"}', False),
        ('{"properties": {"userId": "x", "plan": "7"}}', False),  # 7 outside an id key
        ('{"traits": {"contact": " Dana@Example.com "}}', True),  # an email, anywhere
        ('{"type": "alias", "previousId": "7"}', True),
        ('not json, "userId": "7", cut', True),  # raw text: a quoted id
        ('not json, "userId": "17", cut', False),
        ("[" * 5000 + '{"userId": "7"}' + "]" * 5000, True),  # too deep to walk: as text
    ],
)
def test_a_rejected_payload_names_the_person_only_by_their_ids_or_email(payload, names):
    from onboarding.services.gdpr import _payload_names_person

    assert _payload_names_person(payload, {"7"}, {"dana@example.com"}) is names
