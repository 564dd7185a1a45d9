"""The ordered "loose" funnel walk of DESIGN §4.2 for one person. Pure: no database access.

Both the per-person progress rows maintained at ingestion and ad-hoc funnels over raw events use
this one function, so they cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any


def where_matches(where: Mapping[str, Any], properties: Mapping[str, Any]) -> bool:
    """A property filter: every listed property is present and equal (DESIGN §4.2)."""
    return all(key in properties and properties[key] == value for key, value in where.items())


@dataclass(frozen=True, slots=True)
class StepSpec:
    event_name: str
    where: Mapping[str, Any]

    def matches(self, name: str, properties: Mapping[str, Any]) -> bool:
        if name != self.event_name:
            return False
        return where_matches(self.where, properties)


@dataclass(frozen=True, slots=True)
class StepEvent:
    """A stored event as the walk needs it. Sort a person's events by (timestamp, id)."""

    id: int
    name: str
    timestamp: datetime
    properties: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Chain:
    """The events chosen for steps 1..k; ``times[0]`` is the entry."""

    event_ids: tuple[int, ...]
    times: tuple[datetime, ...]

    @property
    def reached(self) -> int:
        return len(self.times)

    @property
    def entered_at(self) -> datetime:
        return self.times[0]

    @property
    def entry_event_id(self) -> int:
        return self.event_ids[0]

    def gaps_seconds(self) -> list[float]:
        return [(b - a).total_seconds() for a, b in zip(self.times, self.times[1:], strict=False)]


def walk(
    steps: Sequence[StepSpec],
    events: Sequence[StepEvent],
    *,
    window: timedelta,
    entry_from: datetime | None = None,
    entry_until: datetime | None = None,
) -> Chain | None:
    """Walk the steps over one person's events, sorted by (timestamp, id).

    Entry is the earliest step-1 event with ``entry_from <= timestamp < entry_until`` (either bound
    optional). Each later step takes the earliest matching event at or after the previous chosen
    event's timestamp (equal timestamps count as in order), never an event already used, and no
    later than entry + window. Returns None when the person did not enter.
    """
    if not steps:
        return None
    first = steps[0]
    entry_index = None
    for index, event in enumerate(events):
        if entry_from is not None and event.timestamp < entry_from:
            continue
        if entry_until is not None and event.timestamp >= entry_until:
            break
        if first.matches(event.name, event.properties):
            entry_index = index
            break
    if entry_index is None:
        return None

    entry = events[entry_index]
    deadline = entry.timestamp + window
    used = {entry_index}
    ids = [entry.id]
    times = [entry.timestamp]
    # Events at the entry's timestamp that sort before it are still "at or after" it.
    scan_from = entry_index
    while scan_from > 0 and events[scan_from - 1].timestamp == entry.timestamp:
        scan_from -= 1
    for step in steps[1:]:
        chosen = None
        for index in range(scan_from, len(events)):
            event = events[index]
            if event.timestamp > deadline:
                break
            if index in used or event.timestamp < times[-1]:
                continue
            if step.matches(event.name, event.properties):
                chosen = index
                break
        if chosen is None:
            break
        used.add(chosen)
        ids.append(events[chosen].id)
        times.append(events[chosen].timestamp)
        scan_from = chosen
        while scan_from > 0 and events[scan_from - 1].timestamp == events[chosen].timestamp:
            scan_from -= 1
    return Chain(tuple(ids), tuple(times))
