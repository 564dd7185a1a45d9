"""Refusing events about erased people: one indexed query per batch against the tombstones."""

from __future__ import annotations

import hashlib
import hmac

from django.conf import settings

from onboarding.models import ErasedIdentity, IdentityKind

from .errors import Problem, Rejection
from .parsing import TrackedEvent

ERASED = "erased"


def erasure_hash(kind: str, value: str) -> str:
    """HMAC-SHA256 of ``kind:value``: tombstones keep this, never the id itself."""
    key = (settings.ONRAMP_ERASURE_KEY or settings.SECRET_KEY).encode()
    return hmac.new(
        key, f"{kind}:{value}".encode("utf-8", "surrogatepass"), hashlib.sha256
    ).hexdigest()


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


def refuse_erased(events: list[TrackedEvent]) -> tuple[list[TrackedEvent], list[Rejection]]:
    """Split ``events`` into those to store and rejections (code ``erased``, no payload kept)."""
    digests: dict[tuple[str, str], str] = {}  # a batch names each id many times: hash it once

    def digest(kind: str, value: str) -> str:
        key = (kind, value)
        if key not in digests:
            digests[key] = erasure_hash(kind, value)
        return digests[key]

    hashed = [[(f, digest(k, v)) for f, k, v in _ids(event)] for event in events]
    wanted = {digest for pairs in hashed for _, digest in pairs}
    if not wanted:
        return events, []
    erased = set(
        ErasedIdentity.objects.filter(id_hash__in=wanted).values_list("id_hash", flat=True)
    )
    if not erased:
        return events, []
    kept: list[TrackedEvent] = []
    refused: list[Rejection] = []
    for event, pairs in zip(events, hashed, strict=True):
        field = next((f for f, digest in pairs if digest in erased), None)
        if field is None:
            kept.append(event)
            continue
        path = f"batch[{event.index}].{field}" if event.index is not None else field
        problem = Problem(ERASED, path, f"this {field} belongs to a person who was erased")
        refused.append(Rejection(event.index, problem, ""))
    return kept, refused
