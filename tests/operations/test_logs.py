"""Logs carry no personal data, whatever the format (issue 21): no email address, no trait value,
no write key; in JSON every line is one object, with the request id, and with the rule, message
id and person id where they apply.

The journey runs in this process through the tracking API, a rule tick and a delivery pass whose
SMTP server refuses the recipient with a reply that quotes the address (a failure line), plus a
404 whose path carries the write key (Django's request logger)."""

from __future__ import annotations

import io
import json
import logging
import logging.config
from collections.abc import Iterator
from datetime import timedelta

import pytest
import time_machine
from aiosmtpd.controller import Controller
from django.conf import settings as django_settings
from django.test import Client

from config.logs import logging_config, redact
from tests.smtp import free_port
from tests.triggers.conftest import T0, Timeline, make_rule
from triggers.delivery.pipeline import deliver_due
from triggers.models import Message

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("flow", "templates")]
M = timedelta(minutes=1)
EMAIL = "zephyrine.q@example.com"
TRAITS = {"email": EMAIL, "first_name": "Zephyrine", "plan": "platinum-unicorn"}


class _RefuseRecipient:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        return f"550 5.1.1 <{address}>: Recipient address rejected"


@pytest.fixture
def refusing_smtp(settings) -> Iterator[None]:
    port = free_port()
    controller = Controller(_RefuseRecipient(), hostname="127.0.0.1", port=port)
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", port
    settings.EMAIL_USE_TLS, settings.EMAIL_TIMEOUT = False, 5
    try:
        yield
    finally:
        controller.stop()


def captured(log_format: str) -> Iterator[io.StringIO]:
    logging.config.dictConfig(logging_config(log_format=log_format, level="INFO"))
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # the test's own SMTP server
    stream = io.StringIO()
    (handler,) = logging.getLogger().handlers
    handler.setStream(stream)
    try:
        yield stream
    finally:
        logging.config.dictConfig(django_settings.LOGGING)


@pytest.fixture(params=["json", "plain"])
def log_output(request) -> Iterator[tuple[str, io.StringIO]]:
    for stream in captured(request.param):
        yield request.param, stream


def test_logs_carry_no_personal_data(
    log_output, timeline: Timeline, write_key: str, api: Client, refusing_smtp
) -> None:
    log_format, stream = log_output
    make_rule(
        "trial",
        {
            "trigger": {"kind": "event", "event": "Trial Ending"},
            "follow_ups": [{"channel": "email", "template": "reminder", "delay": "0s"}],
        },
    )
    identify = {"type": "identify", "userId": "u1", "traits": TRAITS, "messageId": "i1"}
    with time_machine.travel(T0, tick=False):
        response = api.post("/v1/identify", identify, content_type="application/json")
        assert response.status_code == 200
        not_found = Client(HTTP_X_REQUEST_ID="req-42").get(f"/v1/projects/{write_key}/settings/x")
        assert not_found.status_code == 404
        assert not_found["X-Request-ID"] == "req-42"
    timeline.send(T0, "u1", "Trial Ending")
    timeline.tick(T0 + M)
    deliver_due(now=T0 + M)
    message = Message.objects.get()
    assert message.status == "needs_review"
    assert EMAIL in message.last_error  # the provider's answer quotes it: kept out of the logs

    output = stream.getvalue()
    for secret in (*TRAITS.values(), write_key):
        assert secret not in output, f"{secret!r} logged in {log_format}:\n{output}"
    assert f"delivery of message {message.pk} (email) failed" in output
    assert "Not Found: /v1/projects/[key]/settings/x" in output
    if log_format == "plain":
        return

    records = [json.loads(line) for line in output.splitlines()]  # every line is one object
    failure = next(r for r in records if r["message"].startswith("delivery of message"))
    assert failure["level"] == "WARNING"
    assert (failure["message_id"], failure["rule"], failure["person_id"]) == (
        message.pk,
        "trial",
        message.person_id,
    )
    assert failure["error"] == "TransportError" and failure["permanent"] is True
    request_line = next(r for r in records if r["logger"] == "django.request")
    assert request_line["request_id"] == "req-42"
    assert request_line["status_code"] == 404
    tick = next(r for r in records if r.get("rule") == "trial" and "found" in r)
    assert (tick["found"], tick["enrolled"]) == (1, 1)
    assert tick["duration_seconds"] >= 0
    delivery = next(r for r in records if r["message"].startswith("delivery pass"))
    assert delivery["outcomes"] == {"needs_review": 1}
    assert delivery["duration_seconds"] >= 0


def test_redaction_covers_messages_arguments_and_tracebacks() -> None:
    assert redact("to ada.l@example.co.uk and onr_AbC-12_x") == "to [email] and [key]"
    assert redact("GET /v1/projects/whatever-key/settings") == "GET /v1/projects/[key]/settings"
    assert redact("celery@worker1 ready, worker0@faults") == "celery@worker1 ready, worker0@faults"
    for stream in captured("json"):
        logger = logging.getLogger("tests.logs")
        try:
            raise ValueError("bad address ada@example.com")
        except ValueError:
            logger.exception("failed for %s", "bob@example.org", extra={"person_id": 7})
        (record,) = [json.loads(line) for line in stream.getvalue().splitlines()]
        assert record["message"] == "failed for [email]"
        assert "ValueError: bad address [email]" in record["exception"]
        assert record["person_id"] == 7
        assert "@example" not in stream.getvalue()
