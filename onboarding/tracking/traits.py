"""What a batch says about its people's traits, and how that changes a person (DESIGN §4.1).

Pure functions, no database access: :mod:`.identity` uses them to create new people with their
traits, :mod:`.ingest` to update the people who already existed.

- ``identify`` sets traits; a later event ``timestamp`` wins per trait, whatever the arrival order;
- the ``email``, ``phone`` and ``timezone`` traits are mirrored into their columns;
- ``context.timezone`` fills the timezone column of a person with no ``timezone`` trait (the last
  one in the batch wins).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .parsing import TrackedEvent

# Columns on Person that mirror well-known traits, with their lengths.
TRAIT_COLUMNS = {"email": 320, "phone": 40, "timezone": 64}


@dataclass
class Said:
    """What one batch says about one person."""

    identifies: list[TrackedEvent] = field(default_factory=list)
    context_timezone: str = ""


@dataclass
class TraitState:
    """A person's trait columns."""

    traits: dict[str, Any] = field(default_factory=dict)
    trait_timestamps: dict[str, str] = field(default_factory=dict)
    email: str = ""
    phone: str = ""
    timezone: str = ""


def collect(events: list[TrackedEvent], person_ids: list[int]) -> dict[int, Said]:
    """Group the batch's identify events and context timezones by person."""
    said: dict[int, Said] = {}
    for event, person_id in zip(events, person_ids, strict=True):
        if event.type == "identify" and event.traits:
            said.setdefault(person_id, Said()).identifies.append(event)
        tz = event.context.get("timezone")
        if isinstance(tz, str) and tz:
            said.setdefault(person_id, Said()).context_timezone = tz[: TRAIT_COLUMNS["timezone"]]
    return said


def mirrored(traits: dict[str, Any], column: str, current: str) -> str:
    """The value of a mirror column given the traits: the trait when it is a string or integer."""
    value = traits.get(column)
    if isinstance(value, str | int) and not isinstance(value, bool):
        return str(value)[: TRAIT_COLUMNS[column]]
    return current


def apply(state: TraitState, said: Said) -> TraitState:
    """The person's trait columns after this batch (a new state; ``state`` is not changed)."""
    traits = dict(state.traits)
    stamps = dict(state.trait_timestamps)
    for event in sorted(said.identifies, key=lambda e: e.timestamp):
        stamp = event.timestamp.isoformat()
        for trait, value in event.traits.items():
            if stamp >= stamps.get(trait, ""):
                traits[trait] = value
                stamps[trait] = stamp
    timezone = mirrored(traits, "timezone", state.timezone)
    if not traits.get("timezone") and said.context_timezone:
        timezone = said.context_timezone
    return TraitState(
        traits=traits,
        trait_timestamps=stamps,
        email=mirrored(traits, "email", state.email),
        phone=mirrored(traits, "phone", state.phone),
        timezone=timezone,
    )
