"""Dashboard fixtures: a pinned clock and events sent through the real tracking API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.test import Client

# The rule, template, sandbox and experiment pages' tests build on the engine's fixtures.
from tests.triggers.conftest import flow, templates, timeline  # noqa: F401

NOW = datetime(2025, 3, 14, 12, 30, tzinfo=UTC)


@pytest.fixture
def clock() -> Iterator[time_machine.Coordinates]:
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


def event(user: str, name: str, hours_ago: float, **properties: object) -> dict:
    return {
        "type": "track",
        "userId": user,
        "event": name,
        "timestamp": (NOW - timedelta(hours=hours_ago)).isoformat(),
        "properties": properties,
    }


def send(api: Client, *messages: dict) -> None:
    """Post a batch through the tracking API, the way client apps do."""
    batch = [
        {"messageId": f"m-{index}-{m.get('event', m['type'])}", **m}
        for index, m in enumerate(messages)
    ]
    response = api.post("/v1/batch", json.dumps({"batch": batch}), content_type="application/json")
    assert response.status_code == 200, response.content


@pytest.fixture
def journeys(api: Client, clock) -> None:
    """Three people over the last two days, one of them still anonymous, plus one rejected event."""
    send(
        api,
        event("u1", "Signed Up", 30),
        event("u1", "Created Project", 29, plan="pro"),
        event("u2", "Signed Up", 3),
        event("u2", "Invited Teammate", 2),
        {
            "type": "identify",
            "userId": "u2",
            "traits": {"email": "u2@example.com"},
            "timestamp": (NOW - timedelta(hours=2)).isoformat(),
        },
        {
            "type": "page",
            "anonymousId": "anon-1",
            "name": "Pricing",
            "timestamp": (NOW - timedelta(minutes=20)).isoformat(),
        },
        {"type": "track", "userId": "u3"},  # no event name: rejected, kept as a failed event
    )
