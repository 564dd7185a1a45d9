"""The demo's trigger history: what the demo rules would have done over the seeded 30 days.

``manage.py seed_demo`` stores 30 days of journeys, but live rules only look forward, so a fresh
demo would show no trigger activity at all. This module gives it a history made by Onramp's own
machinery rather than invented rows:

1. **Who enrolled, and when**: the backtest (:func:`~triggers.simulation.backtest.run_backtest`,
   the live engine's decisions replayed over the stored events) of each demo rule; its entries go
   through the engine's own enrollment (:func:`~triggers.engine.evaluate.enroll_occurrences`) at
   the tick that would have found them, so re-entry, the experiment's arms (a running demo
   experiment holds 20 % of the 2-minute pause nudge's people out), follow-ups, idempotency keys
   and the decision log are the engine's.
2. **Delivery**: every follow-up due before now, across all rules in time order, through the
   pipeline's checks in its order (consent → address → exit → frequency caps → quiet hours →
   render), judged as they stood *then*: flow progress at that moment (from the person's
   per-step times), sends counted from the ledger written so far. Consent, caps, quiet hours
   and rendering are the pipeline's own functions (:mod:`triggers.delivery.checks`); only the
   exit check differs, because it reads progress as of the send, not as of now. Sends are recorded at their
   due time; nothing is handed to a provider. Follow-ups due later stay scheduled for the worker.
3. **Responses**, seeded per message, that follow the person's real activity: an in-app message
   is seen when the person next came back, and is then clicked or dismissed now and then; an
   email is opened now and then and clicked only by people who came back within two days (the
   click comes just before their next event). Recorded with the delivery pipeline's own
   :func:`~triggers.services.outcomes.message_record_outcome`.

Runs once: a rule that already has enrollments has a history (live or from an earlier seed), so
a second run changes nothing. Deterministic for the same events and seed.
"""

from __future__ import annotations

import hashlib
import heapq
import random
import time
from bisect import bisect_right
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from onboarding.models import Event, FlowProgress, Person
from triggers.channels import channel_for
from triggers.delivery.checks import (
    CAPPED_STATUSES,
    CapLedger,
    consent_refuses,
    quiet_resume,
    render_into,
)
from triggers.delivery.outcomes import decision
from triggers.engine.detectors import Occurrence
from triggers.engine.evaluate import enroll_occurrences
from triggers.models import (
    DecisionLog,
    Enrollment,
    Experiment,
    ExperimentStatus,
    Message,
    ReviewItem,
    Rule,
    RuleState,
)
from triggers.models.messages import PENDING_STATUSES, MessageStatus
from triggers.models.rules import EnrollmentStatus
from triggers.rendering import TemplateProblem
from triggers.rules.spec import RuleSpec, parse_rule
from triggers.services.experiments import experiment_save, experiment_set_status
from triggers.services.outcomes import message_record_outcome
from triggers.simulation.backtest import run_backtest

HISTORY = timedelta(days=30)
TICK = timedelta(seconds=30)  # the beat's evaluation interval, as the backtest replays it

DEMO_EXPERIMENT = "demo-pause-nudge-holdout"
DEMO_EXPERIMENT_RULE = "pause-2m-nudge"

# Response behaviour (chances per message). In-app: seen by some of the people who came back
# within SEEN_WITHIN (the widget is not on every page); of those seen, some click, some dismiss. Email: opened now and then; clicked
# only by people who came back within CLICK_WITHIN (a click lands them in the app).
SEEN_WITHIN = timedelta(days=3)
IN_APP_SEEN = 0.6
CLICK_WITHIN = timedelta(days=2)
IN_APP_CLICK = 0.2
IN_APP_DISMISS = 0.45
EMAIL_OPEN = 0.4
EMAIL_CLICK = 0.35


@dataclass
class HistoryReport:
    enrolled: int = 0
    outcomes: Counter = field(default_factory=Counter)
    responses: Counter = field(default_factory=Counter)
    already: bool = False
    seconds: float = 0.0

    def __str__(self) -> str:
        if self.already:
            return "Demo trigger history: already present."
        outcomes = ", ".join(f"{n} {k}" for k, n in sorted(self.outcomes.items()))
        responses = ", ".join(f"{n} {k}" for k, n in sorted(self.responses.items()))
        return (
            f"Demo trigger history (backtest of the last {HISTORY.days} days): "
            f"{self.enrolled} enrollments; follow-ups: {outcomes or 'none'}; "
            f"responses: {responses or 'none'} ({self.seconds:.1f} s)."
        )


def _tick_after(moment: datetime, since: datetime) -> datetime:
    """The first evaluation tick (every 30 s from ``since``) at or after ``moment``."""
    steps = -((since - moment) // TICK)  # ceil((moment - since) / TICK)
    return since + max(0, steps) * TICK


def _rng(seed: int, *parts: Any) -> random.Random:
    digest = hashlib.sha256(":".join(str(p) for p in (seed, *parts)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


# --- the experiment ------------------------------------------------------------------------------


def _demo_experiment(rule: Rule, since: datetime, seed: int) -> Experiment:
    """A running 80/20 test of the pause nudge against a holdout, started with the history.

    The assignment seed is fixed (not random as for a new experiment), so the same demo data puts
    the same people in the holdout."""
    experiment, _ = experiment_save(
        slug=DEMO_EXPERIMENT,
        rule_slug=rule.slug,
        variants=[
            {"name": "reminders", "weight": 80},
            {"name": "holdout", "weight": 20, "holdout": True},
        ],
        metric={"flow": "activation", "completed_within": "7d"},
        planned_users_per_arm=400,
    )
    if experiment.status == ExperimentStatus.DRAFT and not experiment.assignments.exists():
        Experiment.objects.filter(pk=experiment.pk).update(seed=f"demo-{seed}")
        experiment = experiment_set_status(experiment=experiment, status=ExperimentStatus.RUNNING)
        Experiment.objects.filter(pk=experiment.pk).update(started_at=since)
    return experiment


# --- enrollment ----------------------------------------------------------------------------------


def _occurrence(entry, steps: dict[int, list[datetime]]) -> Occurrence:
    """A backtest entry as the engine's occurrence; the context the exit check needs (the step
    the person had reached then) comes from their flow progress at that moment."""
    context: dict[str, Any] = {"history": "demo backtest"}
    times = steps.get(entry.person_id)
    if times is not None and entry.occurrence.split(":", 1)[0] in ("idle", "abandon"):
        context["furthest_step"] = bisect_right(times, entry.at)
    return Occurrence(entry.person_id, entry.occurrence, entry.at, context)


def _step_times(flow_slug: str) -> dict[int, list[datetime]]:
    """Per person, when they first reached each step of the flow (entry + per-step gaps)."""
    out: dict[int, list[datetime]] = {}
    for person_id, entered, gaps in FlowProgress.objects.filter(flow__slug=flow_slug).values_list(
        "person_id", "entered_at", "step_seconds"
    ):
        times = [entered]
        for gap in gaps or []:
            times.append(times[-1] + timedelta(seconds=float(gap)))
        out[person_id] = times
    return out


def _enroll(rules: list[Rule], since: datetime, until: datetime, now: datetime) -> int:
    steps = _step_times("activation")
    batches: dict[tuple[datetime, int], list[Occurrence]] = defaultdict(list)
    by_pk = {rule.pk: rule for rule in rules}
    for rule in rules:
        result = run_backtest(rule=rule, since=since, until=until, now=now)
        for entry in result.entries:
            batches[(_tick_after(entry.at, since), rule.pk)].append(_occurrence(entry, steps))
    enrolled = 0
    for (tick, rule_pk), occurrences in sorted(
        batches.items(), key=lambda item: (item[0][0], -by_pk[item[0][1]].priority, item[0][1])
    ):
        enrolled += enroll_occurrences(by_pk[rule_pk], occurrences, now=tick).enrolled
    return enrolled


# --- delivery ------------------------------------------------------------------------------------


class _Delivery:
    """The pipeline's checks in its order, judged with the state of the moment of each send."""

    def __init__(self, rules: list[Rule], since: datetime, now: datetime) -> None:
        self.since, self.now = since, now
        self.specs: dict[int, RuleSpec] = {}
        for rule in rules:
            spec, _ = parse_rule(rule.current_version.definition)
            if spec is not None:
                self.specs[rule.pk] = spec
        self.priority = {rule.pk: rule.priority for rule in rules}
        self.messages = {
            m.pk: m
            for m in Message.objects.filter(
                rule__in=rules, status__in=PENDING_STATUSES
            ).select_related("template", "enrollment")
        }
        self.by_enrollment: dict[int, list[Message]] = defaultdict(list)
        for message in self.messages.values():
            self.by_enrollment[message.enrollment_id].append(message)
        people = {m.person_id for m in self.messages.values()}
        self.people = {p.pk: p for p in Person.objects.filter(pk__in=people)}
        self.steps = _step_times("activation")
        self.completed = dict(
            FlowProgress.objects.filter(
                flow__slug="activation", person_id__in=people, completed_at__isnull=False
            ).values_list("person_id", "completed_at")
        )
        sends: dict[int, list[tuple[int, datetime]]] = defaultdict(list)
        for person_id, rule_id, sent_at in Message.objects.filter(
            person_id__in=people, status__in=CAPPED_STATUSES, sent_at__isnull=False
        ).values_list("person_id", "rule_id", "sent_at"):
            sends[person_id].append((rule_id, sent_at))
        self.caps = CapLedger(sends)  # every send, then each one this history makes
        self.decisions: list[DecisionLog] = []
        self.reviews: list[ReviewItem] = []
        self.changed: set[int] = set()
        self.exited: dict[int, tuple[datetime, str]] = {}
        self.outcomes: Counter = Counter()

    def run(self) -> Counter:
        queue = [
            (m.due_at, -self.priority[m.rule_id], m.pk)
            for m in self.messages.values()
            if m.rule_id in self.specs
        ]
        heapq.heapify(queue)
        while queue:
            due, _, pk = heapq.heappop(queue)
            message = self.messages[pk]
            moment = min(due, self.now)
            if message.status not in PENDING_STATUSES or self._exit(message, moment):
                continue
            if due > self.now:
                continue  # still scheduled: the worker sends it when it is due
            resume = self._deliver(message, moment)
            if resume is not None:
                heapq.heappush(queue, (resume, -self.priority[message.rule_id], pk))
        self._save()
        return self.outcomes

    def _log(self, message: Message, at: datetime, outcome: str, reason: str = "", **detail):
        self.decisions.append(decision(message, at, outcome, reason, **detail))

    def _set(self, message: Message, status: str, reason: str, at: datetime, outcome: str) -> None:
        message.status, message.reason = status, reason
        self.changed.add(message.pk)
        self._log(message, at, outcome, reason.removeprefix("exit:"))
        self.outcomes[outcome if outcome != "suppressed" else reason] += 1

    def _exit_at(self, message: Message, moment: datetime) -> tuple[datetime, str] | None:
        """When (and why) the person met the rule's exit condition after enrolling, if by then."""
        spec = self.specs[message.rule_id]
        if spec.exit_when == "never" or not spec.trigger.flow:
            return None
        enrollment = message.enrollment
        done = self.completed.get(message.person_id)
        if done is not None and enrollment.enrolled_at < done <= moment:
            return done, "completed"
        before = (enrollment.context or {}).get("furthest_step")
        if spec.exit_when == "progressed" and before is not None:
            times = self.steps.get(message.person_id, [])
            if len(times) > before and enrollment.enrolled_at < times[before] <= moment:
                return times[before], "progressed"
        return None

    def _exit(self, message: Message, moment: datetime) -> bool:
        """The engine's exit (the first tick after progress cancels every pending follow-up), or
        the pipeline's own check when the send came before that tick."""
        found = self._exit_at(message, moment)
        if found is None:
            return False
        progressed_at, reason = found
        tick = _tick_after(progressed_at, self.since)
        if tick > moment:
            self._set(message, MessageStatus.CANCELLED, f"exit:{reason}", moment, "cancelled")
            return True
        enrollment = message.enrollment
        self.exited[enrollment.pk] = (tick, reason)
        for other in self.by_enrollment[enrollment.pk]:
            if other.status in PENDING_STATUSES:
                other.status, other.reason = MessageStatus.CANCELLED, f"exit:{reason}"
                self.changed.add(other.pk)
                self.outcomes["exited"] += 1
        self.decisions.append(
            DecisionLog(
                at=tick,
                person_id=message.person_id,
                rule_id=message.rule_id,
                rule_version_id=enrollment.rule_version_id,
                enrollment_id=enrollment.pk,
                outcome="exited",
                reason=reason,
            )
        )
        return True

    def _deliver(self, message: Message, moment: datetime) -> datetime | None:
        """One due follow-up; returns when to look again if quiet hours deferred it."""
        spec = self.specs[message.rule_id]
        person = self.people[message.person_id]
        channel = channel_for(message.channel)
        if consent_refuses(person, message.channel):
            self._set(message, MessageStatus.SUPPRESSED, "consent", moment, "suppressed")
            return None
        if channel.address(person) is None:
            return self._review(message, moment, "no_address", f"no {message.channel} address")
        cap = self.caps.reason(message, spec, moment)
        if cap:
            self._set(message, MessageStatus.SUPPRESSED, cap, moment, "suppressed")
            return None
        resume = quiet_resume(spec, person, moment)
        if resume is not None:
            message.status, message.reason, message.due_at = (
                MessageStatus.DEFERRED,
                "quiet_hours",
                resume,
            )
            self.changed.add(message.pk)
            self._log(message, moment, "deferred", "quiet_hours", until=resume.isoformat())
            self.outcomes["deferred"] += 1
            return resume
        try:
            render_into(message, person, channel)
        except TemplateProblem as problem:
            return self._review(message, moment, "render", str(problem))
        message.attempts += 1
        message.sent_at = moment
        message.provider_id = f"{message.channel}:{message.pk}:demo-history"
        self._set(message, MessageStatus.SENT, "", moment, "sent")
        self.caps.add(message, moment)
        return None

    def _review(self, message: Message, moment: datetime, reason: str, detail: str) -> None:
        """The demo rules have no fallback channel: support staff get a review item."""
        self._set(message, MessageStatus.NEEDS_REVIEW, reason, moment, "review")
        self.reviews.append(ReviewItem(message=message, reason=reason, detail=detail))

    def _save(self) -> None:
        """Write the outcomes: one UPDATE per (status, reason) for rows that only changed status,
        one batched statement for the rows that carry a send or a new due time."""
        plain: dict[tuple[str, str], list[int]] = defaultdict(list)
        detailed: list[Message] = []
        for pk in sorted(self.changed):
            message = self.messages[pk]
            if message.status in (MessageStatus.SENT, MessageStatus.DEFERRED):
                detailed.append(message)
            else:
                plain[(message.status, message.reason)].append(pk)
        for (status, reason), pks in plain.items():
            Message.objects.filter(pk__in=pks).update(status=status, reason=reason)
        if detailed:
            # bulk_update's CASE expressions cost seconds for a thousand rows; executemany does not.
            ops = connection.ops
            with connection.cursor() as cursor:
                cursor.executemany(
                    _SEND_UPDATE.format(table=connection.ops.quote_name(Message._meta.db_table)),
                    [
                        (
                            m.status,
                            m.reason,
                            ops.adapt_datetimefield_value(m.due_at),
                            m.attempts,
                            ops.adapt_datetimefield_value(m.sent_at),
                            m.provider_id,
                            m.subject,
                            m.body,
                            m.pk,
                        )
                        for m in detailed
                    ],
                )
        for pk, (at, reason) in self.exited.items():
            Enrollment.objects.filter(pk=pk).update(
                status=EnrollmentStatus.EXITED, exited_at=at, exit_reason=reason
            )
        ReviewItem.objects.bulk_create(self.reviews, batch_size=500)
        DecisionLog.objects.bulk_create(self.decisions, batch_size=1000)


_SEND_UPDATE = (
    "UPDATE {table} SET status = %s, reason = %s, due_at = %s, attempts = %s, sent_at = %s, "
    "provider_id = %s, subject = %s, body = %s WHERE id = %s"
)


# --- responses -----------------------------------------------------------------------------------


def _record_responses(rules: list[Rule], seed: int, now: datetime) -> Counter:
    """Seeded responses that follow each person's real activity after the send."""
    sent = list(
        Message.objects.filter(rule__in=rules, status=MessageStatus.SENT, sent_at__lte=now)
        .order_by("sent_at", "pk")
        .values_list(
            "pk",
            "person_id",
            "channel",
            "sent_at",
            "rule__slug",
            "person__external_id",
        )
    )
    activity: dict[int, list[datetime]] = defaultdict(list)
    for person_id, received_at in (
        Event.objects.filter(person_id__in={row[1] for row in sent})
        .order_by("received_at")
        .values_list("person_id", "received_at")
    ):
        activity[person_id].append(received_at)
    counts: Counter = Counter()

    def record(pk: int, outcome: str, at: datetime) -> None:
        if at <= now and message_record_outcome(message_id=pk, outcome=outcome, now=at):
            counts[outcome] += 1

    nth: Counter = Counter()
    for pk, person_id, channel, sent_at, slug, external_id in sent:
        # Keyed by what does not depend on when the demo was seeded (occurrence keys hold times).
        nth[(slug, person_id)] += 1
        rng = _rng(seed, slug, external_id, nth[(slug, person_id)])
        times = activity[person_id]
        index = bisect_right(times, sent_at)
        back = times[index] if index < len(times) else None
        if channel == "in_app":
            if back is None or back - sent_at > SEEN_WITHIN or rng.random() >= IN_APP_SEEN:
                continue
            record(pk, "seen", back)
            roll = rng.random()
            if roll < IN_APP_CLICK:
                record(pk, "clicked", back + timedelta(seconds=rng.randint(3, 90)))
            elif roll < IN_APP_CLICK + IN_APP_DISMISS:
                record(pk, "dismissed", back + timedelta(seconds=rng.randint(2, 40)))
        else:
            opened = rng.random() < EMAIL_OPEN
            if back is not None and back - sent_at <= CLICK_WITHIN and rng.random() < EMAIL_CLICK:
                click = max(
                    sent_at + timedelta(seconds=20), back - timedelta(seconds=rng.randint(5, 120))
                )
                record(pk, "clicked", min(click, back))
            elif opened:
                record(pk, "opened", sent_at + timedelta(minutes=rng.randint(2, 600)))
    return counts


# --- the whole history ---------------------------------------------------------------------------


def install_demo_history(
    *, rule_slugs: list[str], seed: int = 42, now: datetime | None = None
) -> HistoryReport:
    """Materialise the last 30 days of the demo rules' history, once (see the module docstring)."""
    started = time.perf_counter()
    now = now or timezone.now()
    rules = list(
        Rule.objects.filter(slug__in=rule_slugs, current_version__isnull=False)
        .select_related("current_version")
        .order_by("-priority", "pk")
    )
    report = HistoryReport()
    if not rules or Enrollment.objects.filter(rule__in=rules).exists():
        report.already = True
        return report
    since = now - HISTORY
    with transaction.atomic():
        experiment_rule = next((r for r in rules if r.slug == DEMO_EXPERIMENT_RULE), None)
        if experiment_rule is not None:
            _demo_experiment(experiment_rule, since, seed)
        report.enrolled = _enroll(rules, since, now, now)
        report.outcomes = _Delivery(rules, since, now).run()
        report.responses = _record_responses(rules, seed, now)
        # The live engine carries on where the history ends.
        for rule in rules:
            RuleState.objects.update_or_create(rule=rule, defaults={"checked_until": now})
    report.seconds = time.perf_counter() - started
    return report
