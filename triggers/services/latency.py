"""How late a rule really is, measured from its own ledger (DESIGN §5, "the editor shows the figure").

The schedule bounds the latency (an evaluation every 30 s, a delivery pass every 15 s); what a rule
actually got is in its rows:

- **detection**: an ``enrolled`` decision's time (the tick that enrolled the person) minus the
  enrollment's moment (``enrolled_at``: the idle mark, the end of the step's window, the matching
  event's time). Activation backfills (reason ``activation_backfill``) are left out: they enroll
  spells that began before the rule existed, on purpose.
- **delivery**: a sent follow-up's ``sent_at`` minus the moment it was both due and known
  (``due_at``, or its creation when the tick wrote it after its due time, as with a "0m"
  follow-up, so that detection is not counted twice). First attempts only: a send retried after a
  provider error measures the provider's outage, not the schedule. A quiet-hours deferral moves
  ``due_at`` to the allowed time, so the wait it imposes is not counted either.

Both over the last :data:`WINDOW`, at most :data:`SAMPLE` of the most recent rows each, so the
editor's panel stays cheap for a rule that enrolls thousands a day.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from triggers.models import DecisionLog, Message, MessageStatus, Rule
from triggers.services.activation import BACKFILL_REASON

WINDOW = timedelta(days=7)
SAMPLE = 5_000


@dataclass(frozen=True)
class Spread:
    """``n`` latencies in seconds: their median and 95th percentile (nearest rank)."""

    n: int
    p50: float | None
    p95: float | None

    @classmethod
    def of(cls, seconds: list[float]) -> Spread:
        if not seconds:
            return cls(0, None, None)
        ordered = sorted(seconds)
        return cls(len(ordered), _rank(ordered, 0.50), _rank(ordered, 0.95))


@dataclass(frozen=True)
class MeasuredLatency:
    detection: Spread
    delivery: Spread
    since: datetime


def _rank(ordered: list[float], q: float) -> float:
    """The nearest-rank percentile: the smallest value with at least ``q`` of the data at or below."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def measured_latency(rule: Rule, *, now: datetime) -> MeasuredLatency:
    since = now - WINDOW
    enrolled = (
        DecisionLog.objects.filter(
            rule=rule, outcome="enrolled", at__gte=since, at__lte=now, enrollment__isnull=False
        )
        .exclude(reason=BACKFILL_REASON)
        .order_by("-at")
        .values_list("at", "enrollment__enrolled_at")[:SAMPLE]
    )
    sent = (
        Message.objects.filter(
            rule=rule,
            status=MessageStatus.SENT,
            sent_at__gte=since,
            sent_at__lte=now,
            attempts__lte=1,
            manual=False,
        )
        .order_by("-sent_at")
        .values_list("sent_at", "due_at", "created_at")[:SAMPLE]
    )
    return MeasuredLatency(
        detection=Spread.of([(at - moment).total_seconds() for at, moment in enrolled]),
        delivery=Spread.of(
            [(sent_at - max(due, created)).total_seconds() for sent_at, due, created in sent]
        ),
        since=since,
    )
