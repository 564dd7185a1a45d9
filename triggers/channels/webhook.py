"""Webhooks: a signed JSON POST per follow-up, at least once (Standard Webhooks).

Headers: ``webhook-id`` (the message's idempotency key: the same on every retry, so receivers
deduplicate), ``webhook-timestamp`` (Unix seconds) and ``webhook-signature``: ``v1,<base64
HMAC-SHA256("{id}.{timestamp}.{body}")>`` for every configured secret (several while rotating),
space-separated. The body is signed as sent, byte for byte.

The URL is ``ONRAMP_WEBHOOK_URL``. Before each attempt its host is resolved and refused if any
address is private, loopback, link-local and so on (:mod:`triggers.netguard`), unless the host is
in ``ONRAMP_WEBHOOK_ALLOWED_HOSTS``; the request then goes to the checked address. Redirects are
never followed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time

from django.conf import settings

from triggers.netguard import Refused, Unresolved, check_url

from .base import SendResult, TransportError
from .http import HttpChannel

EVENT_TYPE = "onramp.follow_up"
SECRET_PREFIX = "whsec_"  # noqa: S105  (a prefix, not a secret)


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_``-prefixed base64 secret."""
    encoded = secret.strip()
    encoded = encoded.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not base64 after the whsec_ prefix") from None
    if len(key) < 16:
        raise ValueError("shorter than 16 bytes")
    return key


def signature(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def payload(message, person) -> dict:
    return {
        "type": EVENT_TYPE,
        "id": message.idempotency_key,
        "rule": message.rule.slug,
        "person": {
            "id": person.pk,
            "external_id": person.external_id,
            "email": person.email or None,
            "traits": person.traits or {},
        },
        "message": {
            "id": message.pk,
            "channel": message.channel,
            "step": message.step,
            "subject": message.subject,
            "body": message.body,
        },
        "sent_at": message.sent_at.isoformat() if message.sent_at else None,
    }


class WebhookChannel(HttpChannel):
    name = "webhook"
    at_most_once = False

    def send(self, message, person) -> SendResult:
        url = settings.ONRAMP_WEBHOOK_URL
        if not url:
            raise TransportError(
                "the webhook channel is not configured (set ONRAMP_WEBHOOK_URL)", permanent=True
            )
        if not settings.ONRAMP_WEBHOOK_SECRETS:
            raise TransportError(
                "webhooks are not signed without a secret (set ONRAMP_WEBHOOK_SECRETS)",
                permanent=True,
            )
        keys = []
        for position, secret in enumerate(settings.ONRAMP_WEBHOOK_SECRETS, start=1):
            try:
                keys.append(secret_key(secret))
            except ValueError as problem:
                raise TransportError(
                    f"ONRAMP_WEBHOOK_SECRETS entry {position} is invalid: {problem}",
                    permanent=True,
                ) from None
        try:
            target = check_url(url, allowed_hosts=settings.ONRAMP_WEBHOOK_ALLOWED_HOSTS)
        except Refused as refusal:
            raise TransportError(str(refusal), permanent=True) from None
        except Unresolved as problem:
            raise TransportError(str(problem)) from None

        body = json.dumps(payload(message, person), separators=(",", ":"), default=str).encode()
        webhook_id = message.idempotency_key
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "webhook-id": webhook_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": " ".join(
                signature(key, webhook_id, timestamp, body) for key in keys
            ),
        }
        response = self.post(target, body=body, headers=headers)
        return SendResult(provider_id=f"webhook:{response.status}:{webhook_id}")
