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
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from onboarding.configfile.durations import format_duration
from onboarding.models import FlowProgress, Person
from triggers.channels.base import Channel
from triggers.engine.timing import quiet_until
from triggers.models import Message, Variant
from triggers.models.messages import PENDING_STATUSES, MessageStatus
from triggers.models.rules import EnrollmentStatus
from triggers.rendering import person_context, render
from triggers.rules.exits import exit_flow, exit_reason
from triggers.rules.spec import RuleSpec, parse_follow_ups, parse_rule
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


# A previous follow-up in these states went out (or may have): its clicks decide.
_WENT_OUT = (MessageStatus.SENT, MessageStatus.SENDING, MessageStatus.UNKNOWN)
SKIPPED_AFTER_CLICK = "previous_clicked"


@dataclass(frozen=True)
class Branch:
    """What :class:`ClickBranch` decided for one message: ``skip`` it, ``defer`` it to ``until``,
    or ``go`` ahead to the next checks; ``reason`` and ``detail`` go to the decision log."""

    action: str  # "skip", "defer" or "go"
    reason: str
    detail: dict[str, Any] = field(default_factory=dict)
    until: datetime | None = None


class ClickBranch:
    """``unless_clicked_within: N`` on follow-up k (k ≥ 2): skip it when follow-up k−1 was
    clicked within N of its send; it never goes out before N has passed since that send.

    The previous follow-up is every message of the same enrollment one step earlier (the
    original and any fallback or support resend of it), read for the whole batch in one query.
    Per message, in this order:

    - the previous follow-up was itself skipped after a click → skip (the person responded);
    - a message of it that went out was clicked within N of its send → skip;
    - one went out less than N ago → defer to its send + N (``click_window``);
    - it is still waiting to go out → defer to its due time + N (``previous_pending``);
    - otherwise (sent and not clicked within N, or never sent: suppressed, cancelled, failed)
      → go ahead to the next checks, logged as ``branch`` with ``previous_not_clicked`` or
      ``previous_not_sent``.
    """

    def __init__(self, messages: Iterable[Message], specs: dict[int, RuleSpec | None]):
        messages = list(messages)
        self.windows: dict[int, int] = {}
        variant_ids = {m.enrollment.variant_id for m in messages if m.enrollment.variant_id}
        variants: dict[int, list] = {}
        if variant_ids and any(m.step for m in messages):
            variants = {
                pk: sequence
                for pk, sequence in Variant.objects.filter(pk__in=variant_ids).values_list(
                    "pk", "follow_ups"
                )
                if sequence
            }
        for message in messages:
            spec = specs.get(message.pk)
            if spec is None or message.step == 0 or message.manual:
                continue
            sequence = spec.follow_ups
            if message.enrollment.variant_id in variants:
                sequence = parse_follow_ups(variants[message.enrollment.variant_id])[0]
            if message.step < len(sequence) and sequence[message.step].unless_clicked_within:
                self.windows[message.pk] = sequence[message.step].unless_clicked_within
        self.previous: dict[tuple[int, int], list[dict]] = defaultdict(list)
        if not self.windows:
            return
        conditional = [m for m in messages if m.pk in self.windows]
        rows = Message.objects.filter(
            enrollment_id__in={m.enrollment_id for m in conditional},
            step__in={m.step - 1 for m in conditional},
        ).values(
            "pk", "enrollment_id", "step", "status", "reason", "due_at", "next_attempt_at",
            "sent_at", "clicked_at",
        )  # fmt: skip
        for row in rows:
            self.previous[row["enrollment_id"], row["step"]].append(row)

    def verdict(self, message: Message, now: datetime) -> Branch | None:
        """None when the message has no click condition."""
        window = self.windows.get(message.pk)
        if window is None:
            return None
        rows = self.previous.get((message.enrollment_id, message.step - 1), [])
        within = {"window": format_duration(window)}
        if any(
            r["status"] == MessageStatus.CANCELLED and r["reason"] == SKIPPED_AFTER_CLICK
            for r in rows
        ):
            skipped = next(r["pk"] for r in rows if r["reason"] == SKIPPED_AFTER_CLICK)
            return Branch("skip", SKIPPED_AFTER_CLICK, {**within, "previous_skipped": skipped})
        went_out = [r for r in rows if r["status"] in _WENT_OUT and r["sent_at"] is not None]
        for row in went_out:
            clicked = row["clicked_at"]
            if clicked is not None and clicked - row["sent_at"] <= timedelta(seconds=window):
                after = int((clicked - row["sent_at"]).total_seconds())
                detail = {**within, "previous_message": row["pk"], "clicked_after": after}
                return Branch("skip", SKIPPED_AFTER_CLICK, detail)
        if went_out:
            last = max(went_out, key=lambda r: r["sent_at"])
            closes = last["sent_at"] + timedelta(seconds=window)
            if now < closes:
                return Branch(
                    "defer", "click_window", {**within, "previous_message": last["pk"]}, closes
                )
            return Branch("go", "previous_not_clicked", {**within, "previous_message": last["pk"]})
        pending = [r for r in rows if r["status"] in PENDING_STATUSES]
        if pending:
            due = max(max(r["due_at"], r["next_attempt_at"] or r["due_at"]) for r in pending)
            until = max(due, now) + timedelta(seconds=window)
            return Branch(
                "defer", "previous_pending", {**within, "previous_message": pending[0]["pk"]}, until
            )
        return Branch("go", "previous_not_sent", within)
