"""Delivery claims, checks and records due messages a batch at a time (ONRAMP_DELIVERY_CLAIM)."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from triggers import workspace
from triggers.channels.base import SendResult
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
    # Per message, the old pipeline made about ten queries. A batch's claim and result are the
    # same few queries for 2 or 20 messages; on top of them, each message costs its hand-over
    # (the mark before its provider call, with the previous one's acceptance): one statement on
    # PostgreSQL; two updates and two savepoint commands on SQLite (no round trips there).
    per_message = (many - few) / (20 - 2)
    assert per_message == (1 if connection.vendor == "postgresql" else 4), (few, many)


def _emails_due(api, timeline, people: int) -> None:
    """``people`` people with an address, each with one reminder email due at T0 + M."""
    for n in range(people):
        identify(api, f"u{n}", email=f"u{n}@example.com")
        timeline.send(T0, f"u{n}", "Trial Ending")
    rule("mail", channel="email", template="reminder")
    timeline.tick(T0 + M)


class WorkerKilled(BaseException):
    """Stands in for kill -9: nothing after it runs (no result is recorded)."""


def _message_ids(smtp) -> dict[int, str]:
    """Message pk → the Message-ID (without its brackets) of the email the server received."""
    keys = dict(Message.objects.values_list("idempotency_key", "pk"))
    return {
        keys[email["X-Onramp-Message"].strip()]: email["Message-ID"].strip().strip("<>")
        for email in smtp.messages
    }


def _after_the_crash(smtp, *, sent: int, unknown: int) -> None:
    """Another worker's passes: nothing is taken while the crashed batch's lease runs (60 s);
    then the sweeper decides, and the next claim sends what was never handed to SMTP."""
    deliver_due(now=T0 + M + timedelta(seconds=30))
    assert Message.objects.filter(status="sending").exists()  # the dead worker's lease runs
    deliver_due(now=T0 + M + timedelta(seconds=61))
    statuses = Counter(Message.objects.values_list("status", flat=True))
    assert statuses == {"sent": sent, "unknown": unknown} if unknown else {"sent": sent}, statuses
    reviews = ReviewItem.objects.values_list("message__status", "reason")
    assert list(reviews) == [("unknown", "unknown_outcome")] * unknown
    keys = received_keys(smtp)
    assert max(keys.values()) == 1  # nothing sent twice
    sent_keys = set(Message.objects.filter(status="sent").values_list("idempotency_key", flat=True))
    assert sent_keys <= set(keys)  # every "sent" email was received
    sent = Message.objects.filter(status="sent").values_list("pk", flat=True)
    logged = DecisionLog.objects.filter(outcome="sent").values_list("message_id", flat=True)
    assert sorted(logged) == sorted(sent)  # one "sent" decision row for each sent message


def test_a_crash_after_the_claim_before_any_provider_call_sends_the_batch_after_its_lease(
    api, timeline, smtp, settings, monkeypatch
):
    """kill -9 between the claim's commit and the first provider call: the five claimed emails
    were never handed to SMTP, so after the lease they are simply claimed again — no review."""
    settings.ONRAMP_DELIVERY_CLAIM = 5
    settings.ONRAMP_DELIVERY_LEASE_SECONDS = 60
    _emails_due(api, timeline, 12)

    def killed(claims, clock, report):
        raise WorkerKilled

    monkeypatch.setattr(pipeline, "_send", killed)
    with pytest.raises(WorkerKilled):
        deliver_due(now=T0 + M)
    monkeypatch.undo()
    assert Message.objects.filter(status="sending", handed_at=None).count() == 5
    assert received_keys(smtp) == Counter()

    _after_the_crash(smtp, sent=12, unknown=0)
    assert len(received_keys(smtp)) == 12
    requeued = DecisionLog.objects.filter(outcome="retry", reason="lease_expired")
    assert requeued.count() == 5
    assert all(row.detail["handed"] is False for row in requeued)


@pytest.mark.parametrize("durable", [False, True], ids=["async-mark", "durable-mark"])
@pytest.mark.parametrize("left", [True, False], ids=["accepted-by-smtp", "not-yet-accepted"])
def test_a_crash_inside_a_provider_call_leaves_that_one_message_unknown(
    api, timeline, smtp, settings, monkeypatch, left, durable
):
    """kill -9 inside the fourth provider call of a batch of five: the acceptance of the three
    before it was recorded (each in the hand-over commit before the next call), so the sweeper
    makes them "sent", each with its decision row; the fourth may or may not have left (unknown,
    one review item); the fifth was never handed and goes out after the lease. The same whether
    the marks wait for their WAL flush or not: a worker's crash cannot undo a committed mark."""
    settings.ONRAMP_DELIVERY_DURABLE_MARK = durable
    settings.ONRAMP_DELIVERY_CLAIM = 5
    settings.ONRAMP_DELIVERY_LEASE_SECONDS = 60
    _emails_due(api, timeline, 12)

    finish = EmailChannel.finish
    calls = []

    def dies_in_the_fourth(self, outgoing):
        calls.append(outgoing.message.pk)
        if len(calls) == 4:
            if left:
                finish(self, outgoing)  # the server has it; the answer is lost with us
            raise WorkerKilled  # otherwise: killed with the data sent but not its final "."
        return finish(self, outgoing)

    monkeypatch.setattr(EmailChannel, "finish", dies_in_the_fourth)
    monkeypatch.setattr(pipeline, "_record_sent", lambda sent, report: None)  # kill -9: no finally
    with pytest.raises(WorkerKilled):
        deliver_due(now=T0 + M)
    monkeypatch.undo()
    rows = {
        row.pk: (row.status, row.handed_at is not None, row.provider_id)
        for row in Message.objects.filter(pk__in=calls)
    }
    ids = {pk: f"<{key}>" for pk, key in _message_ids(smtp).items()}
    accepted = [("sending", True, ids[pk]) for pk in calls[:3]]
    assert [rows[pk] for pk in calls] == [*accepted, ("sending", True, "")]
    assert Message.objects.filter(status="sending").count() == 5  # and the fifth, unhanded

    _after_the_crash(smtp, sent=11, unknown=1)
    assert Message.objects.get(status="unknown").pk == calls[3]
    assert len(received_keys(smtp)) == 12 if left else 11
    by_sweeper = DecisionLog.objects.filter(outcome="sent", detail__recorded_by="sweeper")
    assert sorted(by_sweeper.values_list("message_id", flat=True)) == sorted(calls[:3])


def test_the_sweeper_and_the_hand_over_cannot_both_win(api, timeline, smtp, settings):
    """The mark before a provider call is fenced: once the sweeper has taken a message back it
    is not handed (so not sent) by its stalled worker; once handed, the sweeper makes it unknown
    instead of claiming it again."""
    settings.ONRAMP_DELIVERY_LEASE_SECONDS = 60
    _emails_due(api, timeline, 2)
    report = pipeline.DeliveryReport()
    with transaction.atomic():
        first, second = pipeline._claim(
            list(Message.objects.order_by("pk").values_list("pk", flat=True)), T0 + M, report
        )
    assert pipeline._hand(first, None, T0 + M)
    later = T0 + M + timedelta(seconds=61)
    assert not pipeline._hand(second, None, later)  # its lease is over: not handed
    pipeline.sweep_expired_leases(later, report)
    assert dict(Message.objects.values_list("pk", "status")) == {
        first.message.pk: "unknown",
        second.message.pk: "scheduled",
    }
    assert not pipeline._hand(second, None, T0 + M)  # the sweeper took it back
    assert Message.objects.get(pk=second.message.pk).handed_at is None
    assert received_keys(smtp) == Counter()


def test_the_sweeper_makes_a_handed_message_whose_acceptance_was_recorded_sent(
    api, timeline, smtp, settings
):
    """A worker that dies after the next hand-over recorded a message's acceptance, before the
    end of its batch: that message is "sent" (with its decision row), not unknown. A provider
    that accepted without an id is recorded as ``accepted``, never as an empty id (which would
    read as "no answer"), and the sent row keeps the empty id it was given."""
    settings.ONRAMP_DELIVERY_LEASE_SECONDS = 60
    _emails_due(api, timeline, 3)
    report = pipeline.DeliveryReport()
    with transaction.atomic():
        first, second, third = pipeline._claim(
            list(Message.objects.order_by("pk").values_list("pk", flat=True)), T0 + M, report
        )
    assert pipeline._hand(first, None, T0 + M)
    assert pipeline._hand(second, (first, SendResult("")), T0 + M)
    assert pipeline._hand(third, (second, SendResult("<id@x>")), T0 + M)
    assert Message.objects.get(pk=first.message.pk).provider_id == "accepted"
    pipeline.sweep_expired_leases(T0 + M + timedelta(seconds=61), report)  # the worker is gone
    rows = {m.pk: (m.status, m.provider_id) for m in Message.objects.all()}
    assert rows == {
        first.message.pk: ("sent", ""),
        second.message.pk: ("sent", "<id@x>"),
        third.message.pk: ("unknown", ""),
    }
    sent = DecisionLog.objects.filter(outcome="sent")
    assert sorted(sent.values_list("message_id", flat=True)) == [
        first.message.pk,
        second.message.pk,
    ]
    assert all(row.detail["recorded_by"] == "sweeper" for row in sent)
    assert list(ReviewItem.objects.values_list("message_id", flat=True)) == [third.message.pk]


def test_a_slow_batch_renews_its_leases_instead_of_losing_them(
    api, timeline, smtp, settings, monkeypatch
):
    """Leases are written for the whole batch at its claim; a provider slow enough to use half of
    one makes the pass renew the rest, so another worker's sweeper never takes them."""
    import time_machine
    from django.utils import timezone

    settings.ONRAMP_DELIVERY_LEASE_SECONDS = 60
    _emails_due(api, timeline, 4)
    finish = EmailChannel.finish
    swept = []

    with time_machine.travel(T0 + 2 * M, tick=False) as clock:

        def slow(self, outgoing):
            report = pipeline.DeliveryReport()
            pipeline.sweep_expired_leases(timezone.now(), report)  # another worker's pass
            swept.extend(report.outcomes)
            result = finish(self, outgoing)
            clock.shift(timedelta(seconds=40))
            return result

        monkeypatch.setattr(EmailChannel, "finish", slow)
        report = deliver_due()

    assert swept == []
    assert report.sent == 4
    assert set(Message.objects.values_list("status", flat=True)) == {"sent"}
    assert max(received_keys(smtp).values()) == 1


def test_the_end_of_the_data_goes_out_only_after_the_hand_over_mark(
    api, timeline, smtp, monkeypatch
):
    """The email's SMTP transaction (MAIL, RCPT, DATA, the data) runs while its hand-over mark
    commits; the final "." — from which on the server may have the message — only once the mark
    is committed, and the mark only once the previous email's answer is in."""
    _emails_due(api, timeline, 4)
    hand, finish = pipeline._hand, EmailChannel.finish
    events = []

    def hand_seen(claim, done, now):
        events.append(("mark", claim.message.pk, len(smtp.messages)))
        return hand(claim, done, now)

    def finish_seen(self, outgoing):
        pk = outgoing.message.pk
        marked = Message.objects.filter(pk=pk, status="sending", handed_at__isnull=False)
        events.append(("dot", pk, marked.exists(), len(smtp.messages)))
        return finish(self, outgoing)

    monkeypatch.setattr(pipeline, "_hand", hand_seen)
    monkeypatch.setattr(EmailChannel, "finish", finish_seen)
    assert deliver_due(now=T0 + M).sent == 4
    pks = [event[1] for event in events if event[0] == "mark"]
    assert events == [
        event
        for n, pk in enumerate(pks)
        for event in (("mark", pk, n), ("dot", pk, True, n))  # the server has the n before
    ]
    assert len(smtp.messages) == 4


def test_a_refused_hand_over_drops_the_email_whose_data_was_sent(api, timeline, smtp, monkeypatch):
    """A sweeper takes the second email back while its data is on the way: its mark is refused,
    the begun SMTP transaction is dropped without its final "." (the server never has it), and
    the third goes out over a new connection."""
    _emails_due(api, timeline, 3)
    hand = pipeline._hand
    marks = []

    def taken_back_at_the_second(claim, done, now):
        marks.append(claim.message.pk)
        if len(marks) == 2:  # what the sweeper does to an unhanded row whose lease ran out
            Message.objects.filter(pk=claim.message.pk).update(status="scheduled", lease_until=None)
        return hand(claim, done, now)

    monkeypatch.setattr(pipeline, "_hand", taken_back_at_the_second)
    report = deliver_due(now=T0 + M)
    assert report.sent == 2
    statuses = dict(Message.objects.values_list("pk", "status"))
    assert [statuses[pk] for pk in marks] == ["sent", "scheduled", "sent"]
    keys = dict(Message.objects.values_list("pk", "idempotency_key"))
    assert received_keys(smtp) == Counter({keys[marks[0]]: 1, keys[marks[2]]: 1})


def _synchronous_commit() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        return cursor.fetchone()[0]


@pytest.mark.skipif("connection.vendor != 'postgresql'")
@pytest.mark.django_db(transaction=True)  # real commits: no outer transaction keeps a SET LOCAL
@pytest.mark.parametrize("durable", [False, True], ids=["async-mark", "durable-mark"])
def test_the_marks_wait_for_their_flush_only_when_durable(
    api, timeline, smtp, settings, monkeypatch, durable
):
    """ONRAMP_DELIVERY_DURABLE_MARK off: each hand-over mark is committed without waiting for its
    WAL flush; on (the default): synchronously. Either way the claim's commit (before any
    provider call) is synchronous, and the session is back to its default after the batch."""
    settings.ONRAMP_DELIVERY_DURABLE_MARK = durable
    _emails_due(api, timeline, 3)
    hand, claim = pipeline._hand, pipeline._claim
    modes = []

    def hand_seen(claim, done, now):
        modes.append(("mark", _synchronous_commit()))
        return hand(claim, done, now)

    def claim_seen(pks, now, report, channels):
        modes.append(("claim", _synchronous_commit()))
        return claim(pks, now, report, channels)

    monkeypatch.setattr(pipeline, "_hand", hand_seen)
    monkeypatch.setattr(pipeline, "_claim", claim_seen)
    assert deliver_due(now=T0 + M).sent == 3
    mark = "on" if durable else "off"
    assert modes == [("claim", "on")] + [("mark", mark)] * 3
    assert _synchronous_commit() == "on"
    assert len(received_keys(smtp)) == 3


def test_the_default_mark_is_durable(settings):
    """The documented default (docs/configuration.md, docs/reliability.md)."""
    from config.settings import base

    assert base.ONRAMP_DELIVERY_DURABLE_MARK is True


def test_a_pass_sends_its_emails_over_one_smtp_connection(
    api, timeline, smtp, settings, monkeypatch
):
    """Two batches (claims of 3) of emails, one pass: one SMTP connection for all of them."""
    import smtplib

    settings.ONRAMP_DELIVERY_CLAIM = 3
    _emails_due(api, timeline, 5)
    connect, connections = smtplib.SMTP.connect, []

    def counted(self, *args, **kwargs):
        connections.append(args)
        return connect(self, *args, **kwargs)

    monkeypatch.setattr(smtplib.SMTP, "connect", counted)
    assert deliver_due(now=T0 + M).sent == 5
    assert len(connections) == 1
    assert len(received_keys(smtp)) == 5


def test_an_email_that_cannot_be_built_is_a_failed_attempt_and_the_batch_goes_on(
    api, timeline, smtp, monkeypatch
):
    """``prepare`` runs before the hand-over: a TransportError there sends nothing and marks
    nothing; that email is retried with backoff and the others go out."""
    from triggers.channels import TransportError

    _emails_due(api, timeline, 3)
    prepare, built = EmailChannel.prepare, []

    def fails_for_the_second(self, message, person):
        built.append(message.pk)
        if len(built) == 2:
            raise TransportError("cannot build it")
        return prepare(self, message, person)

    monkeypatch.setattr(EmailChannel, "prepare", fails_for_the_second)
    report = deliver_due(now=T0 + M)
    assert (report.sent, report.outcomes["retry"]) == (2, 1)
    second = Message.objects.get(pk=built[1])
    assert (second.status, second.handed_at, second.attempts) == ("scheduled", None, 1)
    assert len(received_keys(smtp)) == 2


# --- The overlapped pass (PostgreSQL): claims and records on a second connection --------------


@pytest.mark.skipif("connection.vendor != 'postgresql'")
@pytest.mark.django_db(transaction=True)  # the writer thread's connection sees committed rows
@pytest.mark.parametrize("overlap", [True, False], ids=["overlapped", "serial"])
@pytest.mark.parametrize("durable", [False, True], ids=["async-mark", "durable-mark"])
def test_a_crash_in_the_second_batch_leaves_one_message_unknown(
    api, timeline, smtp, settings, monkeypatch, overlap, durable
):
    """kill -9 inside the second email of the second batch (claims of 3): with the claims and
    the batch-end records on the writer thread, batch 3 is already claimed (never handed: due
    again after the lease) and batch 1's record may not have been written; the first batch's last
    success was recorded by the second batch's first mark. So after the lease: batches 1 and the
    first email of batch 2 are "sent" (by the sweeper, from their acceptance marks), the email
    inside its call is the one unknown, and everything else goes out once."""
    settings.ONRAMP_DELIVERY_OVERLAP = overlap
    settings.ONRAMP_DELIVERY_DURABLE_MARK = durable
    settings.ONRAMP_DELIVERY_CLAIM = 3
    settings.ONRAMP_DELIVERY_LEASE_SECONDS = 60
    _emails_due(api, timeline, 10)

    finish, record, calls = EmailChannel.finish, pipeline._record_sent, []

    def dies_in_the_fifth(self, outgoing):
        calls.append(outgoing.message.pk)
        if len(calls) == 5:
            raise WorkerKilled  # its data went out, not its final "."
        return finish(self, outgoing)

    def record_until_killed(sent, report):
        # kill -9: nothing is recorded after it; overlapped, the writer's records of the
        # batches before it may not have run either (the harder case: none of them did).
        if not overlap and len(calls) < 5:
            record(sent, report)

    claimed_by = set()
    claim = pipeline._claim

    def claim_seen(pks, now, report, channels):
        import threading

        claimed_by.add(threading.current_thread().name.split("_")[0])
        return claim(pks, now, report, channels)

    monkeypatch.setattr(EmailChannel, "finish", dies_in_the_fifth)
    monkeypatch.setattr(pipeline, "_claim", claim_seen)
    monkeypatch.setattr(pipeline, "_record_sent", record_until_killed)
    with pytest.raises(WorkerKilled):
        deliver_due(now=T0 + M)
    monkeypatch.undo()
    assert claimed_by == ({"onramp-claim"} if overlap else {"MainThread"})
    ids = {pk: f"<{key}>" for pk, key in _message_ids(smtp).items()}
    rows = {
        row.pk: (row.status, row.handed_at is not None, row.provider_id)
        for row in Message.objects.filter(pk__in=calls)
    }
    recorded = [] if overlap else [("sent", True, ids[pk]) for pk in calls[:3]]
    accepted = [("sending", True, ids[pk]) for pk in calls[len(recorded) : 4]]
    assert [rows[pk] for pk in calls] == [*recorded, *accepted, ("sending", True, "")]
    # Batch 2's third email, and batch 3 when it was claimed ahead: claimed, never handed.
    unhanded = Message.objects.filter(status="sending", handed_at=None).count()
    assert unhanded == (4 if overlap else 1)

    _after_the_crash(smtp, sent=9, unknown=1)
    assert Message.objects.get(status="unknown").pk == calls[4]
    assert len(received_keys(smtp)) == 9
    by_sweeper = DecisionLog.objects.filter(outcome="sent", detail__recorded_by="sweeper")
    assert sorted(by_sweeper.values_list("message_id", flat=True)) == sorted(
        calls[len(recorded) : 4]
    )


@pytest.mark.skipif("connection.vendor != 'postgresql'")
@pytest.mark.django_db(transaction=True)
def test_the_overlapped_pass_claims_the_next_batch_while_it_sends(
    api, timeline, smtp, settings, monkeypatch
):
    """Claims of 3, 8 emails: batch 2 is claimed (on the writer thread) while batch 1 is handed
    to SMTP (its marks slowed down here): that claim waits for a mark written after it began,
    which the pass's thread writes meanwhile (in one thread the claim would wait for nothing
    and time out). Every email goes out once, each with one "sent" decision row, written by the
    writer's records (and the pass's last one by the pass's thread)."""
    import time

    settings.ONRAMP_DELIVERY_CLAIM = 3
    _emails_due(api, timeline, 8)
    marks, seen = [], []
    hand, claim = pipeline._hand, pipeline._claim

    def hand_seen(claim, done, now):
        if len(marks) < 3:
            time.sleep(0.05)  # batch 1: room for batch 2's claim to begin before its marks
        marks.append(claim.message.pk)
        return hand(claim, done, now)

    def claim_seen(pks, now, report, channels):
        if len(seen) == 1:  # batch 2: is a mark written while this claim runs?
            before, deadline = len(marks), time.monotonic() + 3
            while len(marks) == before and time.monotonic() < deadline:
                time.sleep(0.001)
            seen.append(len(marks) > before)
        elif not seen:
            seen.append(not marks)  # batch 1: before any mark
        return claim(pks, now, report, channels)

    monkeypatch.setattr(pipeline, "_hand", hand_seen)
    monkeypatch.setattr(pipeline, "_claim", claim_seen)
    report = deliver_due(now=T0 + M)
    assert report.outcomes == {"sent": 8}
    assert seen == [True, True]
    assert max(received_keys(smtp).values()) == 1 and len(received_keys(smtp)) == 8
    sent = DecisionLog.objects.filter(outcome="sent").values_list("message_id", flat=True)
    assert sorted(sent) == sorted(Message.objects.values_list("pk", flat=True))
    assert set(Message.objects.values_list("status", "lease_until")) == {("sent", None)}


@pytest.mark.skipif("connection.vendor != 'postgresql'")
@pytest.mark.django_db(transaction=True)
def test_the_overlapped_pass_builds_each_email_in_the_writer_thread_once(
    api, timeline, smtp, settings, monkeypatch
):
    """Each email is built (``prepare``: its HTML, signed links and bytes) once, by the writer
    thread after its claim commits, not in the pass's thread between two sends: the pass's
    chain per email is the mark, SMTP and the ``.``. What is built is what goes out."""
    import threading

    settings.ONRAMP_DELIVERY_CLAIM = 3
    _emails_due(api, timeline, 7)
    prepare, built = EmailChannel.prepare, []

    def prepare_seen(channel, message, person):
        built.append((message.pk, threading.current_thread().name))
        return prepare(channel, message, person)

    monkeypatch.setattr(EmailChannel, "prepare", prepare_seen)
    assert deliver_due(now=T0 + M).sent == 7
    assert sorted(pk for pk, _ in built) == sorted(Message.objects.values_list("pk", flat=True))
    assert {name.split("_")[0] for _, name in built} == {"onramp-claim"}
    assert received_keys(smtp) == Counter(Message.objects.values_list("idempotency_key", flat=True))


def test_the_pass_is_serial_inside_a_transaction(settings):
    """The writer thread's connection could not see a caller's uncommitted rows: inside a
    transaction (and on SQLite, and with ONRAMP_DELIVERY_OVERLAP off) the pass claims, sends and
    records in one thread, as before."""
    settings.ONRAMP_DELIVERY_OVERLAP = True
    with transaction.atomic():
        assert not pipeline._can_overlap()
    settings.ONRAMP_DELIVERY_OVERLAP = False
    assert not pipeline._can_overlap()


@pytest.mark.skipif("connection.vendor != 'postgresql'")
@pytest.mark.django_db(transaction=True)
def test_an_overlapped_pass_out_of_time_sends_its_first_batch_and_claims_no_more(
    api, timeline, smtp, settings
):
    """The time budget is checked before each claim after the first: a claimed batch is always
    sent, and a pass with no time left claims nothing ahead."""
    settings.ONRAMP_DELIVERY_CLAIM = 3
    _emails_due(api, timeline, 5)
    assert deliver_due(now=T0 + M, time_budget=0).sent == 3
    assert Counter(Message.objects.values_list("status", flat=True)) == {"sent": 3, "scheduled": 2}


def test_each_sent_decision_row_is_the_one_the_decision_helper_builds(api, timeline, smtp):
    """The batch-end record writes its "sent" decision rows in SQL on PostgreSQL (one statement
    with the fenced update) and with ``decision`` elsewhere: on either, every row is the one
    ``decision(message, message.sent_at, "sent")`` builds."""
    from triggers.delivery.outcomes import decision

    _emails_due(api, timeline, 3)
    assert deliver_due(now=T0 + M).sent == 3

    def shape(row: DecisionLog) -> tuple:
        return (
            row.at, row.person_id, row.rule_id, row.rule_version_id, row.enrollment_id,
            row.message_id, row.outcome, row.reason, row.detail,
        )  # fmt: skip

    rows = DecisionLog.objects.filter(outcome="sent").order_by("message_id")
    expected = [
        decision(message, message.sent_at, "sent") for message in Message.objects.order_by("pk")
    ]
    assert [shape(row) for row in rows] == [shape(row) for row in expected]
