"""Which occurrences the live detectors (``triggers.engine.detectors``) would have found, and at
which tick, had the rule ticked every 30 s over a past period.

Each function mirrors one live detector (idle spells have their own executor, :mod:`.idle`,
reading the same :class:`~triggers.engine.spells.IdleSpec` as the live one): the live detector
answers "what fell due in
(previous tick, this tick]" from the state the database holds at the tick; here that state is
rebuilt from events received by the tick (:mod:`.history`). Each yields ``(tick, occurrence)``;
the same occurrence key may come back at several ticks (sessions, milestones), exactly as the live
detectors re-find it — enrollment (:mod:`.backtest`) decides as the live engine does.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime, timedelta

from onboarding.models import Event, FlowProgress
from triggers.engine.detectors import count_sessions, is_late
from triggers.engine.occurrences import Occurrence, occurrence_stamp
from triggers.rules.spec import Trigger

from .history import CHUNK, Replay, flow_spec, matches

Found = tuple[datetime, Occurrence]
# Yielded after the occurrences of a batch of people are all out: the caller may decide them.
FLUSH = None


def flow_people(flow_id: int) -> list[int]:
    """People who are in the flow now: anyone who ever had progress (entry is never undone)."""
    return list(
        FlowProgress.objects.filter(flow_id=flow_id)
        .order_by("person_id")
        .values_list("person_id", flat=True)
    )


def chunks(
    people: list[int], size: int = 20000, replay: Replay | None = None
) -> Iterator[list[int]]:
    for start in range(0, len(people), size):
        yield people[start : start + size]
        if replay is not None:
            replay.done = min(1.0, (start + size) / len(people))


def step_abandoned(trigger: Trigger, replay: Replay) -> Iterator[Found | None]:
    """Did X at ``e`` (event time), no Y in the window: due at ``e + T``, seen by the tick after;
    late when X arrived at or after that deadline (found, decided as late, at its arrival)."""
    grid = replay.grid
    within = timedelta(seconds=trigger.within or 0)
    flow = flow_spec(trigger.flow or "")
    did = flow.steps[(trigger.did or 1) - 1]
    missing = flow.steps[(trigger.missing or 1) - 1]
    done = [
        row
        # Found at its deadline (then received after ``since − T``) or, late, at its arrival.
        for row in Event.objects.filter(
            name=did.event_name,
            imported=False,
            received_at__gt=grid.since - within,
            received_at__lte=grid.last,
        ).values_list("id", "person_id", "timestamp", "received_at", "properties")
        if matches(dict(did.where), row[4])
    ]
    people = sorted({row[1] for row in done})
    histories = replay.histories(flow, people)
    followed: dict[int, list[tuple[datetime, datetime]]] = defaultdict(list)
    for chunk in chunks(people):
        for person_id, timestamp, received_at, properties in Event.objects.filter(
            person_id__in=chunk, name=missing.event_name, received_at__lte=grid.last
        ).values_list("person_id", "timestamp", "received_at", "properties"):
            if matches(dict(missing.where), properties):
                followed[person_id].append((timestamp, received_at))
    for event_id, person_id, timestamp, received_at, _ in done:
        due = min(timestamp, received_at) + within
        late = received_at >= due
        # The tick that finds it: the one after its deadline, or, when late, after its arrival.
        tick = grid.tick_of(received_at if late else due)
        history = histories.get(person_id)
        if tick is None or history is None:
            continue
        progress = history.progress_at(tick)
        if progress is None or progress.completed_at is not None:
            continue
        if any(timestamp <= t <= timestamp + within and r <= tick for t, r in followed[person_id]):
            continue
        yield (
            tick,
            Occurrence(
                person_id,
                f"abandon:{event_id}",
                due,
                {"furthest_step": progress.furthest_step, "did_at": timestamp.isoformat()},
                late,
            ),
        )


def _matching(trigger: Trigger, people: list[int] | None, until: datetime):
    """(id, person, timestamp, received_at, imported) of the trigger's event, received by
    ``until``."""
    rows = Event.objects.filter(name=trigger.event or "", received_at__lte=until)
    batches = [None] if people is None else list(chunks(people))
    for batch in batches:
        query = rows if batch is None else rows.filter(person_id__in=batch)
        for event_id, person_id, timestamp, received_at, imported, properties in query.values_list(
            "id", "person_id", "timestamp", "received_at", "imported", "properties"
        ).iterator(chunk_size=CHUNK):
            if matches(trigger.where, properties):
                yield event_id, person_id, timestamp, received_at, imported


def repeated_event(trigger: Trigger, replay: Replay) -> Iterator[Found | None]:
    grid = replay.grid
    within = timedelta(seconds=trigger.within or 0)
    times = trigger.times or 0
    history: dict[int, list[tuple[int, datetime, datetime, bool]]] = defaultdict(list)
    for event_id, person_id, timestamp, received_at, imported in _matching(
        trigger, None, grid.last
    ):
        history[person_id].append((event_id, timestamp, received_at, imported))
    for person_id in sorted(history):
        rows = history[person_id]
        for event_id, timestamp, received_at, imported in rows:
            tick = grid.tick_of(received_at)
            if tick is None or imported:
                continue
            before = [
                1
                for other_id, t, r, _ in rows
                if r <= tick and timestamp - within <= t and (t, other_id) < (timestamp, event_id)
            ]
            if len(before) == times - 1:
                yield (
                    tick,
                    Occurrence(
                        person_id,
                        f"repeat:{event_id}",
                        received_at,
                        {"count": times, "event_id": event_id},
                        is_late(timestamp, received_at),
                    ),
                )


def inactive_sessions(trigger: Trigger, replay: Replay) -> Iterator[Found | None]:
    grid = replay.grid
    flow = flow_spec(trigger.flow or "")
    wanted = trigger.sessions or 0
    for people in chunks(flow_people(flow.id), replay=replay):
        histories = replay.histories(flow, people)
        arrivals: dict[int, list[tuple[datetime, datetime, bool]]] = defaultdict(list)
        for person_id, timestamp, received_at, imported in (
            Event.objects.filter(person_id__in=people, received_at__lte=grid.last)
            .order_by("person_id", "timestamp", "id")
            .values_list("person_id", "timestamp", "received_at", "imported")
            .iterator(chunk_size=CHUNK)
        ):
            arrivals[person_id].append((timestamp, received_at, imported))
        for person_id in sorted(arrivals):
            history = histories.get(person_id)
            if history is None:
                continue
            events = arrivals[person_id]
            ticks = sorted({grid.tick_of(r) for _, r, imported in events if not imported} - {None})
            for tick in ticks:  # the person was active (live) in the interval this tick looked at
                progress = history.progress_at(tick)
                if progress is None or progress.completed_at is not None:
                    continue
                seen = [
                    event for event in events if event[1] <= tick and event[0] > progress.reached_at
                ]
                sessions, late = count_sessions(progress.reached_at, seen, wanted)
                if sessions >= wanted:
                    yield (
                        tick,
                        Occurrence(
                            person_id,
                            f"sessions:{occurrence_stamp(progress.reached_at)}",
                            tick,
                            {"sessions": sessions, "reached_at": progress.reached_at.isoformat()},
                            late,
                        ),
                    )
        yield FLUSH


def milestone(trigger: Trigger, replay: Replay) -> Iterator[Found | None]:
    grid = replay.grid
    rows: dict[int, list[tuple[int, datetime, datetime, bool]]] = defaultdict(list)
    for event_id, person_id, timestamp, received_at, imported in _matching(
        trigger, None, grid.last
    ):
        rows[person_id].append((event_id, timestamp, received_at, imported))
    flow = flow_spec(trigger.flow) if trigger.flow else None
    histories = replay.histories(flow, list(rows)) if flow else {}
    times = trigger.times or 1
    for person_id in sorted(rows):
        events = rows[person_id]
        new_by_tick: dict[datetime, list[tuple[datetime, int]]] = defaultdict(list)
        for event_id, _, received_at, imported in events:
            tick = grid.tick_of(received_at)
            if tick is not None and not imported:
                new_by_tick[tick].append((received_at, event_id))
        for tick in sorted(new_by_tick):
            completed_at = None
            if flow is not None:
                history = histories.get(person_id)
                progress = history.progress_at(tick) if history else None
                if progress is None or progress.completed_at is None:
                    continue
                completed_at = progress.completed_at
            counted = sorted(
                (t, i, r, imported)
                for i, t, r, imported in events
                if r <= tick and (completed_at is None or t >= completed_at)
            )
            if len(counted) >= times:
                timestamp, _, received_at, imported = counted[times - 1]
                yield (
                    tick,
                    Occurrence(
                        person_id,
                        f"milestone:{trigger.times}",
                        max(new_by_tick[tick])[0],
                        {"count": len(counted)},
                        is_late(timestamp, received_at, imported),
                    ),
                )


def event(trigger: Trigger, replay: Replay) -> Iterator[Found | None]:
    grid = replay.grid
    rows = Event.objects.filter(
        name=trigger.event or "",
        received_at__gt=grid.since,
        received_at__lte=grid.last,
        imported=False,
    ).values_list("id", "person_id", "timestamp", "received_at", "properties")
    for event_id, person_id, timestamp, received_at, properties in rows.iterator(chunk_size=CHUNK):
        if matches(trigger.where, properties):
            yield (
                grid.tick_of(received_at),
                Occurrence(
                    person_id,
                    f"event:{event_id}",
                    received_at,
                    {"event_id": event_id},
                    is_late(timestamp, received_at),
                ),
            )


HISTORICAL_DETECTORS = {
    "step_abandoned": step_abandoned,
    "repeated_event": repeated_event,
    "inactive_sessions": inactive_sessions,
    "milestone": milestone,
    "event": event,
}


def detect_history(trigger: Trigger, replay: Replay) -> Iterator[Found | None]:
    return HISTORICAL_DETECTORS[trigger.kind](trigger, replay)
