"""The gauges ``/metrics`` computes at scrape time (dashboard.operations), against the database:
the due backlog and its age, the review queue and the worker's heartbeat, at a pinned clock."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest
import time_machine
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from dashboard.operations import backlog
from tests.triggers.conftest import T0, Timeline, make_rule
from triggers.models import Heartbeat, Message, ReviewItem
from triggers.services.rules import rule_set_status

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("flow", "templates")]
M = timedelta(minutes=1)


def gauges() -> dict[str, float]:
    response = Client(REMOTE_ADDR="127.0.0.1").get("/metrics")
    assert response.status_code == 200
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
        if not sample.labels
    }


def seed_messages(timeline: Timeline, due: list) -> None:
    """One email follow-up per entry of ``due``, due then."""
    for n in range(len(due)):
        timeline.send(T0 - 20 * M, f"u{n}", "Trial Ending")
    timeline.tick(T0 - 15 * M)
    messages = list(Message.objects.order_by("pk"))
    assert len(messages) == len(due)
    for message, at in zip(messages, due, strict=True):
        Message.objects.filter(pk=message.pk).update(due_at=at)


def test_backlog_gauges_follow_the_ledger(timeline: Timeline) -> None:
    rule = make_rule(
        "trial",
        {
            "trigger": {"kind": "event", "event": "Trial Ending"},
            "follow_ups": [{"channel": "email", "template": "reminder", "delay": "0s"}],
        },
        active_from=T0 - 30 * M,
    )
    with time_machine.travel(T0, tick=False):
        assert gauges()["onramp_delivery_due"] == 0
        assert gauges()["onramp_delivery_oldest_due_seconds"] == 0
        assert math.isinf(gauges()["onramp_worker_heartbeat_age_seconds"])

    seed_messages(timeline, due=[T0 - 10 * M, T0 - 2 * M, T0 + 5 * M])
    Heartbeat.objects.create(name="worker", beat_at=T0 - timedelta(seconds=45))
    with time_machine.travel(T0, tick=False):
        now = gauges()
        assert now["onramp_delivery_due"] == 2  # the third is not due yet
        assert now["onramp_delivery_oldest_due_seconds"] == 600
        assert now["onramp_worker_heartbeat_age_seconds"] == 45
        assert now["onramp_review_queue"] == 0
        assert now["onramp_database_up"] == 1

    # Waiting for a retry is not due; a paused rule's messages wait; review items count.
    oldest = Message.objects.order_by("due_at").first()
    Message.objects.filter(pk=oldest.pk).update(next_attempt_at=T0 + M)
    assert backlog(now=T0).due == 1
    assert backlog(now=T0).oldest_due_seconds == 120
    unknown = Message.objects.order_by("due_at")[1]
    Message.objects.filter(pk=unknown.pk).update(status="unknown")
    ReviewItem.objects.create(message=unknown, reason="unknown_outcome")
    assert (backlog(now=T0).due, backlog(now=T0).review_queue) == (0, 1)
    Message.objects.filter(pk=oldest.pk).update(next_attempt_at=None)
    rule_set_status(rule=rule, status="paused")
    assert backlog(now=T0).due == 0
