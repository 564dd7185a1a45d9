"""Detection of trigger occurrences, by deadline and by index (DESIGN §4.1, §4.4).

Each detector answers one question for a rule: *which occurrences became due in the interval
(since, until]?* — never "who matches right now" over everyone. Inactivity counts in event time,
from ``Person.last_event_at`` (when the latest live event happened, never later than its
receipt; indexed): someone idle for N minutes at ``until`` whose deadline ``last_event_at + N``
passed after ``since`` has ``last_event_at`` in ``(since − N, until − N]``. Event triggers read
the live events received in the interval, by the ``received_at`` index. The cost of a tick
therefore grows with the people who became due, not with the people stored.

No occurrence in the past: an occurrence fires only when its deadline is after the receipt of the
event that completes it. Idle spells and abandoned steps have their deadline in event time (last
activity + N, the step + T); an event-driven occurrence (event, repeated failure, milestone, a
K-th session) is due when its event happened, and counts as live when it was received within
``ONRAMP_LATE_EVENT_SECONDS`` of that. Otherwise the occurrence comes back marked ``late``: the
evaluation records it (``skipped``, ``late_data``) and never sends. Events stored through
``/v1/import`` (``Event.imported``) are history: they count where a detector counts, but never
complete an occurrence, and never move anyone's last activity.

What an idle spell is (activity, threshold, step, one occurrence per spell, late data) is
:class:`.spells.IdleSpec`, which the backtest's executor reads too. Occurrence keys make
enrollment idempotent (:mod:`.occurrences`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import BooleanField, ExpressionWrapper, F, Q, QuerySet

from onboarding.flows.chain import StepSpec, where_matches
from onboarding.models import Event, FlowProgress, OnboardingFlow
from triggers.rules.spec import Trigger

from .occurrences import Occurrence, occurrence_stamp
from .spells import IdleSpec

SESSION_GAP = timedelta(minutes=30)


def late_event_allowance() -> timedelta:
    """How long after it happened an event may arrive and still start a rule."""
    return timedelta(seconds=settings.ONRAMP_LATE_EVENT_SECONDS)


def is_late(timestamp: datetime, received_at: datetime, imported: bool = False) -> bool:
    """Whether an event-driven occurrence completed by this event is late data: history, or
    received ``ONRAMP_LATE_EVENT_SECONDS`` or more after it happened."""
    return imported or timestamp + late_event_allowance() <= received_at


def happened_between(low: datetime, high: datetime) -> Q:
    """Events whose activity time, ``min(timestamp, received_at)``, is in ``(low, high]``."""
    on_time = Q(timestamp__gt=low, timestamp__lte=high) & Q(timestamp__lte=F("received_at"))
    ahead = Q(received_at__gt=low, received_at__lte=high, received_at__lt=F("timestamp"))
    return on_time | ahead


def _steps(flow_slug: str) -> tuple[OnboardingFlow, list[StepSpec]]:
    flow = OnboardingFlow.objects.get(slug=flow_slug)
    steps = [StepSpec(s.event_name, s.where or {}) for s in flow.steps.order_by("position")]
    return flow, steps


def inactive_in_flow(trigger: Trigger, since: datetime, until: datetime) -> Iterator[Occurrence]:
    """Idle spells (:class:`.spells.IdleSpec`) in event time whose deadline ``last_event_at + N``
    fell in (since, until]; and, marked late, the spells learnt of in the interval whose deadline
    had already passed (``last_event_received_at >= last_event_at + N``: a backfill, an offline
    queue)."""
    spec = IdleSpec.of(trigger)
    return iter(idle_spells(spec.flow, [spec], since, until)[0])


def idle_spells(
    flow: str | int, specs: list[IdleSpec], since: datetime, until: datetime
) -> list[list[Occurrence]]:
    """:func:`inactive_in_flow` for several rules of one flow at once, in one query: per spec,
    its occurrences. The query reads the union of the specs' deadline ranges (each an index range
    of ``last_event_at``) and of the spells learnt of in the interval (``last_seen``); each spec
    then keeps the rows that its own range, step and threshold would have selected. ``flow`` is
    the flow's slug or id."""
    by_flow = Q(flow_id=flow) if isinstance(flow, int) else Q(flow__slug=flow)
    progress = IdleSpec.waiting(FlowProgress.objects.filter(by_flow), specs)
    thresholds = sorted({spec.threshold for spec in specs})
    due = Q()
    for idle in thresholds:
        due |= Q(person__last_event_at__gt=since - idle, person__last_event_at__lte=until - idle)
    learnt = Q(
        person__last_seen__gt=since,  # the index; the receipt of the last activity is at most it
        person__last_event_received_at__gt=since,
        person__last_event_received_at__lte=until,
        person__last_event_received_at__gte=F("person__last_event_at") + thresholds[0],
    )
    seen_since = ExpressionWrapper(Q(person__last_seen__gt=since), output_field=BooleanField())
    rows = (
        progress.filter(due | learnt)
        .annotate(seen_since=seen_since)
        .values_list(
            "person_id",
            "person__last_event_at",
            "person__last_event_received_at",
            "seen_since",
            "furthest_step",
            "window_ends_at",
        )
    )
    found: list[list[Occurrence]] = [[] for _ in specs]
    for person_id, activity_at, received_at, seen_since, furthest, window_ends_at in _serial(rows):
        for spec, occurrences in zip(specs, found, strict=True):
            if not spec.at(furthest) or not spec.found(
                since, until, activity_at=activity_at, received_at=received_at, seen=seen_since
            ):
                continue
            deadline = spec.deadline(activity_at)
            if not spec.window_open(window_ends_at, deadline):
                continue  # the conversion window closed: no longer "in onboarding"
            occurrences.append(
                spec.occurrence(
                    person_id,
                    activity_at,
                    furthest,
                    late=spec.late(deadline, received_at),
                    received_at=received_at,
                )
            )
    return found


def _serial(rows: QuerySet) -> list[tuple]:
    """The rows, fetched at once (the people due in one interval, not a table scan). On
    PostgreSQL without parallel workers: the union of a dozen index ranges is planned as a
    parallel bitmap scan at a million people, whose two workers take twice the time of one
    process for a thousand rows."""
    if connection.vendor != "postgresql":
        return list(rows)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL max_parallel_workers_per_gather = 0")
        return list(rows)


def step_abandoned(trigger: Trigger, since: datetime, until: datetime) -> Iterator[Occurrence]:
    """Did X at t (event time), no Y in [t, t + T]: due at t + T. Found by that deadline, or,
    marked late, when the X event arrived after it."""
    within = timedelta(seconds=trigger.within or 0)
    flow, steps = _steps(trigger.flow or "")
    did, missing = steps[(trigger.did or 1) - 1], steps[(trigger.missing or 1) - 1]
    live = Event.objects.filter(name=did.event_name, imported=False)
    columns = ("id", "person_id", "timestamp", "received_at", "properties")
    rows = {
        row[0]: row
        for row in live.filter(happened_between(since - within, until - within)).values_list(
            *columns
        )
    }
    for row in live.filter(received_at__gt=since, received_at__lte=until).values_list(*columns):
        if min(row[2], row[3]) + within <= row[3]:
            rows[row[0]] = row  # learnt of after its deadline
    candidates = [row for row in rows.values() if where_matches(did.where, row[4] or {})]
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
    for event_id, person_id, timestamp, received_at, _ in sorted(candidates):
        if person_id not in open_people:
            continue
        if any(timestamp <= t <= timestamp + within for t in followed[person_id]):
            continue
        deadline = min(timestamp, received_at) + within
        yield Occurrence(
            person_id,
            f"abandon:{event_id}",
            deadline,
            {"furthest_step": open_people[person_id], "did_at": timestamp.isoformat()},
            received_at >= deadline,
        )


def _new_events(name: str, since: datetime, until: datetime, where: dict[str, Any]):
    """The live events of this name received in (since, until] (never imported history)."""
    rows = Event.objects.filter(
        name=name, received_at__gt=since, received_at__lte=until, imported=False
    )
    for row in rows.values_list("id", "person_id", "timestamp", "received_at", "properties"):
        if where_matches(where, row[4] or {}):
            yield row


def repeated_event(trigger: Trigger, since: datetime, until: datetime) -> Iterator[Occurrence]:
    """Fires when an event brings the count within ``within`` (event time) to exactly ``times``;
    late when that event arrived late."""
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
                person_id,
                f"repeat:{event_id}",
                received_at,
                {"count": times, "event_id": event_id},
                is_late(timestamp, received_at),
            )


def inactive_sessions(
    trigger: Trigger, since: datetime, until: datetime, read: SessionTimes | None = None
) -> Iterator[Occurrence]:
    """K sessions without progress: sessions (in event time) that began after a 30-minute gap
    since the person last progressed in the flow. The session in which they progressed does not
    count. Late when the event that began the K-th session was late or imported. ``read``: what
    :func:`session_times` read for the trigger's flow and interval (rules of one flow share it)."""
    if read is None:
        read = session_times(trigger.flow or "", since, until)
    stalled, times = read
    wanted = trigger.sessions or 0
    for person_id, reached_at in stalled.items():
        sessions, late = count_sessions(reached_at, times.get(person_id, ()), wanted)
        if sessions >= wanted:
            yield Occurrence(
                person_id,
                f"sessions:{occurrence_stamp(reached_at)}",
                until,
                {"sessions": sessions, "reached_at": reached_at.isoformat()},
                late,
            )


def count_sessions(
    reached_at: datetime, times: Iterable[tuple[datetime, datetime, bool]], wanted: int
) -> tuple[int, bool]:
    """Sessions begun after ``reached_at`` in ``times`` ((timestamp, received_at, imported) in
    event-time order, after ``reached_at``): each after a gap of more than :data:`SESSION_GAP`;
    and whether the one that made ``wanted`` was late or imported (the live detector and the
    backtest count alike)."""
    sessions, previous, completing = 0, reached_at, None
    for timestamp, received_at, imported in times:
        if timestamp - previous > SESSION_GAP:
            sessions += 1
            if sessions == wanted:
                completing = (timestamp, received_at, imported)
        previous = timestamp
    return sessions, completing is not None and is_late(*completing)


# Per person stalled in the flow: when they last progressed; and their events since, in order.
SessionTimes = tuple[dict[int, datetime], dict[int, list[tuple[datetime, datetime, bool]]]]


def session_times(flow_slug: str, since: datetime, until: datetime) -> SessionTimes:
    """What :func:`inactive_sessions` reads, for every rule of one flow at once: the people with
    a live event received in (since, until] who are stalled in the flow (not completed), and
    their events since they last progressed."""
    flow = OnboardingFlow.objects.get(slug=flow_slug)
    active = set(
        Event.objects.filter(received_at__gt=since, received_at__lte=until, imported=False)
        .values_list("person_id", flat=True)
        .distinct()
    )
    if not active:
        return {}, {}
    stalled = dict(
        FlowProgress.objects.filter(
            flow=flow, person_id__in=active, completed_at__isnull=True
        ).values_list("person_id", "reached_at")
    )
    if not stalled:
        return {}, {}
    times: dict[int, list[tuple[datetime, datetime, bool]]] = defaultdict(list)
    for person_id, timestamp, received_at, imported in (
        Event.objects.filter(person_id__in=list(stalled), timestamp__gt=min(stalled.values()))
        .order_by("person_id", "timestamp", "id")
        .values_list("person_id", "timestamp", "received_at", "imported")
    ):
        if timestamp > stalled[person_id]:
            times[person_id].append((timestamp, received_at, imported))
    return stalled, dict(times)


def milestone(trigger: Trigger, since: datetime, until: datetime) -> Iterator[Occurrence]:
    """Did E N times (after completing the flow, if it names one); late when the N-th event, in
    event time, was late or imported."""
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
    counted: dict[int, list[tuple[datetime, int, datetime, bool]]] = defaultdict(list)
    for event_id, person_id, timestamp, received_at, imported, properties in Event.objects.filter(
        person_id__in=people, name=trigger.event
    ).values_list("id", "person_id", "timestamp", "received_at", "imported", "properties"):
        if person_id in completed and timestamp < completed[person_id]:
            continue
        if where_matches(trigger.where, properties or {}):
            counted[person_id].append((timestamp, event_id, received_at, imported))
    reached_at = {row[1]: row[3] for row in new}
    times = trigger.times or 1
    for person_id in sorted(people):
        events = sorted(counted[person_id])
        if len(events) >= times:
            timestamp, _, received_at, imported = events[times - 1]
            yield Occurrence(
                person_id,
                f"milestone:{trigger.times}",
                reached_at[person_id],
                {"count": len(events)},
                is_late(timestamp, received_at, imported),
            )


def event(trigger: Trigger, since: datetime, until: datetime) -> Iterator[Occurrence]:
    for event_id, person_id, timestamp, received_at, _ in _new_events(
        trigger.event or "", since, until, trigger.where
    ):
        yield Occurrence(
            person_id,
            f"event:{event_id}",
            received_at,
            {"event_id": event_id},
            is_late(timestamp, received_at),
        )


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
