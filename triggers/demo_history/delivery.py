"""Every follow-up the demo history made that was due before now, judged by the delivery
pipeline's checks in its order, with the state of the moment of each send."""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from datetime import datetime

from django.db import connection

from onboarding.models import FlowProgress, Person
from triggers.channels import channel_for
from triggers.delivery.checks import (
    CAPPED_STATUSES,
    CapLedger,
    consent_refuses,
    quiet_resume,
    render_into,
)
from triggers.delivery.outcomes import decision
from triggers.models import DecisionLog, Enrollment, Message, ReviewItem, Rule
from triggers.models.messages import PENDING_STATUSES, MessageStatus
from triggers.models.rules import EnrollmentStatus
from triggers.rendering import TemplateProblem
from triggers.rules.exits import COMPLETED, PROGRESSED, exit_flow
from triggers.rules.spec import RuleSpec, parse_rule

from .enroll import step_times, tick_after


class HistoryDelivery:
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
        self.steps = step_times("activation")
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

    def _set(
        self,
        message: Message,
        status: str,
        reason: str,
        at: datetime,
        outcome: str,
        log_outcome: str | None = None,
    ) -> None:
        message.status, message.reason = status, reason
        self.changed.add(message.pk)
        self._log(message, at, log_outcome or outcome, reason.removeprefix("exit:"))
        self.outcomes[outcome if outcome != "suppressed" else reason] += 1

    def _exit_at(self, message: Message, moment: datetime) -> tuple[datetime, str] | None:
        """When (and why) the person met the rule's exit condition after enrolling, if by then."""
        spec = self.specs[message.rule_id]
        if exit_flow(spec) is None:
            return None
        enrollment = message.enrollment
        done = self.completed.get(message.person_id)
        if done is not None and enrollment.enrolled_at < done <= moment:
            return done, COMPLETED
        before = (enrollment.context or {}).get("furthest_step")
        if spec.exit_when == PROGRESSED and before is not None:
            times = self.steps.get(message.person_id, [])
            if len(times) > before and enrollment.enrolled_at < times[before] <= moment:
                return times[before], PROGRESSED
        return None

    def _exit(self, message: Message, moment: datetime) -> bool:
        """The engine's exit (the first tick after progress cancels every pending follow-up), or
        the pipeline's own check when the send came before that tick."""
        found = self._exit_at(message, moment)
        if found is None:
            return False
        progressed_at, reason = found
        tick = tick_after(progressed_at, self.since)
        enrollment = message.enrollment
        if enrollment.pk in self.exited:  # already ended: this later follow-up is cancelled
            exited_reason = self.exited[enrollment.pk][1]
            self._set(
                message, MessageStatus.CANCELLED, f"exit:{exited_reason}", moment, "cancelled"
            )
            return True
        if tick > moment:
            # The pipeline's check ends the enrollment at the send, logged as its exit.
            cancelled, exit_reason = MessageStatus.CANCELLED, f"exit:{reason}"
            self._set(message, cancelled, exit_reason, moment, "cancelled", log_outcome="exited")
            self.exited[enrollment.pk] = (moment, reason)
            return True
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
            return self._review(message, moment, problem.reason, str(problem))
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
