"""What a backtest needs to know about people as of any moment, rebuilt from their events.

The live engine reads state the database holds at tick time; the state at a past moment ``t`` is
the same computation over the events that had arrived by then (``received_at <= t``):

- flow progress as of ``t``: :func:`onboarding.flows.chain.walk` over the step events received by
  ``t``, sorted by (timestamp, id) — exactly what ingestion stores in ``FlowProgress``;
- ``last_seen`` as of ``t``: the latest ``received_at <= t``.

The live engine ticks on a 30-second grid from the start of the period (its first tick only sets
the watermark); :class:`TickGrid` maps a due time to the tick that would have picked it up.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connection
from django.db.models import BooleanField, Case, F, JSONField, Value, When
from django.db.models.expressions import RawSQL

from onboarding.flows.chain import StepEvent, StepSpec, walk
from onboarding.flows.progress import FlowSpec, flow_specs
from onboarding.models import Event, OnboardingFlow

TICK = timedelta(seconds=30)
CHUNK = 5000

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
EPOCH_SQL = {
    # PostgreSQL 14+: EXTRACT returns an exact numeric (before: a double, still exact to the µs
    # once rounded at this magnitude).
    "postgresql": "(EXTRACT(EPOCH FROM {0}) * 1000000)::bigint",
    # SQLite stores "YYYY-MM-DD HH:MM:SS[.ffffff]" in UTC: whole seconds, then the digits.
    "sqlite": (
        "(CAST(strftime('%%s', substr({0}, 1, 19)) AS INTEGER) * 1000000 + CAST(substr({0}, 21, 6) AS INTEGER))"
    ),
}


def micros(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


def moment(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


@dataclass(frozen=True)
class TickGrid:
    """Ticks at ``since + k·30 s`` for k ≥ 1 up to ``until``; tick k looks at (t(k-1), t(k)]."""

    since: datetime
    until: datetime
    step: timedelta = TICK

    @property
    def count(self) -> int:
        return int((self.until - self.since) / self.step)

    @property
    def last(self) -> datetime:
        return self.since + self.count * self.step

    def tick_of(self, due: datetime) -> datetime | None:
        """The tick that detects something due at ``due``; None outside the period."""
        if due <= self.since or due > self.last:
            return None
        k = -((self.since - due) // self.step)  # ceil((due - since) / step)
        return self.since + k * self.step

    def at_or_after(self, moment: datetime) -> datetime:
        """The first tick (or delivery pass) at or after ``moment``, even past ``until``."""
        if moment <= self.since:
            return self.since
        return self.since + -((self.since - moment) // self.step) * self.step


@dataclass(frozen=True, slots=True)
class Progress:
    furthest_step: int
    entered_at: datetime
    reached_at: datetime
    completed_at: datetime | None
    window_ends_at: datetime


@dataclass
class StepHistory:
    """One person's step events of one flow, sorted by (timestamp, id), with arrival times."""

    flow: FlowSpec
    events: list[StepEvent] = field(default_factory=list)
    received: list[datetime] = field(default_factory=list)
    _cache: dict[int, Progress | None] = field(default_factory=dict)
    _arrivals: list[datetime] = field(default_factory=list)

    def progress_at(self, moment: datetime) -> Progress | None:
        """``FlowProgress`` as ingestion would have stored it once events up to ``moment`` arrived."""
        # Arrivals only add events, so the count that had arrived identifies the set.
        if len(self._arrivals) != len(self.received):
            self._arrivals = sorted(self.received)
        key = bisect_right(self._arrivals, moment)
        if key in self._cache:
            return self._cache[key]
        if key == len(self.events):
            events = self.events
        else:
            events = [e for e, r in zip(self.events, self.received, strict=True) if r <= moment]
        chain = walk(self.flow.steps, events, window=self.flow.window)
        progress = None
        if chain is not None:
            complete = chain.reached == len(self.flow.steps)
            progress = Progress(
                furthest_step=chain.reached,
                entered_at=chain.entered_at,
                reached_at=chain.times[-1],
                completed_at=chain.times[-1] if complete else None,
                window_ends_at=chain.entered_at + self.flow.window,
            )
        self._cache[key] = progress
        return progress


def for_people(query, field: str, people: list[int]):
    """``field IN people``; a dense sorted batch becomes a range (a long IN list costs more to
    send and plan than the rows it saves), and on PostgreSQL a sparse one is one array parameter
    (``= ANY(%s)``: Django compiles an IN list of 20,000 ids slowly). The caller drops rows of
    people not asked for."""
    if people and people[-1] - people[0] < 4 * len(people):
        return query.filter(**{f"{field}__gte": people[0], f"{field}__lte": people[-1]})
    if connection.vendor == "postgresql" and people:
        model = query.model
        column = (model._meta.pk if field == "pk" else model._meta.get_field(field)).column
        table = connection.ops.quote_name(model._meta.db_table)
        return query.filter(
            RawSQL(  # noqa: S611 - quoted names from the model, ids as a parameter
                f"{table}.{connection.ops.quote_name(column)} = ANY(%s)",
                (list(people),),
                output_field=BooleanField(),
            )
        )
    return query.filter(**{f"{field}__in": people})


def flow_spec(slug: str) -> FlowSpec:
    flow = OnboardingFlow.objects.get(slug=slug)
    return next(spec for spec in flow_specs() if spec.id == flow.pk)


def step_histories(
    flow: FlowSpec, person_ids: Iterable[int] | None, until: datetime
) -> dict[int, StepHistory]:
    """Step events received by ``until`` of these people (all people in the flow if None)."""
    out: dict[int, StepHistory] = defaultdict(lambda: StepHistory(flow))
    names = flow.event_names
    filtered = {step.event_name for step in flow.steps if step.where}
    rows = Event.objects.filter(name__in=names, received_at__lte=until)
    batches: Iterable[list[int] | None]
    if person_ids is None:
        batches = [None]
    else:
        people = sorted(set(person_ids))
        batches = [people[i : i + CHUNK] for i in range(0, len(people), CHUNK)]
    for batch in batches:
        query = rows if batch is None else for_people(rows, "person_id", batch)
        wanted = None if batch is None else set(batch)
        # Properties are read only for the steps with a filter (decoding them costs the most);
        # times as integers (µs), read without the ORM's per-row conversion.
        epoch = EPOCH_SQL[connection.vendor]
        values = (
            query.order_by("person_id", "timestamp", "id")
            .annotate(
                props=Case(
                    When(name__in=filtered, then=F("properties")),
                    default=Value(None),
                    output_field=JSONField(),
                ),
                t=RawSQL(epoch.format('"onboarding_event"."timestamp"'), []),  # noqa: S611
                r=RawSQL(epoch.format('"onboarding_event"."received_at"'), []),  # noqa: S611
            )
            .values_list("person_id", "id", "name", "t", "r", "props")
        )
        sql, params = values.query.sql_with_params()
        with connection.chunked_cursor() as cursor:
            cursor.execute(sql, params)
            while fetched := cursor.fetchmany(CHUNK):
                for person_id, event_id, name, timestamp, received_at, properties in fetched:
                    if wanted is not None and person_id not in wanted:
                        continue
                    history = out[person_id]
                    props = _json(properties) or {}
                    history.events.append(StepEvent(event_id, name, moment(timestamp), props))
                    history.received.append(moment(received_at))
    return dict(out)


def _json(value: Any) -> Any:
    """A JSON column as the driver gives it: text (decoded here) or already decoded."""
    return json.loads(value) if isinstance(value, str | bytes) else value


def matches(where: dict, properties: dict | None) -> bool:
    return StepSpec("", where).matches("", properties or {})


class Replay:
    """A backtest's clock and its cache of step histories of the rule's flow, loaded up to
    ``horizon`` (which may reach past the period: attribution looks at what people did after
    their occurrence; ``progress_at`` never reads an event that had not arrived)."""

    def __init__(self, grid: TickGrid, horizon: datetime) -> None:
        self.grid = grid
        self.horizon = max(horizon, grid.last)
        self.cache: dict[int, StepHistory | None] = {}
        self.done = 0.0  # the share of people detection has gone through (for progress bars)

    def histories(self, flow: FlowSpec, person_ids: Iterable[int]) -> dict[int, StepHistory]:
        people = set(person_ids)
        missing = [p for p in people if p not in self.cache]
        if missing:
            loaded = step_histories(flow, missing, self.horizon)
            for person_id in missing:
                self.cache[person_id] = loaded.get(person_id)
        return {p: h for p in people if (h := self.cache[p]) is not None}

    def forget(self, person_ids: Iterable[int]) -> None:
        for person_id in person_ids:
            self.cache.pop(person_id, None)
