"""SMS through the pipeline against a fake Twilio on 127.0.0.1: rules → messages → deliver_due."""

from __future__ import annotations

import base64
import json
import socket
from datetime import timedelta
from urllib.parse import parse_qs

import pytest
import time_machine

import triggers.netguard
from triggers.channels.http import HttpChannel
from triggers.channels.sms import e164
from triggers.delivery.pipeline import deliver_due
from triggers.models import Message, ReviewItem
from triggers.services.templates import template_save

from .conftest import T0, make_rule
from .test_channel_http import FakeServer, Reply

pytestmark = pytest.mark.usefixtures("flow", "templates")
M = timedelta(minutes=1)
SID = "AC0123456789abcdef0123456789abcdef"


@pytest.fixture
def twilio(settings):
    with FakeServer(Reply(201, json.dumps({"sid": "SM42", "status": "queued"}).encode())) as server:
        settings.ONRAMP_SMS_BASE_URL = server.url
        settings.ONRAMP_SMS_ALLOWED_HOSTS = ["127.0.0.1"]  # the provider is on loopback here
        settings.ONRAMP_SMS_ACCOUNT_SID = SID
        settings.ONRAMP_SMS_AUTH_TOKEN = "token-1"
        settings.ONRAMP_SMS_FROM = "+15005550006"
        settings.ONRAMP_HTTP_TIMEOUT_SECONDS = 0.5
        yield server


def identify(api, user, **traits):
    payload = {"type": "identify", "userId": user, "traits": traits, "messageId": f"id-{user}"}
    with time_machine.travel(T0 - M, tick=False):
        response = api.post("/v1/identify", json.dumps(payload), content_type="application/json")
    assert response.status_code == 200


def sms_rule(**extra):
    template_save(slug="text", channel="sms", subject="", body="Hi {{ first_name }}, finish up!")
    return make_rule(
        "trial-sms",
        {
            "trigger": {"kind": "event", "event": "Trial Ending"},
            "follow_ups": [{"channel": "sms", "template": "text", "delay": "0s"}],
            "reentry": {"once_per": "1m"},
            **extra,
        },
    )


def due_sms(api, timeline, phone="+1 (415) 555-0100", **rule_extra):
    identify(api, "u1", phone=phone, first_name="Ada")
    sms_rule(**rule_extra)
    timeline.send(T0, "u1", "Trial Ending")
    timeline.tick(T0 + M)


def test_success_posts_twilio_form_with_basic_auth_and_stores_the_sid(api, timeline, twilio):
    due_sms(api, timeline)
    assert deliver_due(now=T0 + M).sent == 1
    [request] = twilio.requests
    assert request.path == f"/2010-04-01/Accounts/{SID}/Messages.json"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert (
        request.headers["authorization"]
        == "Basic " + base64.b64encode(f"{SID}:token-1".encode()).decode()
    )
    form = parse_qs(request.body.decode())
    assert form == {
        "To": ["+14155550100"],
        "From": ["+15005550006"],
        "Body": ["Hi Ada, finish up!"],
    }
    message = Message.objects.get()
    assert (message.status, message.provider_id, message.attempts) == ("sent", "SM42", 1)
    assert deliver_due(now=T0 + 2 * M).sent == 0 and len(twilio.requests) == 1


def test_invalid_number_21211_is_permanent_and_falls_back(api, timeline, twilio):
    twilio.replies.append(
        Reply(400, json.dumps({"code": 21211, "message": "Invalid 'To' Phone Number"}).encode())
    )
    due_sms(api, timeline, fallback={"channel": "in_app", "template": "nudge"})
    deliver_due(now=T0 + M)
    original, fallback = Message.objects.order_by("pk")
    assert (original.status, original.reason, original.attempts) == ("failed", "permanent_error", 1)
    assert "21211" in original.last_error and "Invalid 'To' Phone Number" in original.last_error
    assert (fallback.channel, fallback.status) == ("in_app", "sent")
    assert len(twilio.requests) == 1


def test_permanent_error_without_fallback_goes_to_review(api, timeline, twilio):
    twilio.replies.append(Reply(400, json.dumps({"code": 21211, "message": "Invalid"}).encode()))
    due_sms(api, timeline)
    deliver_due(now=T0 + M)
    review = ReviewItem.objects.get()
    assert review.reason == "permanent_error" and "21211" in review.detail


def test_503_is_transient_and_retried_later(api, timeline, twilio):
    twilio.replies.append(Reply(503, b'{"code": 20503, "message": "Service unavailable"}'))
    due_sms(api, timeline)
    report = deliver_due(now=T0 + M)
    assert report.outcomes["retry"] == 1
    message = Message.objects.get()
    assert (message.status, message.attempts) == ("scheduled", 1)
    assert message.next_attempt_at > T0 + M
    deliver_due(now=message.next_attempt_at)
    message.refresh_from_db()
    assert (message.status, message.provider_id, message.attempts) == ("sent", "SM42", 2)
    assert len(twilio.requests) == 2


def test_429_retry_after_is_honoured(api, timeline, twilio):
    twilio.replies.append(
        Reply(429, b'{"code": 20429, "message": "Too Many Requests"}', {"Retry-After": "90"})
    )
    due_sms(api, timeline)
    deliver_due(now=T0 + M)
    message = Message.objects.get()
    assert (message.status, message.next_attempt_at) == (
        "scheduled",
        T0 + M + timedelta(seconds=90),
    )
    assert deliver_due(now=T0 + M + timedelta(seconds=60)).outcomes == {}
    deliver_due(now=T0 + M + timedelta(seconds=90))
    message.refresh_from_db()
    assert message.status == "sent"


@pytest.mark.parametrize(
    ("missing", "named"),
    [
        ("ONRAMP_SMS_ACCOUNT_SID", "ONRAMP_SMS_ACCOUNT_SID"),
        ("ONRAMP_SMS_AUTH_TOKEN", "ONRAMP_SMS_AUTH_TOKEN"),
        ("ONRAMP_SMS_FROM", "ONRAMP_SMS_FROM"),
    ],
)
def test_not_configured_is_permanent(api, timeline, twilio, settings, missing, named):
    setattr(settings, missing, "")
    due_sms(api, timeline)
    deliver_due(now=T0 + M)
    message = Message.objects.get()
    assert message.status == "needs_review"
    assert message.last_error.startswith("SMS is not configured (set ")
    assert named in message.last_error
    assert twilio.requests == []


def test_a_number_that_is_not_e164_is_refused_without_calling_the_provider(api, timeline, twilio):
    due_sms(api, timeline, phone="0612345678")
    deliver_due(now=T0 + M)
    message = Message.objects.get()
    assert message.status == "needs_review"
    assert "not in E.164" in message.last_error and "0612345678" in message.last_error
    assert twilio.requests == []


def test_no_answer_after_sending_is_unknown_never_retried(api, timeline, twilio):
    twilio.replies.append(Reply(201, b'{"sid": "SM9"}', delay=1.5))
    due_sms(api, timeline)
    deliver_due(now=T0 + M)
    message = Message.objects.get()
    # The provider may have it: unknown, a review item, no retry and no fallback channel.
    assert (message.status, message.reason) == ("unknown", "unknown_outcome")
    assert "not retried" in message.last_error
    assert ReviewItem.objects.get(message=message).reason == "unknown_outcome"
    deliver_due(now=T0 + timedelta(days=1))
    assert len(twilio.requests) == 1


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("+14155550100", "+14155550100"),
        ("+1 (415) 555-0100", "+14155550100"),
        ("+33 6 12 34 56 78", "+33612345678"),
        ("+44.20.7946.0958", "+442079460958"),
        ("0612345678", None),
        ("+0612345678", None),
        ("+1234567890123456", None),
        ("", None),
        ("+1-415-CALL-NOW", None),
    ],
)
def test_e164(raw, normalised):
    assert e164(raw) == normalised


# --- the SSRF guard on the provider URL (issue 13, item 5) ----------------------------------------


@pytest.mark.parametrize(
    "host",
    ["2130706433", "0x7f000001", "127.1", "[::ffff:127.0.0.1]", "localhost", "127.0.0.1"],
)
def test_a_loopback_provider_url_without_the_allow_list_is_refused_before_connecting(
    api, timeline, twilio, settings, host
):
    """The canary on 127.0.0.1 receives nothing, so the Basic auth credentials never leave: the
    message goes to review with a permanent error naming the address and the setting."""
    settings.ONRAMP_SMS_BASE_URL = f"http://{host}:{twilio.port}"
    settings.ONRAMP_SMS_ALLOWED_HOSTS = []
    due_sms(api, timeline)
    deliver_due(now=T0 + M)
    message = Message.objects.get()
    assert (message.status, message.reason) == ("needs_review", "permanent_error")
    assert "loopback" in message.last_error
    assert "ONRAMP_SMS_ALLOWED_HOSTS" in message.last_error
    assert twilio.requests == []


def test_a_provider_name_resolving_to_a_private_address_is_refused_without_connecting(
    api, timeline, twilio, settings, monkeypatch
):
    """Decided on the resolved addresses (any private one refuses); no socket is opened."""

    def resolve(host, port, family, kind):
        assert host == "sms.example.com"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("8.8.8.8", port)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", port))]  # fmt: skip

    def no_connection(self, target, address):
        raise AssertionError(f"connected to {address}")

    monkeypatch.setattr(triggers.netguard, "system_resolver", resolve)
    monkeypatch.setattr(HttpChannel, "_pool", no_connection)
    settings.ONRAMP_SMS_BASE_URL = "https://sms.example.com"
    due_sms(api, timeline)
    deliver_due(now=T0 + M)
    message = Message.objects.get()
    assert message.status == "needs_review"
    assert "10.0.0.7" in message.last_error and "private" in message.last_error


def test_an_allow_listed_provider_name_is_pinned_to_the_checked_address(
    api, timeline, twilio, settings, monkeypatch
):
    """Allow-listed by name, resolved once: the request goes to the address of that lookup (the
    loopback canary) with the original Host header, whatever a later lookup would say."""
    answers = iter([["127.0.0.1"], ["10.9.9.9"]])

    def resolve(host, port, family, kind):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in next(answers)]

    monkeypatch.setattr(triggers.netguard, "system_resolver", resolve)
    settings.ONRAMP_SMS_BASE_URL = f"http://sms.internal.test:{twilio.port}"
    settings.ONRAMP_SMS_ALLOWED_HOSTS = ["sms.internal.test"]
    due_sms(api, timeline)
    assert deliver_due(now=T0 + M).sent == 1
    [request] = twilio.requests
    assert request.headers["host"] == f"sms.internal.test:{twilio.port}"
