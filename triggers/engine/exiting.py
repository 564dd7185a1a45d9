"""The tick's exit check (DESIGN §4.4, ``triggers.rules.exits``): active enrollments whose people
progressed or completed have their pending follow-ups cancelled.

Only people whose flow progress changed since the rule's watermark can have exited, so the work
follows the progress rows updated in between (an index range), not every pending enrollment;
a tick reads the candidates of all the rules of a flow at once (:func:`exit_candidates`,
:class:`.lookups.TickLookups`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime

from django.db.models import BooleanField, Exists, ExpressionWrapper, OuterRef, Q

from onboarding.models import FlowProgress
from triggers.models import DecisionLog, Enrollment, Message, Rule
from triggers.models.messages import PENDING_STATUSES, MessageStatus
from triggers.models.rules import EnrollmentStatus
from triggers.rules.exits import COMPLETED, PROGRESSED, exit_flow, exit_reason
from triggers.rules.spec import RuleSpec


def exit_candidates(
    rule_ids: list[int], flow: str, since: datetime
) -> tuple[dict[int, tuple[int, bool]], dict[int, list[tuple]]]:
    """For the exit check of these rules of one flow: the people whose progress in the flow
    changed since ``since`` (furthest step, completed), by the index on the progress rows'
    ``updated_at``; and per rule, its active enrollments of those people that still have a
    pending follow-up (enrollment id, person id, step enrolled at)."""
    completed = ExpressionWrapper(Q(completed_at__isnull=False), output_field=BooleanField())
    moved = {
        person_id: (furthest_step, done)
        for person_id, furthest_step, done in FlowProgress.objects.filter(
            flow__slug=flow, updated_at__gt=since
        )
        .annotate(done=completed)
        .values_list("person_id", "furthest_step", "done")
    }
    candidates: dict[int, list[tuple]] = defaultdict(list)
    if moved:
        pending = Message.objects.filter(enrollment=OuterRef("pk"), status__in=PENDING_STATUSES)
        for rule_id, pk, person_id, context in Enrollment.objects.filter(
            Exists(pending),
            rule_id__in=rule_ids,
            status=EnrollmentStatus.ACTIVE,
            person__flow_progress__flow__slug=flow,
            person__flow_progress__updated_at__gt=since,
        ).values_list("rule_id", "pk", "person_id", "context"):
            candidates[rule_id].append((pk, person_id, (context or {}).get("furthest_step")))
    return moved, candidates


def cancel_exits(
    rule: Rule,
    spec: RuleSpec,
    since: datetime,
    now: datetime,
    *,
    read: tuple[dict, list] | None = None,
    fresh: Sequence[tuple] = (),
) -> int:
    """Cancel pending follow-ups of people who met the rule's exit condition (``rules.exits``);
    how many enrollments ended.

    Only people whose flow progress changed since the last tick can have exited, so the work
    follows the progress rows updated in between (an index range), not every pending enrollment.
    The delivery pipeline checks again at send time, so nothing is sent to someone who exited.
    ``read`` is what the tick read ahead for the rule (:meth:`.lookups.TickLookups.prepare`);
    with it, the enrollments this tick just made (``fresh``: id, person, step, with a follow-up)
    are checked too, and no query is needed.
    """
    flow = exit_flow(spec)
    if flow is None:
        return 0
    if read is None:
        moved, candidates = exit_candidates([rule.pk], flow, since)
        rows = candidates[rule.pk]
    else:
        moved, rows = read
        rows = rows + [
            (pk, person_id, step) for pk, person_id, step, scheduled in fresh if scheduled
        ]
    exits: dict[int, tuple[int, str]] = {}
    for pk, person_id, enrolled_at_step in rows:
        if person_id not in moved:
            continue
        furthest_step, completed = moved[person_id]
        reason = exit_reason(
            spec,
            enrolled_at_step=enrolled_at_step,
            furthest_step=furthest_step,
            completed=completed,
        )
        if reason is not None:
            exits[pk] = (person_id, reason)
    if not exits:
        return 0
    for reason in (COMPLETED, PROGRESSED):
        ids = [pk for pk, (_, r) in exits.items() if r == reason]
        if not ids:
            continue
        Message.objects.filter(enrollment_id__in=ids, status__in=PENDING_STATUSES).update(
            status=MessageStatus.CANCELLED, reason=f"exit:{reason}"
        )
        Enrollment.objects.filter(pk__in=ids).exit(reason, now)
    DecisionLog.objects.bulk_create(
        [
            DecisionLog(
                at=now,
                person_id=person_id,
                rule=rule,
                rule_version=rule.current_version,
                enrollment_id=pk,
                outcome="exited",
                reason=reason,
            )
            for pk, (person_id, reason) in exits.items()
        ]
    )
    return len(exits)
