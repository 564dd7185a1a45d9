"""What an idle spell is, for "inactive in onboarding" (DESIGN §4.4, kind 1; §4.1): one
specification, two executors.

The live detector (:func:`triggers.engine.detectors.inactive_in_flow`) finds spells by deadline in
the state the database holds at a tick (``Person.last_event_at``, ``FlowProgress``); the backtest
(:mod:`triggers.simulation.idle`) replays them from stored events on a 30-second virtual clock,
in SQL and integers. Both read the rule from an :class:`IdleSpec`;
``tests/triggers/test_backtest_equivalence.py`` checks that they find the same spells at the same
ticks.

- **Activity**: a person's live events, never ``/v1/import`` history (:meth:`IdleSpec.activity`).
  An event's activity time is when it happened, never later than its receipt
  (``onboarding.tracking.ingest.activity_time``); ``Person.last_event_at`` is the latest.
- **Spell**: from an activity time until the next one; due at activity + N minutes
  (:meth:`IdleSpec.deadline`). The first tick at or after the deadline finds it, unless a later
  activity had arrived by then.
- **In onboarding** at the deadline (:meth:`IdleSpec.waiting`, :meth:`IdleSpec.window_open`): in
  the flow and not completed; with a step S, at S (the step to do next: ``furthest_step`` is
  S − 1, as segments read it); the conversion window still open after the deadline.
- **One occurrence per spell**: its key is its activity time, so ticks that find it again enroll
  nobody twice.
- **Late data** (§4.1): a spell whose activity was received at or after its deadline was learnt
  of too late (:meth:`IdleSpec.late`): the live engine records it (``skipped``, ``late_data``),
  the backtest leaves it out; neither ever sends for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from django.db.models import QuerySet

from triggers.rules.spec import Trigger

from .occurrences import Occurrence, occurrence_stamp

Rows = TypeVar("Rows", bound=QuerySet)


@dataclass(frozen=True, slots=True)
class IdleSpec:
    flow: str
    threshold: timedelta
    # The step restriction as progress stores it (``furthest_step``), None for anywhere in the flow.
    at_step: int | None = None

    @classmethod
    def of(cls, trigger: Trigger) -> IdleSpec:
        return cls(
            flow=trigger.flow or "",
            threshold=timedelta(minutes=trigger.minutes or 0),
            at_step=None if trigger.step is None else trigger.step - 1,
        )

    @staticmethod
    def activity(events: Rows) -> Rows:
        """The events that count as activity: live ones, never imported history."""
        return events.filter(imported=False)

    def deadline(self, activity_at: datetime) -> datetime:
        return activity_at + self.threshold

    @staticmethod
    def late(deadline: datetime, received_at: datetime | None) -> bool:
        """Learnt of too late: the activity arrived at or after the spell's deadline, or when it
        arrived is unknown."""
        return received_at is None or received_at >= deadline

    @staticmethod
    def waiting(progress: Rows, specs: list[IdleSpec]) -> Rows:
        """The ``FlowProgress`` rows of people still in onboarding, at one of the rules' steps
        if each names one (:meth:`at` then picks a rule's own)."""
        progress = progress.filter(completed_at__isnull=True)
        steps = {spec.at_step for spec in specs}
        if None not in steps:
            progress = progress.filter(furthest_step__in=steps)
        return progress

    def at(self, furthest_step: int) -> bool:
        """At the rule's step, if it names one."""
        return self.at_step is None or furthest_step == self.at_step

    def found(
        self,
        since: datetime,
        until: datetime,
        *,
        activity_at: datetime,
        received_at: datetime | None,
        seen: bool,
    ) -> bool:
        """Found by a tick over (since, until]: the spell's deadline fell in it, or the spell was
        learnt of in it (its activity received there, at or after the deadline; ``seen``: the
        person was last seen after ``since``)."""
        deadline = self.deadline(activity_at)
        if since < deadline <= until:
            return True
        return (
            received_at is not None
            and seen
            and since < received_at <= until
            and received_at >= deadline
        )

    @staticmethod
    def window_open(window_ends_at: datetime, deadline: datetime) -> bool:
        """The conversion window is still open after the deadline: still "in onboarding"."""
        return window_ends_at > deadline

    def occurrence(
        self,
        person_id: int,
        activity_at: datetime,
        furthest_step: int,
        *,
        late: bool = False,
        received_at: datetime | None = None,
    ) -> Occurrence:
        """The spell from ``activity_at`` as an occurrence (one per spell: keyed by its start)."""
        context: dict = {"furthest_step": furthest_step, "last_seen": activity_at.isoformat()}
        if late and received_at is not None:
            context["received_at"] = received_at.isoformat()
        return Occurrence(
            person_id,
            f"idle:{occurrence_stamp(activity_at)}",
            self.deadline(activity_at),
            context,
            late,
        )
