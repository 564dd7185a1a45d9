"""Person merges keep the engine's history (DESIGN §4.5).

When ``onboarding`` merges people (an ``identify`` that links an anonymous id, an ``alias``), it
sends ``people_merged`` inside its transaction, with the people locked, before it deletes the
merged people. :func:`person_history_merge` then moves everything ``triggers`` keeps per person to
the survivor, so that caps, re-entry and experiments see one history:

- enrollments move; two with the same (rule, occurrence) keep the earlier one, and the later one's
  messages and decisions are re-attached to it before it goes (a ``merged`` decision names it);
- messages move with their idempotency keys unchanged (the keys already sent to providers, e.g. a
  webhook's ``webhook-id``, stay stable, and two people's keys never collide);
- decision log rows move;
- experiment assignments move; the survivor's arm wins (else the earlier assignment), and the arm
  that lost is recorded in a ``merged`` decision;
- a follow-up pending for two halves (same rule, same step, both scheduled or deferred) is sent
  once: the later one is cancelled, reason ``merged_duplicate``, with a decision row.

Review items follow their messages. Saved backtest reports (``BacktestRun.result`` entries that
name person ids) are deliberately not rewritten: a report is a snapshot of what a rule would have
done then, rewriting every saved report would put that cost on each merge (on the ingestion path),
and once merged the old id belongs to nobody (its identities and events moved).

The person foreign keys of these tables are ``PROTECT``: if a move is ever missed, the merge fails
(and the ingestion retries or reports it) instead of silently deleting history.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from django.utils import timezone

from triggers.delivery.outcomes import decision
from triggers.models import Assignment, DecisionLog, Enrollment, Message
from triggers.models.messages import PENDING_STATUSES, MessageStatus

MERGED_DUPLICATE = "merged_duplicate"

logger = logging.getLogger(__name__)


@dataclass
class MergeReport:
    """What a merge did to the engine's rows (counts)."""

    enrollments: int = 0
    messages: int = 0
    decisions: int = 0
    assignments: int = 0
    enrollments_combined: int = 0
    arms_dropped: int = 0
    duplicates_cancelled: int = 0
    log: list[DecisionLog] = field(default_factory=list, repr=False)


def person_history_merge(
    *, into: int, merged: list[int], now: datetime | None = None
) -> MergeReport:
    """Move the engine's rows of the ``merged`` people to ``into``; call under the merge's locks,
    inside its transaction, before the merged people are deleted."""
    now = now or timezone.now()
    report = MergeReport()
    if not merged:
        return report
    halves = [into, *merged]
    # Read before anything moves: which half each pending follow-up belongs to.
    pending = list(
        Message.objects.filter(person_id__in=halves, status__in=PENDING_STATUSES).values_list(
            "pk", "person_id", "rule_id", "step", "due_at"
        )
    )
    _combine_enrollments(into, halves, now, report)
    _combine_assignments(into, halves, now, report)
    report.enrollments = Enrollment.objects.filter(person_id__in=merged).update(person_id=into)
    report.assignments = Assignment.objects.filter(person_id__in=merged).update(person_id=into)
    report.messages = Message.objects.filter(person_id__in=merged).update(person_id=into)
    report.decisions = DecisionLog.objects.filter(person_id__in=merged).update(person_id=into)
    _cancel_duplicates(pending, now, report)
    DecisionLog.objects.bulk_create(report.log)
    if report.enrollments or report.messages or report.decisions or report.assignments:
        logger.info("people %s merged into person %s: %s", merged, into, report)
    return report


def _combine_enrollments(into: int, halves: list[int], now: datetime, report: MergeReport) -> None:
    """Enrollments of one (rule, occurrence) in several halves: the earliest stays, the others'
    messages and decisions are re-attached to it, and they are deleted."""
    groups: dict[tuple[int, str], list[Enrollment]] = defaultdict(list)
    for enrollment in Enrollment.objects.filter(person_id__in=halves).select_related("variant"):
        groups[(enrollment.rule_id, enrollment.occurrence_key)].append(enrollment)
    dropped: list[int] = []
    for group in groups.values():
        if len(group) < 2:
            continue
        kept, *later = sorted(group, key=lambda e: (e.enrolled_at, e.pk))
        for enrollment in later:
            Message.objects.filter(enrollment=enrollment).update(enrollment=kept)
            DecisionLog.objects.filter(enrollment=enrollment).update(enrollment=kept)
            dropped.append(enrollment.pk)
            report.log.append(
                DecisionLog(
                    at=now,
                    person_id=into,
                    rule_id=kept.rule_id,
                    rule_version_id=kept.rule_version_id,
                    enrollment=kept,
                    outcome="merged",
                    reason="enrollment",
                    detail={
                        "occurrence": kept.occurrence_key,
                        "combined_enrollment": enrollment.pk,
                        "from_person": enrollment.person_id,
                        "enrolled_at": enrollment.enrolled_at.isoformat(),
                        "status": enrollment.status,
                        "variant": enrollment.variant.name if enrollment.variant else None,
                    },
                )
            )
    if dropped:
        report.enrollments_combined = len(dropped)
        Enrollment.objects.filter(pk__in=dropped).delete()


def _combine_assignments(into: int, halves: list[int], now: datetime, report: MergeReport) -> None:
    """One assignment per experiment: the survivor's, else the earliest; the others are recorded
    in the decision log and deleted."""
    groups: dict[int, list[Assignment]] = defaultdict(list)
    rows = Assignment.objects.filter(person_id__in=halves).select_related("experiment", "variant")
    for assignment in rows:
        groups[assignment.experiment_id].append(assignment)
    dropped: list[int] = []
    for group in groups.values():
        if len(group) < 2:
            continue
        # The survivor's first (False sorts before True), then the earliest assigned.
        kept, *others = sorted(group, key=lambda a: (a.person_id != into, a.assigned_at, a.pk))
        for assignment in others:
            dropped.append(assignment.pk)
            report.log.append(
                DecisionLog(
                    at=now,
                    person_id=into,
                    rule_id=kept.experiment.rule_id,
                    outcome="merged",
                    reason="experiment_arm",
                    detail={
                        "experiment": kept.experiment.slug,
                        "variant": kept.variant.name,
                        "dropped_variant": assignment.variant.name,
                        "dropped_phase": assignment.phase,
                        "dropped_assigned_at": assignment.assigned_at.isoformat(),
                        "from_person": assignment.person_id,
                    },
                )
            )
    if dropped:
        report.arms_dropped = len(dropped)
        Assignment.objects.filter(pk__in=dropped).delete()


def _cancel_duplicates(
    pending: list[tuple[int, int, int, int, datetime]], now: datetime, report: MergeReport
) -> None:
    """A follow-up (rule, step) pending in more than one half goes out once: the earliest due
    stays; the other halves' copies are cancelled. Copies within one half are the engine's own
    doing (re-entry) and are left alone."""
    groups: dict[tuple[int, int], list[tuple[datetime, int, int]]] = defaultdict(list)
    for pk, person_id, rule_id, step, due_at in pending:
        groups[(rule_id, step)].append((due_at, pk, person_id))
    duplicate_of: dict[int, int] = {}
    half_of = {pk: person_id for pk, person_id, *_ in pending}
    for group in groups.values():
        if len({person for _, _, person in group}) < 2:
            continue
        _, kept_pk, kept_half = min(group)
        for _, pk, person in group:
            if person != kept_half:
                duplicate_of[pk] = kept_pk
    if not duplicate_of:
        return
    messages = list(
        Message.objects.select_for_update().filter(pk__in=duplicate_of, status__in=PENDING_STATUSES)
    )
    Message.objects.filter(pk__in=[message.pk for message in messages]).update(
        status=MessageStatus.CANCELLED, reason=MERGED_DUPLICATE, lease_until=None
    )
    for message in messages:
        report.log.append(
            decision(
                message,
                now,
                "cancelled",
                MERGED_DUPLICATE,
                duplicate_of=duplicate_of[message.pk],
                from_person=half_of[message.pk],
            )
        )
    report.duplicates_cancelled = len(messages)
