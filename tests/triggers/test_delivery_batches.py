"""Delivery claims, checks and records due messages a batch at a time (ONRAMP_DELIVERY_CLAIM)."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from triggers import workspace
from triggers.channels.email import EmailChannel
from triggers.delivery import pipeline
from triggers.delivery.pipeline import deliver_due
from triggers.models import DecisionLog, Message, ReviewItem

from .conftest import T0, make_rule
from .test_delivery import identify

pytestmark = pytest.mark.usefixtures("flow", "templates")
M = timedelta(minutes=1)


def received_keys(smtp) -> Counter:
    return Counter(message["X-Onramp-Message"].strip() for message in smtp.messages)


def rule(slug, channel="in_app", template="nudge", priority=0, **extra):
    return make_rule(
        slug,
        {
            "trigger": {"kind": "event", "event": "Trial Ending"},
            "follow_ups": [{"channel": channel, "template": template, "delay": "0s"}],
            **extra,
        },
        priority=priority,
    )


def test_two_messages_for_one_person_in_one_batch_respect_a_global_cap_of_one(
    api, timeline, settings
):
    settings.ONRAMP_GLOBAL_CAP_MAX = 1
    rule("first", priority=2)
    rule("second", priority=1)
    timeline.send(T0, "u1", "Trial Ending")
    timeline.tick(T0 + M)
    assert Message.objects.filter(status="scheduled").count() == 2

    report = deliver_due(now=T0 + M)  # both fit in one claim (25)

    assert report.outcomes == {"sent": 1, "suppressed": 1}
    statuses = dict(Message.objects.values_list("rule__slug", "status"))
    assert statuses == {"first": "sent", "second": "suppressed"}  # priority decides who goes
    assert Message.objects.get(rule__slug="second").reason == "cap:global"


def test_two_messages_of_one_rule_in_one_batch_respect_its_own_cap(api, timeline):
    make_rule(
        "twice",
        {
            "trigger": {"kind": "event", "event": "Trial Ending"},
            "follow_ups": [
                {"channel": "in_app", "template": "nudge", "delay": "0s"},
                {"channel": "in_app", "template": "nudge", "delay": "0s"},
            ],
            "cap": {"max": 1, "per": "1d"},
        },
    )
    timeline.send(T0, "u1", "Trial Ending")
    timeline.tick(T0 + M)
    assert Message.objects.filter(status="scheduled").count() == 2

    deliver_due(now=T0 + M)

    assert sorted(Message.objects.values_list("status", "reason")) == [
        ("sent", ""),
        ("suppressed", "cap:rule"),
    ]


def test_a_batch_mixes_channels_and_people(api, timeline, smtp):
    for n in range(4):
        identify(api, f"u{n}", email=f"u{n}@example.com")
    rule("mail", channel="email", template="reminder", priority=1)
    rule("widget", priority=0)
    for n in range(4):
        timeline.send(T0, f"u{n}", "Trial Ending")
    timeline.tick(T0 + M)

    report = deliver_due(now=T0 + M)

    assert report.outcomes == {"sent": 8}
    assert set(Message.objects.values_list("status", flat=True)) == {"sent"}
    assert received_keys(smtp) == Counter(
        Message.objects.filter(channel="email").values_list("idempotency_key", flat=True)
    )
    assert DecisionLog.objects.filter(outcome="sent").count() == 8
    in_app = Message.objects.filter(channel="in_app")
    assert {m.provider_id for m in in_app} == {f"in_app:{m.pk}" for m in in_app}


def _queries_to_deliver(api, timeline, people: int, start: int, at) -> int:
    for n in range(start, start + people):
        identify(api, f"p{n}", email=f"p{n}@example.com", at=at - M)
        timeline.send(at, f"p{n}", "Trial Ending")
    timeline.tick(at + M)
    workspace.clear_cache()  # both measurements read the Settings page's policy once
    with CaptureQueriesContext(connection) as queries:
        assert deliver_due(now=at + M).sent == people
    return len(queries)


def test_the_database_work_of_a_batch_does_not_grow_with_its_size(api, timeline, smtp):
    rule("mail", channel="email", template="reminder", reentry={"once_per": "1m"})
    few = _queries_to_deliver(api, timeline, 2, 0, T0)
    many = _queries_to_deliver(api, timeline, 20, 100, T0 + 10 * M)
    # Per message, the old pipeline made about ten queries; a batch makes the same few for 2 or 20.
    assert many == few, (few, many)


def _emails_due(api, timeline, people: int) -> None:
    """``people`` people with an address, each with one reminder email due at T0 + M."""
    for n in range(people):
        identify(api, f"u{n}", email=f"u{n}@example.com")
        timeline.send(T0, f"u{n}", "Trial Ending")
    rule("mail", channel="email", template="reminder")
    timeline.tick(T0 + M)


class WorkerKilled(BaseException):
    """Stands in for kill -9: nothing after it runs (no result is recorded)."""


def test_a_crash_mid_batch_leaves_at_most_a_batch_unknown_and_sends_nothing_twice(
    api, timeline, smtp, settings, monkeypatch
):
    settings.ONRAMP_DELIVERY_CLAIM = 5
    settings.ONRAMP_DELIVERY_LEASE_SECONDS = 60
    _emails_due(api, timeline, 12)
    assert Message.objects.filter(status="scheduled").count() == 12

    send = EmailChannel.send
    calls = []

    def dies_after_three(self, message, person):
        calls.append(message.pk)
        if len(calls) == 4:
            raise WorkerKilled  # three emails are out, the fourth never leaves
        return send(self, message, person)

    monkeypatch.setattr(EmailChannel, "send", dies_after_three)
    monkeypatch.setattr(pipeline, "_record_sent", lambda sent, report: None)  # kill -9: no finally
    with pytest.raises(WorkerKilled):
        deliver_due(now=T0 + M)
    assert Message.objects.filter(status="sending").count() == 5  # the whole first batch
    monkeypatch.undo()

    # Another worker's passes: nothing is taken while the lease runs, then the sweeper decides.
    assert deliver_due(now=T0 + M + timedelta(seconds=30)).outcomes == {"sent": 7}
    report = deliver_due(now=T0 + M + timedelta(seconds=61))

    assert report.outcomes == {"unknown": 5}
    statuses = Counter(Message.objects.values_list("status", flat=True))
    assert statuses == {"sent": 7, "unknown": 5}
    assert ReviewItem.objects.filter(reason="unknown_outcome").count() == 5
    keys = received_keys(smtp)
    assert max(keys.values()) == 1  # nothing sent twice
    assert len(keys) == 7 + 3  # the three that left before the crash are among the unknown
    unknown = set(
        Message.objects.filter(status="unknown").values_list("idempotency_key", flat=True)
    )
    assert set(keys) - unknown == set(
        Message.objects.filter(status="sent").values_list("idempotency_key", flat=True)
    )


def test_a_slow_batch_renews_its_leases_instead_of_losing_them(
    api, timeline, smtp, settings, monkeypatch
):
    """Leases are written for the whole batch at its claim; a provider slow enough to use half of
    one makes the pass renew the rest, so another worker's sweeper never takes them."""
    import time_machine
    from django.utils import timezone

    settings.ONRAMP_DELIVERY_LEASE_SECONDS = 60
    _emails_due(api, timeline, 4)
    send = EmailChannel.send
    swept = []

    with time_machine.travel(T0 + 2 * M, tick=False) as clock:

        def slow(self, message, person):
            report = pipeline.DeliveryReport()
            pipeline.sweep_expired_leases(timezone.now(), report)  # another worker's pass
            swept.extend(report.outcomes)
            result = send(self, message, person)
            clock.shift(timedelta(seconds=40))
            return result

        monkeypatch.setattr(EmailChannel, "send", slow)
        report = deliver_due()

    assert swept == []
    assert report.sent == 4
    assert set(Message.objects.values_list("status", flat=True)) == {"sent"}
    assert max(received_keys(smtp).values()) == 1
