"""A provider outage (research P11): the SMTP server first answers 451 to every message, then
goes away (connection refused), then recovers. Every message is retried with backoff kept in the
database, then sent exactly once; nothing stays in "sending" past its lease."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from triggers.engine.evaluate import evaluate_rules
from triggers.models import DecisionLog, Message

from .harness import (
    LEASE_SECONDS,
    check_delivery,
    fast_schedules,
    open_messages,
    seed_people,
    seed_rule,
)

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PEOPLE = 80


def _overdue_leases() -> int:
    slack = timezone.now() - timedelta(seconds=2)  # the sweeper runs once per pass (each second)
    return Message.objects.filter(status="sending", lease_until__lt=slack).count()


def test_an_outage_is_retried_with_backoff_then_sent_once(api, smtp, cluster):
    seed_rule(channels=("email",))
    seed_people(api, PEOPLE)
    evaluate_rules(now=timezone.now())
    fast_schedules(evaluate=False)
    # 451 for the first half; then the server goes off the port (connection refused).
    smtp.refuse(at="DATA", reply="451 4.3.0 Try again later", stop_after=PEOPLE // 2)

    worker, beat = cluster.worker(), cluster.beat()
    live = [worker, beat]
    outage = time.monotonic()
    overdue = 0

    def every_message_failed_once() -> bool:
        nonlocal overdue
        overdue = max(overdue, _overdue_leases())
        # A failure recorded for every message (a claimed batch has attempts = 1 before it is
        # tried, so the attempts counter alone would say "failed" too early).
        failed = DecisionLog.objects.filter(outcome="retry").values("message_id").distinct()
        return failed.count() == PEOPLE

    cluster.wait_for(every_message_failed_once, "a failed attempt of every message", 90, live)
    assert smtp.logged_keys() == {}
    smtp.accept()
    smtp.start()
    recovered = time.monotonic()

    def all_sent() -> bool:
        nonlocal overdue
        overdue = max(overdue, _overdue_leases())
        return open_messages() == 0

    cluster.wait_for(all_sent, "delivery after the outage", 120, live)
    outcome = check_delivery(smtp)
    assert outcome.statuses == {"sent": PEOPLE} and outcome.unknown == 0, outcome.summary()
    assert overdue == 0

    retries = DecisionLog.objects.filter(outcome="retry").order_by("at")
    errors = [entry.detail["error"] for entry in retries]
    assert any("451" in error for error in errors), errors[:3]
    assert any("unavailable" in error for error in errors), errors[:3]
    first_retry = {}
    for entry in retries:
        first_retry.setdefault(entry.message_id, entry.at)
    waits = []
    for message in Message.objects.all():
        failures = sum(1 for entry in retries if entry.message_id == message.pk)
        assert failures >= 1 and message.attempts == failures + 1
        sent = DecisionLog.objects.get(message=message, outcome="sent")
        waits.append((sent.at - first_retry[message.pk]).total_seconds())
    # The first backoff is 30 s ± 20 %, kept in next_attempt_at, not in a Celery countdown.
    assert min(waits) >= 24, waits
    print(
        f"\nprovider outage: {smtp.refusals} refused with 451, then connection refused; "
        f"outage {recovered - outage:.1f}s, all sent {time.monotonic() - recovered:.1f}s after "
        f"recovery; wait between attempts {min(waits):.1f}-{max(waits):.1f}s; "
        f"{overdue} leases overdue (lease {LEASE_SECONDS}s); {outcome.summary()}"
    )
