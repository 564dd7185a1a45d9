"""Refusing events about erased people: one indexed query per batch against the tombstones."""

from __future__ import annotations

import hmac

from django.conf import settings
from django.db import connection

from onboarding.bulk import binary_cursor
from onboarding.models import ErasedIdentity, IdentityKind

from .errors import Problem, Rejection
from .parsing import TrackedEvent

ERASED = "erased"


def erasure_hash(kind: str, value: str) -> str:
    """HMAC-SHA256 of ``kind:value``: tombstones keep this, never the id itself."""
    key = (settings.ONRAMP_ERASURE_KEY or settings.SECRET_KEY).encode()
    return hmac.digest(key, f"{kind}:{value}".encode("utf-8", "surrogatepass"), "sha256").hex()


def _ids(event: TrackedEvent) -> list[tuple[str, str, str]]:
    """(field, kind, value) of every id an event names; ``previousId`` may be either kind."""
    ids = []
    if event.user_id:
        ids.append(("userId", IdentityKind.USER, event.user_id))
    if event.anonymous_id:
        ids.append(("anonymousId", IdentityKind.ANONYMOUS, event.anonymous_id))
    if event.previous_id:
        ids.append(("previousId", IdentityKind.USER, event.previous_id))
        ids.append(("previousId", IdentityKind.ANONYMOUS, event.previous_id))
    return ids


def _erased(digests: set[str]) -> set[str]:
    """The digests that have a tombstone. On PostgreSQL the digests go as one binary array
    (``= ANY``): the ORM's ``IN`` list renders each of a batch's ~80 digests into the SQL text."""
    if connection.vendor != "postgresql":
        return set(
            ErasedIdentity.objects.filter(id_hash__in=digests).values_list("id_hash", flat=True)
        )
    table = ErasedIdentity._meta.db_table
    with binary_cursor() as cursor:
        cursor.execute(
            f"SELECT id_hash FROM {table} WHERE id_hash = ANY(%b::text[])",  # noqa: S608
            [sorted(digests)],
        )
        return {row[0] for row in cursor.fetchall()}


def refuse_erased(events: list[TrackedEvent]) -> tuple[list[TrackedEvent], list[Rejection]]:
    """Split ``events`` into those to store and rejections (code ``erased``, no payload kept).

    A batch names each id many times: the distinct ids are hashed once and looked up in one
    query; the events are walked again only when one of them is erased (rare).
    """
    named: set[tuple[str, str]] = set()
    for event in events:
        if event.user_id:
            named.add((IdentityKind.USER, event.user_id))
        if event.anonymous_id:
            named.add((IdentityKind.ANONYMOUS, event.anonymous_id))
        if event.previous_id:
            named.add((IdentityKind.USER, event.previous_id))
            named.add((IdentityKind.ANONYMOUS, event.previous_id))
    if not named:
        return events, []
    digests = {key: erasure_hash(*key) for key in named}
    found = _erased(set(digests.values()))
    if not found:
        return events, []
    erased = {key for key, digest in digests.items() if digest in found}
    kept: list[TrackedEvent] = []
    refused: list[Rejection] = []
    for event in events:
        field = next((f for f, kind, value in _ids(event) if (kind, value) in erased), None)
        if field is None:
            kept.append(event)
            continue
        path = f"batch[{event.index}].{field}" if event.index is not None else field
        problem = Problem(ERASED, path, f"this {field} belongs to a person who was erased")
        refused.append(Rejection(event.index, problem, ""))
    return kept, refused
