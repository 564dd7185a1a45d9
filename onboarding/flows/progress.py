"""Maintaining :class:`FlowProgress` and :class:`FlowReentry` rows, set-based per ingested batch.

For every flow whose step events appear in a batch, the affected people's step events are read in
one query and walked again with :func:`onboarding.flows.chain.walk`. Recomputing from stored events
(rather than patching the row) keeps the row exact when events arrive late with older timestamps.
Each person's later entries (the earliest step-1 event of each later UTC day) are walked too and
replace that person's re-entry rows: one upsert, one delete and one insert per batch.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.db import connection

from onboarding.models import (
    BREAKDOWN_PROPERTIES,
    Event,
    FlowProgress,
    FlowReentry,
    OnboardingFlow,
    Step,
    offset_columns,
)

from .chain import Chain, StepEvent, StepSpec, walk
from .writes import write_progress


@dataclass(frozen=True)
class FlowSpec:
    id: int
    window: timedelta
    steps: tuple[StepSpec, ...]
    event_names: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "event_names", frozenset(s.event_name for s in self.steps))


_DEFINITION_SQL = (
    "SELECT s.flow_id, f.window_seconds, s.event_name, s.{where} FROM {step} s "
    "JOIN {flow} f ON f.id = s.flow_id ORDER BY s.flow_id, s.position"
)
# The definitions this process last read, and the rows they were built from. The rows are the
# version: every batch reads them again (one short query) and rebuilds only when they differ, so
# an edit by any path (services, admin, SQL) takes effect on the next batch.
_cached: tuple[tuple, list[FlowSpec]] = ((), [])


def _definitions() -> list[FlowSpec]:
    """Every flow with its steps, in one query; parsed again only when a definition changed."""
    global _cached
    sql = _DEFINITION_SQL.format(
        where=connection.ops.quote_name("where"),
        step=connection.ops.quote_name(Step._meta.db_table),
        flow=connection.ops.quote_name(OnboardingFlow._meta.db_table),
    )
    with connection.cursor() as cursor:
        cursor.execute(sql)
        rows = tuple(cursor.fetchall())
    cached_rows, specs = _cached
    if rows == cached_rows:
        return specs
    by_flow: dict[int, list[StepSpec]] = defaultdict(list)
    windows: dict[int, int] = {}
    for flow_id, window_seconds, event_name, where in rows:
        if isinstance(where, str):  # jsonb and SQLite's JSON arrive as text on a raw cursor
            where = json.loads(where)
        by_flow[flow_id].append(StepSpec(event_name, where or {}))
        windows[flow_id] = window_seconds
    specs = [
        FlowSpec(flow_id, timedelta(seconds=windows[flow_id]), tuple(steps))
        for flow_id, steps in sorted(by_flow.items())
    ]
    _cached = (rows, specs)
    return specs


def flow_specs(event_names: Iterable[str] | None = None) -> list[FlowSpec]:
    """The flows (with their steps) that use any of ``event_names``; all flows if None."""
    if event_names is not None:
        names = set(event_names)
        if not names:
            return []
        return [spec for spec in _definitions() if not names.isdisjoint(spec.event_names)]
    return _definitions()


_MICROSECOND = timedelta(microseconds=1)


def breakdown_text(value: object) -> str | None:
    """A property value as a breakdown key: strings as they are, other JSON as JSON text."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return json.dumps(value)


def entry_columns(chain: Chain, events: list[StepEvent]) -> dict:
    """The narrow typed columns of one entry's outcome (:class:`EntryOutcome`)."""
    entry = next(e for e in events if e.id == chain.entry_event_id)
    start = chain.entered_at
    return {
        "entered_at": start,
        "entry_event_id": chain.entry_event_id,
        "furthest_step": chain.reached,
        **offset_columns([(t - start) // _MICROSECOND for t in chain.times]),
        "reached_at": chain.times[-1],
        **{
            f"entry_{name}": breakdown_text(entry.properties.get(name))
            for name in BREAKDOWN_PROPERTIES
        },
    }


def _day_start(moment: datetime) -> datetime:
    day = moment.astimezone(UTC).date()
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def progress_rows(
    flow: FlowSpec, person_id: int, events: list[StepEvent]
) -> tuple[FlowProgress | None, list[FlowReentry]]:
    """A person's progress row and re-entry rows in ``flow``, from their step events sorted by
    (timestamp, id); (None, []) when they never entered."""
    chain = walk(flow.steps, events, window=flow.window)
    if chain is None:
        return None, []
    first = flow.steps[0]
    entries = [e.timestamp for e in events if first.matches(e.name, e.properties)]
    complete = chain.reached == len(flow.steps)
    row = FlowProgress(
        flow_id=flow.id,
        person_id=person_id,
        latest_entry_at=max(entries),
        completed_at=chain.times[-1] if complete else None,
        window_ends_at=chain.entered_at + flow.window,
        **entry_columns(chain, events),
    )
    reentries = []
    seen = {_day_start(chain.entered_at)}
    for moment in entries:
        day = _day_start(moment)
        if day in seen:
            continue
        seen.add(day)
        again = walk(flow.steps, events, window=flow.window, entry_from=day)
        if again is not None:
            reentries.append(
                FlowReentry(
                    flow_id=flow.id,
                    person_id=person_id,
                    first_entered_at=chain.entered_at,
                    **entry_columns(again, events),
                )
            )
    return row, reentries


def refresh_progress(flows: list[FlowSpec], person_ids: Iterable[int]) -> int:
    """Recompute the progress of these people in these flows from their stored events."""
    people = sorted(set(person_ids))
    return _refresh([(flow, people) for flow in flows])


def _refresh(
    targets: list[tuple[FlowSpec, list[int]]],
    known: dict[int, list[StepEvent]] | None = None,
) -> int:
    """Recompute (flow, people) pairs: one read of the step events, one upsert, one delete per flow.

    ``known`` holds the complete event history of some people (people created by the batch
    being ingested have no other events): they are not read again.
    """
    targets = [(flow, people) for flow, people in targets if people]
    if not targets:
        return 0
    known = known or {}
    everyone = sorted(set().union(*(people for _, people in targets)) - known.keys())
    names = set().union(*(flow.event_names for flow, _ in targets))
    events: dict[int, list[StepEvent]] = defaultdict(list)
    for person_id, history in known.items():
        events[person_id] = sorted(
            (e for e in history if e.name in names), key=lambda e: (e.timestamp, e.id)
        )
    if everyone:
        rows = (
            Event.objects.filter(person_id__in=everyone, name__in=names)
            .order_by("person_id", "timestamp", "id")
            .values_list("person_id", "id", "name", "timestamp", "properties")
        )
        # One round trip: a server-side cursor (``.iterator()``) adds DECLARE, FETCH and CLOSE.
        for person_id, event_id, name, timestamp, properties in rows:
            events[person_id].append(StepEvent(event_id, name, timestamp, properties or {}))

    upserts: list[FlowProgress] = []
    reentries: list[FlowReentry] = []
    stale: dict[int, list[int]] = defaultdict(list)
    # Every refreshed person's re-entry rows are replaced (one DELETE by index, then one INSERT),
    # but for people created by this batch (``known``), who have none stored yet.
    replaced: dict[int, list[int]] = defaultdict(list)
    for flow, people in targets:
        for person_id in people:
            row, again = progress_rows(flow, person_id, events.get(person_id, []))
            if row is None:
                stale[flow.id].append(person_id)
            else:
                upserts.append(row)
                reentries += again
            if person_id not in known:
                replaced[flow.id].append(person_id)
    write_progress(upserts=upserts, stale=stale, replaced=replaced, reentries=reentries)
    return len(upserts)


def refresh_after_ingest(
    names_by_person: dict[int, set[str]],
    *,
    flows: list[FlowSpec] | None = None,
    new_people: dict[int, list[StepEvent]] | None = None,
) -> None:
    """Called by ingestion with the names of the newly stored events of each person.

    Each flow is recomputed only for the people whose new events are among its steps; the step
    events of all of them are read in one query, except for ``new_people``, whose only events
    are the batch's, given here. ``flows`` are the definitions if the caller read them already
    (:func:`flow_specs`, in the same transaction).
    """
    if not names_by_person:
        return
    all_names = set().union(*names_by_person.values())
    _refresh(
        [
            (flow, sorted(p for p, seen in names_by_person.items() if seen & flow.event_names))
            for flow in (flow_specs() if flows is None else flows)
            if not all_names.isdisjoint(flow.event_names)
        ],
        new_people,
    )


def rebuild_flow_progress(flow: OnboardingFlow, *, chunk: int = 5000) -> int:
    """Recompute a whole flow (after its steps or window change)."""
    specs = [spec for spec in flow_specs() if spec.id == flow.pk]
    FlowProgress.objects.filter(flow=flow).delete()
    FlowReentry.objects.filter(flow=flow).delete()
    if not specs:
        return 0
    first_name = specs[0].steps[0].event_name
    people = Event.objects.filter(name=first_name).values_list("person_id", flat=True).distinct()
    total = 0
    batch: list[int] = []
    for person_id in people.order_by("person_id").iterator(chunk_size=chunk):
        batch.append(person_id)
        if len(batch) >= chunk:
            total += refresh_progress(specs, batch)
            batch = []
    if batch:
        total += refresh_progress(specs, batch)
    return total
