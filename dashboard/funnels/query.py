"""The typed query and result of a funnel (DESIGN §3.5, §4.2)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal

from django.db.models import QuerySet
from django.utils import timezone

from onboarding.models import OnboardingFlow, Person, Segment, Step

Mode = Literal["auto", "progress", "events"]
NONE_VALUE = "(none)"


class FunnelQueryError(ValueError):
    """A query that cannot run; ``code`` is stable for callers, the message is for humans."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class StepDef:
    index: int
    name: str
    event: str
    where: dict[str, Any]


MAX_WINDOW_SECONDS = 365 * 86400


@dataclass(frozen=True)
class FunnelQuery:
    """One funnel: entrants whose entry falls on ``since``..``until`` (inclusive UTC days).

    ``segment`` and ``people`` both restrict entrants (to the segment's members now, and to a given
    set of people); ``mode`` picks the evaluation: ``progress`` reads the per-person progress rows
    (exact; people who re-entered inside the range are walked from their events), ``events`` walks
    every entrant's raw events (ad-hoc funnels, verification), ``auto`` is ``progress``.
    ``window_seconds`` replaces the flow's conversion window for this query only; the progress rows
    are kept for the flow's own window, so another window is evaluated from raw events.
    """

    flow: OnboardingFlow
    since: date
    until: date
    segment: Segment | None = None
    people: QuerySet[Person] | None = None
    breakdown: str | None = None
    now: datetime | None = None
    mode: Mode = "auto"
    window_seconds: int | None = None

    def __post_init__(self) -> None:
        if self.window_seconds is not None:
            if not 0 < self.window_seconds <= MAX_WINDOW_SECONDS:
                raise FunnelQueryError(
                    "invalid_window", "the conversion window must be between 1 second and 365 days"
                )
            if self.window_seconds != self.flow.window_seconds and self.mode != "events":
                object.__setattr__(self, "mode", "events")
        if self.since > self.until:
            raise FunnelQueryError("invalid_range", "since must be on or before until")
        if self.mode not in ("auto", "progress", "events"):
            raise FunnelQueryError("invalid_mode", f"unknown mode {self.mode!r}")
        if self.breakdown is not None and not self.breakdown:
            raise FunnelQueryError("invalid_breakdown", "breakdown must be a non-empty name")

    @property
    def entry_from(self) -> datetime:
        return datetime.combine(self.since, time(0), tzinfo=UTC)

    @property
    def entry_until(self) -> datetime:
        """Exclusive end of the range: ``until`` + 1 day, 00:00 UTC."""
        return datetime.combine(self.until + timedelta(days=1), time(0), tzinfo=UTC)

    @property
    def window(self) -> timedelta:
        return timedelta(seconds=self.window_seconds or self.flow.window_seconds)

    @property
    def clock(self) -> datetime:
        return self.now if self.now is not None else timezone.now()

    def step_defs(self) -> list[StepDef]:
        rows = Step.objects.filter(flow=self.flow).order_by("position")
        return [
            StepDef(i, row.name, row.event_name, dict(row.where or {}))
            for i, row in enumerate(rows, start=1)
        ]


@dataclass(frozen=True, slots=True)
class StepResult:
    index: int
    name: str
    event: str
    count: int
    conversion_from_start: float
    conversion_from_previous: float
    median_seconds_from_previous: float | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "event": self.event,
            "count": self.count,
            "conversion_from_start": self.conversion_from_start,
            "conversion_from_previous": self.conversion_from_previous,
            "median_seconds_from_previous": _number(self.median_seconds_from_previous),
        }


@dataclass(frozen=True)
class FunnelResult:
    flow: str
    since: date
    until: date
    window_seconds: int
    segment: str | None
    steps: list[StepResult]
    still_converting: int
    friction_step: int | None
    breakdown: dict[str, list[StepResult]] | None = field(default=None)
    # Per step, the settled entrants (window closed) who reached it: the friction step's basis.
    # Not part of the JSON shape (DESIGN §3.5), which keeps only ``friction_step``.
    settled: list[int] | None = field(default=None)

    @property
    def settled_entrants(self) -> int:
        return self.settled[0] if self.settled else 0

    def friction_drop(self) -> tuple[int, int] | None:
        """Among settled entrants: (reached the step before the friction step, reached it)."""
        if self.friction_step is None or not self.settled:
            return None
        return self.settled[self.friction_step - 2], self.settled[self.friction_step - 1]

    @property
    def entrants(self) -> int:
        return self.steps[0].count if self.steps else 0

    def as_dict(self) -> dict[str, Any]:
        """Exactly the JSON shape of ``manage.py funnel --format json`` (DESIGN §3.5)."""
        return {
            "flow": self.flow,
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "window_seconds": self.window_seconds,
            "segment": self.segment,
            "steps": [step.as_dict() for step in self.steps],
            "still_converting": self.still_converting,
            "friction_step": self.friction_step,
            "breakdown": (
                None
                if self.breakdown is None
                else {
                    value: [step.as_dict() for step in steps]
                    for value, steps in self.breakdown.items()
                }
            ),
        }


def _number(value: float | None) -> float | int | None:
    if value is None:
        return None
    return int(value) if float(value).is_integer() else value
