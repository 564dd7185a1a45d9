"""The ingestion service: validated events in, committed rows out.

One transaction per request: resolve people, insert events, maintain per-person state, record the
rejected payloads. The caller answers 2xx only after this returns, so an accepted event is a
committed event. Every step is set-based per batch; nothing runs once per event against the
database.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from django.db import DatabaseError, IntegrityError, OperationalError, transaction

from onboarding.flows.chain import StepEvent
from onboarding.flows.progress import FlowSpec, flow_specs, refresh_after_ingest
from onboarding.models import FailedEvent, Source

from . import store, traits
from .erased import refuse_erased
from .errors import Rejection
from .identity import Resolved, resolve_people
from .parsing import TrackedEvent

logger = logging.getLogger(__name__)

_MAX_FAILED_PAYLOAD = 32 * 1024
# Serialization failure, deadlock; and the conflicts a concurrent merge can cause: a person this
# batch resolved was merged away (foreign key on SQLite, ``store.PeopleGone`` on PostgreSQL) or an
# id was claimed first (unique). Retrying resolves the batch again against the committed state.
_TRANSIENT_SQLSTATES = {"40001", "40P01", "23503", "23505", "people_gone"}
_ATTEMPTS = 3


@dataclass
class IngestResult:
    accepted: int = 0
    inserted: int = 0
    duplicates: int = 0
    inserted_ids: list[int] = field(default_factory=list)
    # Accepted events by type (``track``, ``identify``…), duplicates of earlier calls included.
    accepted_types: Counter[str] = field(default_factory=Counter)
    # Every rejected event of the request, by index: the envelope's and those about erased people.
    rejections: list[Rejection] = field(default_factory=list)


def _update_people(
    events: list[TrackedEvent],
    person_ids: list[int],
    created: frozenset[int],
    received_at: datetime,
    live: bool,
) -> None:
    """Bring the people who existed before this batch up to date, in one write.

    First and last seen widen to cover the batch; identify traits apply per trait, a later event
    timestamp winning, on the rows as locked now (people created by this batch got theirs at
    creation). ``context.timezone`` fills the timezone of people without a ``timezone`` trait.
    A live batch moves the last activity forward to when its latest event happened (an
    imported one, history, never does).
    """
    earliest: dict[int, datetime] = {}
    latest: dict[int, datetime] = {}
    for event, person_id in zip(events, person_ids, strict=True):
        if person_id in created:
            continue
        first = earliest.get(person_id)
        if first is None or event.timestamp < first:
            earliest[person_id] = event.timestamp
        if live:
            happened = activity_time(event.timestamp, received_at)
            if person_id not in latest or happened > latest[person_id]:
                latest[person_id] = happened
    if not earliest:
        return
    said = {p: s for p, s in traits.collect(events, person_ids).items() if p in earliest}
    identified = sorted(p for p, s in said.items() if s.identifies)
    changed: dict[int, traits.TraitState] = {}
    if identified:
        for person_id, state in store.lock_trait_states(identified).items():
            after = traits.apply(state, said[person_id])
            if after != state:
                changed[person_id] = after
    store.update_people(
        [
            store.PersonUpdate(
                id=person_id,
                first_seen=first,
                last_seen=received_at,
                last_event_at=latest.get(person_id),
                traits=changed.get(person_id),
                context_timezone=(
                    said[person_id].context_timezone
                    if person_id in said and person_id not in identified
                    else ""
                ),
            )
            for person_id, first in earliest.items()
        ]
    )


def activity_time(timestamp: datetime, received_at: datetime) -> datetime:
    """When an event happened, for activity: its corrected timestamp, never after its receipt."""
    return min(timestamp, received_at)


def _refresh_flow_progress(
    events: list[TrackedEvent],
    resolved: Resolved,
    inserted: list[store.InsertedEvent],
    flows: list[FlowSpec],
) -> None:
    """Keep flow progress exact for the people whose newly stored events are flow steps.

    People created by this batch have no other events, so theirs are taken from the batch
    rather than read back.
    """
    if not inserted:
        return
    stored = {row.message_id: row.id for row in inserted}
    names_by_person: dict[int, set[str]] = {}
    new_people: dict[int, list[StepEvent]] = {}
    seen: set[str] = set()
    for event, person_id in zip(events, resolved.person_ids, strict=True):
        if event.message_id in seen:
            continue  # a messageId repeated in the batch: only its first occurrence was stored
        seen.add(event.message_id)
        event_id = stored.get(event.message_id)
        if not event.name or event_id is None:
            continue
        names_by_person.setdefault(person_id, set()).add(event.name)
        if person_id in resolved.created:
            step = StepEvent(event_id, event.name, event.timestamp, event.payload_for_storage)
            new_people.setdefault(person_id, []).append(step)
    refresh_after_ingest(names_by_person, flows=flows, new_people=new_people)


def _write(
    source: Source,
    events: list[TrackedEvent],
    rejections: list[Rejection],
    received_at: datetime,
    endpoint: str,
    live: bool,
) -> IngestResult:
    with transaction.atomic():
        events, refused = refuse_erased(events)
        if refused:
            rejections = sorted([*rejections, *refused], key=lambda r: r.index or 0)
        result = IngestResult(
            accepted=len(events),
            rejections=rejections,
            accepted_types=Counter(event.type for event in events),
        )
        if events:
            # Everything that needs no lock comes first: the people this batch names stay
            # locked from their resolution to the commit, and a concurrent batch naming one
            # of them waits that long.
            staged = store.stage_events(
                source_id=source.pk, events=events, received_at=received_at, imported=not live
            )
            flows = flow_specs()
            resolved = resolve_people(events, received_at=received_at, live=live)
            person_ids = resolved.person_ids
            inserted = store.insert_events(staged, person_ids, resolved.created)
            _refresh_flow_progress(events, resolved, inserted, flows)
            _update_people(events, person_ids, resolved.created, received_at, live)
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


def _sqlstate(error: DatabaseError) -> str | None:
    """The error's SQLSTATE, or ``people_gone`` for a batch whose people went meanwhile."""
    if isinstance(error, store.PeopleGone):
        return "people_gone"
    return getattr(error.__cause__, "sqlstate", None)


def _is_transient(error: DatabaseError) -> bool:
    return _sqlstate(error) in _TRANSIENT_SQLSTATES


def ingest_events(
    *,
    source: Source,
    events: list[TrackedEvent],
    rejections: list[Rejection] = (),  # type: ignore[assignment]
    received_at: datetime,
    endpoint: str,
    live: bool = True,
) -> IngestResult:
    """Store a request's valid events and its rejections atomically.

    ``live`` is false for history (``/v1/import``): the events are stored marked ``imported``
    and feed people, traits and flow progress, but move no one's last activity, so they never
    start a rule (DESIGN §4.1).

    Deadlocks and serialization failures between concurrent batches are retried here; a database
    that is down raises :class:`OperationalError` for the view to answer 503.
    """
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            return _write(source, events, list(rejections), received_at, endpoint, live)
        except (OperationalError, IntegrityError) as error:
            if attempt == _ATTEMPTS or not _is_transient(error):
                raise
            # The SQLSTATE only: the driver's message quotes the conflicting values (ids, emails).
            logger.warning(
                "ingest retry %s after sqlstate %s",
                attempt,
                _sqlstate(error),
                extra={"endpoint": endpoint, "attempt": attempt},
            )
            time.sleep(0.01 * attempt)
    raise AssertionError("unreachable")
