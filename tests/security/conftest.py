"""Fixtures for the security tests: a person with rows in every table that keeps per-person data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.contenttypes.models import ContentType
from django.test import Client
from django.utils import timezone

from onboarding.models import OnboardingFlow, Person, Segment, Step
from tests.conftest import TrackingApi
from triggers.models import (
    Assignment,
    BacktestRun,
    DecisionLog,
    Enrollment,
    Experiment,
    Message,
    MessageTemplate,
    ReviewItem,
    Variant,
)
from triggers.services.experiments import experiment_save
from triggers.services.rules import rule_save
from triggers.services.templates import template_save

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
RULE = {
    "trigger": {"kind": "inactive_in_flow", "flow": "activation", "minutes": 5},
    "follow_ups": [{"channel": "email", "template": "reminder", "delay": "0s"}],
}


def track(tracking: TrackingApi, user_id: str, event: str, n: int, **extra) -> object:
    payload = {"type": "track", "userId": user_id, "event": event, "messageId": f"{user_id}-{n}"}
    return tracking.post("/v1/track", {**payload, **extra})


@pytest.fixture
def flow(db) -> OnboardingFlow:
    flow = OnboardingFlow.objects.create(slug="activation", name="Activation", window_seconds=86400)
    Step.objects.create(flow=flow, position=1, name="Signed up", event_name="Signed Up")
    Step.objects.create(flow=flow, position=2, name="Verified", event_name="Email Verified")
    return flow


@pytest.fixture
def rich_person(tracking: TrackingApi, flow: OnboardingFlow) -> Person:
    """Dana: identified after browsing anonymously, in a flow, enrolled, messaged, reviewed."""
    anon = {"type": "page", "anonymousId": "anon-dana", "name": "Pricing", "messageId": "dana-0"}
    assert tracking.post("/v1/page", anon).status_code == 200
    identify = {
        "type": "identify",
        "userId": "dana",
        "anonymousId": "anon-dana",
        "traits": {"email": "dana@example.com", "first_name": "Dana"},
        "messageId": "dana-1",
    }
    assert tracking.post("/v1/identify", identify).status_code == 200
    assert track(tracking, "dana", "Signed Up", 2).status_code == 200
    person = Person.objects.get(external_id="dana")

    template_save(slug="reminder", channel="email", subject="Hi", body="Hi {{ first_name }}")
    rule, _ = rule_save(slug="idle", name="Idle", definition=RULE)
    version = rule.current_version
    enrollment = Enrollment.objects.create(
        rule=rule, rule_version=version, person=person, occurrence_key="o1", enrolled_at=T0
    )
    message = Message.objects.create(
        idempotency_key="dana-idle-0",
        enrollment=enrollment,
        rule=rule,
        rule_version=version,
        person=person,
        step=0,
        channel="email",
        template=MessageTemplate.objects.get(slug="reminder"),
        due_at=T0,
        subject="Hi",
        body="Hi Dana",
    )
    ReviewItem.objects.create(message=message, reason="provider_rejected", detail="bounced")
    DecisionLog.objects.create(
        at=T0, person=person, rule=rule, enrollment=enrollment, message=message, outcome="sent"
    )
    experiment = Experiment.objects.create(slug="idle-ab", rule=rule, seed="s", metric={})
    variant = Variant.objects.create(experiment=experiment, name="a", position=0, weight=1)
    Assignment.objects.create(
        experiment=experiment, person=person, variant=variant, phase=1, assigned_at=T0
    )
    return person


@pytest.fixture
def admin_client(bob) -> Client:
    client = Client()
    client.force_login(bob)
    return client


@pytest.fixture
def probe(db, alice, rich_person) -> dict[str, str]:
    """One object behind every kind of path parameter; values by parameter name."""
    flow = OnboardingFlow.objects.create(slug="probe", name="Probe", window_seconds=86400)
    Step.objects.create(flow=flow, position=1, name="Start", event_name="Signed Up")
    Step.objects.create(flow=flow, position=2, name="Done", event_name="Done")
    Segment.objects.create(
        slug="probe", name="Probe", definition={"match": "all", "conditions": []}
    )
    template_save(slug="probe", channel="email", subject="Hi", body="Hi {{ x | default: 'y' }}")
    definition = {
        "trigger": {"kind": "inactive_in_flow", "flow": "probe", "minutes": 5},
        "follow_ups": [{"channel": "email", "template": "probe", "delay": "0s"}],
    }
    rule, _ = rule_save(slug="probe", name="Probe", definition=definition)
    experiment_save(
        slug="probe",
        rule_slug="probe",
        variants=[{"name": "a", "weight": 50}, {"name": "b", "weight": 50, "holdout": True}],
        metric={"flow": "probe", "completed_within": "1d"},
    )
    now = timezone.now()
    person = Person.objects.create(external_id="probe", first_seen=now, last_seen=now)
    run = BacktestRun.objects.create(
        rule=rule, definition=definition, since=now - timedelta(days=1), until=now
    )
    return {
        "slug": "probe",
        "rule_slug": "probe",
        "pk": str(person.pk),
        "run_id": str(run.pk),
        "message_id": str(Message.objects.get(person=rich_person).pk),
        "item_id": str(ReviewItem.objects.get().pk),
        "outcome": "seen",
        "token": "not-a-valid-token",
        "app_label": "onboarding",
        "content_type_id": str(ContentType.objects.get_for_model(Person).pk),
        "url": "no-such-page/",
        "id": str(alice.pk),  # the admin's password change page of a user
        "write_key": "not-a-write-key",  # analytics.js's settings document: an unknown key
    }
