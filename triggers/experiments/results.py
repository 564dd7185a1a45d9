"""An experiment's results as one typed value: counts, statistics, guards and the series over time.

:func:`experiment_results` is what the results page shows. The statistics are exactly
:func:`triggers.stats.analyse` on the per-arm counts of :func:`~triggers.experiments.metrics.arm_counts`
(intention to treat, closed windows only), with the variants' weights as the planned split and
the holdout (or else the first arm) as the control — the same call ``manage.py ab_calc`` makes for
the same counts, so the page and the calculator can never disagree.

Two guards decide whether a verdict may be shown (DESIGN §4.7): a sample-ratio mismatch withholds
it (the assignment is broken, so no number is trustworthy), and so does an arm short of its
planned users (peeking). ``planned_users_per_arm`` is the size of the largest arm; smaller arms
need the same share of their weight (a 10 % holdout beside two 45 % arms needs 10/45 of it).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime

from triggers import stats
from triggers.experiments.metrics import ArmCounts, arm_counts, daily_counts
from triggers.models import Experiment


@dataclass(frozen=True)
class Rate:
    """A count over a denominator; ``value`` is None when the denominator is 0."""

    count: int
    of: int

    @property
    def value(self) -> float | None:
        return self.count / self.of if self.of else None

    @property
    def interval(self) -> stats.Interval | None:
        """The Wilson 95 % interval of the rate (None when the denominator is 0)."""
        return stats.wilson_interval(self.count, self.of)


@dataclass(frozen=True)
class ArmOutcome:
    """One arm's counts with its secondary metrics and its place against the plan."""

    counts: ArmCounts
    share: float  # the arm's planned share of people (weight / total weight)
    observed_share: float | None  # of the users with a closed window
    planned_users: int | None
    reengaged: Rate
    response: Rate  # responded / sent (the holdout sends nothing)
    unsubscribed: Rate
    # clicked / sent on email and in-app (the holdout sends nothing: n/a)
    clicks: Rate = Rate(0, 0)

    @property
    def more_needed(self) -> int:
        if self.planned_users is None:
            return 0
        return max(0, self.planned_users - self.counts.users)


@dataclass(frozen=True)
class DayPoint:
    """One variant against the control, cumulative up to an assignment day."""

    day: date
    users: int  # variant + control users assigned up to that day
    difference: float | None
    low: float | None
    high: float | None


@dataclass(frozen=True)
class ExperimentResult:
    experiment: Experiment
    phase: int
    now: datetime
    control: str
    weights: tuple[int, ...]
    arms: tuple[ArmOutcome, ...]
    analysis: stats.Analysis
    over_time: dict[str, tuple[DayPoint, ...]]  # variant name → cumulative points

    @property
    def srm_mismatch(self) -> bool:
        return self.analysis.srm.mismatch

    @property
    def has_plan(self) -> bool:
        return self.experiment.planned_users_per_arm is not None

    @property
    def planned_reached(self) -> bool:
        if not self.has_plan:
            return False
        return stats.verdict_allowed(
            [a.counts.users for a in self.arms], [a.planned_users or 0 for a in self.arms]
        )

    @property
    def more_needed(self) -> int:
        return sum(a.more_needed for a in self.arms)

    @property
    def verdict_allowed(self) -> bool:
        return not self.srm_mismatch and self.planned_reached

    @property
    def verdict(self) -> str | None:
        """The verdict sentence, or None while it is withheld (see :attr:`withheld_because`)."""
        if not self.verdict_allowed:
            return None
        return stats.verdict(self.analysis, [a.planned_users or 0 for a in self.arms])

    @property
    def withheld_because(self) -> str | None:
        if self.srm_mismatch:
            return "srm"
        if not self.has_plan:
            return "no_plan"
        if not self.planned_reached:
            return "sample_size"
        return None

    @property
    def users(self) -> int:
        return sum(a.counts.users for a in self.arms)

    @property
    def assigned(self) -> int:
        return sum(a.counts.assigned for a in self.arms)

    @property
    def still_open(self) -> int:
        return self.assigned - self.users

    def ab_calc_arguments(self) -> list[str]:
        """The ``manage.py ab_calc`` arguments that reproduce these statistics."""
        arguments = []
        for arm in self.arms:
            arguments += ["--arm", f"{arm.counts.name}={arm.counts.conversions}/{arm.counts.users}"]
        arguments += ["--control", self.control, "--weights", ",".join(map(str, self.weights))]
        return arguments


def control_arm(counts: list[ArmCounts]) -> str:
    """The holdout when there is one (the comparison that measures the follow-ups), else the first."""
    return next((a.name for a in counts if a.holdout), counts[0].name)


def planned_per_arm(planned: int | None, weights: list[int]) -> list[int | None]:
    """Planned users of each arm: ``planned`` for the largest, the others in proportion."""
    if planned is None or not weights:
        return [None] * len(weights)
    largest = max(weights)
    return [math.ceil(planned * w / largest) for w in weights]


def _over_time(
    rows: list[tuple[date, str, int, int]], names: list[str], control: str
) -> dict[str, tuple[DayPoint, ...]]:
    by_day: dict[date, dict[str, tuple[int, int]]] = defaultdict(dict)
    for day, name, users, conversions in rows:
        by_day[day][name] = (users, conversions)
    totals = {name: [0, 0] for name in names}
    series: dict[str, list[DayPoint]] = {name: [] for name in names if name != control}
    for day in sorted(by_day):
        for name, (users, conversions) in by_day[day].items():
            if name in totals:
                totals[name][0] += users
                totals[name][1] += conversions
        nc, xc = totals[control]
        for name, points in series.items():
            nv, xv = totals[name]
            if nc and nv:
                difference, (low, high) = stats.difference_interval((xc, nc), (xv, nv))
            else:
                difference = low = high = None
            points.append(DayPoint(day, nc + nv, difference, low, high))
    return {name: tuple(points) for name, points in series.items()}


def experiment_results(
    experiment: Experiment, *, now: datetime, phase: int | None = None
) -> ExperimentResult:
    phase = phase or experiment.phase
    counts = arm_counts(experiment, now=now, phase=phase)
    if len(counts) < 2:
        raise ValueError(f"experiment {experiment.slug!r} has fewer than two arms")
    control = control_arm(counts)
    weights = [a.weight for a in counts]
    analysis = stats.analyse(
        [stats.Arm(a.name, a.users, a.conversions) for a in counts],
        control=control,
        weights=weights,
    )
    users = sum(a.users for a in counts)
    total_weight = sum(weights)
    planned = planned_per_arm(experiment.planned_users_per_arm, weights)
    arms = tuple(
        ArmOutcome(
            counts=a,
            share=a.weight / total_weight,
            observed_share=a.users / users if users else None,
            planned_users=plan,
            reengaged=Rate(a.reengaged, a.users),
            response=Rate(a.responded, a.sent),
            unsubscribed=Rate(a.unsubscribed, a.users),
            clicks=Rate(a.clicked, a.clickable),
        )
        for a, plan in zip(counts, planned, strict=True)
    )
    series = _over_time(
        daily_counts(experiment, now=now, phase=phase), [a.name for a in counts], control
    )
    return ExperimentResult(
        experiment=experiment,
        phase=phase,
        now=now,
        control=control,
        weights=tuple(weights),
        arms=arms,
        analysis=analysis,
        over_time=series,
    )
