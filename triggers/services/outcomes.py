"""Recording what recipients did with a message: opened, clicked, seen, dismissed, unsubscribed."""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.utils import timezone

from onboarding.models import Person
from triggers.models import DecisionLog, Message

OUTCOME_FIELDS = {
    "opened": "opened_at",
    "clicked": "clicked_at",
    "seen": "seen_at",
    "dismissed": "dismissed_at",
}


def message_record_outcome(*, message_id: int, outcome: str, now: datetime | None = None) -> bool:
    """Set the outcome's time once (the first report wins); a click also counts as an open."""
    now = now or timezone.now()
    field = OUTCOME_FIELDS[outcome]
    updated = Message.objects.filter(pk=message_id, **{f"{field}__isnull": True}).update(
        **{field: now}
    )
    if outcome == "clicked":
        Message.objects.filter(pk=message_id, opened_at__isnull=True).update(opened_at=now)
    return bool(updated)


@transaction.atomic
def person_unsubscribe(*, message_id: int, now: datetime | None = None) -> Message | None:
    """Withdraw consent for the channel the message came through; pending follow-ups on that
    channel are then suppressed at send time."""
    now = now or timezone.now()
    message = Message.objects.select_related("person").filter(pk=message_id).first()
    if message is None:
        return None
    person = Person.objects.select_for_update().get(pk=message.person_id)
    if person.consent.get(message.channel) is not False:
        person.consent = {**person.consent, message.channel: False}
        person.save(update_fields=["consent"])
        DecisionLog.objects.create(
            at=now,
            person=person,
            rule_id=message.rule_id,
            rule_version_id=message.rule_version_id,
            enrollment_id=message.enrollment_id,
            message=message,
            outcome="unsubscribed",
            reason=message.channel,
        )
    return message
