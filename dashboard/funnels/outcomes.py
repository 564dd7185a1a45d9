"""Per-entrant outcomes of a funnel: where each entrant got to, and when.

An :class:`Outcome` is the funnel's view of one entrant. It comes from the progress row maintained
at ingestion when the person's first-ever entry falls in the range, or from their earliest
re-entry row in the range when their first entry is before it (both exact by construction: the
walk of :func:`onboarding.flows.chain.walk` at ingestion), or, in the all-raw-events mode, from a
walk over the person's raw events bounded to the range.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from django.db.models.expressions import RawSQL

from onboarding.flows.chain import StepEvent, StepSpec, walk
from onboarding.flows.progress import breakdown_text
from onboarding.models import (
    BREAKDOWN_PROPERTIES,
    OFFSET_FIELDS,
    Event,
    FlowProgress,
    FlowReentry,
    Person,
    Segment,
    offsets_of,
    offsets_to_gaps,
)

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


def step_specs(steps: Sequence[StepDef]) -> list[StepSpec]:
    return [StepSpec(step.event, step.where) for step in steps]


def allowed_people(query: FunnelQuery) -> RawSQL | None:
    """The ids of the people entrants are restricted to (segment members now ∩ ``query.people``),
    as a subquery of one column for ``person_id IN (…)``, or None.

    A segment of string and boolean trait equalities is read from the trait index
    (``onboarding.segments.member_ids``), not from the people's rows: its members are 200,000
    ids at the funnel benchmark's scale, which the progress rows are then joined with."""
    parts: list[tuple[str, list[Any]]] = []
    if query.segment is not None:
        parts.append(segment_member_ids(query.segment, query.clock))
    if query.people is not None:
        sql, params = query.people.values("pk").query.sql_with_params()
        parts.append((sql, list(params)))
    if not parts:
        return None
    # Compiled queries' SQL, their values as parameters.
    if len(parts) == 1:
        return RawSQL(*parts[0])  # noqa: S611
    return RawSQL(  # noqa: S611
        " INTERSECT ".join(f"({sql})" for sql, _ in parts), [p for _, ps in parts for p in ps]
    )


def segment_member_ids(segment: Segment, now: datetime) -> tuple[str, list[Any]]:
    """The segment's members' ids as of ``now`` (DESIGN §4.2: membership is evaluated now)."""
    try:
        from onboarding.segments import member_ids
    except ImportError:  # the segment compiler has not landed in this checkout
        raise FunnelQueryError(
            "segments_unavailable",
            f"segment {segment.slug!r} cannot be evaluated: onboarding.segments is not available",
        ) from None
    return member_ids(segment, now=now)


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


def raw_entrant_ids(
    query: FunnelQuery, steps: Sequence[StepDef], allowed: RawSQL | None
) -> list[int]:
    """Everyone with an event named like step 1 in the range (the walk applies ``where``)."""
    rows = Event.objects.filter(
        name=steps[0].event, timestamp__gte=query.entry_from, timestamp__lt=query.entry_until
    )
    if allowed is not None:
        rows = rows.filter(person_id__in=allowed)
    return list(rows.values_list("person_id", flat=True).distinct())


def progress_outcomes(query: FunnelQuery, allowed: RawSQL | None) -> list[Outcome]:
    """Outcomes from stored rows: entrants whose first-ever entry falls in the range (progress),
    and people whose first entry is before it, from their earliest re-entry inside it."""
    fields = ["person_id", "entered_at", "furthest_step", "reached_at", "entry_event_id"]
    fields += OFFSET_FIELDS
    carried = query.breakdown in BREAKDOWN_PROPERTIES
    if carried:
        fields.append(f"entry_{query.breakdown}")
    in_range = {"entered_at__gte": query.entry_from, "entered_at__lt": query.entry_until}
    first = FlowProgress.objects.filter(flow=query.flow, **in_range)
    again = FlowReentry.objects.filter(
        flow=query.flow, first_entered_at__lt=query.entry_from, **in_range
    ).order_by("person_id", "entered_at", "id")
    if allowed is not None:
        first = first.filter(person_id__in=allowed)
        again = again.filter(person_id__in=allowed)
    rows = list(first.values(*fields).iterator(chunk_size=5000))
    seen: set[int] = set()
    for row in again.values(*fields):
        if row["person_id"] not in seen:  # the earliest re-entry in the range is the entry
            seen.add(row["person_id"])
            rows.append(row)
    return [
        Outcome(
            person_id=row["person_id"],
            entered_at=row["entered_at"],
            furthest_step=row["furthest_step"],
            gaps=tuple(offsets_to_gaps(offsets_of(row))),
            reached_at=row["reached_at"],
            entry_event_id=row["entry_event_id"],
            breakdown=row[f"entry_{query.breakdown}"] if carried else None,
        )
        for row in rows
    ]


def collect_outcomes(query: FunnelQuery, steps: Sequence[StepDef], *, raw: bool) -> list[Outcome]:
    """Every entrant's outcome, in Python (the portable path; PostgreSQL aggregates in SQL)."""
    allowed = allowed_people(query)
    if raw:
        outcomes = walk_people(query, steps, raw_entrant_ids(query, steps, allowed))
    else:
        outcomes = progress_outcomes(query, allowed)
    if query.breakdown:
        outcomes = with_breakdown(
            outcomes, query.breakdown, carried=not raw and query.breakdown in BREAKDOWN_PROPERTIES
        )
    return outcomes


def with_breakdown(outcomes: list[Outcome], name: str, *, carried: bool = False) -> list[Outcome]:
    """The entry event's property ``name``, else the person's trait ``name``, else ``(none)``.

    ``carried``: the outcomes' ``breakdown`` already holds the entry event's property (from the
    stored rows), so the events are not read."""
    properties: dict[int, Any] = {}
    traits: dict[int, Any] = {}
    event_ids = [] if carried else [o.entry_event_id for o in outcomes]
    person_ids = [o.person_id for o in outcomes if not carried or o.breakdown is None]
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
        if carried:
            value = outcome.breakdown
        else:
            value = breakdown_text(properties.get(outcome.entry_event_id))
        if value is None:
            value = breakdown_text(traits.get(outcome.person_id))
        result.append(replace(outcome, breakdown=NONE_VALUE if value is None else value))
    return result
