"""Support staff resolving review items: resend, switch channel, edit and send, dismiss.

Each action creates at most one new manual message (its idempotency key is derived from the
original's and the action), closes the review item and writes the audit log.
"""

from __future__ import annotations

import hashlib
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from triggers.models import Message, MessageTemplate, ReviewItem, ReviewStatus
from triggers.models.messages import MessageStatus
from triggers.rendering import MISSING_PREFIX, person_context, render_draft

from .audit import audit

MANUAL_CHANNELS = ("email", "in_app", "sms", "webhook")


def _open_item(item_id: int) -> ReviewItem:
    item = ReviewItem.objects.select_for_update().select_related("message").get(pk=item_id)
    if item.status != ReviewStatus.OPEN:
        raise ValidationError(f"This review item is already {item.get_status_display().lower()}.")
    return item


def _manual_copy(
    original: Message, *, action: str, channel: str, subject: str, body: str
) -> Message:
    key = hashlib.sha256(f"{original.idempotency_key}:{action}:{channel}".encode()).hexdigest()
    template = original.template
    if channel != original.channel:
        # The message row needs a template of its channel; the content itself is the edited text.
        template = (
            MessageTemplate.objects.filter(channel=channel).order_by("slug").first() or template
        )
    return original.successor(
        idempotency_key=key,
        channel=channel,
        template=template,
        due_at=timezone.now(),
        subject=subject,
        body=body,
        manual=True,
    )


def review_draft(item: ReviewItem) -> dict[str, str]:
    """What "Edit and send" opens with: the channel, subject and body as rendered for the person.

    A message that was rendered (an unknown outcome, a provider's refusal) gives its text as sent;
    one that never rendered (a template variable the person lacks) gives its template rendered for
    the person, each missing variable marked ``[missing: name]``."""
    message = item.message
    subject, body = message.subject, message.body
    if not body:
        draft = render_draft(
            message.template.subject, message.template.body, person_context(message.person)
        )
        subject, body = subject or draft.subject, draft.body
    return {"channel": message.channel, "subject": subject, "body": body}


def _close(item: ReviewItem, status: str, actor: Any, changes: dict[str, Any]) -> None:
    item.status = status
    item.resolved_at = timezone.now()
    item.resolved_by = actor if getattr(actor, "is_authenticated", False) else None
    item.save(update_fields=["status", "resolved_at", "resolved_by"])
    audit(actor=actor, action=f"review:{status}", obj=item, changes=changes)


@transaction.atomic
def review_resend(*, item_id: int, actor: Any) -> Message:
    """Send the message again as it was rendered, on the same channel."""
    item = _open_item(item_id)
    original = item.message
    subject, body = original.subject, original.body
    if not body:
        raise ValidationError("This message was never rendered; use “edit and send” instead.")
    message = _manual_copy(
        original, action="resend", channel=original.channel, subject=subject, body=body
    )
    _close(item, ReviewStatus.RESENT, actor, {"new_message": message.pk})
    return message


@transaction.atomic
def review_edit_and_send(
    *, item_id: int, actor: Any, channel: str, subject: str, body: str
) -> Message:
    """Send text written (or corrected) by support staff, on the chosen channel."""
    if channel not in MANUAL_CHANNELS:
        raise ValidationError({"channel": [f"must be one of {', '.join(MANUAL_CHANNELS)}"]})
    if not body.strip():
        raise ValidationError({"body": ["The message is empty."]})
    if channel == "email" and not subject.strip():
        raise ValidationError({"subject": ["An email needs a subject."]})
    unfilled = {
        field: [f"Replace each “{MISSING_PREFIX}…]” with the text to send."]
        for field, text in (("subject", subject), ("body", body))
        if MISSING_PREFIX in text
    }
    if unfilled:
        raise ValidationError(unfilled)
    item = _open_item(item_id)
    original = item.message
    message = _manual_copy(original, action="edit", channel=channel, subject=subject, body=body)
    status = ReviewStatus.SWITCHED if channel != original.channel else ReviewStatus.RESENT
    _close(item, status, actor, {"new_message": message.pk, "channel": [original.channel, channel]})
    return message


@transaction.atomic
def review_switch_channel(*, item_id: int, actor: Any, channel: str) -> Message:
    item = ReviewItem.objects.select_related("message").get(pk=item_id)
    original = item.message
    return review_edit_and_send(
        item_id=item_id, actor=actor, channel=channel, subject=original.subject, body=original.body
    )


@transaction.atomic
def review_dismiss(*, item_id: int, actor: Any, note: str = "") -> ReviewItem:
    item = _open_item(item_id)
    if item.message.status == MessageStatus.NEEDS_REVIEW:
        Message.objects.filter(pk=item.message_id).update(
            status=MessageStatus.CANCELLED, reason="dismissed"
        )
    _close(item, ReviewStatus.DISMISSED, actor, {"note": note} if note else {})
    return item
