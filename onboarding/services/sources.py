"""Writes to :class:`~onboarding.models.Source`: create, rotate and authenticate write keys."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
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
    _forget_cached_keys()
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
    transaction.on_commit(_forget_cached_keys)
    _forget_cached_keys()
    return IssuedKey(source, key)


# hash → (source or None, expires at monotonic time): one query per key every few seconds per
# process instead of one per request. A rotation, deactivation or new key takes effect in every
# process within this many seconds (the process that made the change clears its cache at once).
_CACHE_SECONDS = 5.0
_cache: dict[str, tuple[Source | None, float]] = {}


def _forget_cached_keys(*args: object, **kwargs: object) -> None:
    """Clear this process's key cache (connected to Source saves and deletes, too)."""
    _cache.clear()


def source_for_write_key(key: str) -> Source | None:
    """The active source a write key belongs to, or None.

    Only hashes are stored and looked up, so lookup time does not depend on how much of a guessed
    key is right; the final comparison is constant-time as well.
    """
    if not key:
        return None
    digest = hash_write_key(key)
    cached = _cache.get(digest)
    if cached is not None and cached[1] > time.monotonic():
        source = cached[0]
        # A previous key (rotation with grace) stops at its deadline, cached or not.
        if source is None or source.write_key_hash == digest:
            return source
        if source.previous_key_expires_at and source.previous_key_expires_at > timezone.now():
            return source
    source = _lookup(digest)
    if len(_cache) > 10_000:  # unknown keys are cached too: bound the memory
        _cache.clear()
    _cache[digest] = (source, time.monotonic() + _CACHE_SECONDS)
    return source


def _lookup(digest: str) -> Source | None:
    now = timezone.now()
    source = (
        Source.objects.filter(is_active=True)
        .filter(
            Q(write_key_hash=digest) | Q(previous_key_hash=digest, previous_key_expires_at__gt=now)
        )
        .first()
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
