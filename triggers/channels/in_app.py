"""In-app messages: sending is committing the message row as sent; the widget fetches it.

Because the "send" is the same transaction as the ledger update, delivery is exactly once.
"""

from __future__ import annotations

from .base import Channel, SendResult


class InAppChannel(Channel):
    name = "in_app"
    at_most_once = False
    in_database = True

    def send(self, message, person) -> SendResult:
        return SendResult(provider_id=f"in_app:{message.pk}")
