"""Detection of trigger occurrences, by deadline and by index (DESIGN §4.4).

Each detector answers one question for a rule: *which occurrences became due in the interval
(since, until]?* — never "who matches right now" over everyone. Inactivity uses the index on
``Person.last_seen`` (server time): someone idle for N minutes at ``until`` whose deadline
``last_seen + N`` passed after ``since`` has ``last_seen`` in ``(since − N, until − N]``. Event
triggers read the events received in the interval, by the ``received_at`` index. The cost of a
tick therefore grows with the people who became due, not with the people stored.

Occurrence keys make enrollment idempotent: the same occurrence found by two ticks (or two beats)
has the same key, and the database refuses the second enrollment.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from onboarding.flows.chain import StepSpec, where_matches
from onboarding.models import Event, FlowProgress, OnboardingFlow
from triggers.rules.spec import Trigger

SESSION_GAP = timedelta(minutes=30)
CHUNK = 5000


@dataclass(frozen=True, slots=True)
class Occurrence:
    person_id: int
    key: str
    at: datetime
    context: dict[str, Any] = field(default_factory=dict)


def occurrence_stamp(moment: datetime) -> str:
    return moment.strftime("%Y%m%dT%H%M%S.%f")


def _steps(flow_slug: str) -> tuple[OnboardingFlow, list[StepSpec]]:
    flow = OnboardingFlow.objects.get(slug=flow_slug)
    steps = [StepSpec(s.event_name, s.where or {}) for s in flow.steps.order_by("position")]
    return flow, steps


def inactive_in_flow(trigger: Trigger, since: datetime, until: datetime) -> Iterator[Occurrence]:
    idle = timedelta(minutes=trigger.minutes or 0)
    flow = OnboardingFlow.objects.get(slug=trigger.flow)
    progress = FlowProgress.objects.filter(
        flow=flow,
        completed_at__isnull=True,
        person__last_seen__gt=since - idle,
        person__last_seen__lte=until - idle,
    )
    if trigger.step is not None:
        # At step N: N is the step to do next (the same reading as segments).
        progress = progress.filter(furthest_step=trigger.step - 1)
    rows = progress.values_list("person_id", "person__last_seen", "furthest_step", "window_ends_at")
    for person_id, last_seen, furthest, window_ends_at in rows.iterator(chunk_size=CHUNK):
        deadline = last_seen + idle
        if window_ends_at <= deadline:
            continue  # the conversion window closed: no longer "in onboarding"
        yield Occurrence(
            person_id,
            f"idle:{occurrence_stamp(last_seen)}",
            deadline,
            {"furthest_step": furthest, "last_seen": last_seen.isoformat()},
        )


def step_abandoned(trigger: Trigger, since: datetime, until: datetime) -> Iterator[Occurrence]:
    within = timedelta(seconds=trigger.within or 0)
    flow, steps = _steps(trigger.flow or "")
    did, missing = steps[(trigger.did or 1) - 1], steps[(trigger.missing or 1) - 1]
    done = Event.objects.filter(
        name=did.event_name, received_at__gt=since - within, received_at__lte=until - within
    ).values_list("id", "person_id", "timestamp", "received_at", "properties")
    candidates = [row for row in done if where_matches(did.where, row[4] or {})]
    if not candidates:
        return
    people = {row[1] for row in candidates}
    open_people = dict(
        FlowProgress.objects.filter(
            flow=flow, person_id__in=people, completed_at__isnull=True
        ).values_list("person_id", "furthest_step")
    )
    earliest = min(row[2] for row in candidates)
    followed: dict[int, list[datetime]] = defaultdict(list)
    for person_id, timestamp, properties in Event.objects.filter(
        person_id__in=list(open_people), name=missing.event_name, timestamp__gte=earliest
    ).values_list("person_id", "timestamp", "properties"):
        if where_matches(missing.where, properties or {}):
            followed[person_id].append(timestamp)
    for event_id, person_id, timestamp, received_at, _ in candidates:
        if person_id not in open_people:
            continue
        if any(timestamp <= t <= timestamp + within for t in followed[person_id]):
            continue
        yield Occurrence(
            person_id,
            f"abandon:{event_id}",
            received_at + within,
            {"furthest_step": open_people[person_id], "did_at": timestamp.isoformat()},
        )


def _new_events(name: str, since: datetime, until: datetime, where: dict[str, Any]):
    rows = Event.objects.filter(name=name, received_at__gt=since, received_at__lte=until)
    for row in rows.values_list("id", "person_id", "timestamp", "received_at", "properties"):
        if where_matches(where, row[4] or {}):
            yield row


def repeated_event(trigger: Trigger, since: datetime, until: datetime) -> Iterator[Occurrence]:
    """Fires when an event brings the count within ``within`` to exactly ``times``."""
    within = timedelta(seconds=trigger.within or 0)
    times = trigger.times or 0
    new = list(_new_events(trigger.event or "", since, until, trigger.where))
    if not new:
        return
    earliest = min(row[2] for row in new) - within
    history: dict[int, list[tuple[datetime, int]]] = defaultdict(list)
    for event_id, person_id, timestamp, properties in Event.objects.filter(
        person_id__in={row[1] for row in new}, name=trigger.event, timestamp__gte=earliest
    ).values_list("id", "person_id", "timestamp", "properties"):
        if where_matches(trigger.where, properties or {}):
            history[person_id].append((timestamp, event_id))
    for event_id, person_id, timestamp, received_at, _ in new:
        before = [
            (t, i)
            for t, i in history[person_id]
            if timestamp - within <= t and (t, i) < (timestamp, event_id)
        ]
        if len(before) == times - 1:
            yield Occurrence(
                person_id, f"repeat:{event_id}", received_at, {"count": times, "event_id": event_id}
            )


def inactive_sessions(trigger: Trigger, since: datetime, until: datetime) -> Iterator[Occurrence]:
    """K sessions without progress: sessions that began (after a 30-minute gap) since the
    person last progressed in the flow. The session in which they progressed does not count."""
    flow = OnboardingFlow.objects.get(slug=trigger.flow)
    active = set(
        Event.objects.filter(received_at__gt=since, received_at__lte=until)
        .values_list("person_id", flat=True)
        .distinct()
    )
    if not active:
        return
    stalled = dict(
        FlowProgress.objects.filter(
            flow=flow, person_id__in=active, completed_at__isnull=True
        ).values_list("person_id", "reached_at")
    )
    if not stalled:
        return
    times: dict[int, list[datetime]] = defaultdict(list)
    for person_id, timestamp in (
        Event.objects.filter(person_id__in=list(stalled), timestamp__gt=min(stalled.values()))
        .order_by("person_id", "timestamp")
        .values_list("person_id", "timestamp")
    ):
        if timestamp > stalled[person_id]:
            times[person_id].append(timestamp)
    for person_id, reached_at in stalled.items():
        sessions, previous = 0, reached_at
        for timestamp in times[person_id]:
            if timestamp - previous > SESSION_GAP:
                sessions += 1
            previous = timestamp
        if sessions >= (trigger.sessions or 0):
            yield Occurrence(
                person_id,
                f"sessions:{occurrence_stamp(reached_at)}",
                until,
                {"sessions": sessions, "reached_at": reached_at.isoformat()},
            )


def milestone(trigger: Trigger, since: datetime, until: datetime) -> Iterator[Occurrence]:
    new = list(_new_events(trigger.event or "", since, until, trigger.where))
    if not new:
        return
    people = {row[1] for row in new}
    completed: dict[int, datetime] = {}
    if trigger.flow:
        completed = dict(
            FlowProgress.objects.filter(
                flow__slug=trigger.flow, person_id__in=people, completed_at__isnull=False
            ).values_list("person_id", "completed_at")
        )
        people &= set(completed)
    counts: dict[int, int] = defaultdict(int)
    for person_id, timestamp, properties in Event.objects.filter(
        person_id__in=people, name=trigger.event
    ).values_list("person_id", "timestamp", "properties"):
        if person_id in completed and timestamp < completed[person_id]:
            continue
        if where_matches(trigger.where, properties or {}):
            counts[person_id] += 1
    reached_at = {row[1]: row[3] for row in new}
    for person_id in sorted(people):
        if counts[person_id] >= (trigger.times or 1):
            yield Occurrence(
                person_id,
                f"milestone:{trigger.times}",
                reached_at[person_id],
                {"count": counts[person_id]},
            )


def event(trigger: Trigger, since: datetime, until: datetime) -> Iterator[Occurrence]:
    for event_id, person_id, _, received_at, _ in _new_events(
        trigger.event or "", since, until, trigger.where
    ):
        yield Occurrence(person_id, f"event:{event_id}", received_at, {"event_id": event_id})


DETECTORS = {
    "inactive_in_flow": inactive_in_flow,
    "step_abandoned": step_abandoned,
    "repeated_event": repeated_event,
    "inactive_sessions": inactive_sessions,
    "milestone": milestone,
    "event": event,
}


def detect(trigger: Trigger, since: datetime, until: datetime) -> Iterator[Occurrence]:
    return DETECTORS[trigger.kind](trigger, since, until)
