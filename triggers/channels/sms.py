"""SMS through a Twilio-compatible HTTP API (being written; see triggers/channels/base.py)."""

from __future__ import annotations

from .base import Channel, TransportError, register


@register
class SmsChannel(Channel):
    name = "sms"

    def address(self, person) -> str | None:
        return person.phone or None

    def send(self, message, person):
        raise TransportError("the SMS channel is not configured", permanent=True)
