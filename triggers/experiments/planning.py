"""Planning an experiment: the baseline rate, recent traffic, users needed and the expected duration.

The set-up page's calculator. The baseline is the flow's recent completion rate, measured the way
the experiment will measure it: people who entered the flow during the 30 days before their
window could close, completed within the metric's window of entry. Traffic is the rule's
enrollments over the last 14 days. Sizes come from :func:`triggers.stats.sample_size` (power
80 %, α 5 % two-sided, any split between arms).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import DurationField, ExpressionWrapper, F

from onboarding.models import FlowProgress
from triggers import stats
from triggers.models import Enrollment, Rule

BASELINE_DAYS = 30
TRAFFIC_DAYS = 14


@dataclass(frozen=True)
class Baseline:
    entrants: int
    completions: int
    since: datetime
    until: datetime

    @property
    def rate(self) -> float | None:
        return self.completions / self.entrants if self.entrants else None


@dataclass(frozen=True)
class Traffic:
    enrollments: int
    days: int = TRAFFIC_DAYS

    @property
    def per_day(self) -> float | None:
        """Enrollments a day, or None below one a day ("no recent traffic")."""
        rate = self.enrollments / self.days
        return rate if rate >= 1 else None


@dataclass(frozen=True)
class Plan:
    baseline: float
    minimum_effect: float  # absolute (0.02 = 2 percentage points)
    arms: tuple[tuple[str, int], ...]  # (name, users needed)
    total: int
    traffic: Traffic
    window_days: float

    @property
    def target(self) -> float:
        return self.baseline + self.minimum_effect

    @property
    def largest_arm(self) -> int:
        return max(users for _, users in self.arms)

    @property
    def enroll_days(self) -> int | None:
        per_day = self.traffic.per_day
        return None if per_day is None else math.ceil(self.total / per_day)

    @property
    def total_days(self) -> int | None:
        days = self.enroll_days
        return None if days is None else days + math.ceil(self.window_days)


def flow_baseline(flow_slug: str, *, completed_within: int, now: datetime) -> Baseline:
    until = now - timedelta(seconds=completed_within)
    since = until - timedelta(days=BASELINE_DAYS)
    entrants = FlowProgress.objects.filter(
        flow__slug=flow_slug, entered_at__gt=since, entered_at__lte=until
    )
    took = ExpressionWrapper(F("completed_at") - F("entered_at"), output_field=DurationField())
    completions = (
        entrants.filter(completed_at__isnull=False)
        .annotate(took=took)
        .filter(took__lte=timedelta(seconds=completed_within))
        .count()
    )
    return Baseline(entrants.count(), completions, since, until)


def rule_traffic(rule: Rule, *, now: datetime) -> Traffic:
    since = now - timedelta(days=TRAFFIC_DAYS)
    count = Enrollment.objects.filter(
        rule=rule, enrolled_at__gt=since, enrolled_at__lte=now
    ).count()
    return Traffic(count)


def plan(
    *,
    baseline: float,
    minimum_effect: float,
    arms: list[tuple[str, int, bool]],
    traffic: Traffic,
    completed_within: int,
) -> Plan:
    """Users needed per arm (name, weight, holdout); the holdout, else the first arm, is control.

    Raises ValueError (from :func:`~triggers.stats.sample_size`) for a baseline or effect that
    cannot be planned for.
    """
    control = next((i for i, (_, _, holdout) in enumerate(arms) if holdout), 0)
    size = stats.sample_size(
        baseline, minimum_effect, weights=[weight for _, weight, _ in arms], control=control
    )
    return Plan(
        baseline=baseline,
        minimum_effect=minimum_effect,
        arms=tuple((name, n) for (name, _, _), n in zip(arms, size.per_arm, strict=True)),
        total=size.total,
        traffic=traffic,
        window_days=completed_within / 86400,
    )
