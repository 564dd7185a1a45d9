"""Recording what recipients did with a message: opened, clicked, seen, dismissed, unsubscribed."""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.utils import timezone

from onboarding.models import Person
from triggers.models import DecisionLog, Enrollment, Message
from triggers.models.messages import PENDING_STATUSES, MessageStatus

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
    """The unsubscribe link: withdraw consent for the channel the message came through, and
    cancel every pending follow-up of that message's enrollment, on every channel (the rule
    editor promises "pending follow-ups are cancelled ... always on unsubscribe"). Each cancelled
    follow-up is in the decision log as ``cancelled``, reason ``unsubscribed``; the enrollment
    exits with the reason ``unsubscribed``.

    Lock order: the pending messages first, then the person, as the delivery pipeline does
    (messages, then people), so the two never deadlock. A follow-up that a worker is already
    sending is past pending and left to it; the pipeline's consent check, made under the
    person's lock, stops any later one on this channel.
    """
    now = now or timezone.now()
    message = Message.objects.filter(pk=message_id).first()
    if message is None:
        return None
    pending = Message.objects.filter(
        enrollment_id=message.enrollment_id, status__in=PENDING_STATUSES
    )
    cancelled = list(pending.select_for_update().values_list("pk", "rule_id", "rule_version_id"))
    if cancelled:
        Message.objects.filter(pk__in=[pk for pk, *_ in cancelled]).update(
            status=MessageStatus.CANCELLED, reason="unsubscribed"
        )
        Enrollment.objects.filter(pk=message.enrollment_id).exit("unsubscribed", now)
    person = Person.objects.select_for_update().get(pk=message.person_id)
    decisions = [
        DecisionLog(
            at=now,
            person=person,
            rule_id=rule_id,
            rule_version_id=version_id,
            enrollment_id=message.enrollment_id,
            message_id=pk,
            outcome="cancelled",
            reason="unsubscribed",
        )
        for pk, rule_id, version_id in cancelled
    ]
    if person.consent.get(message.channel) is not False:
        person.consent = {**person.consent, message.channel: False}
        person.save(update_fields=["consent"])
        decisions.insert(
            0,
            DecisionLog(
                at=now,
                person=person,
                rule_id=message.rule_id,
                rule_version_id=message.rule_version_id,
                enrollment_id=message.enrollment_id,
                message=message,
                outcome="unsubscribed",
                reason=message.channel,
            ),
        )
    DecisionLog.objects.bulk_create(decisions)
    return message
