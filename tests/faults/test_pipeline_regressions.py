"""Bugs the fault tests found in the delivery pipeline, pinned in-process (no worker needed)."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from triggers.channels.email import EmailChannel
from triggers.delivery.pipeline import DeliveryReport, deliver_due, sweep_expired_leases
from triggers.engine.evaluate import evaluate_rules
from triggers.models import Message

from .harness import SmtpRecorder, seed_people, seed_rule

pytestmark = pytest.mark.django_db


@pytest.fixture
def mail(settings, tmp_path):
    server = SmtpRecorder(tmp_path / "smtp.log")
    server.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", server.port, 5
    try:
        yield server
    finally:
        server.stop()


def _due_emails(api, count: int) -> None:
    seed_rule(channels=("email",))
    seed_people(api, count)
    evaluate_rules(now=timezone.now())
    assert Message.objects.filter(status="scheduled").count() == count


def test_the_lease_runs_from_the_send_not_from_the_start_of_a_long_pass(api, mail, monkeypatch):
    """A pass that has run longer than the lease wrote leases that had already expired, so
    another worker's sweeper marked messages "unknown" while they were being sent."""
    _due_emails(api, 3)
    finish = EmailChannel.finish
    left: list[float] = []
    stolen: list[str] = []

    with time_machine.travel(timezone.now(), tick=True) as clock:

        def slow_send(self, outgoing):
            left.append((outgoing.message.lease_until - timezone.now()).total_seconds())
            report = DeliveryReport()
            sweep_expired_leases(timezone.now(), report)  # another worker's pass starting now
            stolen.extend(report.outcomes)
            result = finish(self, outgoing)
            clock.shift(timedelta(minutes=10))  # a slow provider, or a long pass
            return result

        monkeypatch.setattr(EmailChannel, "finish", slow_send)
        report = deliver_due()

    assert min(left) > 0, left
    assert stolen == []
    assert report.sent == 3
    assert set(Message.objects.values_list("status", flat=True)) == {"sent"}


def test_a_temporary_refusal_of_the_recipient_is_retried(api, mail):
    """451 at RCPT (greylisting, a full mailbox) is transient; smtplib reports it as
    SMTPRecipientsRefused, which the email channel treated as permanent."""
    _due_emails(api, 1)
    mail.refuse(at="RCPT", reply="451 4.2.0 Mailbox busy, try later")
    deliver_due()
    message = Message.objects.get()
    assert (message.status, message.reason) == ("scheduled", "retry"), message.last_error
    assert message.next_attempt_at > timezone.now()
    assert "451" in message.last_error


def test_a_permanent_refusal_of_the_recipient_goes_to_review(api, mail):
    _due_emails(api, 1)
    mail.refuse(at="RCPT", reply="550 5.1.1 No such user")
    deliver_due()
    message = Message.objects.get()
    assert message.status == "needs_review"
    assert mail.logged_keys() == {}


def test_a_pass_sends_over_one_smtp_connection(api, mail):
    _due_emails(api, 5)
    assert deliver_due().sent == 5
    assert mail.connections == 1
    assert sum(mail.logged_keys().values()) == 5


def test_a_dropped_connection_costs_one_retry_not_the_rest_of_the_pass(api, mail, monkeypatch):
    """The server closes the pass's connection between two messages: the next message fails
    on the dead socket before reaching the server (retried later, at most once), and the ones
    after it go over a fresh connection instead of failing one by one."""
    _due_emails(api, 4)
    finish = EmailChannel.finish
    calls = []

    def drop_after_first(self, outgoing):
        calls.append(outgoing.message.pk)
        result = finish(self, outgoing)
        if len(calls) == 1:
            mail.stop()  # the server goes away between two messages and comes back
            mail.start()
        return result

    monkeypatch.setattr(EmailChannel, "finish", drop_after_first)
    report = deliver_due()
    assert report.outcomes == {"sent": 3, "retry": 1}
    retry = Message.objects.get(status="scheduled")
    assert deliver_due(now=retry.next_attempt_at).sent == 1
    assert mail.logged_keys() == dict.fromkeys(
        Message.objects.values_list("idempotency_key", flat=True), 1
    )
