"""Webhooks through the pipeline against a local receiver on 127.0.0.1 (allow-listed).

Signatures are checked with an independent implementation of the Standard Webhooks scheme.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import time
from datetime import timedelta

import pytest

import triggers.netguard
from triggers.delivery.pipeline import deliver_due
from triggers.models import Message
from triggers.services.templates import template_save

from .conftest import T0, make_rule
from .test_channel_http import FakeServer, Reply

pytestmark = pytest.mark.usefixtures("flow", "templates")
M = timedelta(minutes=1)
OLD_SECRET = "whsec_" + base64.b64encode(b"old-secret-0123456789abcdef").decode()
NEW_SECRET = "whsec_" + base64.b64encode(b"new-secret-abcdef0123456789").decode()


def verify(secret: str, headers: dict[str, str], body: bytes, tolerance: int = 300) -> bool:
    """A receiver's check, written from the Standard Webhooks spec (not from Onramp's code)."""
    key = base64.b64decode(secret.split("_", 1)[1])
    msg_id, timestamp = headers["webhook-id"], headers["webhook-timestamp"]
    if abs(time.time() - int(timestamp)) > tolerance:
        return False
    content = msg_id.encode() + b"." + timestamp.encode() + b"." + body
    expected = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest())
    for candidate in headers["webhook-signature"].split(" "):
        version, _, sig = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(sig.encode(), expected):
            return True
    return False


@pytest.fixture
def receiver(settings):
    with FakeServer(Reply(204, b"")) as server:
        settings.ONRAMP_WEBHOOK_URL = f"{server.url}/hooks/onramp"
        settings.ONRAMP_WEBHOOK_SECRETS = [NEW_SECRET]
        settings.ONRAMP_WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
        settings.ONRAMP_HTTP_TIMEOUT_SECONDS = 0.5
        yield server


@pytest.fixture
def due_webhook(api, timeline):
    template_save(
        slug="hook", channel="webhook", subject="Stalled", body="{{ first_name }} is stuck"
    )
    make_rule(
        "trial-hook",
        {
            "trigger": {"kind": "event", "event": "Trial Ending"},
            "follow_ups": [{"channel": "webhook", "template": "hook", "delay": "0s"}],
            "reentry": {"once_per": "1m"},
        },
    )
    identify = {
        "type": "identify",
        "userId": "u1",
        "traits": {"first_name": "Ada", "email": "ada@example.com", "plan": "pro"},
        "messageId": "id-u1",
        "timestamp": (T0 - M).isoformat(),
    }
    assert api.post("/v1/identify", json.dumps(identify), content_type="application/json")
    timeline.send(T0, "u1", "Trial Ending")
    timeline.tick(T0 + M)


def test_signed_json_with_standard_webhooks_headers(receiver, due_webhook):
    assert deliver_due(now=T0 + M).sent == 1
    [request] = receiver.requests
    message = Message.objects.get()
    assert request.path == "/hooks/onramp"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["webhook-id"] == message.idempotency_key
    assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 60
    assert verify(NEW_SECRET, request.headers, request.body)
    assert not verify(OLD_SECRET, request.headers, request.body)
    assert not verify(NEW_SECRET, request.headers, request.body.replace(b"Ada", b"Eve"))
    document = json.loads(request.body)
    assert document["type"] == "onramp.follow_up"
    assert document["id"] == message.idempotency_key
    assert document["rule"] == "trial-hook"
    assert document["person"]["external_id"] == "u1"
    assert document["person"]["email"] == "ada@example.com"
    assert document["person"]["traits"]["plan"] == "pro"
    assert document["message"] == {
        "id": message.pk,
        "channel": "webhook",
        "step": 0,
        "subject": "Stalled",
        "body": "Ada is stuck",
    }
    assert document["sent_at"].startswith("2026-11-02T09:01:00")
    assert message.status == "sent" and message.provider_id.startswith("webhook:204:")


def test_rotation_signs_with_every_secret(receiver, due_webhook, settings):
    settings.ONRAMP_WEBHOOK_SECRETS = [NEW_SECRET, OLD_SECRET]
    deliver_due(now=T0 + M)
    [request] = receiver.requests
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    assert verify(NEW_SECRET, request.headers, request.body)
    assert verify(OLD_SECRET, request.headers, request.body)


def test_webhook_id_is_stable_across_a_retry_after_a_500(receiver, due_webhook):
    receiver.replies.append(Reply(500, b"boom"))
    assert deliver_due(now=T0 + M).outcomes["retry"] == 1
    message = Message.objects.get()
    assert (message.status, message.attempts) == ("scheduled", 1)
    time.sleep(1.1)  # a new second, so the timestamp (and signature) of the retry differ
    deliver_due(now=message.next_attempt_at)
    first, second = receiver.requests
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == message.idempotency_key
    assert first.headers["webhook-timestamp"] != second.headers["webhook-timestamp"]
    assert verify(NEW_SECRET, second.headers, second.body)
    message.refresh_from_db()
    assert (message.status, message.attempts) == ("sent", 2)


def test_redirect_is_not_followed_and_is_permanent(receiver, due_webhook):
    receiver.replies.append(Reply(302, b"", {"Location": "http://169.254.169.254/latest/"}))
    deliver_due(now=T0 + M)
    message = Message.objects.get()
    assert message.status == "needs_review"
    assert "302" in message.last_error and "169.254.169.254" in message.last_error
    assert len(receiver.requests) == 1


def test_timeout_is_transient_and_retried(receiver, due_webhook):
    receiver.replies.append(Reply(200, delay=1.5))
    deliver_due(now=T0 + M)
    message = Message.objects.get()
    assert (message.status, message.reason) == ("scheduled", "retry")
    assert "timed out" in message.last_error


def test_410_is_permanent(receiver, due_webhook):
    receiver.replies.append(Reply(410, b"gone"))
    deliver_due(now=T0 + M)
    assert Message.objects.get().status == "needs_review"


def test_loopback_without_the_allow_list_is_refused_and_nothing_is_sent(
    receiver, due_webhook, settings
):
    settings.ONRAMP_WEBHOOK_ALLOWED_HOSTS = []
    deliver_due(now=T0 + M)
    message = Message.objects.get()
    assert message.status == "needs_review"
    assert "127.0.0.1" in message.last_error and "loopback" in message.last_error
    assert receiver.requests == []


def test_a_name_resolving_to_a_private_address_is_refused(
    receiver, due_webhook, settings, monkeypatch
):
    def resolve(host, port, family, kind):
        assert host == "hooks.example.com"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("8.8.8.8", port)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", port))]  # fmt: skip

    monkeypatch.setattr(triggers.netguard, "system_resolver", resolve)
    settings.ONRAMP_WEBHOOK_URL = "https://hooks.example.com/in"
    deliver_due(now=T0 + M)
    message = Message.objects.get()
    assert message.status == "needs_review" and "10.0.0.7" in message.last_error


def test_the_connection_goes_to_the_checked_address(receiver, due_webhook, settings, monkeypatch):
    """A name allow-listed and resolved once: the request reaches the pinned 127.0.0.1 with the
    original Host header, whatever a later lookup would say."""
    answers = iter([["127.0.0.1"], ["10.9.9.9"]])

    def resolve(host, port, family, kind):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in next(answers)]

    monkeypatch.setattr(triggers.netguard, "system_resolver", resolve)
    settings.ONRAMP_WEBHOOK_URL = f"http://hooks.internal.test:{receiver.port}/in"
    settings.ONRAMP_WEBHOOK_ALLOWED_HOSTS = ["hooks.internal.test"]
    assert deliver_due(now=T0 + M).sent == 1
    [request] = receiver.requests
    assert request.headers["host"] == f"hooks.internal.test:{receiver.port}"


@pytest.mark.parametrize(
    ("setting", "value", "error"),
    [
        ("ONRAMP_WEBHOOK_URL", "", "set ONRAMP_WEBHOOK_URL"),
        ("ONRAMP_WEBHOOK_SECRETS", [], "set ONRAMP_WEBHOOK_SECRETS"),
        ("ONRAMP_WEBHOOK_SECRETS", ["whsec_!!notbase64"], "entry 1 is invalid"),
        ("ONRAMP_WEBHOOK_URL", "ftp://127.0.0.1/x", "only http and https"),
    ],
)
def test_configuration_problems_are_permanent(
    receiver, due_webhook, settings, setting, value, error
):
    setattr(settings, setting, value)
    deliver_due(now=T0 + M)
    message = Message.objects.get()
    assert message.status == "needs_review" and error in message.last_error
    assert receiver.requests == []
