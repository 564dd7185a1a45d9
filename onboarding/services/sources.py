"""Writes to :class:`~onboarding.models.Source`: create, rotate and authenticate write keys."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from onboarding.models import Source

KEY_PREFIX = "onr_"


def hash_write_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def _new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(24)


@dataclass(frozen=True)
class IssuedKey:
    source: Source
    write_key: str


def source_create(*, name: str) -> IssuedKey:
    """Create a source; the returned key is the only time it is ever visible."""
    key = _new_key()
    source = Source(name=name, write_key_hash=hash_write_key(key), write_key_prefix=key[:10])
    source.full_clean()
    source.save()
    return IssuedKey(source, key)


@transaction.atomic
def source_rotate(*, name: str, grace: timedelta = timedelta(0)) -> IssuedKey:
    """Issue a new key. The old one stops working now, or after ``grace`` if given."""
    source = Source.objects.select_for_update().get(name=name)
    key = _new_key()
    now = timezone.now()
    if grace > timedelta(0):
        source.previous_key_hash = source.write_key_hash
        source.previous_key_expires_at = now + grace
    else:
        source.previous_key_hash = ""
        source.previous_key_expires_at = None
    source.write_key_hash = hash_write_key(key)
    source.write_key_prefix = key[:10]
    source.rotated_at = now
    source.save()
    return IssuedKey(source, key)


def source_for_write_key(key: str) -> Source | None:
    """The active source a write key belongs to, or None.

    One indexed query per call, no cache: a rotation, a deactivation or a new key holds from the
    next request in every process (docs/benchmarks.md, "Write-key lookup", has what it costs).
    Only hashes are stored and looked up, so lookup time does not depend on how much of a guessed
    key is right; the final comparison is constant-time as well.
    """
    if not key:
        return None
    return _lookup(hash_write_key(key))


def _lookup(digest: str) -> Source | None:
    now = timezone.now()
    current = Q(write_key_hash=digest)
    previous = Q(previous_key_hash=digest, previous_key_expires_at__gt=now)
    # No ORDER BY (the model orders by name): at most one row matches, by the unique hash.
    source = next(
        iter(Source.objects.filter(current | previous, is_active=True).order_by()[:1]), None
    )
    if source is None:
        return None
    candidates = [source.write_key_hash]
    if (
        source.previous_key_hash
        and source.previous_key_expires_at
        and source.previous_key_expires_at > now
    ):
        candidates.append(source.previous_key_hash)
    if any(hmac.compare_digest(digest, candidate) for candidate in candidates):
        return source
    return None
