"""Webhooks with Standard Webhooks signatures (being written; see triggers/channels/base.py)."""

from __future__ import annotations

from .base import Channel, TransportError, register


@register
class WebhookChannel(Channel):
    name = "webhook"
    at_most_once = False

    def send(self, message, person):
        raise TransportError("the webhook channel is not configured", permanent=True)
