"""Per-entrant outcomes of a funnel: where each entrant got to, and when.

An :class:`Outcome` is the funnel's view of one entrant. It comes from the progress row maintained
at ingestion when the person's first-ever entry falls in the range (exact by construction), or
from a walk over the person's raw events with :func:`onboarding.flows.chain.walk` bounded to the
range (people who entered before the range and again inside it, and the all-raw-events mode).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from django.db.models import F, QuerySet

from onboarding.flows.chain import StepEvent, StepSpec, walk
from onboarding.models import Event, FlowProgress, Person, Segment

from .query import NONE_VALUE, FunnelQuery, FunnelQueryError, StepDef

_CHUNK = 2000


@dataclass(frozen=True, slots=True)
class Outcome:
    person_id: int
    entered_at: datetime
    furthest_step: int
    # Seconds between consecutive chosen steps: [1→2, 2→3, …] as far as reached.
    gaps: tuple[float, ...]
    reached_at: datetime
    entry_event_id: int
    breakdown: str | None = None

    def as_record(self) -> dict[str, Any]:
        """The row shape of the progress table, for the PostgreSQL path's ``jsonb_to_recordset``."""
        return {
            "person_id": self.person_id,
            "entered_at": self.entered_at.isoformat(),
            "furthest_step": self.furthest_step,
            "step_seconds": list(self.gaps),
            "reached_at": self.reached_at.isoformat(),
            "entry_event_id": self.entry_event_id,
        }


def step_specs(steps: Sequence[StepDef]) -> list[StepSpec]:
    return [StepSpec(step.event, step.where) for step in steps]


def allowed_people(query: FunnelQuery) -> QuerySet[Person] | None:
    """The people entrants are restricted to (segment members now ∩ ``query.people``), or None."""
    allowed: QuerySet[Person] | None = None
    if query.segment is not None:
        allowed = segment_members(query.segment, query.clock)
    if query.people is not None:
        allowed = query.people if allowed is None else allowed.filter(pk__in=query.people)
    return allowed


def segment_members(segment: Segment, now: datetime) -> QuerySet[Person]:
    """The segment's members as of ``now`` (DESIGN §4.2: membership is evaluated now)."""
    try:
        from onboarding.segments import members_queryset
    except ImportError:  # the segment compiler has not landed in this checkout
        raise FunnelQueryError(
            "segments_unavailable",
            f"segment {segment.slug!r} cannot be evaluated: onboarding.segments is not available",
        ) from None
    return members_queryset(segment, now=now)


def walk_people(
    query: FunnelQuery, steps: Sequence[StepDef], person_ids: Iterable[int]
) -> list[Outcome]:
    """Walk these people's raw step events with the entry bounded to the query's range."""
    specs = step_specs(steps)
    names = sorted({step.event for step in steps})
    window = query.window
    entry_from, entry_until = query.entry_from, query.entry_until
    outcomes: list[Outcome] = []
    ids = sorted(set(person_ids))
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        rows = (
            Event.objects.filter(
                person_id__in=chunk,
                name__in=names,
                timestamp__gte=entry_from,
                timestamp__lte=entry_until + window,
            )
            .order_by("person_id", "timestamp", "id")
            .values_list("person_id", "id", "name", "timestamp", "properties")
        )
        for person_id, events in _by_person(rows.iterator(chunk_size=5000)):
            chain = walk(
                specs, events, window=window, entry_from=entry_from, entry_until=entry_until
            )
            if chain is not None:
                outcomes.append(
                    Outcome(
                        person_id=person_id,
                        entered_at=chain.entered_at,
                        furthest_step=chain.reached,
                        gaps=tuple(chain.gaps_seconds()),
                        reached_at=chain.times[-1],
                        entry_event_id=chain.entry_event_id,
                    )
                )
    return outcomes


def _by_person(rows: Iterator[tuple]) -> Iterator[tuple[int, list[StepEvent]]]:
    current: int | None = None
    events: list[StepEvent] = []
    for person_id, event_id, name, timestamp, properties in rows:
        if person_id != current:
            if current is not None:
                yield current, events
            current, events = person_id, []
        events.append(StepEvent(event_id, name, timestamp, properties or {}))
    if current is not None:
        yield current, events


def reentrant_ids(query: FunnelQuery, allowed: QuerySet[Person] | None) -> list[int]:
    """People whose first entry is before the range but who have a step-1 event after its start.

    Their progress row describes the first entry, not the one inside the range, so they are walked
    from raw events (the walk decides whether a step-1 event actually falls inside the range).
    """
    rows = FlowProgress.objects.filter(
        flow=query.flow,
        entered_at__lt=query.entry_from,
        latest_entry_at__gte=query.entry_from,
        # Implied by the two above; stated so that a partial index on re-entrants can serve it.
        latest_entry_at__gt=F("entered_at"),
    )
    ids = list(rows.values_list("person_id", flat=True))
    if allowed is None or not ids:
        return ids
    # The segment is evaluated on these few people only, fetched by primary key. As one query
    # (``person_id IN (segment)``) the planner cannot tell how few re-entrants there are and
    # evaluates the segment over every person to hash-join them (a full scan of the people).
    members: list[int] = []
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        members += allowed.filter(pk__in=chunk).values_list("pk", flat=True)
    return members


def raw_entrant_ids(
    query: FunnelQuery, steps: Sequence[StepDef], allowed: QuerySet[Person] | None
) -> list[int]:
    """Everyone with an event named like step 1 in the range (the walk applies ``where``)."""
    rows = Event.objects.filter(
        name=steps[0].event, timestamp__gte=query.entry_from, timestamp__lt=query.entry_until
    )
    if allowed is not None:
        rows = rows.filter(person_id__in=allowed.values("pk"))
    return list(rows.values_list("person_id", flat=True).distinct())


def progress_outcomes(query: FunnelQuery, allowed: QuerySet[Person] | None) -> list[Outcome]:
    """Outcomes of the entrants whose first-ever entry falls in the range, from progress rows."""
    rows = FlowProgress.objects.filter(
        flow=query.flow, entered_at__gte=query.entry_from, entered_at__lt=query.entry_until
    )
    if allowed is not None:
        rows = rows.filter(person_id__in=allowed.values("pk"))
    return [
        Outcome(
            person_id=person_id,
            entered_at=entered_at,
            furthest_step=furthest,
            gaps=tuple(float(gap) for gap in gaps or ()),
            reached_at=reached_at,
            entry_event_id=entry_event_id,
        )
        for person_id, entered_at, furthest, gaps, reached_at, entry_event_id in rows.values_list(
            "person_id",
            "entered_at",
            "furthest_step",
            "step_seconds",
            "reached_at",
            "entry_event_id",
        ).iterator(chunk_size=5000)
    ]


def collect_outcomes(query: FunnelQuery, steps: Sequence[StepDef], *, raw: bool) -> list[Outcome]:
    """Every entrant's outcome, in Python (the portable path; PostgreSQL aggregates in SQL)."""
    allowed = allowed_people(query)
    if raw:
        outcomes = walk_people(query, steps, raw_entrant_ids(query, steps, allowed))
    else:
        outcomes = progress_outcomes(query, allowed)
        outcomes += walk_people(query, steps, reentrant_ids(query, allowed))
    if query.breakdown:
        outcomes = with_breakdown(outcomes, query.breakdown)
    return outcomes


def breakdown_text(value: Any) -> str | None:
    """A property value as a breakdown key: strings as they are, other JSON as JSON text."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return json.dumps(value)


def with_breakdown(outcomes: list[Outcome], name: str) -> list[Outcome]:
    """The entry event's property ``name``, else the person's trait ``name``, else ``(none)``."""
    properties: dict[int, Any] = {}
    traits: dict[int, Any] = {}
    event_ids = [o.entry_event_id for o in outcomes]
    person_ids = [o.person_id for o in outcomes]
    for start in range(0, len(event_ids), _CHUNK):
        for pk, props in Event.objects.filter(pk__in=event_ids[start : start + _CHUNK]).values_list(
            "pk", "properties"
        ):
            properties[pk] = (props or {}).get(name)
    for start in range(0, len(person_ids), _CHUNK):
        for pk, person_traits in Person.objects.filter(
            pk__in=person_ids[start : start + _CHUNK]
        ).values_list("pk", "traits"):
            traits[pk] = (person_traits or {}).get(name)
    result = []
    for outcome in outcomes:
        value = breakdown_text(properties.get(outcome.entry_event_id))
        if value is None:
            value = breakdown_text(traits.get(outcome.person_id))
        result.append(replace(outcome, breakdown=NONE_VALUE if value is None else value))
    return result
