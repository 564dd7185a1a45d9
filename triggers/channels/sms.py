"""SMS through a Twilio-compatible HTTP API (the base URL is configurable).

``POST {ONRAMP_SMS_BASE_URL}/2010-04-01/Accounts/{SID}/Messages.json`` with the form fields
``To``, ``From`` and ``Body`` and HTTP Basic auth (account SID, auth token); the provider id is the
``sid`` of the JSON answer. Twilio's message API is not idempotent (a retried POST can send twice),
so SMS is at most once: an answer that never came is :class:`~.http.OutcomeUnknown`, not retried.

The base URL goes through the same SSRF guard as webhooks (:mod:`triggers.netguard`): before each
attempt its host is resolved and refused (permanently: fallback or review, nothing sent, no
credentials leave) if any address is loopback, private, link-local, metadata and so on, unless the
host is in ``ONRAMP_SMS_ALLOWED_HOSTS``; the request then goes to the checked address.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import quote, urlencode

import urllib3
from django.conf import settings

from triggers.netguard import Refused, Unresolved, check_url

from .base import SendResult, TransportError
from .http import HttpChannel, HttpResponse

logger = logging.getLogger(__name__)

E164 = re.compile(r"\+[1-9]\d{1,14}")
_SEPARATORS = re.compile(r"[\s().\-]")
# Twilio answers 429 with code 20429 ("Too Many Requests"); everything else in 4xx is the request.
TRANSIENT_PROVIDER_CODES = frozenset({20429})


def e164(phone: str) -> str | None:
    """The number in E.164 (``+14155550100``), tolerating spaces, dots, dashes and parentheses."""
    candidate = _SEPARATORS.sub("", phone or "")
    return candidate if E164.fullmatch(candidate) else None


class SmsChannel(HttpChannel):
    name = "sms"
    at_most_once = True

    def address(self, person) -> str | None:
        return person.phone or None

    def describe_error(self, response: HttpResponse) -> str:
        error = response.json() or {}
        code, text = error.get("code"), error.get("message")
        if code or text:
            return (
                f"SMS provider error {code or '?'} (HTTP {response.status}): {text or ''}".strip()
            )
        return super().describe_error(response)

    def permanent_for(self, response: HttpResponse) -> bool:
        code = (response.json() or {}).get("code")
        if code in TRANSIENT_PROVIDER_CODES:
            return False
        return super().permanent_for(response)

    def send(self, message, person) -> SendResult:
        sid = settings.ONRAMP_SMS_ACCOUNT_SID
        token = settings.ONRAMP_SMS_AUTH_TOKEN
        sender = settings.ONRAMP_SMS_FROM
        missing = [
            name
            for name, value in (
                ("ONRAMP_SMS_ACCOUNT_SID", sid),
                ("ONRAMP_SMS_AUTH_TOKEN", token),
                ("ONRAMP_SMS_FROM", sender),
            )
            if not value
        ]
        if missing:
            raise TransportError(
                f"SMS is not configured (set {', '.join(missing)})", permanent=True
            )
        to = e164(person.phone)
        if to is None:
            raise TransportError(
                f"the phone number {person.phone!r} is not in E.164 format (+ country code and "
                "number, such as +14155550100)",
                permanent=True,
            )
        base = settings.ONRAMP_SMS_BASE_URL.rstrip("/")
        url = f"{base}/2010-04-01/Accounts/{quote(sid, safe='')}/Messages.json"
        try:
            target = check_url(
                url,
                allowed_hosts=settings.ONRAMP_SMS_ALLOWED_HOSTS,
                allow_setting="ONRAMP_SMS_ALLOWED_HOSTS",
            )
        except Refused as refusal:
            raise TransportError(f"SMS provider URL: {refusal}", permanent=True) from None
        except Unresolved as problem:
            raise TransportError(f"SMS provider URL: {problem}") from None
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
            **urllib3.make_headers(basic_auth=f"{sid}:{token}"),
        }
        body = urlencode({"To": to, "From": sender, "Body": message.body}).encode()
        response = self.post(target, body=body, headers=headers)
        provider_id = str((response.json() or {}).get("sid") or "")
        if not provider_id:
            # Accepted (2xx), so it must not be retried; note the odd answer for support staff.
            logger.warning(
                "SMS provider accepted message %s without a sid (HTTP %s)",
                message.pk,
                response.status,
            )
        return SendResult(provider_id=provider_id)
