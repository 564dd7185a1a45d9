"""The delivery checks, and what they read, loaded once per claimed batch instead of once per
message.

The pipeline claims a batch of due messages and locks their people; under those locks it reads
each person's recent sends (frequency caps) and flow progress (exit conditions) with one query
each, then runs the checks per message from memory. A message that passes is added to the
in-memory ledger at once, so a second message for the same person in the same batch counts it.

The checks that depend only on the message, the person and the moment (consent, caps, quiet
hours, rendering) are plain functions here, so that the demo's history
(:mod:`triggers.demo_history`), which judges past sends at past moments, runs the same code.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta

from onboarding.models import FlowProgress, Person
from triggers.channels.base import Channel
from triggers.engine.timing import quiet_until
from triggers.models import Message
from triggers.models.messages import MessageStatus
from triggers.models.rules import EnrollmentStatus
from triggers.rendering import person_context, render
from triggers.rules.exits import exit_flow, exit_reason
from triggers.rules.spec import RuleSpec, parse_rule
from triggers.workspace import policy

CAPPED_STATUSES = (MessageStatus.SENT, MessageStatus.SENDING, MessageStatus.UNKNOWN)

# Parsed rule specs, kept for the life of the process, by rule version id. A version is never
# changed once written (``rule_save`` writes a new one), but SQLite gives an id out again after a
# rolled-back insert (the sandbox saves the rule copies it simulates, then rolls back), so the
# definition is kept beside its spec and compared: a dict comparison (0.4 µs for a six-key rule)
# instead of the definition's sorted JSON text as the key (9 µs).
_SPECS: dict[int, tuple[dict, RuleSpec | None]] = {}


def rule_spec(message: Message) -> RuleSpec | None:
    version = message.rule_version
    cached = _SPECS.get(version.pk)
    if cached is None or cached[0] != version.definition:
        if len(_SPECS) > 5000:
            _SPECS.clear()
        definition = copy.deepcopy(version.definition)
        cached = _SPECS[version.pk] = (definition, parse_rule(definition)[0])
    return cached[1]


def recent_sends(
    person_ids: Iterable[int], since: datetime
) -> dict[int, list[tuple[int, datetime]]]:
    """(rule id, sent at) of every send that counts toward caps, per person, since ``since``.

    Must run under the people's row locks: a send another worker committed before the lock was
    granted is then visible (each statement reads the latest committed rows)."""
    sends: dict[int, list[tuple[int, datetime]]] = defaultdict(list)
    rows = Message.objects.filter(
        person_id__in=person_ids, status__in=CAPPED_STATUSES, sent_at__gt=since
    ).values_list("person_id", "rule_id", "sent_at")
    for person_id, rule_id, sent_at in rows:
        sends[person_id].append((rule_id, sent_at))
    return sends


def consent_refuses(person: Person, channel: str) -> bool:
    """The person opted out of everything, or of this channel."""
    consent = person.consent or {}
    return consent.get("all") is False or consent.get(channel) is False


def quiet_resume(spec: RuleSpec, person: Person, now: datetime) -> datetime | None:
    """When the rule's (or the installation's) quiet hours end in the person's time zone, if
    ``now`` falls inside them."""
    quiet = spec.quiet_hours or policy().quiet
    return quiet_until(now, quiet, person.timezone)


def render_into(message: Message, person: Person, channel: Channel) -> None:
    """Render the message's template for the person into its subject and body; raises
    :class:`~triggers.rendering.TemplateProblem` when it cannot be rendered."""
    rendered = render(
        message.template.subject, message.template.body, person_context(person), html=channel.html
    )
    message.subject, message.body = rendered.subject, rendered.body


class CapLedger:
    """Sends that count toward frequency caps, per person: (rule id, sent at).

    The pipeline reads the durable ledger once per batch (:meth:`read`) and adds its own claims
    as it makes them (:meth:`add`)."""

    def __init__(self, sends: dict[int, list[tuple[int, datetime]]]):
        self.sends = sends
        workspace = policy()  # read once per batch: the Settings page's global cap
        self.global_max = workspace.global_cap_max
        self.global_period = timedelta(seconds=workspace.global_cap_period_seconds)

    @classmethod
    def read(cls, person_ids: Iterable[int], specs: Iterable[RuleSpec], now: datetime) -> CapLedger:
        """The people's sends as far back as the longest cap period among ``specs`` reaches."""
        longest = policy().global_cap_period_seconds
        for spec in specs:
            if spec.cap_max is not None and spec.cap_per is not None:
                longest = max(longest, spec.cap_per)
        return cls(recent_sends(person_ids, now - timedelta(seconds=longest)))

    def reason(self, message: Message, spec: RuleSpec, now: datetime) -> str | None:
        sends = self.sends.get(message.person_id, [])
        since = now - self.global_period
        if sum(1 for _, at in sends if at > since) >= self.global_max:
            return "cap:global"
        if spec.cap_max is not None and spec.cap_per is not None:
            since = now - timedelta(seconds=spec.cap_per)
            same_rule = sum(1 for rule, at in sends if rule == message.rule_id and at > since)
            if same_rule >= spec.cap_max:
                return "cap:rule"
        return None

    def add(self, message: Message, at: datetime) -> None:
        """A message reached the ledger: later checks count it."""
        self.sends.setdefault(message.person_id, []).append((message.rule_id, at))


class ExitCheck:
    """The exit rule (``rules.exits``) at send time: the batch's people's flow progress, read in
    one query; an enrollment the engine (or an unsubscribe) already ended stays ended."""

    def __init__(self, pairs: set[tuple[str, int]]):
        self.progress: dict[tuple[str, int], dict] = {}
        if not pairs:
            return
        rows = FlowProgress.objects.filter(
            flow__slug__in={flow for flow, _ in pairs},
            person_id__in={person for _, person in pairs},
        ).values("flow__slug", "person_id", "furthest_step", "completed_at")
        for row in rows:
            self.progress[(row["flow__slug"], row["person_id"])] = row

    @staticmethod
    def needs(message: Message, spec: RuleSpec) -> tuple[str, int] | None:
        """The (flow, person) whose progress decides this message's exit, if any."""
        flow = exit_flow(spec)
        if message.manual or flow is None:
            return None
        return flow, message.person_id

    def reason(self, message: Message, spec: RuleSpec) -> str | None:
        if message.enrollment.status == EnrollmentStatus.EXITED:
            return message.enrollment.exit_reason or "exited"
        pair = self.needs(message, spec)
        progress = self.progress.get(pair) if pair else None
        if progress is None:
            return None
        return exit_reason(
            spec,
            enrolled_at_step=(message.enrollment.context or {}).get("furthest_step"),
            furthest_step=progress["furthest_step"],
            completed=progress["completed_at"] is not None,
        )
