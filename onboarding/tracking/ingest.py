"""The ingestion service: validated events in, committed rows out.

One transaction per request: resolve people, insert events, maintain per-person state, record the
rejected payloads. The caller answers 2xx only after this returns, so an accepted event is a
committed event. Every step is set-based per batch; nothing runs once per event against the
database.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime

from django.db import DatabaseError, IntegrityError, OperationalError, transaction

from onboarding.flows.progress import refresh_after_ingest
from onboarding.models import FailedEvent, Person, Source

from . import store
from .erased import refuse_erased
from .errors import Rejection
from .identity import mirror_trait_columns, resolve_people
from .parsing import TrackedEvent

logger = logging.getLogger(__name__)

_MAX_FAILED_PAYLOAD = 32 * 1024
# Serialization failure, deadlock; and the conflicts a concurrent merge can cause: a person this
# batch resolved was merged away (foreign key) or an id was claimed first (unique). Retrying
# resolves the batch again against the committed state.
_TRANSIENT_SQLSTATES = {"40001", "40P01", "23503", "23505"}
_ATTEMPTS = 3


@dataclass
class IngestResult:
    accepted: int = 0
    inserted: int = 0
    duplicates: int = 0
    inserted_ids: list[int] = field(default_factory=list)
    # Every rejected event of the request, by index: the envelope's and those about erased people.
    rejections: list[Rejection] = field(default_factory=list)


def _apply_traits(events: list[TrackedEvent], person_ids: list[int]) -> None:
    """Apply identify traits per person; a later event timestamp wins per trait.

    ``context.timezone`` fills the timezone column of people with no ``timezone`` trait. Only
    people whose row actually changes are locked and written.
    """
    updates: dict[int, list[TrackedEvent]] = {}
    timezones: dict[int, str] = {}
    for event, person_id in zip(events, person_ids, strict=True):
        if event.type == "identify" and event.traits:
            updates.setdefault(person_id, []).append(event)
        tz = event.context.get("timezone")
        if isinstance(tz, str) and tz:
            timezones[person_id] = tz[:64]
    if timezones:
        current = Person.objects.filter(pk__in=[p for p in timezones if p not in updates])
        for pk, timezone in current.values_list("pk", "timezone"):
            if timezone == timezones[pk]:
                del timezones[pk]
    if not updates and not timezones:
        return
    people = Person.objects.select_for_update().filter(pk__in=sorted({*updates, *timezones}))
    changed = []
    for person in people.order_by("pk"):
        before = (
            dict(person.traits),
            dict(person.trait_timestamps),
            person.email,
            person.phone,
            person.timezone,
        )
        for event in sorted(updates.get(person.pk, ()), key=lambda e: e.timestamp):
            stamp = event.timestamp.isoformat()
            for trait, value in event.traits.items():
                if stamp >= person.trait_timestamps.get(trait, ""):
                    person.traits[trait] = value
                    person.trait_timestamps[trait] = stamp
        mirror_trait_columns(person)
        if not person.traits.get("timezone") and person.pk in timezones:
            person.timezone = timezones[person.pk]
        after = (
            person.traits,
            person.trait_timestamps,
            person.email,
            person.phone,
            person.timezone,
        )
        if after != before:
            changed.append(person)
    store.update_people_traits(changed)


def _refresh_flow_progress(
    events: list[TrackedEvent], person_ids: list[int], inserted: list[store.InsertedEvent]
) -> None:
    """Keep flow progress exact for the people whose newly stored events are flow steps."""
    if not inserted:
        return
    new_ids = {row.message_id for row in inserted}
    names_by_person: dict[int, set[str]] = {}
    for event, person_id in zip(events, person_ids, strict=True):
        if event.name and event.message_id in new_ids:
            names_by_person.setdefault(person_id, set()).add(event.name)
    refresh_after_ingest(names_by_person)


def _write(
    source: Source,
    events: list[TrackedEvent],
    rejections: list[Rejection],
    received_at: datetime,
    endpoint: str,
) -> IngestResult:
    with transaction.atomic():
        events, refused = refuse_erased(events)
        if refused:
            rejections = sorted([*rejections, *refused], key=lambda r: r.index or 0)
        result = IngestResult(accepted=len(events), rejections=rejections)
        if events:
            person_ids = resolve_people(events, received_at=received_at)
            inserted = store.insert_events(
                source_id=source.pk, events=events, person_ids=person_ids, received_at=received_at
            )
            seen: dict[int, tuple[datetime, datetime]] = {}
            for event, person_id in zip(events, person_ids, strict=True):
                first = seen.get(person_id)
                earliest = event.timestamp if first is None else min(first[0], event.timestamp)
                seen[person_id] = (earliest, received_at)
            store.touch_people(seen)
            _refresh_flow_progress(events, person_ids, inserted)
            _apply_traits(events, person_ids)
            result.inserted = len(inserted)
            result.duplicates = len(events) - len(inserted)
            result.inserted_ids = [row.id for row in inserted]
        if rejections:
            FailedEvent.objects.bulk_create(
                [
                    FailedEvent(
                        source=source,
                        received_at=received_at,
                        endpoint=endpoint,
                        index=r.index,
                        code=r.problem.code,
                        path=r.problem.path[:255],
                        message=r.problem.message,
                        payload=r.payload[:_MAX_FAILED_PAYLOAD],
                    )
                    for r in rejections
                ]
            )
    return result


def _is_transient(error: DatabaseError) -> bool:
    cause = error.__cause__
    return getattr(cause, "sqlstate", None) in _TRANSIENT_SQLSTATES


def ingest_events(
    *,
    source: Source,
    events: list[TrackedEvent],
    rejections: list[Rejection] = (),  # type: ignore[assignment]
    received_at: datetime,
    endpoint: str,
) -> IngestResult:
    """Store a request's valid events and its rejections atomically.

    Deadlocks and serialization failures between concurrent batches are retried here; a database
    that is down raises :class:`OperationalError` for the view to answer 503.
    """
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            return _write(source, events, list(rejections), received_at, endpoint)
        except (OperationalError, IntegrityError) as error:
            if attempt == _ATTEMPTS or not _is_transient(error):
                raise
            logger.warning("ingest retry %s after %s", attempt, error.__cause__)
            time.sleep(0.01 * attempt)
    raise AssertionError("unreachable")
