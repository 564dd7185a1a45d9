"""GDPR: export everything about a person (access, art. 15) and erase it (erasure, art. 17).

``onboarding`` knows its own tables; apps that keep rows per person (``triggers``: enrollments,
messages, assignments, decisions, review items) answer the ``person_exporting`` signal with their
sections and delete their rows on ``person_erasing``. An erasure leaves a tombstone — keyed hashes
of the person's ids, never the ids — so that events re-sent for those ids are refused with code
``erased`` (``onboarding.tracking.erased``).
"""

from __future__ import annotations

import logging
from typing import Any

from django.contrib.admin.models import LogEntry
from django.contrib.contenttypes.models import ContentType
from django.db import transaction
from django.utils import timezone

from onboarding.models import (
    ErasedIdentity,
    Erasure,
    Event,
    FlowProgress,
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
    }


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
            "step_seconds",
            "reached_at",
            "completed_at",
            "window_ends_at",
        )
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
        FlowProgress.objects.filter(person=person),
        Event.objects.filter(person=person),
        Identity.objects.filter(person=person),
    ):
        _, per_model = queryset.delete()
        for label, count in per_model.items():
            deleted[label] = deleted.get(label, 0) + count
    # The admin's history names the person (its object_repr is their userId or email).
    LogEntry.objects.filter(
        content_type=ContentType.objects.get_for_model(Person), object_id=str(person.pk)
    ).delete()
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
