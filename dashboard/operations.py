"""The operator's numbers: what ``GET /metrics`` computes at scrape time and the operations page
shows (docs/operations.md). Read-only queries over the ledger, the review queue and the heartbeat.

Counters (events, occurrences, messages) live in ``config.metrics`` and are summed over every
process's files; the gauges here describe the database, so they are computed when asked, which
keeps them right in multiprocess mode (no process holds a stale copy).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import DatabaseError
from django.db.models import Count, Min, Q
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily

from config.metrics import MESSAGE_OUTCOMES
from triggers.delivery.outcomes import METRIC_OUTCOMES
from triggers.models import DecisionLog, Heartbeat, Message, ReviewItem, RuleState
from triggers.models.messages import LIVE_STATUSES, ReviewStatus
from triggers.models.rules import RuleStatus


@dataclass(frozen=True, slots=True)
class Backlog:
    due: int
    oldest_due_seconds: float
    review_queue: int
    heartbeat_age_seconds: float  # +inf when no worker ever ran the heartbeat


def due_messages(now: datetime):
    """Follow-ups due now and not final: what the next delivery pass would pick up (paused rules'
    messages wait, and retries wait for their next attempt), and those being sent."""
    return (
        Message.objects.filter(status__in=LIVE_STATUSES, due_at__lte=now)
        .filter(Q(rule__status=RuleStatus.ACTIVE) | Q(manual=True))
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
    )


def backlog(*, now: datetime) -> Backlog:
    due = due_messages(now).aggregate(count=Count("pk"), oldest=Min("due_at"))
    beat = Heartbeat.objects.filter(name="worker").values_list("beat_at", flat=True).first()
    return Backlog(
        due=due["count"],
        oldest_due_seconds=max(0.0, (now - due["oldest"]).total_seconds())
        if due["oldest"]
        else 0.0,
        review_queue=ReviewItem.objects.filter(status=ReviewStatus.OPEN).count(),
        heartbeat_age_seconds=(now - beat).total_seconds() if beat else math.inf,
    )


@dataclass(frozen=True, slots=True)
class ChannelOutcomes:
    channel: str
    outcomes: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.outcomes.values())

    @property
    def columns(self) -> list[tuple[str, int | str]]:
        """(outcome, count) in the metric's outcome order; blank where there was none."""
        return [(name, self.outcomes.get(name, "")) for name in MESSAGE_OUTCOMES]


def outcomes_by_channel(*, now: datetime, hours: int = 24) -> list[ChannelOutcomes]:
    """Delivery outcomes per channel over the last ``hours``, from the decision log."""
    rows = (
        DecisionLog.objects.filter(
            at__gt=now - timedelta(hours=hours),
            message__isnull=False,
            outcome__in=list(METRIC_OUTCOMES),
        )
        .values("message__channel", "outcome")
        .annotate(n=Count("pk"))
    )
    by_channel: dict[str, dict[str, int]] = {}
    for row in rows:
        outcomes = by_channel.setdefault(row["message__channel"], {})
        name = METRIC_OUTCOMES[row["outcome"]]
        outcomes[name] = outcomes.get(name, 0) + row["n"]
    return [ChannelOutcomes(channel, by_channel[channel]) for channel in sorted(by_channel)]


@dataclass(frozen=True, slots=True)
class RuleTick:
    rule: str
    status: str
    last_tick_at: datetime | None
    last_tick_seconds: float | None


def rules_by_tick_time(*, limit: int = 20) -> list[RuleTick]:
    """The slowest rules at their last tick, slowest first."""
    states = (
        RuleState.objects.filter(last_tick_seconds__isnull=False)
        .select_related("rule")
        .order_by("-last_tick_seconds", "rule__slug")[:limit]
    )
    return [
        RuleTick(s.rule.slug, s.rule.status, s.last_tick_at, s.last_tick_seconds) for s in states
    ]


def attention_items(*, limit: int = 20) -> list[ReviewItem]:
    """Open review items, unknown outcomes first (those may have reached the person)."""
    return list(
        ReviewItem.objects.filter(status=ReviewStatus.OPEN)
        .select_related("message", "message__rule")
        .order_by("-message__status", "created_at")[:limit]
    )


class DatabaseStateCollector:
    """The gauges of ``/metrics`` that describe the database, computed at scrape time."""

    def collect(self):
        up = GaugeMetricFamily(
            "onramp_database_up", "1 when the scrape could read the database, else 0."
        )
        try:
            state = backlog(now=timezone.now())
        except DatabaseError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield GaugeMetricFamily(
            "onramp_delivery_due", "Follow-ups due now and not yet final.", value=state.due
        )
        yield GaugeMetricFamily(
            "onramp_delivery_oldest_due_seconds",
            "Age of the oldest follow-up due now and not yet final (0 when none is due).",
            value=state.oldest_due_seconds,
        )
        yield GaugeMetricFamily(
            "onramp_review_queue", "Open manual-review items.", value=state.review_queue
        )
        yield GaugeMetricFamily(
            "onramp_worker_heartbeat_age_seconds",
            "Seconds since a worker last ran the heartbeat task (+Inf when none ever did).",
            value=state.heartbeat_age_seconds,
        )
