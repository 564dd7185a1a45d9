"""What a delivery pass records: the decision log, and the outcomes that end an attempt without a
send (suppressed, cancelled, deferred, fallback, review), plus the sweeper for expired leases."""

from __future__ import annotations

import hashlib
import logging
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import transaction

from triggers.channels import channel_for
from triggers.channels.base import SendResult
from triggers.models import DecisionLog, Message, MessageTemplate, ReviewItem
from triggers.models.messages import MessageStatus
from triggers.rules.spec import RuleSpec

logger = logging.getLogger(__name__)


# Delivery outcomes (a pass's report and the decision log's) as /metrics names them
# (config.metrics.MESSAGE_OUTCOMES): a failed attempt is "failed" whether it is retried later or
# falls back to another channel; shadow sends are suppressed. The operator's page maps with it too.
METRIC_OUTCOMES = {
    "sent": "sent",
    "suppressed": "suppressed",
    "shadow": "suppressed",
    "deferred": "deferred",
    "cancelled": "cancelled",
    "skipped": "cancelled",
    "unknown": "unknown",
    "needs_review": "review",
    "review": "review",
    "fallback": "failed",
    "retry": "failed",
}


@dataclass
class DeliveryReport:
    outcomes: Counter = field(default_factory=Counter)
    # (channel, outcome as /metrics names it) → count
    by_channel: Counter = field(default_factory=Counter)

    def add(self, outcome: str, message: Message) -> None:
        self.outcomes[outcome] += 1
        self.by_channel[message.channel, METRIC_OUTCOMES.get(outcome, outcome)] += 1

    def merge(self, other: DeliveryReport) -> None:
        """Add the counts of another part of the same pass (a claim in the writer thread)."""
        self.outcomes.update(other.outcomes)
        self.by_channel.update(other.by_channel)

    @property
    def sent(self) -> int:
        return self.outcomes["sent"]


ACCEPTED = "accepted"  # the acceptance mark of a success whose provider gave no id


def accepted_mark(result: SendResult) -> str:
    """What the hand-over writes into ``provider_id`` for a message its provider accepted (see
    ``pipeline._hand``): never empty, since an empty ``provider_id`` on a handed row means that
    no answer was recorded."""
    return result.provider_id[:255] or ACCEPTED


def decision(message: Message, now: datetime, outcome: str, reason: str = "", **detail):
    return DecisionLog(
        at=now,
        person_id=message.person_id,
        rule_id=message.rule_id,
        rule_version_id=message.rule_version_id,
        enrollment_id=message.enrollment_id,
        message=message,
        outcome=outcome,
        reason=reason,
        detail={"channel": message.channel, "step": message.step, **detail},
    )


def log_decision(message: Message, now: datetime, outcome: str, reason: str = "", **detail) -> None:
    decision(message, now, outcome, reason, **detail).save()


def backoff(attempts: int) -> timedelta:
    base = min(3600, 30 * 2 ** max(0, attempts - 1))
    return timedelta(seconds=base * random.uniform(0.8, 1.2))


def to_review(
    message: Message, now: datetime, reason: str, detail: str, report: DeliveryReport
) -> None:
    message.status = MessageStatus.NEEDS_REVIEW
    message.reason = reason[:64]
    message.lease_until = None
    message.save(update_fields=["status", "reason", "lease_until"])
    ReviewItem.objects.get_or_create(
        message=message, defaults={"reason": reason[:64], "detail": detail}
    )
    log_decision(message, now, "review", reason, error=detail[:500])
    report.add("needs_review", message)


def fall_back(
    message: Message,
    spec: RuleSpec | None,
    now: datetime,
    reason: str,
    detail: str,
    report: DeliveryReport,
) -> None:
    """The rule's fallback channel if it has one (once), else a review item for support staff."""
    fallback = spec.fallback if spec else None
    if (
        fallback is None
        or message.fallback_of_id is not None
        or fallback.channel == message.channel
    ):
        to_review(message, now, reason, detail, report)
        return
    template = MessageTemplate.objects.filter(slug=fallback.template).first()
    if template is None:
        to_review(message, now, reason, f"{detail}; fallback template missing", report)
        return
    message.status = MessageStatus.FAILED
    message.reason = reason[:64]
    message.lease_until = None
    message.save(update_fields=["status", "reason", "lease_until"])
    key = hashlib.sha256(f"{message.idempotency_key}:fallback".encode()).hexdigest()
    message.successor(idempotency_key=key, channel=fallback.channel, template=template, due_at=now)
    log_decision(message, now, "fallback", reason, to=fallback.channel, error=detail[:500])
    report.add("fallback", message)


def settle(
    message: Message,
    *,
    status: str,
    reason: str,
    now: datetime,
    report: DeliveryReport,
    outcome: str,
    log_reason: str,
    fields: tuple[str, ...] = (),
    log_outcome: str | None = None,
    **detail,
) -> None:
    """A final (or deferred) outcome decided by the checks: no send. The decision log says
    ``log_outcome`` when given (an exit found at send time is logged as the enrollment's exit),
    else ``outcome``."""
    message.status, message.reason = status, reason
    message.save(update_fields=["status", "reason", *fields])
    log_decision(message, now, log_outcome or outcome, log_reason, **detail)
    report.add(outcome, message)


def _log_lease_expired(message: Message, what: str) -> None:
    logger.warning(
        "message %s (%s): its worker stopped mid-send, lease expired; %s",
        message.pk,
        message.channel,
        what,
        extra={
            "message_id": message.pk,
            "rule": message.rule.slug,
            "person_id": message.person_id,
            "channel": message.channel,
        },
    )


def sweep_expired_leases(now: datetime, report: DeliveryReport) -> None:
    """Messages stuck in "sending" past their lease: their worker died or stalled.

    A message marked as handed whose provider's acceptance was recorded too (a ``provider_id``,
    written by the next message's hand-over) is ``sent``: its worker died before the end of its
    batch wrote that. An email or SMS marked as handed with no recorded answer (its provider call
    had begun) may have reached the person: ``unknown``, with a review item, never retried
    blindly. Anything else was never
    handed to a provider (or may be sent again: webhooks, same ``webhook-id``), so it is due again
    at once and the next claim sends it, with no review."""
    stuck = Message.objects.filter(status=MessageStatus.SENDING, lease_until__lt=now)
    for pk in stuck.values_list("pk", flat=True):
        with transaction.atomic():
            current = (
                Message.objects.select_for_update()
                .filter(pk=pk, status=MessageStatus.SENDING)
                .first()
            )
            if current is None or current.lease_until is None or current.lease_until >= now:
                continue
            if current.handed_at is not None and current.provider_id:
                # Its provider accepted it (the next hand-over recorded that), and the worker
                # stopped before the end of its batch wrote "sent": it is sent.
                current.status, current.reason = MessageStatus.SENT, ""
                current.lease_until = None
                if current.provider_id == ACCEPTED:
                    current.provider_id = ""
                current.save(update_fields=["status", "reason", "lease_until", "provider_id"])
                log_decision(current, current.sent_at or now, "sent", recorded_by="sweeper")
                _log_lease_expired(current, "its provider had accepted it: sent")
                report.add("sent", current)
            elif current.handed_at is not None and channel_for(current.channel).at_most_once:
                current.status, current.reason = MessageStatus.UNKNOWN, "unknown_outcome"
                current.lease_until = None
                current.save(update_fields=["status", "reason", "lease_until"])
                ReviewItem.objects.get_or_create(
                    message=current,
                    defaults={
                        "reason": "unknown_outcome",
                        "detail": "The worker stopped while the provider call was in progress "
                        "(or before recording its result); the message may or may not have "
                        "been delivered.",
                    },
                )
                log_decision(current, now, "unknown", "lease_expired")
                _log_lease_expired(current, "unknown: sent to review")
                report.add("unknown", current)
            else:
                handed = current.handed_at is not None
                current.status, current.reason = MessageStatus.SCHEDULED, "retry"
                current.lease_until, current.next_attempt_at = None, now
                current.sent_at, current.handed_at = None, None
                current.save(
                    update_fields=[
                        "status",
                        "reason",
                        "lease_until",
                        "next_attempt_at",
                        "sent_at",
                        "handed_at",
                    ]
                )
                log_decision(current, now, "retry", "lease_expired", handed=handed)
                _log_lease_expired(current, "scheduled again")
                report.add("retry", current)
