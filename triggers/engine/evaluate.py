"""One evaluation pass: detect due occurrences per active rule, enroll, schedule follow-ups.

A tick runs every active rule in one transaction (:func:`evaluate_rules`): it claims their
:class:`RuleState` rows in one statement (``SKIP LOCKED`` on PostgreSQL, so overlapping ticks and
two beats never evaluate a rule twice at once: a rule another tick holds is skipped), and moves
all their watermarks in one statement before its one commit. Per rule: detect the occurrences
that fell due since its watermark, filter them (segment, re-entry), insert enrollments (the unique
(rule, person, occurrence) constraint is the final guard), schedule their messages, record every
decision — set-based: one statement per check and per table for all the people due, not one per
person (DESIGN §5; on PostgreSQL one statement for the three tables). Then exits
(:mod:`.exiting`): active enrollments whose people progressed or completed have their pending
follow-ups cancelled. What the rules of a tick read alike is read once per tick
(:class:`.lookups.TickLookups`): running experiments, templates, and for all the rules of a flow
at once, the idle spells and the exit check's candidates. Should a rule fail, the tick's
transaction is rolled back whole and the tick runs again one transaction per rule (as it did
before), so that the rules before the failing one still go ahead.
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

from config import metrics
from onboarding.models import Person, Segment
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
from triggers.rules.spec import FollowUp, RuleSpec, parse_follow_ups, parse_rule
from triggers.simulation.history import for_people

from .detectors import Occurrence, detect
from .exiting import cancel_exits
from .inserts import LINK, Then, insert_rows
from .lookups import TickLookups
from .timestamps import fast_timestamps
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
    """The people whom re-entry holds back: enrolled in the rule before (once), or within the
    last N days (once per N days). Only their ids are read (the ids asked for travel as one
    array on PostgreSQL)."""
    existing = for_people(Enrollment.objects.filter(rule=rule), "person_id", sorted(people))
    if not spec.reentry_once:
        every = timedelta(seconds=spec.reentry_every or 0)
        existing = existing.filter(enrolled_at__gt=now - every)
    return set(existing.values_list("person_id", flat=True).distinct()) & people


def _enroll(
    rule: Rule,
    spec: RuleSpec,
    occurrences: list[Occurrence],
    now: datetime,
    report: RuleReport,
    lookups: TickLookups | None = None,
) -> list[tuple[int, int, int | None, bool]]:
    """Decide and write a batch of occurrences, set-based: a fixed number of statements per rule
    and tick, whatever the number of people (DESIGN §5).

    Reads: late data already logged (only when some occurrence is late), segment members, the
    re-entry history, the running experiment (and its assignments); writes: one ``INSERT`` each
    for enrollments, follow-ups and decisions (:func:`insert_rows`). Per person, Python only sorts
    and looks up sets, hashes idempotency keys and experiment arms (the one implementation the
    backtest shares) and computes local due times (time zones, which SQLite cannot).

    Returns the enrollments made: id, person, the step enrolled at, whether a follow-up was
    scheduled (the exit check's candidates).
    """
    version = rule.current_version
    decisions: list[dict[str, Any]] = []

    def decide(
        person_id: int, outcome: str, detail: dict, *, reason: str = "", linked: bool = False
    ) -> None:
        """A decision; ``linked`` to the person's enrollment made here (:class:`.inserts.Then`)."""
        decisions.append(
            {
                "person_id": person_id,
                "outcome": outcome,
                "reason": reason,
                "detail": detail,
                LINK: linked,
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
    if accepted and (missing := wanted - templates.keys()):
        templates.update(MessageTemplate.objects.filter(slug__in=missing).values_list("slug", "pk"))
    local = any(f.at is not None for seq, _ in sequences.values() for f in seq) or any(
        f.at is not None for f in spec.follow_ups
    )
    zones = (
        dict(Person.objects.filter(pk__in=seen_people).values_list("pk", "timezone"))
        if local and accepted
        else {}
    )
    # Follow-ups and decisions are written with the enrollments, each linked to the enrollment
    # of its person (one per person here); those of an occurrence enrolled before (a conflict)
    # are left out with it.
    messages: list[dict[str, Any]] = []
    follow_ups_of: dict[int, tuple[FollowUp, ...]] = {}
    for occurrence in accepted:
        person_id, key = occurrence.person_id, occurrence.key
        follow_ups, variant = sequences[arms[person_id].pk] if arms else (spec.follow_ups, None)
        follow_ups_of[person_id] = follow_ups
        detail = {"occurrence": key, **occurrence.context}
        if variant is not None:
            detail["variant"] = variant.name
        decide(person_id, "enrolled", detail, linked=True)
        if variant is not None and variant.holdout:
            decide(
                person_id,
                "holdout",
                {
                    "variant": variant.name,
                    "would_have_sent": [f.to_definition() for f in spec.follow_ups],
                },
                reason="experiment",
                linked=True,
            )
        for step, follow_up in enumerate(follow_ups):
            messages.append(
                {
                    "idempotency_key": idempotency_key(version.pk, person_id, key, step),
                    "person_id": person_id,
                    "step": step,
                    "channel": follow_up.channel,
                    "template_id": templates[follow_up.template],
                    "due_at": follow_up_due_at(occurrence.at, follow_up, zones.get(person_id)),
                    LINK: True,
                }
            )
    # The rule's state row is locked, so no other tick of this rule enrolls at the same time; the
    # unique (rule, person, occurrence) constraint leaves out an occurrence enrolled before. What
    # every row of the rule has (its id, version, the moment) is bound once per statement.
    rule_ids = {"rule_id": rule.pk, "rule_version_id": version.pk}
    fresh = insert_rows(
        Enrollment,
        [
            {
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
        constants=rule_ids,
        then=[
            Then(
                Message,
                messages,
                "enrollment_id",
                "person_id",
                skip_conflicts=True,
                constants=rule_ids,
            ),
            Then(
                DecisionLog,
                decisions,
                "enrollment_id",
                "person_id",
                constants=rule_ids | {"at": now},
            ),
        ],
    )
    report.enrolled += len(fresh)
    by_person = {o.person_id: o for o in accepted}
    enrolled = [
        (
            enrollment_id,
            person_id,
            by_person[person_id].context.get("furthest_step"),
            bool(follow_ups_of[person_id]),
        )
        for enrollment_id, person_id, _ in sorted(fresh)
    ]
    report.scheduled += sum(len(follow_ups_of[person_id]) for _, person_id, _ in fresh)
    return enrolled


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


def _evaluate(
    rule: Rule, state: RuleState, now: datetime, report: TickReport, lookups: TickLookups | None
) -> None:
    """Evaluate a claimed rule: detect, enroll, check exits; move ``state`` (not saved)."""
    started = time.perf_counter()
    if state.checked_until is None:
        # A rule looks forward from its first evaluation; history is the backtest's job.
        state.checked_until = now
    spec, problems = (
        lookups.spec(rule) if lookups is not None else parse_rule(rule.current_version.definition)
    )
    rule_report = RuleReport(rule=rule.slug)
    if spec is None:
        logger.error(
            "rule %s has an invalid definition: %s", rule.slug, problems, extra={"rule": rule.slug}
        )
    elif now > state.checked_until:
        since = state.checked_until
        occurrences = lookups.occurrences(rule, since) if lookups is not None else None
        if occurrences is None:
            occurrences = list(detect(spec.trigger, since, now))
        rule_report.found = len(occurrences)
        fresh = _enroll(rule, spec, occurrences, now, rule_report, lookups) if occurrences else []
        read = lookups.exit_candidates(rule, since) if lookups is not None else None
        rule_report.exited += cancel_exits(rule, spec, since, now, read=read, fresh=fresh)
        state.checked_until = now
    rule_report.seconds = time.perf_counter() - started
    state.last_tick_at = now
    state.last_tick_seconds = rule_report.seconds
    report.rules.append(rule_report)


def evaluate_rule(
    rule: Rule, now: datetime, report: TickReport, lookups: TickLookups | None = None
) -> None:
    """Claim and evaluate one rule, in the caller's transaction (the sandbox, a tick's fallback)."""
    state = _claim(rule)
    if state is None:
        report.skipped_locked.append(rule.slug)
        return
    _evaluate(rule, state, now, report, lookups)
    state.save(update_fields=WATERMARK_FIELDS)


WATERMARK_FIELDS = ["checked_until", "last_tick_at", "last_tick_seconds"]


def _claim_all(rules: list[Rule]) -> dict[int, RuleState]:
    """The state rows of ``rules``, locked, by rule id, in one statement (a second when a rule
    has none yet); those another tick holds are left out (``SKIP LOCKED`` on PostgreSQL)."""
    ids = [rule.pk for rule in rules]
    states = RuleState.objects.filter(rule_id__in=ids)
    if connection.vendor == "postgresql":
        locked = states.select_for_update(skip_locked=True)
    else:
        locked = states.select_for_update()
    claimed = {state.rule_id: state for state in locked}
    if len(claimed) < len(ids):
        missing = set(ids) - claimed.keys()
        held = set(states.filter(rule_id__in=missing).values_list("rule_id", flat=True))
        if new := missing - held:
            RuleState.objects.bulk_create(
                [RuleState(rule_id=pk) for pk in new], ignore_conflicts=True
            )
            claimed |= {state.rule_id: state for state in locked.filter(rule_id__in=new)}
    return claimed


def _tick_together(
    rules: list[Rule], now: datetime, lookups: TickLookups, report: TickReport
) -> None:
    """Every rule in the caller's one transaction: one claim, one watermark update for all."""
    claimed = _claim_all(rules)
    lookups.prepare(
        [rule for rule in rules if rule.pk in claimed],
        now,
        watermarks={pk: state.checked_until for pk, state in claimed.items()},
    )
    for rule in rules:
        state = claimed.get(rule.pk)
        if state is None:
            report.skipped_locked.append(rule.slug)
        else:
            _evaluate(rule, state, now, report, lookups)
    if claimed:
        RuleState.objects.bulk_update(list(claimed.values()), WATERMARK_FIELDS)


def evaluate_rules(*, now: datetime, dry_run: bool = False) -> TickReport:
    """Evaluate every active rule once.

    All the rules in one transaction: their state rows claimed in one statement, their
    watermarks moved in one, one commit (DESIGN §5: a tick's statements per rule are its
    detection and its writes). Should any rule fail, that transaction is rolled back as a whole
    (nothing of it was committed, no watermark moved) and the tick runs again one transaction
    per rule, in priority order: the rules before the failing one commit, its error surfaces
    as it always did. A dry run rolls back the one transaction."""
    lookups = TickLookups.read()
    active = Rule.objects.filter(status=RuleStatus.ACTIVE, current_version__isnull=False)
    rules = list(active.select_related("current_version").order_by("-priority", "pk"))
    report = TickReport(now=now, dry_run=dry_run)
    with fast_timestamps():
        return _evaluate_rules(rules, now, lookups, report, dry_run)


def _evaluate_rules(
    rules: list[Rule], now: datetime, lookups: TickLookups, report: TickReport, dry_run: bool
) -> TickReport:
    try:
        with transaction.atomic():
            _tick_together(rules, now, lookups, report)
            if dry_run:
                raise _DryRun
    except _DryRun:
        return report
    except Exception:
        logger.warning("tick of %d rules failed in one transaction; again rule by rule", len(rules))
        report = _tick_rule_by_rule(rules, now, TickLookups.read(), dry_run)
    else:
        for rule_report in report.rules:
            _observe(rule_report)
    return report


def _tick_rule_by_rule(
    rules: list[Rule], now: datetime, lookups: TickLookups, dry_run: bool
) -> TickReport:
    """Each rule in its own transaction (the fallback of :func:`evaluate_rules`)."""
    report = TickReport(now=now, dry_run=dry_run)
    lookups.prepare(rules, now)
    for rule in rules:
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
