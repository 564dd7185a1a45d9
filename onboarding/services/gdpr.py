"""GDPR: export everything about a person (access, art. 15) and erase it (erasure, art. 17).

``onboarding`` knows its own tables; apps that keep rows per person (``triggers``: enrollments,
messages, assignments, decisions, review items) answer the ``person_exporting`` signal with their
sections and delete their rows on ``person_erasing``. An erasure leaves a tombstone — keyed hashes
of the person's ids, never the ids — so that events re-sent for those ids are refused with code
``erased`` (``onboarding.tracking.erased``).

Besides the rows that point at the person, two tables hold their identifiers without a foreign key:
rejected events (``FailedEvent``: the payload names the userId, anonymousId, email, traits) and the
messageId dedupe table (``EventDedupe``: one row per stored event). Both are exported and erased.
Which tables are covered, and which are deliberately not, is reviewed in
``tests/security/test_gdpr_coverage.py``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from django.contrib.admin.models import LogEntry
from django.contrib.contenttypes.models import ContentType
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from onboarding.models import (
    OFFSET_FIELDS,
    ErasedIdentity,
    Erasure,
    Event,
    EventDedupe,
    FailedEvent,
    FlowProgress,
    FlowReentry,
    Identity,
    IdentityKind,
    Person,
)
from onboarding.signals import person_erasing, person_exporting
from onboarding.tracking.erased import erasure_hash

logger = logging.getLogger(__name__)

EXPORT_FORMAT = "onramp-person-export/1"


def _profile(person: Person) -> dict[str, Any]:
    return {
        "id": person.pk,
        "external_id": person.external_id,
        "email": person.email,
        "phone": person.phone,
        "timezone": person.timezone,
        "traits": person.traits,
        "trait_timestamps": person.trait_timestamps,
        "consent": person.consent,
        "first_seen": person.first_seen,
        "last_seen": person.last_seen,
        "last_event_at": person.last_event_at,
        "last_event_received_at": person.last_event_received_at,
    }


# The payload keys whose value is an id of the person (Segment spec; alias names the old id).
_ID_KEYS = frozenset({"userId", "anonymousId", "previousId"})


def _emails_of(person: Person) -> set[str]:
    emails = {person.email, str((person.traits or {}).get("email") or "")}
    return {email.strip().casefold() for email in emails if email and email.strip()}


def _as_id(value: Any) -> str | None:
    """An id as the tracking API stores it: strings as sent, numbers as their integer text."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return None


def _names_person(value: Any, ids: set[str], emails: set[str]) -> bool:
    """Whether a decoded payload carries one of the ids (under an id key) or emails (anywhere)."""
    if isinstance(value, dict):
        return any(
            (key in _ID_KEYS and _as_id(item) in ids) or _names_person(item, ids, emails)
            for key, item in value.items()
        )
    if isinstance(value, list):
        return any(_names_person(item, ids, emails) for item in value)
    return isinstance(value, str) and value.strip().casefold() in emails


def _payload_names_person(payload: str, ids: set[str], emails: set[str]) -> bool:
    try:
        return _names_person(json.loads(payload), ids, emails)
    except (ValueError, RecursionError):
        # Not JSON (that may be why it was rejected), or nested too deep to walk: a quoted id, or
        # an email, anywhere in the text.
        quoted = {json.dumps(value) for value in ids} | {f'"{value}"' for value in ids}
        lowered = payload.casefold()
        return any(q in payload for q in quoted) or any(e in lowered for e in emails)


def failed_events_of(person: Person, ids: set[tuple[str, str]] | None = None) -> list[FailedEvent]:
    """Rejected events whose payload names the person: by userId/anonymousId/previousId, or email.

    The database narrows by substring (payloads are JSON with ``ensure_ascii``, so an id may be
    stored escaped); each candidate is then decoded and matched exactly.
    """
    values = {value for _, value in (ids if ids is not None else _ids_of(person))}
    emails = _emails_of(person)
    if not values and not emails:
        return []
    narrow = Q()
    for value in values:
        narrow |= Q(payload__contains=value) | Q(payload__contains=json.dumps(value)[1:-1])
    for email in emails:
        narrow |= Q(payload__icontains=email)
    return [
        failed
        for failed in FailedEvent.objects.filter(narrow).exclude(payload="").order_by("id")
        if _payload_names_person(failed.payload, values, emails)
    ]


def _admin_history_of(person: Person) -> QuerySet[LogEntry]:
    """The admin's history of the person's page (its object_repr is their userId or email)."""
    person_type = ContentType.objects.get_for_model(Person)
    return LogEntry.objects.filter(content_type=person_type, object_id=str(person.pk))


def dedupe_rows_of(person: Person) -> QuerySet[EventDedupe]:
    """The messageId dedupe rows of the person's stored events (empty on SQLite)."""
    keys = Event.objects.filter(person=person).values_list("source_id", "message_id")
    return EventDedupe.objects.filter(pk__in=keys)


def person_export(person: Person) -> dict[str, Any]:
    """Everything stored about ``person``, as JSON-ready data (datetimes left to the encoder)."""
    events = (
        Event.objects.filter(person=person)
        .order_by("timestamp", "id")
        .values(
            "id",
            "type",
            "name",
            "timestamp",
            "received_at",
            "message_id",
            "user_id",
            "anonymous_id",
            "properties",
            "context",
            "source__name",
        )
    )
    progress = (
        FlowProgress.objects.filter(person=person)
        .order_by("flow__slug")
        .values(
            "flow__slug",
            "entered_at",
            "latest_entry_at",
            "furthest_step",
            *OFFSET_FIELDS,
            "reached_at",
            "completed_at",
            "window_ends_at",
        )
    )
    reentries = (
        FlowReentry.objects.filter(person=person)
        .order_by("flow__slug", "entered_at")
        .values("flow__slug", "entered_at", "furthest_step", *OFFSET_FIELDS, "reached_at")
    )
    export: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "exported_at": timezone.now(),
        "profile": _profile(person),
        "identities": list(
            Identity.objects.filter(person=person)
            .order_by("created_at", "id")
            .values("kind", "value", "created_at")
        ),
        "events": [
            {**row, "source": row.pop("source__name")} for row in events.iterator(chunk_size=2000)
        ],
        "flow_progress": [{**row, "flow": row.pop("flow__slug")} for row in progress],
        "flow_reentries": [{**row, "flow": row.pop("flow__slug")} for row in reentries],
        "failed_events": [
            {
                "received_at": failed.received_at,
                "endpoint": failed.endpoint,
                "index": failed.index,
                "code": failed.code,
                "path": failed.path,
                "message": failed.message,
                "payload": failed.payload,
            }
            for failed in failed_events_of(person)
        ],
        "admin_history": list(
            _admin_history_of(person)
            .order_by("action_time", "id")
            .values("action_time", "action_flag", "object_repr", "change_message")
        ),
        "dedupe_keys": list(
            dedupe_rows_of(person)
            .order_by("received_at", "message_id")
            .values("source_id", "message_id", "received_at")
        ),
    }
    for receiver, sections in person_exporting.send(sender=Person, person=person):
        if not isinstance(sections, dict):
            continue
        for name, value in sections.items():
            if name in export:
                raise ValueError(f"{receiver!r} exports a section {name!r} that already exists")
            export[name] = value
    return export


def _ids_of(person: Person) -> set[tuple[str, str]]:
    """Every id the person was known by: identities, the canonical userId, ids on their events."""
    ids = set(Identity.objects.filter(person=person).values_list("kind", "value"))
    if person.external_id:
        ids.add((IdentityKind.USER, person.external_id))
    for user_id, anonymous_id in (
        Event.objects.filter(person=person).values_list("user_id", "anonymous_id").distinct()
    ):
        if user_id:
            ids.add((IdentityKind.USER, user_id))
        if anonymous_id:
            ids.add((IdentityKind.ANONYMOUS, anonymous_id))
    return {(str(kind), value) for kind, value in ids}


@transaction.atomic
def person_erase(person: Person, *, actor: Any = None) -> Erasure:
    """Delete ``person`` and every row about them; keep a tombstone of hashed ids and an audit row.

    ``actor`` is the user erasing (None for the system). Other apps delete their rows in their
    ``person_erasing`` receivers, inside this transaction: either everything goes, or nothing.
    """
    person = Person.objects.select_for_update().get(pk=person.pk)
    user = actor if getattr(actor, "is_authenticated", False) else None
    ids = _ids_of(person)
    failed_ids = [failed.pk for failed in failed_events_of(person, ids)]
    erasure = Erasure.objects.create(
        erased_by=user,
        erased_by_label=user.get_username() if user else (str(actor) if actor else "system"),
        person_pk=person.pk,
    )
    deleted: dict[str, int] = {}
    for _, counts in person_erasing.send(sender=Person, person=person, actor=actor):
        for label, count in (counts or {}).items():
            deleted[label] = deleted.get(label, 0) + count
    for queryset in (
        FailedEvent.objects.filter(pk__in=failed_ids),
        dedupe_rows_of(person),  # before the events, whose keys select it
        FlowReentry.objects.filter(person=person),
        FlowProgress.objects.filter(person=person),
        Event.objects.filter(person=person),
        Identity.objects.filter(person=person),
    ):
        _, per_model = queryset.delete()
        for label, count in per_model.items():
            deleted[label] = deleted.get(label, 0) + count
    _admin_history_of(person).delete()
    _, per_model = Person.objects.filter(pk=person.pk).delete()
    for label, count in per_model.items():
        deleted[label] = deleted.get(label, 0) + count
    ErasedIdentity.objects.bulk_create(
        [ErasedIdentity(id_hash=erasure_hash(kind, value), erasure=erasure) for kind, value in ids],
        ignore_conflicts=True,
    )
    erasure.deleted = {label: count for label, count in sorted(deleted.items()) if count}
    erasure.save(update_fields=["deleted"])
    logger.info(
        "person %s erased by %s: %s", erasure.person_pk, erasure.erased_by_label, erasure.deleted
    )
    return erasure
