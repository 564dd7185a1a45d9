"""What is left of a person after an erasure (GDPR art. 17): keyed hashes of their ids, no data.

An erased person's app may keep sending events under the same ``userId`` or ``anonymousId``. The
tombstone lets the tracking API refuse them (code ``erased``) without keeping the ids themselves:
only an HMAC of ``kind:value`` is stored, keyed with ``ONRAMP_ERASURE_KEY``.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class ErasedIdentity(models.Model):
    """One id of an erased person, as a keyed hash."""

    id_hash = models.CharField(max_length=64, unique=True)
    erasure = models.ForeignKey("Erasure", on_delete=models.CASCADE, related_name="identities")

    class Meta:
        verbose_name_plural = "erased identities"

    def __str__(self) -> str:
        return self.id_hash[:12] + "…"


class Erasure(models.Model):
    """The audit record of one erasure: who, when, and how many rows went. No personal data."""

    erased_at = models.DateTimeField(auto_now_add=True, db_index=True)
    erased_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    erased_by_label = models.CharField(max_length=150, blank=True, default="")
    # The primary key the person had: meaningless outside this database, useful to match logs.
    person_pk = models.BigIntegerField(db_index=True)
    deleted = models.JSONField(default=dict, blank=True, help_text="Rows deleted, per table.")

    class Meta:
        ordering = ["-erased_at", "-id"]

    def __str__(self) -> str:
        return f"person #{self.person_pk} erased by {self.erased_by_label or 'system'}"
