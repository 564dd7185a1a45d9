"""What the delivery checks read, loaded once per claimed batch instead of once per message.

The pipeline claims a batch of due messages and locks their people; under those locks it reads
each person's recent sends (frequency caps) and flow progress (exit conditions) with one query
each, then runs the checks per message from memory. A message that passes is added to the
in-memory ledger at once, so a second message for the same person in the same batch counts it.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta

from django.conf import settings

from onboarding.models import FlowProgress
from triggers.models import Message
from triggers.models.messages import MessageStatus
from triggers.models.rules import EnrollmentStatus
from triggers.rules.spec import RuleSpec, parse_rule

CAPPED_STATUSES = (MessageStatus.SENT, MessageStatus.SENDING, MessageStatus.UNKNOWN)

# Parsed rule specs, kept for the life of the process. Keyed by the definition's text, not only the
# version id: an id can come back after a rolled-back insert (SQLite), a definition cannot lie.
_SPECS: dict[str, RuleSpec | None] = {}


def rule_spec(message: Message) -> RuleSpec | None:
    key = json.dumps(message.rule_version.definition, sort_keys=True)
    if key not in _SPECS:
        if len(_SPECS) > 5000:
            _SPECS.clear()
        _SPECS[key] = parse_rule(message.rule_version.definition)[0]
    return _SPECS[key]


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


class CapLedger:
    """The batch's people's sends: the durable ledger read once, plus this batch's own claims."""

    def __init__(self, person_ids: Iterable[int], specs: Iterable[RuleSpec], now: datetime):
        longest = settings.ONRAMP_GLOBAL_CAP_PERIOD
        for spec in specs:
            if spec.cap_max is not None and spec.cap_per is not None:
                longest = max(longest, spec.cap_per)
        self.sends = recent_sends(person_ids, now - timedelta(seconds=longest))

    def reason(self, message: Message, spec: RuleSpec, now: datetime) -> str | None:
        sends = self.sends.get(message.person_id, [])
        since = now - timedelta(seconds=settings.ONRAMP_GLOBAL_CAP_PERIOD)
        if sum(1 for _, at in sends if at > since) >= settings.ONRAMP_GLOBAL_CAP_MAX:
            return "cap:global"
        if spec.cap_max is not None and spec.cap_per is not None:
            since = now - timedelta(seconds=spec.cap_per)
            same_rule = sum(1 for rule, at in sends if rule == message.rule_id and at > since)
            if same_rule >= spec.cap_max:
                return "cap:rule"
        return None

    def add(self, message: Message, at: datetime) -> None:
        """A message of this batch reached the ledger: later checks in the batch count it."""
        self.sends.setdefault(message.person_id, []).append((message.rule_id, at))


class ExitCheck:
    """Flow progress of the batch's people, for the rules' exit conditions, read in one query."""

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
        if message.manual or spec.exit_when == "never" or not spec.trigger.flow:
            return None
        return spec.trigger.flow, message.person_id

    def reason(self, message: Message, spec: RuleSpec) -> str | None:
        if message.enrollment.status == EnrollmentStatus.EXITED:
            return message.enrollment.exit_reason or "exited"
        pair = self.needs(message, spec)
        progress = self.progress.get(pair) if pair else None
        if progress is None:
            return None
        if progress["completed_at"] is not None:
            return "completed"
        before = (message.enrollment.context or {}).get("furthest_step")
        if (
            spec.exit_when == "progressed"
            and before is not None
            and progress["furthest_step"] > before
        ):
            return "progressed"
        return None
