"""Open and click rates of sent messages, per rule or per template, in one aggregate query.

Counted over messages *sent* (status ``sent``) in a time range, by the channels that can have
them (:data:`triggers.rules.spec.CLICK_CHANNELS`): clicks over email and in-app sends (the email
click redirect, the in-app widget's ``clicked`` report), opens over email sends only, and only
when ``ONRAMP_TRACK_OPENS`` is on (the pixel; a click also counts as an open). SMS and webhooks
have neither and are left out of both bases. Read live from the message ledger (no roll-up):
outcomes arrive after the send, and a click is counted as soon as it happens.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db.models import Count, Q

from triggers.models import Message
from triggers.models.messages import MessageStatus
from triggers.rules.spec import CLICK_CHANNELS

from .queries import Ratio

GROUPS = ("rule_id", "template_id")


def opens_tracked() -> bool:
    return bool(settings.ONRAMP_TRACK_OPENS)


@dataclass(frozen=True)
class Engagement:
    emails: int = 0
    opened: int = 0
    clickable: int = 0
    clicked: int = 0

    @property
    def opens(self) -> Ratio:
        return Ratio(self.opened, self.emails, "emails sent")

    @property
    def clicks(self) -> Ratio:
        return Ratio(self.clicked, self.clickable, "email and in-app sent")

    def __add__(self, other: Engagement) -> Engagement:
        return Engagement(
            self.emails + other.emails,
            self.opened + other.opened,
            self.clickable + other.clickable,
            self.clicked + other.clicked,
        )


NONE = Engagement()


def engagement_by(group: str, *, since: datetime, until: datetime) -> dict[int, Engagement]:
    """Per rule (``rule_id``) or template (``template_id``): messages sent in [since, until)."""
    if group not in GROUPS:
        raise ValueError(f"group must be one of {GROUPS}")
    email = Q(channel="email")
    clickable = Q(channel__in=CLICK_CHANNELS)
    rows = (
        Message.objects.filter(status=MessageStatus.SENT, sent_at__gte=since, sent_at__lt=until)
        .order_by()
        .values(group)
        .annotate(
            emails=Count("pk", filter=email),
            opened=Count("pk", filter=email & Q(opened_at__isnull=False)),
            clickable=Count("pk", filter=clickable),
            clicked=Count("pk", filter=clickable & Q(clicked_at__isnull=False)),
        )
    )
    return {
        row[group]: Engagement(row["emails"], row["opened"], row["clickable"], row["clicked"])
        for row in rows
    }


def total(engagements: Iterable[Engagement]) -> Engagement:
    return sum(engagements, NONE)
