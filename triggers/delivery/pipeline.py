"""Delivering due follow-ups (DESIGN §4.5).

Each message is handled under a row lock on the message (``SKIP LOCKED`` on PostgreSQL, so
workers never work on the same one) and a lock on the person (so frequency caps hold when workers
race), with the checks in this order: rule still active → consent → exit / goal → caps → quiet
hours → render → ledger → channel. Every outcome is written to the decision log.

The ledger update ("sending", attempt N) is committed *before* an external provider is called,
and the result is recorded afterwards only if the row still says attempt N. A crash in between
leaves a "sending" row whose lease expires: email and SMS are then marked ``unknown`` and go to
manual review (never retried blindly: their providers' calls are not idempotent); webhooks are
retried with the same ``webhook-id``. In-app messages are "sent" by committing the row itself.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Q
from django.utils import timezone

from onboarding.models import FlowProgress, Person
from triggers.channels import TransportError, channel_for
from triggers.engine.timing import parse_quiet_hours, quiet_until
from triggers.models import DecisionLog, Message, MessageTemplate, ReviewItem, RuleStatus
from triggers.models.messages import PENDING_STATUSES, MessageStatus
from triggers.models.rules import EnrollmentStatus
from triggers.rendering import TemplateProblem, person_context, render
from triggers.rules.spec import RuleSpec, parse_rule

logger = logging.getLogger(__name__)

CAPPED_STATUSES = (MessageStatus.SENT, MessageStatus.SENDING, MessageStatus.UNKNOWN)


@dataclass
class DeliveryReport:
    outcomes: Counter = field(default_factory=Counter)

    def add(self, outcome: str) -> None:
        self.outcomes[outcome] += 1

    @property
    def sent(self) -> int:
        return self.outcomes["sent"]


def _log(message: Message, now: datetime, outcome: str, reason: str = "", **detail) -> None:
    DecisionLog.objects.create(
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


def _backoff(attempts: int) -> timedelta:
    base = min(3600, 30 * 2 ** max(0, attempts - 1))
    return timedelta(seconds=base * random.uniform(0.8, 1.2))


def _lock_message(pk: int) -> Message | None:
    rows = Message.objects.filter(pk=pk, status__in=PENDING_STATUSES).select_related(
        "rule", "rule_version", "template", "enrollment"
    )
    if connection.vendor == "postgresql":
        rows = rows.select_for_update(skip_locked=True, of=("self",))
    else:
        rows = rows.select_for_update()
    return rows.first()


def _exit_reason(message: Message, spec: RuleSpec) -> str | None:
    if message.enrollment.status == EnrollmentStatus.EXITED:
        return message.enrollment.exit_reason or "exited"
    flow = spec.trigger.flow
    if spec.exit_when == "never" or not flow:
        return None
    progress = (
        FlowProgress.objects.filter(flow__slug=flow, person_id=message.person_id)
        .values("furthest_step", "completed_at")
        .first()
    )
    if progress is None:
        return None
    if progress["completed_at"] is not None:
        return "completed"
    before = (message.enrollment.context or {}).get("furthest_step")
    if spec.exit_when == "progressed" and before is not None and progress["furthest_step"] > before:
        return "progressed"
    return None


def _cap_reason(message: Message, spec: RuleSpec, now: datetime) -> str | None:
    """Counted from the ledger, under the person's lock: one query for both caps."""
    period = timedelta(seconds=settings.ONRAMP_GLOBAL_CAP_PERIOD)
    counts = {"global": Count("pk", filter=Q(sent_at__gt=now - period))}
    if spec.cap_max is not None and spec.cap_per is not None:
        since = now - timedelta(seconds=spec.cap_per)
        counts["rule"] = Count("pk", filter=Q(rule_id=message.rule_id, sent_at__gt=since))
    found = Message.objects.filter(
        person_id=message.person_id, status__in=CAPPED_STATUSES
    ).aggregate(**counts)
    if found["global"] >= settings.ONRAMP_GLOBAL_CAP_MAX:
        return "cap:global"
    if "rule" in found and found["rule"] >= spec.cap_max:
        return "cap:rule"
    return None


# Parsed rule specs, kept for the life of the process. Keyed by the definition's text, not only the
# version id: an id can come back after a rolled-back insert (SQLite), a definition cannot lie.
_SPECS: dict[str, RuleSpec | None] = {}


def _spec(message: Message) -> RuleSpec | None:
    key = json.dumps(message.rule_version.definition, sort_keys=True)
    if key not in _SPECS:
        if len(_SPECS) > 5000:
            _SPECS.clear()
        _SPECS[key] = parse_rule(message.rule_version.definition)[0]
    return _SPECS[key]


def _to_review(
    message: Message, now: datetime, reason: str, detail: str, report: DeliveryReport
) -> None:
    message.status = MessageStatus.NEEDS_REVIEW
    message.reason = reason[:64]
    message.lease_until = None
    message.save(update_fields=["status", "reason", "lease_until"])
    ReviewItem.objects.get_or_create(
        message=message, defaults={"reason": reason[:64], "detail": detail}
    )
    _log(message, now, "review", reason, error=detail[:500])
    report.add("needs_review")


def _fall_back(
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
        _to_review(message, now, reason, detail, report)
        return
    template = MessageTemplate.objects.filter(slug=fallback.template).first()
    if template is None:
        _to_review(message, now, reason, f"{detail}; fallback template missing", report)
        return
    message.status = MessageStatus.FAILED
    message.reason = reason[:64]
    message.lease_until = None
    message.save(update_fields=["status", "reason", "lease_until"])
    key = hashlib.sha256(f"{message.idempotency_key}:fallback".encode()).hexdigest()
    Message.objects.get_or_create(
        idempotency_key=key,
        defaults={
            "enrollment_id": message.enrollment_id,
            "rule_id": message.rule_id,
            "rule_version_id": message.rule_version_id,
            "person_id": message.person_id,
            "step": message.step,
            "channel": fallback.channel,
            "template": template,
            "due_at": now,
            "fallback_of": message,
        },
    )
    _log(message, now, "fallback", reason, to=fallback.channel, error=detail[:500])
    report.add("fallback")


def _prepare(pk: int, now: datetime, report: DeliveryReport) -> tuple[Message, Person] | None:
    """Run the checks and write the ledger; returns what still needs an external send."""
    message = _lock_message(pk)
    if (
        message is None
        or message.due_at > now
        or (message.next_attempt_at and message.next_attempt_at > now)
    ):
        return None
    if message.rule.status != RuleStatus.ACTIVE and not message.manual:
        if message.rule.status == RuleStatus.ARCHIVED:
            message.status, message.reason = MessageStatus.CANCELLED, "rule:archived"
            message.save(update_fields=["status", "reason"])
            _log(message, now, "cancelled", "archived")
            report.add("cancelled")
        return None  # paused: the message waits for the rule to resume
    person = Person.objects.select_for_update().get(pk=message.person_id)
    spec = _spec(message)
    if spec is None:
        _to_review(message, now, "invalid_rule", "the rule version no longer validates", report)
        return None
    channel = channel_for(message.channel)

    consent = person.consent or {}
    if consent.get("all") is False or consent.get(message.channel) is False:
        message.status, message.reason = MessageStatus.SUPPRESSED, "consent"
        message.save(update_fields=["status", "reason"])
        _log(message, now, "suppressed", "consent")
        report.add("suppressed")
        return None
    if channel.address(person) is None:
        _fall_back(
            message, spec, now, "no_address", f"the person has no {message.channel} address", report
        )
        return None
    if message.manual:
        return _write_ledger(message, person, channel, now, report)
    exit_reason = _exit_reason(message, spec)
    if exit_reason:
        message.status, message.reason = MessageStatus.CANCELLED, f"exit:{exit_reason}"
        message.save(update_fields=["status", "reason"])
        _log(message, now, "cancelled", exit_reason)
        report.add("cancelled")
        return None
    cap = _cap_reason(message, spec, now)
    if cap:
        message.status, message.reason = MessageStatus.SUPPRESSED, cap
        message.save(update_fields=["status", "reason"])
        _log(message, now, "suppressed", cap)
        report.add("suppressed")
        return None
    quiet = spec.quiet_hours or parse_quiet_hours(settings.ONRAMP_QUIET_HOURS)
    resume = quiet_until(now, quiet, person.timezone)
    if resume is not None:
        message.status, message.reason, message.due_at = (
            MessageStatus.DEFERRED,
            "quiet_hours",
            resume,
        )
        message.save(update_fields=["status", "reason", "due_at"])
        _log(message, now, "deferred", "quiet_hours", until=resume.isoformat())
        report.add("deferred")
        return None
    try:
        rendered = render(
            message.template.subject,
            message.template.body,
            person_context(person),
            html=channel.html,
        )
    except TemplateProblem as problem:
        _fall_back(message, spec, now, "render", str(problem), report)
        return None

    message.subject, message.body = rendered.subject, rendered.body
    if message.rule.shadow:
        # Shadow mode: every check ran; record what would have been sent, send nothing.
        message.status, message.reason = MessageStatus.SUPPRESSED, "shadow"
        message.save(update_fields=["status", "reason", "subject", "body"])
        _log(message, now, "shadow", "would_have_sent")
        report.add("shadow")
        return None
    return _write_ledger(message, person, channel, now, report)


def _write_ledger(
    message: Message, person: Person, channel, now: datetime, report: DeliveryReport
) -> tuple[Message, Person] | None:
    """Record the attempt; an in-database channel is sent right here, others after commit."""
    message.attempts += 1
    message.sent_at = now
    if channel.in_database:
        result = channel.send(message, person)
        message.status, message.reason = MessageStatus.SENT, ""
        message.provider_id = result.provider_id
        message.save()
        _log(message, now, "sent")
        report.add("sent")
        return None
    message.status = MessageStatus.SENDING
    message.lease_until = now + timedelta(seconds=settings.ONRAMP_DELIVERY_LEASE_SECONDS)
    message.save()
    return message, person


def deliver_message(
    pk: int, *, now: datetime | None = None, report: DeliveryReport | None = None
) -> DeliveryReport:
    """Deliver one due message (a no-op if it is not due, or another worker holds it)."""
    now = now or timezone.now()
    report = report or DeliveryReport()
    with transaction.atomic():
        prepared = _prepare(pk, now, report)
    if prepared is None:
        return report
    message, person = prepared
    spec = _spec(message)
    attempt = message.attempts
    try:
        result = channel_for(message.channel).send(message, person)
    except TransportError as error:
        with transaction.atomic():
            current = Message.objects.select_for_update().get(pk=message.pk)
            if current.status != MessageStatus.SENDING or current.attempts != attempt:
                return report  # the sweeper or another attempt took over
            current.last_error = str(error)[:2000]
            current.lease_until = None
            if getattr(error, "unknown", False):
                # The provider may have the message (no answer after sending): never retry, never
                # fall back to another channel; a person decides. Counts toward caps (sent_at kept).
                current.status, current.reason = MessageStatus.UNKNOWN, "unknown_outcome"
                current.save()
                ReviewItem.objects.get_or_create(
                    message=current, defaults={"reason": "unknown_outcome", "detail": str(error)}
                )
                _log(current, now, "unknown", "no_answer", error=str(error)[:500], attempt=attempt)
                report.add("unknown")
                return report
            if not error.permanent and attempt < settings.ONRAMP_DELIVERY_MAX_ATTEMPTS:
                delay = (
                    timedelta(seconds=error.retry_after) if error.retry_after else _backoff(attempt)
                )
                current.status, current.reason = MessageStatus.SCHEDULED, "retry"
                current.next_attempt_at = now + delay
                current.sent_at = None
                current.save()
                _log(current, now, "retry", "transient", error=str(error)[:500], attempt=attempt)
                report.add("retry")
            else:
                current.sent_at = None
                current.save()
                reason = "permanent_error" if error.permanent else "retries_exhausted"
                _fall_back(current, spec, now, reason, str(error), report)
        return report
    with transaction.atomic():
        if connection.vendor == "postgresql":
            # Recording the success need not wait for the disk: if this commit is lost in a crash,
            # the row stays "sending", its lease expires and it goes to review as unknown. It is
            # never sent twice. (The "sending" ledger write before the call is synchronous.)
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL synchronous_commit = off")
        updated = Message.objects.filter(
            pk=message.pk, status=MessageStatus.SENDING, attempts=attempt
        ).update(
            status=MessageStatus.SENT,
            provider_id=result.provider_id[:255],
            lease_until=None,
            reason="",
        )
        if updated:
            _log(message, now, "sent")
            report.add("sent")
    return report


def sweep_expired_leases(now: datetime, report: DeliveryReport) -> None:
    """Messages stuck in "sending" past their lease: the worker died mid-send."""
    stuck = Message.objects.filter(status=MessageStatus.SENDING, lease_until__lt=now)
    for message in stuck.select_related("rule_version"):
        with transaction.atomic():
            current = (
                Message.objects.select_for_update()
                .filter(pk=message.pk, status=MessageStatus.SENDING)
                .first()
            )
            if current is None or current.lease_until is None or current.lease_until >= now:
                continue
            if channel_for(current.channel).at_most_once:
                current.status, current.reason, current.lease_until = (
                    MessageStatus.UNKNOWN,
                    "unknown_outcome",
                    None,
                )
                current.save(update_fields=["status", "reason", "lease_until"])
                ReviewItem.objects.get_or_create(
                    message=current,
                    defaults={
                        "reason": "unknown_outcome",
                        "detail": "The worker stopped between calling the provider and recording the result; "
                        "the message may or may not have been delivered.",
                    },
                )
                _log(current, now, "unknown", "lease_expired")
                report.add("unknown")
            else:
                current.status, current.reason = MessageStatus.SCHEDULED, "retry"
                current.lease_until, current.next_attempt_at, current.sent_at = None, now, None
                current.save(
                    update_fields=["status", "reason", "lease_until", "next_attempt_at", "sent_at"]
                )
                _log(current, now, "retry", "lease_expired")
                report.add("retry")


def due_message_ids(now: datetime, limit: int) -> list[int]:
    """Due messages of active rules, higher-priority rules first (arbitration under caps)."""
    return list(
        Message.objects.filter(status__in=PENDING_STATUSES, due_at__lte=now)
        .filter(Q(rule__status=RuleStatus.ACTIVE) | Q(manual=True))
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .order_by("-rule__priority", "due_at", "pk")
        .values_list("pk", flat=True)[:limit]
    )


def deliver_due(
    *, now: datetime | None = None, limit: int | None = None, time_budget: float = 50.0
) -> DeliveryReport:
    """One delivery pass: sweep expired leases, then deliver what is due, within a time budget."""
    from django.core.mail import get_connection

    from triggers.channels.email import EmailChannel

    # A pinned ``now`` (tests, replays) stays fixed; otherwise each message reads the clock, so
    # that a lease written late in a long pass runs from its own send, not from the pass's start
    # (a lease already expired when written lets another worker's sweeper take the message).
    clock = (lambda: now) if now is not None else timezone.now
    report = DeliveryReport()
    sweep_expired_leases(clock(), report)
    started = time.monotonic()
    mail = get_connection()
    EmailChannel.connection = mail
    try:
        seen: set[int] = set()
        while time.monotonic() - started < time_budget:
            ids = [
                pk
                for pk in due_message_ids(clock(), limit or settings.ONRAMP_DELIVERY_BATCH)
                if pk not in seen
            ]
            if not ids:
                break
            for pk in ids:
                seen.add(pk)
                deliver_message(pk, now=clock(), report=report)
                if time.monotonic() - started >= time_budget:
                    break
    finally:
        EmailChannel.connection = None
        try:
            mail.close()
        except Exception:  # a broken SMTP connection must not hide the pass's results
            logger.warning("closing the SMTP connection failed", exc_info=True)
    return report
