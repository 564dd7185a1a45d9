"""One evaluation pass: detect due occurrences per active rule, enroll, schedule follow-ups.

Per rule, in one transaction: claim the rule's :class:`RuleState` (``SKIP LOCKED`` on PostgreSQL,
so overlapping ticks and two beats never evaluate a rule twice at once), detect the occurrences
that fell due since its watermark, filter them (segment, re-entry), insert enrollments (the unique
(rule, person, occurrence) constraint is the final guard), schedule their messages, record every
decision, move the watermark — set-based: one statement per check and per table for all the
people due, not one per person (DESIGN §5). Then exits: active enrollments whose people progressed or completed
have their pending follow-ups cancelled.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import Max

from config import metrics
from onboarding.models import FlowProgress, Person, Segment
from onboarding.segments import members_queryset
from triggers.experiments.assign import assign
from triggers.models import (
    DecisionLog,
    Enrollment,
    Experiment,
    ExperimentStatus,
    Message,
    MessageTemplate,
    Rule,
    RuleState,
    RuleStatus,
    Variant,
)
from triggers.models.messages import PENDING_STATUSES, MessageStatus
from triggers.models.rules import EnrollmentStatus
from triggers.rules.exits import COMPLETED, PROGRESSED, exit_flow, exit_reason
from triggers.rules.spec import FollowUp, RuleSpec, parse_follow_ups, parse_rule

from .detectors import Occurrence, detect
from .inserts import insert_rows
from .timing import follow_up_due_at

logger = logging.getLogger(__name__)


@dataclass
class RuleReport:
    rule: str
    found: int = 0
    enrolled: int = 0
    skipped: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    scheduled: int = 0
    exited: int = 0
    seconds: float = 0.0


@dataclass
class TickReport:
    now: datetime
    dry_run: bool
    rules: list[RuleReport] = field(default_factory=list)
    skipped_locked: list[str] = field(default_factory=list)

    @property
    def enrolled(self) -> int:
        return sum(r.enrolled for r in self.rules)


@dataclass
class TickLookups:
    """What every rule of a tick would read alike, read once per tick instead of once per rule:
    which rules have a running experiment, and template ids by slug (filled as rules need them).
    Without it (a rule evaluated on its own), each rule reads them itself."""

    experiment_rules: set[int]
    templates: dict[str, int] = field(default_factory=dict)

    @classmethod
    def read(cls) -> TickLookups:
        running = Experiment.objects.filter(status=ExperimentStatus.RUNNING)
        return cls(experiment_rules=set(running.values_list("rule_id", flat=True)))


class _DryRun(Exception):
    """Raised to roll back a dry-run pass after its report is complete."""


def idempotency_key(rule_version_id: int, person_id: int, occurrence: str, step: int) -> str:
    raw = f"{rule_version_id}:{person_id}:{occurrence}:{step}"
    return hashlib.sha256(raw.encode()).hexdigest()


def _claim(rule: Rule) -> RuleState | None:
    """The rule's state row, locked; None when another tick holds it. One statement when the
    row exists (activating a rule creates it)."""
    states = RuleState.objects.filter(rule=rule)
    if connection.vendor == "postgresql":
        locked = states.select_for_update(skip_locked=True)
    else:
        locked = states.select_for_update()
    state = locked.first()
    if state is None and not states.exists():
        RuleState.objects.get_or_create(rule=rule)
        state = locked.first()
    return state


def _reentry_blocked(rule: Rule, spec: RuleSpec, people: set[int], now: datetime) -> set[int]:
    existing = Enrollment.objects.filter(rule=rule, person_id__in=people)
    if spec.reentry_once:
        return set(existing.values_list("person_id", flat=True))
    latest = existing.values("person_id").annotate(last=Max("enrolled_at"))
    every = timedelta(seconds=spec.reentry_every or 0)
    return {row["person_id"] for row in latest if row["last"] > now - every}


def _enroll(
    rule: Rule,
    spec: RuleSpec,
    occurrences: list[Occurrence],
    now: datetime,
    report: RuleReport,
    lookups: TickLookups | None = None,
) -> None:
    """Decide and write a batch of occurrences, set-based: a fixed number of statements per rule
    and tick, whatever the number of people (DESIGN §5).

    Reads: late data already logged (only when some occurrence is late), segment members, the
    re-entry history, the running experiment (and its assignments); writes: one ``INSERT`` each
    for enrollments, follow-ups and decisions (:func:`insert_rows`). Per person, Python only sorts
    and looks up sets, hashes idempotency keys and experiment arms (the one implementation the
    backtest shares) and computes local due times (time zones, which SQLite cannot).
    """
    version = rule.current_version
    decisions: list[dict[str, Any]] = []

    def decide(
        person_id: int,
        outcome: str,
        detail: dict,
        *,
        reason: str = "",
        enrollment: int | None = None,
    ) -> None:
        decisions.append(
            {
                "at": now,
                "person_id": person_id,
                "rule_id": rule.pk,
                "rule_version_id": version.pk,
                "enrollment_id": enrollment,
                "outcome": outcome,
                "reason": reason,
                "detail": detail,
            }
        )

    def skip(occurrence: Occurrence, reason: str) -> None:
        report.skipped[reason] += 1
        decide(
            occurrence.person_id,
            "skipped",
            {"occurrence": occurrence.key, **occurrence.context},
            reason=reason,
        )

    # No occurrence in the past (DESIGN §4.1): one learnt of after its deadline is recorded once
    # and never sent.
    late = [o for o in occurrences if o.late]
    if late:
        logged = set(
            DecisionLog.objects.filter(
                rule=rule, reason="late_data", person_id__in={o.person_id for o in late}
            ).values_list("person_id", "detail__occurrence")
        )
        for occurrence in late:
            if (occurrence.person_id, occurrence.key) not in logged:
                logged.add((occurrence.person_id, occurrence.key))
                skip(occurrence, "late_data")
        occurrences = [o for o in occurrences if not o.late]

    people = {o.person_id for o in occurrences}
    if spec.segment and people:
        segment = Segment.objects.filter(slug=spec.segment).first()
        members = (
            set(members_queryset(segment, now).filter(pk__in=people).values_list("pk", flat=True))
            if segment
            else set()
        )
    else:
        members = people
    blocked = _reentry_blocked(rule, spec, people, now) if people else set()

    accepted: list[Occurrence] = []
    seen_people: set[int] = set()
    for occurrence in sorted(occurrences, key=lambda o: (o.at, o.person_id, o.key)):
        if occurrence.person_id not in members:
            skip(occurrence, "segment")
        elif occurrence.person_id in blocked or occurrence.person_id in seen_people:
            skip(occurrence, "reentry")
        else:
            accepted.append(occurrence)
            seen_people.add(occurrence.person_id)

    # The arm is decided, and persisted, at first eligibility: before the enrollment, so the
    # enrollment row carries it.
    arms = _arms(rule, seen_people, now, lookups)
    # The rule's state row is locked, so no other tick of this rule enrolls at the same time; the
    # unique (rule, person, occurrence) constraint leaves out an occurrence enrolled before.
    fresh = insert_rows(
        Enrollment,
        [
            {
                "rule_id": rule.pk,
                "rule_version_id": version.pk,
                "person_id": o.person_id,
                "occurrence_key": o.key,
                "enrolled_at": o.at,
                "context": o.context,
                "variant_id": arms[o.person_id].pk if arms else None,
            }
            for o in accepted
        ],
        returning=("id", "person_id", "occurrence_key"),
        skip_conflicts=True,
    )
    report.enrolled += len(fresh)
    if not fresh:
        insert_rows(DecisionLog, decisions)
        return

    by_person = {o.person_id: o for o in accepted}
    # Per arm, its follow-ups: the holdout gets nothing (its "would have sent" is logged), an arm
    # without its own sequence gets the rule's.
    sequences: dict[int, tuple[tuple[FollowUp, ...], Variant | None]] = {}
    for variant in {v.pk: v for v in arms.values()}.values():
        if variant.holdout:
            sequences[variant.pk] = ((), variant)
        elif variant.follow_ups:
            sequences[variant.pk] = (parse_follow_ups(variant.follow_ups)[0], variant)
        else:
            sequences[variant.pk] = (spec.follow_ups, variant)
    wanted = {f.template for seq, _ in sequences.values() for f in seq} | {
        f.template for f in spec.follow_ups
    }
    templates = lookups.templates if lookups is not None else {}
    if missing := wanted - templates.keys():
        templates.update(MessageTemplate.objects.filter(slug__in=missing).values_list("slug", "pk"))
    local = any(f.at is not None for seq, _ in sequences.values() for f in seq) or any(
        f.at is not None for f in spec.follow_ups
    )
    zones = (
        dict(Person.objects.filter(pk__in={row[1] for row in fresh}).values_list("pk", "timezone"))
        if local
        else {}
    )
    messages: list[dict[str, Any]] = []
    for enrollment_id, person_id, key in sorted(fresh):
        occurrence = by_person[person_id]
        follow_ups, variant = sequences[arms[person_id].pk] if arms else (spec.follow_ups, None)
        detail = {"occurrence": key, **occurrence.context}
        if variant is not None:
            detail["variant"] = variant.name
        decide(person_id, "enrolled", detail, enrollment=enrollment_id)
        if variant is not None and variant.holdout:
            decide(
                person_id,
                "holdout",
                {
                    "variant": variant.name,
                    "would_have_sent": [f.to_definition() for f in spec.follow_ups],
                },
                reason="experiment",
                enrollment=enrollment_id,
            )
        for step, follow_up in enumerate(follow_ups):
            messages.append(
                {
                    "idempotency_key": idempotency_key(version.pk, person_id, key, step),
                    "enrollment_id": enrollment_id,
                    "rule_id": rule.pk,
                    "rule_version_id": version.pk,
                    "person_id": person_id,
                    "step": step,
                    "channel": follow_up.channel,
                    "template_id": templates[follow_up.template],
                    "due_at": follow_up_due_at(occurrence.at, follow_up, zones.get(person_id)),
                }
            )
    insert_rows(Message, messages, skip_conflicts=True)
    report.scheduled += len(messages)
    insert_rows(DecisionLog, decisions)


def enroll_occurrences(rule: Rule, occurrences: list[Occurrence], *, now: datetime) -> RuleReport:
    """Decide occurrences found outside a live tick (a replay of stored history) as a tick at
    ``now`` would: segment, re-entry, experiment arm, follow-ups and the decision log."""
    spec, problems = parse_rule(rule.current_version.definition)
    report = RuleReport(rule=rule.slug, found=len(occurrences))
    if spec is None:
        raise ValueError(f"rule {rule.slug} has an invalid definition: {problems}")
    if occurrences:
        _enroll(rule, spec, occurrences, now, report)
    return report


def _arms(
    rule: Rule, people: set[int], now: datetime, lookups: TickLookups | None
) -> dict[int, Variant]:
    """Per eligible person, their arm of the rule's running experiment (none without one),
    persisted for those seen for the first time."""
    if not people or (lookups is not None and rule.pk not in lookups.experiment_rules):
        return {}
    experiment = Experiment.objects.filter(rule=rule, status=ExperimentStatus.RUNNING).first()
    if experiment is None:
        return {}
    return assign(experiment, people, now)


def _exits(rule: Rule, spec: RuleSpec, since: datetime, now: datetime, report: RuleReport) -> None:
    """Cancel pending follow-ups of people who met the rule's exit condition (``rules.exits``).

    Only people whose flow progress changed since the last tick can have exited, so the work
    follows the progress rows updated in between (an index range), not every pending enrollment.
    The delivery pipeline checks again at send time, so nothing is sent to someone who exited.
    """
    flow = exit_flow(spec)
    if flow is None:
        return
    moved = FlowProgress.objects.filter(flow__slug=flow, updated_at__gt=since)
    active = Enrollment.objects.filter(
        rule=rule,
        status=EnrollmentStatus.ACTIVE,
        messages__status__in=PENDING_STATUSES,
        person_id__in=moved.values("person_id"),
    ).distinct()
    rows = list(active.values_list("pk", "person_id", "context"))
    if not rows:
        return
    progress = {
        person_id: (furthest_step, completed_at is not None)
        for person_id, furthest_step, completed_at in FlowProgress.objects.filter(
            flow__slug=flow, person_id__in={r[1] for r in rows}
        ).values_list("person_id", "furthest_step", "completed_at")
    }
    exits: dict[int, tuple[int, str]] = {}
    for pk, person_id, context in rows:
        furthest_step, completed = progress.get(person_id, (0, False))
        reason = exit_reason(
            spec,
            enrolled_at_step=(context or {}).get("furthest_step"),
            furthest_step=furthest_step,
            completed=completed,
        )
        if reason is not None:
            exits[pk] = (person_id, reason)
    if not exits:
        return
    for reason in (COMPLETED, PROGRESSED):
        ids = [pk for pk, (_, r) in exits.items() if r == reason]
        if not ids:
            continue
        Message.objects.filter(enrollment_id__in=ids, status__in=PENDING_STATUSES).update(
            status=MessageStatus.CANCELLED, reason=f"exit:{reason}"
        )
        Enrollment.objects.filter(pk__in=ids).update(
            status=EnrollmentStatus.EXITED, exited_at=now, exit_reason=reason
        )
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
    report.exited += len(exits)


def evaluate_rule(
    rule: Rule, now: datetime, report: TickReport, lookups: TickLookups | None = None
) -> None:
    started = time.perf_counter()
    state = _claim(rule)
    if state is None:
        report.skipped_locked.append(rule.slug)
        return
    if state.checked_until is None:
        # A rule looks forward from its first evaluation; history is the backtest's job.
        state.checked_until = now
    spec, problems = parse_rule(rule.current_version.definition)
    rule_report = RuleReport(rule=rule.slug)
    if spec is None:
        logger.error(
            "rule %s has an invalid definition: %s", rule.slug, problems, extra={"rule": rule.slug}
        )
    elif now > state.checked_until:
        since = state.checked_until
        occurrences = list(detect(spec.trigger, since, now))
        rule_report.found = len(occurrences)
        if occurrences:
            _enroll(rule, spec, occurrences, now, rule_report, lookups)
        _exits(rule, spec, since, now, rule_report)
        state.checked_until = now
    rule_report.seconds = time.perf_counter() - started
    state.last_tick_at = now
    state.last_tick_seconds = rule_report.seconds
    state.save()
    report.rules.append(rule_report)


def evaluate_rules(*, now: datetime, dry_run: bool = False) -> TickReport:
    """Evaluate every active rule once, each in its own transaction."""
    report = TickReport(now=now, dry_run=dry_run)
    lookups = TickLookups.read()
    rules = Rule.objects.filter(status=RuleStatus.ACTIVE, current_version__isnull=False)
    for rule in rules.select_related("current_version").order_by("-priority", "pk"):
        evaluated = len(report.rules)
        try:
            with transaction.atomic():
                evaluate_rule(rule, now, report, lookups)
                if dry_run:
                    raise _DryRun
        except _DryRun:
            pass
        else:
            for rule_report in report.rules[evaluated:]:
                _observe(rule_report)
    return report


def _observe(report: RuleReport) -> None:
    """A committed rule tick: its metrics and its one log line (ids and counts only)."""
    skipped = sum(report.skipped.values())
    outcomes = {f"skipped_{reason}": n for reason, n in report.skipped.items()}
    outcomes["enrolled"] = report.enrolled
    outcomes["already_enrolled"] = max(0, report.found - report.enrolled - skipped)
    metrics.rule_ticked(rule=report.rule, seconds=report.seconds, outcomes=outcomes)
    logger.info(
        "rule %s ticked in %.3fs: %d found, %d enrolled, %d skipped, %d scheduled, %d exited",
        report.rule,
        report.seconds,
        report.found,
        report.enrolled,
        skipped,
        report.scheduled,
        report.exited,
        extra={
            "rule": report.rule,
            "duration_seconds": round(report.seconds, 6),
            "found": report.found,
            "enrolled": report.enrolled,
            "skipped": dict(report.skipped),
            "scheduled": report.scheduled,
            "exited": report.exited,
        },
    )
