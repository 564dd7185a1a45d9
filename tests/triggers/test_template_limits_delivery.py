"""The worker's side of the template limits (issue 13 item 1): a render over a limit follows the
missing-variable path — the rule's fallback channel, else a review item — with reason ``limits``,
in the message, the decision log and the review item. Run under a lowered ``RLIMIT_AS``: without
the limits, ``(1..count) | join`` with ``count`` = 10⁸ took the delivering process to 7.8 GB."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
import time_machine

from tests.limits import memory_ceiling
from triggers.delivery.pipeline import deliver_due
from triggers.models import DecisionLog, Message, ReviewItem
from triggers.services.templates import template_save

from .conftest import T0, make_rule

pytestmark = pytest.mark.usefixtures("flow", "templates")
M = timedelta(minutes=1)
RANGE_REFUSAL = "body: a range has at most 10 000 items; this one has 100 000 000"


@pytest.fixture
def counted(api, timeline):
    """u1 has the trait count = 10⁸, and an in-app rule whose template makes a range of it."""
    payload = {
        "type": "identify",
        "userId": "u1",
        "traits": {"count": 100_000_000, "first_name": "Ada"},
        "messageId": "id-u1",
    }
    with time_machine.travel(T0 - M, tick=False):
        response = api.post("/v1/identify", json.dumps(payload), content_type="application/json")
    assert response.status_code == 200
    template_save(slug="counter", channel="in_app", subject="", body="{{ (1..count) | join: ',' }}")

    def rule(**extra):
        make_rule(
            "counting",
            {
                "trigger": {"kind": "event", "event": "Trial Ending"},
                "follow_ups": [{"channel": "in_app", "template": "counter", "delay": "0s"}],
                "reentry": {"once_per": "1m"},
                **extra,
            },
        )
        timeline.send(T0, "u1", "Trial Ending")
        timeline.tick(T0 + M)

    return rule


def deliver() -> float:
    started = time.perf_counter()
    with memory_ceiling():
        deliver_due(now=T0 + M)
    return time.perf_counter() - started


def test_over_the_limit_without_fallback_goes_to_review_with_reason_limits(counted):
    counted()
    assert deliver() < 5
    message = Message.objects.get()
    assert (message.status, message.reason) == ("needs_review", "limits")
    review = ReviewItem.objects.get()
    assert (review.reason, review.detail) == ("limits", RANGE_REFUSAL)
    decision = DecisionLog.objects.get(outcome="review")
    assert decision.reason == "limits"


def test_over_the_limit_falls_back_like_a_missing_variable(counted):
    counted(fallback={"channel": "email", "template": "reminder"})
    deliver()
    original, fallback = Message.objects.order_by("pk")
    assert (original.status, original.reason) == ("failed", "limits")
    assert fallback.channel == "email" and fallback.fallback_of_id == original.pk
    decision = DecisionLog.objects.get(outcome="fallback")
    assert decision.reason == "limits" and RANGE_REFUSAL in json.dumps(decision.detail)
