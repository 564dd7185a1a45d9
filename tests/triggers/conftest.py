"""Fixtures for trigger tests: a flow, templates, rules, and events sent at pinned times."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from onboarding.models import OnboardingFlow, Step
from triggers.engine.evaluate import evaluate_rules
from triggers.services.rules import rule_save, rule_set_status
from triggers.services.templates import template_save

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def flow(db) -> OnboardingFlow:
    flow = OnboardingFlow.objects.create(
        slug="activation", name="Activation", window_seconds=7 * 86400
    )
    for position, (name, event) in enumerate(
        [
            ("Signed up", "Signed Up"),
            ("Verified", "Email Verified"),
            ("Profile", "Profile Completed"),
        ],
        start=1,
    ):
        Step.objects.create(flow=flow, position=position, name=name, event_name=event)
    return flow


@pytest.fixture
def templates(db) -> None:
    template_save(
        slug="nudge",
        channel="in_app",
        subject="",
        body="Need a hand, {{ first_name | default: 'there' }}?",
    )
    template_save(
        slug="reminder",
        channel="email",
        subject="Finish setting up",
        body="Hi {{ first_name | default: 'there' }}",
    )


class Timeline:
    """Sends events through the API at pinned server times, and runs evaluation passes."""

    def __init__(self, api) -> None:
        self.api = api
        self.counter = 0

    def send(
        self, at: datetime, user: str, event: str, happened_at: datetime | None = None, **properties
    ) -> None:
        """Send an event received at ``at``, which happened then too unless ``happened_at``."""
        self.counter += 1
        payload = {
            "type": "track",
            "userId": user,
            "event": event,
            "properties": properties,
            "timestamp": (happened_at or at).isoformat(),
            "messageId": f"m{self.counter}",
        }
        with time_machine.travel(at, tick=False):
            response = self.api.post(
                "/v1/track", json.dumps(payload), content_type="application/json"
            )
        assert response.status_code == 200, response.content

    def tick(self, at: datetime, **kwargs):
        return evaluate_rules(now=at, **kwargs)


@pytest.fixture
def timeline(api) -> Timeline:
    return Timeline(api)


def make_rule(
    slug: str,
    definition: dict,
    *,
    active_from: datetime = T0 - timedelta(minutes=1),
    priority: int = 0,
):
    rule, _ = rule_save(
        slug=slug, name=slug.replace("-", " ").title(), definition=definition, priority=priority
    )
    with time_machine.travel(active_from, tick=False):
        rule_set_status(rule=rule, status="active")
    return rule
