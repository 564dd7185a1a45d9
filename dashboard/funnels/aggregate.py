"""From per-step counts and gaps to the reported funnel (DESIGN §4.2). Pure functions."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from .outcomes import Outcome
from .query import StepDef, StepResult


def median(values: Sequence[float]) -> float | None:
    """The middle value; the mean of the two middle values for an even count; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return float(ordered[middle])
    return (ordered[middle - 1] + ordered[middle]) / 2


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0


def step_results(
    steps: Sequence[StepDef], counts: Sequence[int], medians: Sequence[float | None]
) -> list[StepResult]:
    """``counts[k-1]`` people reached step k; ``medians[k-1]`` is the step-(k-1)→k median."""
    results = []
    for position, step in enumerate(steps):
        count = counts[position]
        previous = counts[position - 1] if position else counts[0]
        results.append(
            StepResult(
                index=step.index,
                name=step.name,
                event=step.event,
                count=count,
                conversion_from_start=_ratio(count, counts[0]),
                conversion_from_previous=_ratio(count, previous),
                median_seconds_from_previous=medians[position] if position else None,
            )
        )
    return results


def friction_step(settled: Sequence[int]) -> int | None:
    """The step k ≥ 2 losing the largest share of step k-1 **among settled entrants**
    (DESIGN §4.2): ``settled[k-1]`` is how many entrants whose window has closed reached step k.
    People still converting never count as drop-off. The earliest step wins a tie; None when no
    entrant is settled, or the flow has one step."""
    if not settled or settled[0] == 0:
        return None
    best: int | None = None
    best_loss = -1.0
    for k in range(2, len(settled) + 1):
        loss = 1 - _ratio(settled[k - 1], settled[k - 2])
        if loss > best_loss:
            best, best_loss = k, loss
    return best


def settled_counts(
    outcomes: Sequence[Outcome], n_steps: int, window: timedelta, now: datetime
) -> list[int]:
    """Per step k, the settled entrants (entry + window ≤ now) who reached it."""
    settled = [o for o in outcomes if o.entered_at + window <= now]
    return [sum(1 for o in settled if o.furthest_step >= k) for k in range(1, n_steps + 1)]


def steps_from_outcomes(steps: Sequence[StepDef], outcomes: Sequence[Outcome]) -> list[StepResult]:
    n = len(steps)
    counts = [sum(1 for o in outcomes if o.furthest_step >= k) for k in range(1, n + 1)]
    medians: list[float | None] = [None]
    for k in range(2, n + 1):
        medians.append(median([o.gaps[k - 2] for o in outcomes if o.furthest_step >= k]))
    return step_results(steps, counts, medians)


def still_converting(
    outcomes: Sequence[Outcome], n_steps: int, window: timedelta, now: datetime
) -> int:
    return sum(1 for o in outcomes if o.furthest_step < n_steps and o.entered_at + window > now)
