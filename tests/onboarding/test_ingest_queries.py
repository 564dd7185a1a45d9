"""A batch costs a fixed number of statements, however many events and people it holds."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from onboarding.models import FlowProgress, OnboardingFlow, Person, Step

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def flow(db) -> OnboardingFlow:
    flow = OnboardingFlow.objects.create(slug="activation", name="Activation")
    Step.objects.create(flow=flow, position=1, name="Signed up", event_name="Signed Up")
    Step.objects.create(flow=flow, position=2, name="Verified", event_name="Email Verified")
    return flow


def _journeys(users: range, tag: str) -> list[dict]:
    events = []
    for n in users:
        ids = {"userId": f"u{n}", "anonymousId": f"a{n}", "timestamp": T0.isoformat()}
        context = {"timezone": "Europe/Berlin"}
        events += [
            {"type": "page", "name": "Home", "messageId": f"{tag}-p{n}", "context": context, **ids},
            {
                "type": "identify",
                "traits": {"email": f"u{n}@example.com", "plan": tag},
                "messageId": f"{tag}-i{n}",
                **ids,
            },
            {"type": "track", "event": "Signed Up", "messageId": f"{tag}-s{n}", **ids},
        ]
    return events


def _statements(tracking, events: list[dict]) -> list[str]:
    with CaptureQueriesContext(connection) as captured:
        response = tracking.post("/v1/batch", {"batch": events})
    assert response.json() == {"success": True}, response.content
    # Savepoints stand for the request's transaction inside the test's.
    skip = ("SAVEPOINT", "RELEASE SAVEPOINT")
    return [q["sql"][:90] for q in captured.captured_queries if not q["sql"].startswith(skip)]


def test_statements_per_batch_do_not_grow_with_the_batch(tracking):
    _statements(tracking, [])  # warm up (the connection's first statements)
    small_new = _statements(tracking, _journeys(range(0, 3), "a"))
    large_new = _statements(tracking, _journeys(range(3, 40), "a"))
    small_known = _statements(tracking, _journeys(range(0, 3), "b"))
    large_known = _statements(tracking, _journeys(range(3, 40), "b"))

    assert len(small_new) == len(large_new)
    assert len(small_known) == len(large_known)
    assert Person.objects.count() == 40
    assert {p.traits["plan"] for p in Person.objects.all()} == {"b"}
    assert FlowProgress.objects.count() == 40
    if connection.vendor == "postgresql":
        # New people: write-key lookup (every request, no cache: a rotation holds from the next
        # request), erased-id check, flow definitions, advisory locks, identity read, one insert
        # of the people with their identities, event insert (which also locks the batch's
        # existing people and its source, once), one write of flow progress (their step events
        # are the batch's, not read back). Known people: no people
        # or identity insert, but the read of their step events, their locked trait read and the
        # one people update; the delete of their re-entry rows is part of the progress write.
        assert len(large_new) == 8, "\n".join(large_new)
        assert len(large_known) == 10, "\n".join(large_known)
