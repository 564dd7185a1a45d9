"""Delivering due follow-ups (DESIGN §4.5), a batch of messages at a time.

A pass claims up to ``ONRAMP_DELIVERY_CLAIM`` due messages in one transaction: row locks on the
messages (``SKIP LOCKED`` on PostgreSQL, so workers never work on the same one) and on their people
(in id order, so frequency caps hold when workers race), then, per message and in priority order,
the checks: rule still active → consent → exit / goal → click branch (``unless_clicked_within``)
→ caps → quiet hours → render → ledger.
Caps count the durable ledger, read under the people's locks, plus the messages this batch has
already claimed, so two messages for one person in one batch cannot both pass a cap of 1. Every
outcome is written to the decision log.

The ledger ("sending", attempt N, lease) of the whole batch is committed *before* any external
provider is called. Then, message by message, one commit right before each provider
call records the previous message's success and marks this one as handed (``handed_at``, fenced on
"sending", attempt N and a live lease; one statement on PostgreSQL); only then is the provider
called. (That commit is asynchronous on PostgreSQL unless ``ONRAMP_DELIVERY_DURABLE_MARK``: a
worker's crash cannot undo it, a crash of the database server can; see ``_mark_commits``.) So a
worker's crash leaves at most one message per worker process handed but not recorded, and the
rest of its batch unhanded.
When their leases expire, the sweeper marks a handed email or SMS ``unknown`` (manual review: their
providers' calls are not idempotent) and claims an unhanded one again, like any due message (no
review); webhooks are retried with the same ``webhook-id`` either way. In-app messages are "sent"
by committing the row itself, in the claim.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from config import metrics
from onboarding.models import Person
from triggers.channels import TransportError, channel_for
from triggers.channels.base import Channel, ChannelSet, Outgoing, SendResult
from triggers.models import DecisionLog, Enrollment, Message, ReviewItem, RuleStatus
from triggers.models.messages import PENDING_STATUSES, MessageStatus
from triggers.models.rules import EnrollmentStatus
from triggers.rendering import TemplateProblem
from triggers.rules.spec import RuleSpec

from .checks import (
    Branch,
    CapLedger,
    ClickBranch,
    ExitCheck,
    consent_refuses,
    quiet_resume,
    render_into,
    rule_spec,
)
from .outcomes import (
    DeliveryReport,
    accepted_mark,
    backoff,
    decision,
    fall_back,
    log_decision,
    settle,
    sweep_expired_leases,
    to_review,
)

__all__ = ["DeliveryReport", "deliver_due", "deliver_message", "sweep_expired_leases"]

logger = logging.getLogger(__name__)


@dataclass
class Claim:
    """A message written as "sending" by this worker, to be handed to its provider."""

    message: Message
    person: Person
    spec: RuleSpec | None
    channel: Channel
    # What the channel's ``prepare`` built, once the claim is committed (:func:`_prepare_each`),
    # or why it could not (nothing went out: a failed attempt, recorded at the message's turn).
    outgoing: Outgoing | TransportError | None = None

    @property
    def attempt(self) -> int:
        return self.message.attempts


def _prepare_each(claims: list[Claim]) -> list[Claim]:
    """Build each claimed message for its provider (``Channel.prepare``: no I/O), after the
    claim's commit and before the batch's turn to be sent. In the overlapped pass this runs in
    the writer thread while the previous batch is sent, so building an email (its HTML, signed
    links and bytes) is no longer in each send's chain of waits (mark, ``.``)."""
    for claim in claims:
        try:
            claim.outgoing = claim.channel.prepare(claim.message, claim.person)
        except TransportError as error:
            claim.outgoing = error
    return claims


def _claimed(
    pks: list[int], clock: Callable[[], datetime], report: DeliveryReport, channels: ChannelSet
) -> list[Claim]:
    """The messages among ``pks`` this worker claims (committed), each built for its provider."""
    with transaction.atomic():
        claims = _claim(pks, clock(), report, channels)
    return _prepare_each(claims)


def _outgoing(claim: Claim) -> Outgoing:
    """The claim's prepared message (:func:`_claimed` built it); raises what preparing it
    raised."""
    if isinstance(claim.outgoing, TransportError):
        raise claim.outgoing
    return claim.outgoing


def _lock_messages(pks: list[int]) -> list[Message]:
    """The still-pending messages among ``pks`` that no other worker holds, in ``pks`` order."""
    rows = Message.objects.filter(pk__in=pks, status__in=PENDING_STATUSES).select_related(
        "rule", "rule_version", "template", "enrollment"
    )
    if connection.vendor == "postgresql":
        rows = rows.select_for_update(skip_locked=True, of=("self",))
    else:
        rows = rows.select_for_update()
    order = {pk: n for n, pk in enumerate(pks)}
    return sorted(rows, key=lambda message: order[message.pk])


def _passes_checks(
    message: Message,
    person: Person,
    spec: RuleSpec | None,
    channel: Channel,
    now: datetime,
    caps: CapLedger,
    exits: ExitCheck,
    report: DeliveryReport,
    branches: ClickBranch | None = None,
) -> bool:
    """Consent → exit → click branch → caps → quiet hours → render, in that order (the rule is
    known active).

    False when the message was settled here (suppressed, cancelled, deferred, fallback, review);
    True when it is rendered and ready for the ledger."""
    if spec is None:
        to_review(message, now, "invalid_rule", "the rule version no longer validates", report)
        return False
    if consent_refuses(person, message.channel):
        settle(
            message,
            status=MessageStatus.SUPPRESSED,
            reason="consent",
            now=now,
            report=report,
            outcome="suppressed",
            log_reason="consent",
        )
        return False
    if channel.address(person) is None:
        fall_back(
            message, spec, now, "no_address", f"the person has no {message.channel} address", report
        )
        return False
    if message.manual:
        return True  # support staff decided: the stored text goes out, caps and quiet hours aside
    exit_reason = exits.reason(message, spec)
    if exit_reason:
        # Logged once: as the enrollment's exit when it ends here (what the tick logs for the
        # exits it finds), or as this follow-up's cancellation when it had ended before.
        ended = _exit_enrollment(message, exit_reason, now)
        cancelled = MessageStatus.CANCELLED
        settle(
            message,
            status=cancelled,
            reason=f"exit:{exit_reason}",
            now=now,
            report=report,
            outcome="cancelled",
            log_reason=exit_reason,
            log_outcome="exited" if ended else None,
        )
        return False
    went_on = None  # the click branch's verdict when the sequence goes on: logged once below
    if branches is not None:
        went_on = branches.verdict(message, now)
        if went_on is not None and not _click_branch(message, went_on, now, report):
            return False
    cap = caps.reason(message, spec, now)
    if cap:
        _log_went_on(message, now, went_on)
        settle(
            message,
            status=MessageStatus.SUPPRESSED,
            reason=cap,
            now=now,
            report=report,
            outcome="suppressed",
            log_reason=cap,
        )
        return False
    resume = quiet_resume(spec, person, now)
    if resume is not None:
        message.due_at = resume
        deferred = MessageStatus.DEFERRED
        fields = ("due_at",)
        until = resume.isoformat()
        settle(
            message,
            status=deferred,
            reason="quiet_hours",
            now=now,
            report=report,
            outcome="deferred",
            log_reason="quiet_hours",
            fields=fields,
            until=until,
        )
        return False  # decided again when they end (a click meanwhile skips it): logged then
    _log_went_on(message, now, went_on)
    try:
        render_into(message, person, channel)
    except TemplateProblem as problem:
        fall_back(message, spec, now, problem.reason, str(problem), report)
        return False
    if message.rule.shadow:
        # Shadow mode: every check ran; record what would have been sent, send nothing.
        shadow = MessageStatus.SUPPRESSED
        fields = ("subject", "body")
        settle(
            message,
            status=shadow,
            reason="shadow",
            now=now,
            report=report,
            outcome="shadow",
            log_reason="would_have_sent",
            fields=fields,
        )
        return False
    return True


def _exit_enrollment(message: Message, reason: str, now: datetime) -> bool:
    """The person met the rule's exit condition before the tick saw it: the enrollment exits
    here; True when it did (it was still active). The tick's exit check follows enrollments with
    a follow-up still pending: once this one is cancelled there may be none left, and the
    enrollment would stay active for good. Its later follow-ups, if any, are cancelled when they
    come due, by the same check."""
    enrollment = message.enrollment
    ended = Enrollment.objects.filter(pk=enrollment.pk).exit(reason, now)
    if ended:
        enrollment.status, enrollment.exited_at = EnrollmentStatus.EXITED, now
        enrollment.exit_reason = reason
    return bool(ended)


def _click_branch(message: Message, branch: Branch, now: datetime, report: DeliveryReport) -> bool:
    """``unless_clicked_within``: skip after a click, or wait for the click window to close;
    True when the sequence goes on (the caller logs that as ``branch`` once the message is not
    deferred, so the decision log says which way the sequence went, once)."""
    if branch.action == "skip":
        settle(
            message,
            status=MessageStatus.CANCELLED,
            reason=branch.reason,
            now=now,
            report=report,
            outcome="skipped",
            log_reason=branch.reason,
            **branch.detail,
        )
        return False
    if branch.action == "defer":
        message.due_at = branch.until
        settle(
            message,
            status=MessageStatus.DEFERRED,
            reason=branch.reason,
            now=now,
            report=report,
            outcome="deferred",
            log_reason=branch.reason,
            fields=("due_at",),
            until=branch.until.isoformat(),
            **branch.detail,
        )
        return False
    return True


def _log_went_on(message: Message, now: datetime, branch: Branch | None) -> None:
    if branch is not None:
        log_decision(message, now, "branch", branch.reason, **branch.detail)


SENT_FIELDS = ["status", "reason", "provider_id", "lease_until"]
LEDGER_FIELDS = [
    "status",
    "reason",
    "attempts",
    "sent_at",
    "lease_until",
    "provider_id",
    "handed_at",
    "subject",
    "body",
]


def _claim(
    pks: list[int],
    now: datetime,
    report: DeliveryReport,
    channels: Callable[[str], Channel] = channel_for,
) -> list[Claim]:
    """Lock, check and write the ledger for a batch, inside the caller's transaction.

    In-app messages are sent here (the commit is the send); returns the claims that still need
    their provider, whose "sending" rows the caller commits before calling it."""
    live: list[Message] = []
    for message in _lock_messages(pks):
        if message.due_at > now or (message.next_attempt_at and message.next_attempt_at > now):
            continue
        if message.rule.status == RuleStatus.ACTIVE or message.manual:
            live.append(message)
        elif message.rule.status == RuleStatus.ARCHIVED:
            archived = MessageStatus.CANCELLED
            settle(
                message,
                status=archived,
                reason="rule:archived",
                now=now,
                report=report,
                outcome="cancelled",
                log_reason="archived",
            )
        # paused: the message waits for the rule to resume
    if not live:
        return []
    people = {
        person.pk: person
        for person in Person.objects.select_for_update()
        .filter(pk__in={message.person_id for message in live})
        .order_by("pk")  # one lock order for every worker: no deadlock between batches
    }
    specs = {message.pk: rule_spec(message) for message in live}
    caps = CapLedger.read(people, [spec for spec in specs.values() if spec], now)
    exits = ExitCheck(
        {
            pair
            for message in live
            if specs[message.pk] and (pair := ExitCheck.needs(message, specs[message.pk]))
        }
    )
    branches = ClickBranch(live, specs)
    lease_until = now + timedelta(seconds=settings.ONRAMP_DELIVERY_LEASE_SECONDS)
    written: list[Message] = []
    decisions: list[DecisionLog] = []
    claims: list[Claim] = []
    for message in live:
        person, spec = people[message.person_id], specs[message.pk]
        channel = channels(message.channel)
        if not _passes_checks(message, person, spec, channel, now, caps, exits, report, branches):
            continue
        message.attempts += 1
        message.sent_at, message.handed_at = now, None
        if channel.in_database:
            result = channel.send(message, person)
            message.status, message.reason = MessageStatus.SENT, ""
            message.provider_id, message.lease_until = result.provider_id, None
            decisions.append(decision(message, now, "sent"))
            report.add("sent", message)
        else:
            message.status, message.lease_until = MessageStatus.SENDING, lease_until
            message.provider_id = ""  # set once the provider has accepted it (see _hand)
            claims.append(Claim(message, person, spec, channel))
        caps.add(message, now)  # the next message for this person in the batch counts it
        written.append(message)
    _save_each(written, LEDGER_FIELDS)
    DecisionLog.objects.bulk_create(decisions)
    return claims


def _save_each(messages: list[Message], fields: list[str]) -> None:
    """Write ``fields`` of each message. On PostgreSQL one ``UPDATE`` for all of them, their
    values sent as one array per column (``unnest``); elsewhere one ``UPDATE`` per row with
    ``executemany``. ``bulk_update`` builds a ``CASE`` per field and row, which cost more Python
    time than the whole rest of a batch's checks; an ``UPDATE`` per row costs PostgreSQL a
    statement (parse, plan, execute) per row."""
    if not messages:
        return
    meta = Message._meta
    quote = connection.ops.quote_name
    columns = [meta.get_field(name) for name in fields]
    table, key = quote(meta.db_table), quote(meta.pk.column)  # names from the model, not input
    rows = [
        [
            column.get_db_prep_save(getattr(message, column.attname), connection)
            for column in columns
        ]
        + [message.pk]
        for message in messages
    ]
    if connection.vendor == "postgresql":
        names = [quote(column.column) for column in columns]
        arrays = ", ".join(f"%s::{column.db_type(connection)}[]" for column in columns)
        assignments = ", ".join(f"{name} = v.{name}" for name in names)
        sql = (
            f"UPDATE {table} AS m SET {assignments} "  # noqa: S608
            f"FROM unnest({arrays}, %s::bigint[]) AS v({', '.join(names)}, pk) "
            f"WHERE m.{key} = v.pk"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, [list(values) for values in zip(*rows, strict=True)])
        return
    assignments = ", ".join(f"{quote(column.column)} = %s" for column in columns)
    sql = f"UPDATE {table} SET {assignments} WHERE {key} = %s"  # noqa: S608
    with connection.cursor() as cursor:
        cursor.executemany(sql, rows)


def _hold(claims: list[Claim]) -> dict[int, int]:
    """Lock the claims' rows that are still ours ("sending" at our attempt): the fence.

    Returns each held row's person as it is now: a merge may have moved the message to another
    person while its provider call ran (triggers.services.merges)."""
    if not claims:
        return {}
    attempts = {claim.message.pk: claim.attempt for claim in claims}
    rows = Message.objects.select_for_update().filter(pk__in=attempts, status=MessageStatus.SENDING)
    return {
        pk: person_id
        for pk, attempt, person_id in rows.values_list("pk", "attempts", "person_id")
        if attempts[pk] == attempt
    }


def _renew_leases(claims: list[Claim], until: datetime) -> list[Claim]:
    """Extend the leases of a batch's unsent claims; drops any the sweeper already took."""
    with transaction.atomic():
        held = _hold(claims)
        Message.objects.filter(pk__in=list(held)).update(lease_until=until)
    kept = [claim for claim in claims if claim.message.pk in held]
    for claim in kept:
        claim.message.lease_until = until
    return kept


def _record_sent(sent: list[tuple[Claim, SendResult]], report: DeliveryReport) -> None:
    """One fenced update for the batch's successes (accepted by their providers): they become
    "sent", with their decision rows; rows no longer ours are left alone."""
    if not sent:
        return
    with transaction.atomic():
        if connection.vendor == "postgresql":
            # Recording the success need not wait for the disk: if this commit is lost in a crash,
            # the rows stay "sending" (handed, with their acceptance marks, except the batch's
            # last), and the sweeper makes them "sent" (the last one unknown). Never sent twice.
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL synchronous_commit = off")
        done = _write_sent(sent)
    for claim in done:
        report.add("sent", claim.message)


def _write_sent(sent: list[tuple[Claim, SendResult]]) -> list[Claim]:
    """Inside the caller's transaction: the successes still ours become "sent", with their
    decision rows; returns their claims."""
    if connection.vendor == "postgresql":
        return _write_sent_in_one_statement(sent)
    held = _hold([claim for claim, _ in sent])
    done = [(claim, result) for claim, result in sent if claim.message.pk in held]
    if not done:
        return []
    for claim, result in done:
        message = claim.message
        message.person_id = held[message.pk]  # the decision row names the current person
        message.status, message.reason = MessageStatus.SENT, ""
        message.provider_id, message.lease_until = result.provider_id[:255], None
    _save_each([claim.message for claim, _ in done], SENT_FIELDS)
    DecisionLog.objects.bulk_create(
        [decision(claim.message, claim.message.sent_at, "sent") for claim, _ in done]
    )
    return [claim for claim, _ in done]


# Table names come from the models (see _write_sent_in_one_statement), never from input.
_SENT_SQL = """
WITH sent AS (
    UPDATE {messages} AS m
    SET status = 'sent', reason = '', provider_id = v.provider_id, lease_until = NULL
    FROM unnest(%(ids)s::bigint[], %(attempts)s::integer[], %(provider_ids)s::text[])
        AS v(id, attempts, provider_id)
    WHERE m.id = v.id AND m.status = 'sending' AND m.attempts = v.attempts
    RETURNING m.id, m.person_id, m.rule_id, m.rule_version_id, m.enrollment_id, m.channel,
        m.step, m.sent_at
)
INSERT INTO {decisions} (at, person_id, rule_id, rule_version_id, enrollment_id, message_id,
    outcome, reason, detail)
SELECT sent_at, person_id, rule_id, rule_version_id, enrollment_id, id, 'sent', '',
    jsonb_build_object('channel', channel, 'step', step)
FROM sent
RETURNING message_id, person_id
"""


def _write_sent_in_one_statement(sent: list[tuple[Claim, SendResult]]) -> list[Claim]:
    """PostgreSQL: :func:`_write_sent` as one statement. The update is the fence (a row no
    longer "sending" at our attempt is left alone: the update re-checks its condition once it
    has the row's lock), and each decision row names the message's person as the update found
    it (a merge may have moved the message while its provider call ran). What the ORM path
    does with a lock query, an ``executemany`` and a ``bulk_create`` of model instances."""
    quote = connection.ops.quote_name
    sql = _SENT_SQL.format(
        messages=quote(Message._meta.db_table), decisions=quote(DecisionLog._meta.db_table)
    )
    with connection.cursor() as cursor:
        cursor.execute(
            sql,
            {
                "ids": [claim.message.pk for claim, _ in sent],
                "attempts": [claim.attempt for claim, _ in sent],
                "provider_ids": [result.provider_id[:255] for _, result in sent],
            },
        )
        people = dict(cursor.fetchall())
    done = []
    for claim, result in sent:
        if claim.message.pk in people:
            message = claim.message
            message.person_id = people[message.pk]
            message.status, message.reason = MessageStatus.SENT, ""
            message.provider_id, message.lease_until = result.provider_id[:255], None
            done.append(claim)
    return done


def _hand(
    claim: Claim,
    done: tuple[Claim, SendResult] | None,
    now: datetime,
) -> bool:
    """Right before ``claim``'s provider call: one commit that records that the previous message
    (``done``) was accepted by its provider, as its ``provider_id`` (fenced on "sending" and its
    attempt), and marks ``claim`` as handed to its provider (fenced on "sending", its attempt and
    a live lease). Both are updates of columns no index holds; the accepted messages become
    "sent", with their decision rows, in one write at the end of the batch (:func:`_record_sent`),
    or by the sweeper if this worker dies before that (outcomes.sweep_expired_leases).

    False when ``claim`` is no longer ours (the sweeper took it) or its lease has run out: it
    must not be sent. The mark is what tells the sweeper, after a crash, whether a message may
    have reached its provider (handed, no answer recorded → unknown), did (answer recorded →
    sent) or certainly did not (→ claimed again); it must be committed before the call. On
    PostgreSQL it is one statement in autocommit: one round trip per message, plus a WAL flush
    when ``ONRAMP_DELIVERY_DURABLE_MARK`` is on (:func:`_mark_commits` has the trade-off)."""
    if connection.vendor == "postgresql":
        handed = _hand_in_one_statement(claim, done, now)
    else:
        with transaction.atomic():
            if done:
                previous, result = done
                Message.objects.filter(
                    pk=previous.message.pk, status=MessageStatus.SENDING, attempts=previous.attempt
                ).update(provider_id=accepted_mark(result))
            handed = Message.objects.filter(
                pk=claim.message.pk,
                status=MessageStatus.SENDING,
                attempts=claim.attempt,
                lease_until__gt=now,
            ).update(handed_at=now)
    if handed:
        claim.message.handed_at = now
    return bool(handed)


# The table name comes from the model (see _hand_in_one_statement), never from input.
_HAND_SQL = """
UPDATE {messages} SET
    handed_at = CASE WHEN id = %(claim)s THEN %(now)s ELSE handed_at END,
    provider_id = CASE WHEN id = %(claim)s THEN provider_id ELSE %(accepted)s END
WHERE (id = %(claim)s AND status = 'sending' AND attempts = %(attempt)s
        AND lease_until > %(now)s)
    OR (id = %(done)s AND status = 'sending' AND attempts = %(done_attempt)s)
RETURNING id
"""


def _hand_in_one_statement(
    claim: Claim, done: tuple[Claim, SendResult] | None, now: datetime
) -> bool:
    """PostgreSQL: ``_hand``'s writes as one statement on the two rows; whether ``claim`` is
    handed."""
    sql = _HAND_SQL.format(messages=connection.ops.quote_name(Message._meta.db_table))
    previous, result = done if done else (None, None)
    with connection.cursor() as cursor:
        cursor.execute(
            sql,
            {
                "done": previous.message.pk if previous else None,
                "done_attempt": previous.attempt if previous else None,
                "accepted": accepted_mark(result) if result else "",
                "claim": claim.message.pk,
                "attempt": claim.attempt,
                "now": now,
            },
        )
        return any(pk == claim.message.pk for (pk,) in cursor.fetchall())


def _record_failure(
    claim: Claim, error: TransportError, now: datetime, report: DeliveryReport
) -> None:
    attempt = claim.attempt
    message = claim.message
    # The error's class, never its text: a provider's answer can quote the address.
    logger.warning(
        "delivery of message %s (%s) failed on attempt %s: %s%s",
        message.pk,
        message.channel,
        attempt,
        error.__class__.__name__,
        " (permanent)" if error.permanent else "",
        extra={
            "message_id": message.pk,
            "rule": message.rule.slug,
            "person_id": message.person_id,
            "channel": message.channel,
            "attempt": attempt,
            "error": error.__class__.__name__,
            "permanent": error.permanent,
            "unknown_outcome": error.unknown,
        },
    )
    with transaction.atomic():
        current = Message.objects.select_for_update().get(pk=claim.message.pk)
        if current.status != MessageStatus.SENDING or current.attempts != attempt:
            return  # the sweeper or another attempt took over
        current.last_error = str(error)[:2000]
        current.lease_until = None
        if error.unknown:
            # The provider may have the message (no answer after sending): never retry, never
            # fall back to another channel; a person decides. Counts toward caps (sent_at kept).
            current.status, current.reason = MessageStatus.UNKNOWN, "unknown_outcome"
            current.save()
            ReviewItem.objects.get_or_create(
                message=current, defaults={"reason": "unknown_outcome", "detail": str(error)}
            )
            log_decision(
                current, now, "unknown", "no_answer", error=str(error)[:500], attempt=attempt
            )
            report.add("unknown", current)
            return
        if not error.permanent and attempt < settings.ONRAMP_DELIVERY_MAX_ATTEMPTS:
            delay = timedelta(seconds=error.retry_after) if error.retry_after else backoff(attempt)
            current.status, current.reason = MessageStatus.SCHEDULED, "retry"
            current.next_attempt_at = now + delay
            current.sent_at = None
            current.save()
            log_decision(
                current, now, "retry", "transient", error=str(error)[:500], attempt=attempt
            )
            report.add("retry", current)
        else:
            current.sent_at = None
            current.save()
            reason = "permanent_error" if error.permanent else "retries_exhausted"
            fall_back(current, claim.spec, now, reason, str(error), report)


def _send(
    claims: list[Claim],
    clock: Callable[[], datetime],
    report: DeliveryReport,
    *,
    carried: tuple[Claim, SendResult] | None = None,
    record: Callable[[list[tuple[Claim, SendResult]]], None] | None = None,
) -> tuple[Claim, SendResult] | None:
    """Hand a committed batch to its providers, one message at a time, each marked as handed
    (with the previous one's success recorded) in a commit before its provider call.

    Only that chain is serial: the mark of message N+1 (which records N) after N's answer, and
    N+1's provider call after its mark. While N+1's mark commits (a round trip, and a WAL flush
    with ``ONRAMP_DELIVERY_DURABLE_MARK``; see :func:`_mark_commits`), a helper thread runs the
    channel's ``start`` (for email: MAIL, RCPT, DATA and the data without its final ``.``) on
    what the claim built (``prepare``, :func:`_prepare_each`); ``finish`` (the ``.``) runs only
    once the mark is committed, and after a refused mark ``abandon`` drops the started
    transaction. So what a crash can leave is unchanged: marked, then possibly delivered, one
    message at a time (docs/reliability.md). The helper's part is almost all socket waits:
    building the email there too made this thread wait for the GIL (up to the interpreter's 5 ms
    switch interval) when the mark's answer came in, and so did building N+1 while N waited for
    its answer.

    When half of the batch's lease is gone before a message's turn (a slow provider), what was
    sent so far is recorded and the rest's leases are renewed, so that no sweeper takes a message
    this worker has sent or is about to send.

    Without ``record``, the batch's successes become "sent" here, at its end. With it (the
    overlapped pass, :func:`_deliver_overlapped`), ``carried`` is the previous batch's last
    success, whose acceptance this batch's first mark records; at the end the successes whose
    acceptance is marked go to ``record`` (written elsewhere, on another connection), and the
    last one, not yet marked, is returned for the next batch's first mark. Either way a process
    has at most one message handed with no answer recorded."""
    lease = timedelta(seconds=settings.ONRAMP_DELIVERY_LEASE_SECONDS)
    waiting = list(claims)
    helper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onramp-send")

    with _mark_commits():
        try:
            return _send_each(waiting, lease, clock, helper, report, carried, record)
        finally:
            helper.shutdown(wait=True)


def _send_each(
    waiting: list[Claim],
    lease: timedelta,
    clock: Callable[[], datetime],
    helper: ThreadPoolExecutor,
    report: DeliveryReport,
    carried: tuple[Claim, SendResult] | None = None,
    record: Callable[[list[tuple[Claim, SendResult]]], None] | None = None,
) -> tuple[Claim, SendResult] | None:
    """``_send``'s loop: the marks, the helper's ``start``, each ``finish``."""
    accepted: list[tuple[Claim, SendResult]] = []  # their acceptance is marked, not yet "sent"
    done: tuple[Claim, SendResult] | None = carried  # accepted, not yet marked as such
    try:
        while waiting:
            if clock() >= waiting[0].message.lease_until - lease / 2:
                # Record what is out (its lease is not renewed), then renew the rest.
                _record_sent(accepted + ([done] if done else []), report)
                accepted, done = [], None
                waiting = _renew_leases(waiting, clock() + lease)
                continue
            claim = waiting.pop(0)
            # Built before the helper starts (by the claim: _prepare_each): the helper's part is
            # then almost all waiting on the socket, so it never holds the GIL when the mark's
            # answer comes.
            try:
                outgoing = _outgoing(claim)
            except TransportError as error:  # nothing went out: a failed attempt (fenced)
                _record_failure(claim, error, clock(), report)
                continue
            started = helper.submit(claim.channel.start, outgoing)
            handed = _hand(claim, done, clock())
            if done:  # its acceptance is marked (or the sweeper took it: the record is fenced)
                accepted.append(done)
            done = None
            try:
                started.result()
            except TransportError as error:
                if handed:  # nothing reached the provider: an ordinary failed attempt
                    _record_failure(claim, error, clock(), report)
                continue
            if not handed:
                claim.channel.abandon(outgoing)
                continue
            try:
                result = claim.channel.finish(outgoing)
            except TransportError as error:
                _record_failure(claim, error, clock(), report)
            else:
                done = (claim, result)
    except BaseException:
        # What reached its provider is recorded as sent, here and now.
        _record_sent(accepted + ([done] if done else []), report)
        raise
    if record is None:
        _record_sent(accepted + ([done] if done else []), report)
        return None
    if accepted:
        record(accepted)
    return done


@contextmanager
def _mark_commits() -> Iterator[None]:
    """The commit mode of a batch's hand-over marks (and of its other writes while it sends).

    ``ONRAMP_DELIVERY_DURABLE_MARK`` off, on PostgreSQL: ``synchronous_commit`` is
    off for the session while the batch is sent, so a mark's commit returns once PostgreSQL has
    it, without waiting for its WAL flush (a round trip, not a round trip and a flush). A
    committed mark is the server's: a kill of this worker cannot undo it, so the crash bound
    holds as before. What it gives up: a crash of the PostgreSQL server itself (not a clean
    restart) within about 3 × ``wal_writer_delay`` of a mark can lose that mark, and a lost mark
    lets the sweeper send that email again (docs/reliability.md). The claim's commit, before any
    provider call, stays synchronous. On (the default): every mark waits for its flush. SQLite runs with
    ``synchronous=NORMAL`` in WAL mode either way (commits survive a process crash, not an
    operating system's)."""
    if settings.ONRAMP_DELIVERY_DURABLE_MARK or connection.vendor != "postgresql":
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit = off")
    try:
        yield
    finally:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SET synchronous_commit TO DEFAULT")
        except DatabaseError:
            # A broken connection: closing it makes the next query reconnect, with the defaults.
            connection.close()


def _deliver_batch(
    pks: list[int],
    clock: Callable[[], datetime],
    report: DeliveryReport,
    channels: Callable[[str], Channel],
) -> None:
    claims = _claimed(pks, clock, report, channels)
    if claims:
        _send(claims, clock, report)


def deliver_message(
    pk: int, *, now: datetime | None = None, report: DeliveryReport | None = None
) -> DeliveryReport:
    """Deliver one due message (a no-op if it is not due, or another worker holds it)."""
    report = report or DeliveryReport()
    started = time.monotonic()
    channels = ChannelSet()
    try:
        clock = (lambda: now) if now is not None else timezone.now
        _deliver_batch([pk], clock, report, channels)
    finally:
        channels.close()
        _observe(report, time.monotonic() - started, message_id=pk)
    return report


def _observe(report: DeliveryReport, seconds: float, *, message_id: int | None = None) -> None:
    """A delivery pass's metrics and its one log line (counts and the duration)."""
    metrics.messages_delivered(outcomes=report.by_channel)
    metrics.delivery_pass(seconds)
    summary = ", ".join(f"{k} {v}" for k, v in sorted(report.outcomes.items())) or "nothing due"
    extra = {"duration_seconds": round(seconds, 6), "outcomes": dict(report.outcomes)}
    if message_id is not None:
        extra["message_id"] = message_id
    logger.info("delivery pass in %.3fs: %s", seconds, summary, extra=extra)


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
    """One delivery pass: sweep expired leases, then deliver what is due in batches of
    ``ONRAMP_DELIVERY_CLAIM``, within a time budget (checked between batches: a claimed batch
    is always sent)."""
    # A pinned ``now`` (tests, replays) stays fixed; otherwise each batch reads the clock, so that
    # a lease written late in a long pass runs from its own batch, not from the pass's start
    # (a lease already expired when written lets another worker's sweeper take the message).
    clock: Callable[[], datetime] = (lambda: now) if now is not None else timezone.now
    report = DeliveryReport()
    started = time.monotonic()
    try:
        _deliver_due(clock, report, started, limit=limit, time_budget=time_budget)
    finally:
        _observe(report, time.monotonic() - started)
    return report


def _deliver_due(
    clock: Callable[[], datetime],
    report: DeliveryReport,
    started: float,
    *,
    limit: int | None,
    time_budget: float,
) -> None:
    sweep_expired_leases(clock(), report)
    size = max(1, settings.ONRAMP_DELIVERY_CLAIM)
    channels = ChannelSet()  # one instance per channel for the pass (one SMTP connection)
    batches = _due_batches(clock, size, limit)
    try:
        if _can_overlap():
            _deliver_overlapped(batches, clock, report, channels, started, time_budget)
            return
        for batch in batches:
            _deliver_batch(batch, clock, report, channels)
            if time.monotonic() - started >= time_budget:
                break
    finally:
        channels.close()


def _due_batches(
    clock: Callable[[], datetime], size: int, limit: int | None
) -> Iterator[list[int]]:
    """The pass's batches of due message ids, ``size`` at a time, each id once; the due
    messages are read again when a read's batches are used up."""
    seen: set[int] = set()
    while True:
        ids = [
            pk
            for pk in due_message_ids(clock(), limit or settings.ONRAMP_DELIVERY_BATCH)
            if pk not in seen
        ]
        if not ids:
            return
        for start in range(0, len(ids), size):
            batch = ids[start : start + size]
            seen.update(batch)
            yield batch


def _can_overlap() -> bool:
    """Whether the pass claims and records on a second connection while it sends
    (``ONRAMP_DELIVERY_OVERLAP``): PostgreSQL only (SQLite has one writer at a time), and never
    inside a transaction of the caller's (the second connection could not see its rows)."""
    return (
        settings.ONRAMP_DELIVERY_OVERLAP
        and connection.vendor == "postgresql"
        and not connection.in_atomic_block
    )


# While the writer thread runs Python (a claim's checks and rendering), this thread, woken by a
# mark's or an SMTP answer, waits for the GIL until the writer gives it up: after the interpreter's
# switch interval (5 ms by default) at worst. A shorter interval during the pass bounds that wait.
_SWITCH_INTERVAL = 0.0005


def _deliver_overlapped(
    batches: Iterator[list[int]],
    clock: Callable[[], datetime],
    report: DeliveryReport,
    channels: ChannelSet,
    started: float,
    time_budget: float,
) -> None:
    """The pass with its claims and its records of "sent" written by a second thread, on its
    own connection, while this thread sends: batch K+1 is claimed (checks, render, ledger, a
    synchronous commit) while batch K is handed to its providers, and batch K's successes become
    "sent" (an asynchronous commit) while K+1 is. This thread writes only the hand-over marks,
    in the same order as before, so the crash bound is unchanged: batch K's last success is
    recorded by K+1's first mark (``carried``), before K+1's first provider call, and the record
    at the end of a batch covers only successes whose acceptance is already marked (the sweeper
    makes those "sent" if that record is lost). A batch claimed ahead and never handed (a crash,
    an error) is due again after its lease, with no review, like the rest of a crashed batch.
    The time budget is checked before each claim after the first, so a claimed batch is always
    sent."""
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onramp-claim")
    records: list[Future] = []
    carried: tuple[Claim, SendResult] | None = None

    def claim_next(first: bool = False) -> Future | None:
        if not first and time.monotonic() - started >= time_budget:
            return None
        batch = next(batches, None)
        return writer.submit(_claim_apart, batch, clock, channels) if batch else None

    def record(sent: list[tuple[Claim, SendResult]]) -> None:
        records.append(writer.submit(_record_apart, sent))

    switch = sys.getswitchinterval()
    sys.setswitchinterval(_SWITCH_INTERVAL)
    try:
        upcoming = claim_next(first=True)
        while upcoming is not None:
            claims, part = upcoming.result()
            report.merge(part)
            upcoming = claim_next()
            if claims:
                carried = _send(claims, clock, report, carried=carried, record=record)
    finally:
        try:
            if carried:
                _record_sent([carried], report)
            for future in records:
                report.merge(future.result())
        finally:
            writer.submit(_close_own_connection)
            writer.shutdown(wait=True)
            sys.setswitchinterval(switch)


def _close_own_connection() -> None:
    """The calling thread's own connection (``connection.close`` taken in another thread would
    be that thread's)."""
    connection.close()


def _claim_apart(
    pks: list[int], clock: Callable[[], datetime], channels: ChannelSet
) -> tuple[list[Claim], DeliveryReport]:
    """:func:`_deliver_batch`'s claim, in the writer thread (its own connection and report)."""
    part = DeliveryReport()
    return _claimed(pks, clock, part, channels), part


def _record_apart(sent: list[tuple[Claim, SendResult]]) -> DeliveryReport:
    """:func:`_record_sent` in the writer thread."""
    part = DeliveryReport()
    _record_sent(sent, part)
    return part
