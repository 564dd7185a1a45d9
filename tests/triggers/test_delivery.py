"""The delivery pipeline against real channels: email through an SMTP server on loopback."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import time_machine
from django.core.management import call_command

from onboarding.models import Person
from tests.smtp import free_port
from triggers.delivery.pipeline import deliver_due
from triggers.links import click_target
from triggers.models import DecisionLog, Message, ReviewItem
from triggers.services.rules import rule_set_status
from triggers.services.templates import template_save

from .conftest import T0, make_rule

pytestmark = pytest.mark.usefixtures("flow", "templates")
M = timedelta(minutes=1)


def identify(api, user, at=T0 - M, **traits):
    payload = {
        "type": "identify",
        "userId": user,
        "traits": traits,
        "messageId": f"id-{user}-{at.isoformat()}",
    }
    with time_machine.travel(at, tick=False):
        assert (
            api.post(
                "/v1/identify", json.dumps(payload), content_type="application/json"
            ).status_code
            == 200
        )


def event_rule(slug="trial", follow_ups=None, **extra):
    return make_rule(
        slug,
        {
            "trigger": {"kind": "event", "event": "Trial Ending"},
            "follow_ups": follow_ups
            or [{"channel": "email", "template": "reminder", "delay": "0s"}],
            "reentry": {"once_per": "1m"},
            **extra,
        },
    )


def test_email_reaches_the_smtp_server_once_with_both_parts_and_unsubscribe(api, timeline, smtp):
    identify(api, "u1", email="ada@example.com", first_name="Ada")
    event_rule()
    timeline.send(T0, "u1", "Trial Ending")
    timeline.tick(T0 + M)
    assert deliver_due(now=T0 + M).sent == 1
    assert deliver_due(now=T0 + 2 * M).sent == 0
    [received] = smtp.messages
    assert received["To"] == "ada@example.com"
    assert received["Subject"] == "Finish setting up"
    assert received["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert received["List-Unsubscribe"].strip().startswith("<http")
    text = received.get_body(preferencelist=("plain",)).get_content()
    html = received.get_body(preferencelist=("html",)).get_content()
    assert "Hi Ada" in text and "Hi Ada" in html
    assert 'width="1"' not in html  # no open pixel unless ONRAMP_TRACK_OPENS is on
    message = Message.objects.get()
    assert (message.status, message.attempts, message.sent_at) == ("sent", 1, T0 + M)
    # The ledger names the email by its Message-ID, for bounces and replies.
    assert message.provider_id == received["Message-ID"]
    assert message.provider_id.startswith("<") and message.provider_id.endswith(">")


def test_links_in_email_are_signed_click_redirects(api, timeline, smtp):
    template_save(
        slug="reminder",
        channel="email",
        subject="Tip",
        body="Open https://app.example.com/profile now",
    )
    identify(api, "u1", email="ada@example.com")
    event_rule()
    timeline.send(T0, "u1", "Trial Ending")
    timeline.tick(T0 + M)
    deliver_due(now=T0 + M)
    html = smtp.messages[0].get_body(preferencelist=("html",)).get_content()
    token = html.split("?t=")[1].split('"')[0]
    from html import unescape
    from urllib.parse import unquote

    assert click_target(unquote(unescape(token))) == (
        Message.objects.get().pk,
        "https://app.example.com/profile",
    )
    assert click_target(unquote(unescape(token))[:-2] + "xx") is None


def test_in_app_is_sent_exactly_once(api, timeline):
    event_rule(follow_ups=[{"channel": "in_app", "template": "nudge", "delay": "0s"}])
    timeline.send(T0, "u1", "Trial Ending")
    timeline.tick(T0 + M)
    for _ in range(3):
        deliver_due(now=T0 + M)
    message = Message.objects.get()
    assert (message.status, message.body) == ("sent", "Need a hand, there?")
    assert DecisionLog.objects.filter(outcome="sent").count() == 1


def test_withdrawn_consent_suppresses(api, timeline, smtp):
    identify(api, "u1", email="ada@example.com")
    Person.objects.filter(external_id="u1").update(consent={"email": False})
    event_rule()
    timeline.send(T0, "u1", "Trial Ending")
    timeline.tick(T0 + M)
    deliver_due(now=T0 + M)
    assert Message.objects.get().status == "suppressed"
    assert smtp.messages == []
    assert DecisionLog.objects.get(outcome="suppressed").reason == "consent"


def test_global_cap_of_two_per_week(api, timeline, settings):
    event_rule(follow_ups=[{"channel": "in_app", "template": "nudge", "delay": "0s"}])
    for day in range(4):
        at = T0 + timedelta(days=day)
        timeline.send(at, "u1", "Trial Ending")
        timeline.tick(at + M)
        deliver_due(now=at + M)
    statuses = list(Message.objects.order_by("due_at").values_list("status", "reason"))
    assert statuses == [
        ("sent", ""),
        ("sent", ""),
        ("suppressed", "cap:global"),
        ("suppressed", "cap:global"),
    ]


def test_quiet_hours_defer_to_the_local_morning(api, timeline):
    identify(api, "u1", timezone="Europe/Paris")
    event_rule(
        follow_ups=[{"channel": "in_app", "template": "nudge", "delay": "0s"}],
        quiet_hours={"start": "21:00", "end": "08:00"},
    )
    late = T0.replace(hour=22)  # 23:00 in Paris
    timeline.send(late, "u1", "Trial Ending")
    timeline.tick(late + M)
    deliver_due(now=late + M)
    message = Message.objects.get()
    assert (message.status, message.due_at) == (
        "deferred",
        T0.replace(day=3, hour=7),
    )  # 08:00 Paris
    deliver_due(now=T0.replace(day=3, hour=7))
    message.refresh_from_db()
    assert message.status == "sent"


def test_missing_variable_aborts_to_review_or_fallback(api, timeline):
    template_save(slug="strict", channel="in_app", subject="", body="Hello {{ company }}")
    event_rule(follow_ups=[{"channel": "in_app", "template": "strict", "delay": "0s"}])
    timeline.send(T0, "u1", "Trial Ending")
    timeline.tick(T0 + M)
    deliver_due(now=T0 + M)
    message = Message.objects.get()
    assert message.status == "needs_review"
    review = ReviewItem.objects.get()
    assert review.reason == "render" and "company" in review.detail


def test_no_email_address_falls_back_to_in_app(api, timeline):
    event_rule(fallback={"channel": "in_app", "template": "nudge"})
    timeline.send(T0, "u1", "Trial Ending")
    timeline.tick(T0 + M)
    deliver_due(now=T0 + M)
    original, fallback = Message.objects.order_by("pk")
    assert (original.status, original.reason) == ("failed", "no_address")
    assert (fallback.channel, fallback.status, fallback.fallback_of_id) == (
        "in_app",
        "sent",
        original.pk,
    )


def test_smtp_down_is_retried_with_backoff_then_reviewed(api, timeline, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", free_port(), 2
    settings.ONRAMP_DELIVERY_MAX_ATTEMPTS = 2
    identify(api, "u1", email="ada@example.com")
    event_rule()
    timeline.send(T0, "u1", "Trial Ending")
    timeline.tick(T0 + M)
    deliver_due(now=T0 + M)
    message = Message.objects.get()
    assert (message.status, message.attempts) == ("scheduled", 1)
    assert T0 + M + timedelta(seconds=20) < message.next_attempt_at < T0 + M + timedelta(seconds=40)
    assert deliver_due(now=T0 + M + timedelta(seconds=5)).outcomes == {}  # not yet
    deliver_due(now=T0 + 2 * M)
    message.refresh_from_db()
    assert (message.status, message.attempts) == ("needs_review", 2)
    assert ReviewItem.objects.get().reason == "retries_exhausted"


def test_expired_lease_of_a_handed_email_becomes_unknown_never_resent(api, timeline, smtp):
    identify(api, "u1", email="ada@example.com")
    event_rule()
    timeline.send(T0, "u1", "Trial Ending")
    timeline.tick(T0 + M)
    # A worker that died inside the provider call (the message was marked as handed):
    Message.objects.update(
        status="sending", attempts=1, lease_until=T0 + 2 * M, sent_at=T0 + M, handed_at=T0 + M
    )
    deliver_due(now=T0 + 3 * M)
    message = Message.objects.get()
    assert message.status == "unknown"
    assert ReviewItem.objects.get().reason == "unknown_outcome"
    assert smtp.messages == []


def test_expired_lease_of_an_email_never_handed_is_sent_without_review(api, timeline, smtp):
    identify(api, "u1", email="ada@example.com")
    event_rule()
    timeline.send(T0, "u1", "Trial Ending")
    timeline.tick(T0 + M)
    # A worker that died after claiming the message, before its provider call:
    Message.objects.update(status="sending", attempts=1, lease_until=T0 + 2 * M, sent_at=T0 + M)
    assert deliver_due(now=T0 + 2 * M - timedelta(seconds=1)).outcomes == {}  # lease still runs
    report = deliver_due(now=T0 + 3 * M)
    assert report.outcomes == {"retry": 1, "sent": 1}
    message = Message.objects.get()
    assert (message.status, message.attempts) == ("sent", 2)
    assert not ReviewItem.objects.exists()
    assert [m["X-Onramp-Message"].strip() for m in smtp.messages] == [message.idempotency_key]


def test_exit_at_send_time_cancels(api, timeline):
    make_rule(
        "idle",
        {
            "trigger": {"kind": "inactive_in_flow", "flow": "activation", "minutes": 5},
            "follow_ups": [{"channel": "in_app", "template": "nudge", "delay": "1h"}],
        },
    )
    timeline.send(T0, "u1", "Signed Up")
    timeline.tick(T0 + 5 * M)
    timeline.send(T0 + 10 * M, "u1", "Email Verified")
    deliver_due(now=T0 + 2 * 60 * M)  # no tick in between: the send-time check catches it
    assert Message.objects.get().status == "cancelled"


def test_paused_rule_holds_its_messages(api, timeline):
    rule = event_rule(follow_ups=[{"channel": "in_app", "template": "nudge", "delay": "0s"}])
    timeline.send(T0, "u1", "Trial Ending")
    timeline.tick(T0 + M)
    rule_set_status(rule=rule, status="paused")
    deliver_due(now=T0 + M)
    assert Message.objects.get().status == "scheduled"
    rule_set_status(rule=rule, status="active")
    deliver_due(now=T0 + 2 * M)
    assert Message.objects.get().status == "sent"


def test_run_triggers_enrolls_and_delivers_in_one_pass(api, timeline, capsys):
    event_rule(follow_ups=[{"channel": "in_app", "template": "nudge", "delay": "0s"}])
    timeline.send(T0, "u1", "Trial Ending")
    call_command("run_triggers", "--now", (T0 + M).isoformat())
    out = capsys.readouterr().out
    assert "trial" in out and "Delivery: sent 1" in out
    assert Message.objects.get().status == "sent"


def test_shadow_rule_records_everything_and_sends_nothing(api, timeline, smtp):
    identify(api, "u1", email="ada@example.com")
    rule = event_rule()
    rule.shadow = True
    rule.save(update_fields=["shadow"])
    timeline.send(T0, "u1", "Trial Ending")
    timeline.tick(T0 + M)
    report = deliver_due(now=T0 + M)
    assert report.outcomes == {"shadow": 1}
    message = Message.objects.get()
    assert (message.status, message.reason, message.subject) == (
        "suppressed",
        "shadow",
        "Finish setting up",
    )
    assert smtp.messages == []
    assert DecisionLog.objects.filter(outcome="shadow").count() == 1
