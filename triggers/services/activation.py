"""Activation's one option: also enroll the people who are idle right now (issue 15 item 2).

A rule looks forward from its activation (DESIGN §4.1): an occurrence fires only when its
deadline is after it, so people already idle when a rule is switched on are left alone. For an
*inactive in onboarding* rule the editor offers to enroll them as well, bounded: only people in
an idle spell that began at most ``max_idle_hours`` ago (their last activity is that recent),
whose ``minutes`` mark has already passed, who are still in the flow's window, match the segment
and are not held back by re-entry. Nothing else changes: it is off by default, and every other
occurrence still needs a deadline after activation.

How they are enrolled:

- The spells are the live detector's own (:func:`triggers.engine.detectors.detect` over the
  recent past), so each keeps the key the detector gives it (``idle:<last activity>``). The live
  detector never finds these spells again (their deadlines are before activation, where it
  looks from), and if anything did, the unique (rule, person, occurrence) constraint refuses a
  second enrollment for the same spell.
- They enter at the moment of activation: ``enrolled_at`` is the activation, so the rule's
  delays count from it ("0m" goes out on the next delivery pass, "1h" an hour after activation),
  and so does a "once per N days" re-entry period.
- Enrollment goes through :func:`triggers.engine.evaluate.enroll_occurrences` (segment,
  re-entry, experiment arm, follow-ups and the decision log, as a tick decides); each ``enrolled``
  row then carries reason ``activation_backfill``, and its detail says how long the person had
  been idle. The backfill is written to the audit log with its count.

*Inactive across sessions* is not offered: its occurrence is the start of a K-th session
without progress, an event someone is active in, not a spell they are idle in; the other kinds
are events or deadlines that have passed, which is exactly what activation leaves alone.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import Max

from onboarding.configfile.errors import ProblemsError
from onboarding.models import FlowProgress, Segment
from onboarding.segments import members_queryset
from triggers.engine.detectors import Occurrence, detect
from triggers.engine.evaluate import enroll_occurrences
from triggers.models import DecisionLog, Enrollment, Rule, RuleState, RuleStatus
from triggers.rules.spec import RuleSpec, parse_rule

from .audit import audit

BACKFILL_KINDS = ("inactive_in_flow",)
BACKFILL_REASON = "activation_backfill"
DEFAULT_MAX_IDLE_HOURS = 24
MAX_IDLE_HOURS = 7 * 24


class BackfillError(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def offers_backfill(kind: str) -> bool:
    return kind in BACKFILL_KINDS


def _check_hours(max_idle_hours: int) -> None:
    if not 1 <= max_idle_hours <= MAX_IDLE_HOURS:
        raise BackfillError("bad_hours", f"Between 1 and {MAX_IDLE_HOURS} hours.")


def backfill_candidates(
    spec: RuleSpec, *, rule: Rule | None, now: datetime, max_idle_hours: int
) -> list[Occurrence]:
    """The idle spells activation at ``now`` would enroll: people idle for at least the rule's
    minutes and for less than ``max_idle_hours``, in the flow's open window, in the segment, not
    held back by re-entry (``rule``'s enrollments; none for a rule not saved yet).

    Each occurrence is the detector's, moved to ``now`` (the follow-ups count from activation),
    with the original deadline and the idle duration in its context.
    """
    _check_hours(max_idle_hours)
    trigger = spec.trigger
    if not offers_backfill(trigger.kind):
        return []
    idle = timedelta(minutes=trigger.minutes or 0)
    horizon = timedelta(hours=max_idle_hours)
    if horizon <= idle:
        return []
    # Spells whose deadline (last activity + idle) is in (now − horizon + idle, now]: the last
    # activity is less than ``horizon`` ago and the idle mark has passed. The detector's
    # late-learnt spells count too (the person is idle now all the same), within the horizon.
    found = [
        o for o in detect(trigger, now - horizon + idle, now) if now - horizon + idle < o.at <= now
    ]
    if not found:
        return []
    people = {o.person_id for o in found}
    in_window = set(
        FlowProgress.objects.filter(
            flow__slug=trigger.flow, person_id__in=people, window_ends_at__gt=now
        ).values_list("person_id", flat=True)
    )
    people &= in_window & _members(spec.segment, people, now)
    people -= _reentry_held(spec, rule, people, now)
    return [
        replace(
            o,
            at=now,
            late=False,
            context={
                **o.context,
                "backfill": True,
                "deadline": o.at.isoformat(),
                "idle_seconds": int((now - o.at + idle).total_seconds()),
            },
        )
        for o in sorted(found, key=lambda o: o.person_id)
        if o.person_id in people
    ]


def _members(segment_slug: str | None, people: set[int], now: datetime) -> set[int]:
    if not segment_slug:
        return people
    segment = Segment.objects.filter(slug=segment_slug).first()
    if segment is None:
        return set()
    try:
        members = members_queryset(segment, now)
    except ProblemsError:
        return set()
    return set(members.filter(pk__in=people).values_list("pk", flat=True))


def _reentry_held(spec: RuleSpec, rule: Rule | None, people: set[int], now: datetime) -> set[int]:
    """People the rule's re-entry setting keeps out at ``now`` (the count shown before
    activating; the enrollment itself applies the engine's own check again)."""
    if rule is None or rule.pk is None or not people:
        return set()
    existing = Enrollment.objects.filter(rule=rule, person_id__in=people)
    if spec.reentry_once:
        return set(existing.values_list("person_id", flat=True))
    every = timedelta(seconds=spec.reentry_every or 0)
    latest = existing.values("person_id").annotate(last=Max("enrolled_at"))
    return {row["person_id"] for row in latest if row["last"] > now - every}


@dataclass(frozen=True)
class BackfillReport:
    enrolled: int
    candidates: int
    max_idle_hours: int
    at: datetime


def activation_backfill(*, rule: Rule, max_idle_hours: int, actor: Any = None) -> BackfillReport:
    """Enroll the people idle right now into ``rule``, just activated (see the module).

    "Now" is the activation: the moment the live detector looks forward from
    (``RuleState.checked_until``), so the two never cover the same deadline.
    """
    _check_hours(max_idle_hours)
    with transaction.atomic():
        rule = (
            Rule.objects.select_for_update(of=("self",))
            .select_related("current_version")
            .get(pk=rule.pk)
        )
        if rule.status != RuleStatus.ACTIVE or rule.current_version is None:
            raise BackfillError("not_active", "Only an active rule enrolls anyone.")
        spec, problems = parse_rule(rule.current_version.definition)
        if spec is None:
            raise BackfillError("invalid_rule", "; ".join(str(p) for p in problems))
        if not offers_backfill(spec.trigger.kind):
            raise BackfillError(
                "not_idle", "Only rules that fire on inactivity in onboarding can enroll people."
            )
        # Locked as a tick locks it (evaluate._claim): no tick of this rule runs meanwhile, so
        # the watermark read here is where the live detector goes on from.
        state = RuleState.objects.select_for_update().filter(rule=rule).first()
        if state is None or state.checked_until is None:
            raise BackfillError("not_active", "The rule has not been activated.")
        at = state.checked_until
        candidates = backfill_candidates(spec, rule=rule, now=at, max_idle_hours=max_idle_hours)
        report = enroll_occurrences(rule, candidates, now=at)
        keys = {o.key for o in candidates}
        DecisionLog.objects.filter(
            rule=rule,
            outcome="enrolled",
            at=at,
            enrollment__enrolled_at=at,
            enrollment__occurrence_key__in=keys,
        ).update(reason=BACKFILL_REASON)
        audit(
            actor=actor,
            action="activation_backfill",
            obj=rule,
            changes={"max_idle_hours": max_idle_hours, "enrolled": report.enrolled},
        )
    return BackfillReport(
        enrolled=report.enrolled,
        candidates=len(candidates),
        max_idle_hours=max_idle_hours,
        at=at,
    )
