"""Sources, people, their identities, and events."""

from __future__ import annotations

from django.db import models
from django.db.models import Q


class Source(models.Model):
    """A client app that sends events. Its write key is shown once; only a SHA-256 hash is kept."""

    name = models.CharField(max_length=100, unique=True)
    write_key_hash = models.CharField(max_length=64, unique=True)
    write_key_prefix = models.CharField(
        max_length=12, help_text="The first characters of the key, to tell keys apart."
    )
    # After a rotation the previous key may stay valid for a grace period.
    previous_key_hash = models.CharField(max_length=64, blank=True, default="", db_index=True)
    previous_key_expires_at = models.DateTimeField(null=True, blank=True)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    rotated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Person(models.Model):
    """Someone who uses a client app, identified (``external_id``) or still anonymous.

    All ids the person is known by are :class:`Identity` rows; ``external_id`` is the canonical
    ``userId`` for display and export.
    """

    external_id = models.CharField(
        max_length=255, null=True, blank=True, unique=True, help_text="Segment userId"
    )
    traits = models.JSONField(default=dict, blank=True)
    # When each trait was last set (event time, ISO 8601): a later identify wins per trait.
    trait_timestamps = models.JSONField(default=dict, blank=True)
    email = models.CharField(max_length=320, blank=True, default="", db_index=True)
    phone = models.CharField(max_length=40, blank=True, default="")
    timezone = models.CharField(max_length=64, blank=True, default="")
    first_seen = models.DateTimeField(
        help_text="Time of the earliest event (client clock, corrected)."
    )
    last_seen = models.DateTimeField(
        db_index=True, help_text="When the latest event was received (server clock)."
    )
    # Activity time (DESIGN §4.1): when the person's latest live event happened — its corrected
    # timestamp, never later than its receipt. Only live endpoints move it (never /v1/import),
    # and a late event moves it only to when it happened. Idle spells count from here.
    last_event_at = models.DateTimeField(
        null=True,
        blank=True,
        db_index=True,
        help_text="When the latest live event happened (corrected timestamp, at most its receipt).",
    )
    # When the event that set ``last_event_at`` was received: a spell whose deadline is not after
    # this moment was learnt of too late to act on (``late_data``).
    last_event_received_at = models.DateTimeField(null=True, blank=True)
    consent = models.JSONField(
        default=dict,
        blank=True,
        help_text='Per channel, e.g. {"email": false} after unsubscribing.',
    )

    class Meta:
        verbose_name_plural = "people"
        indexes = [models.Index(fields=["first_seen"], name="person_first_seen")]

    def __str__(self) -> str:
        return self.external_id or self.email or f"anonymous #{self.pk}"


class IdentityKind(models.TextChoices):
    USER = "user", "userId"
    ANONYMOUS = "anonymous", "anonymousId"


class Identity(models.Model):
    """An id a client app knows a person by: a ``userId`` or an ``anonymousId`` (device, browser).

    Every id resolves to exactly one person. When an anonymous id is identified, or ``alias`` joins
    two ids, the people are merged and their identities and events move to the survivor, so a
    ``userId`` that was aliased keeps resolving to the merged person.
    """

    kind = models.CharField(max_length=9, choices=IdentityKind.choices)
    value = models.CharField(max_length=255)
    person = models.ForeignKey(Person, on_delete=models.CASCADE, related_name="identities")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "identities"
        constraints = [
            models.UniqueConstraint(fields=["kind", "value"], name="identity_unique_kind_value"),
        ]

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}"


class EventType(models.TextChoices):
    TRACK = "track"
    IDENTIFY = "identify"
    PAGE = "page"
    SCREEN = "screen"
    ALIAS = "alias"
    GROUP = "group"


class Event(models.Model):
    """One accepted call of the tracking API. Append-only; ``timestamp`` is skew-corrected."""

    # No foreign-key constraints on PostgreSQL: they checked both keys once per event at commit
    # (about 10 µs of the database's CPU per event). Ingestion locks a batch's people and source
    # once per batch instead (``tracking/store.py``) and triggers refuse to delete a person or a
    # source that events still point at (migration 0012). SQLite keeps the constraints.
    source = models.ForeignKey(
        Source, on_delete=models.PROTECT, related_name="+", db_constraint=False
    )
    person = models.ForeignKey(
        Person, on_delete=models.CASCADE, related_name="events", db_constraint=False
    )
    type = models.CharField(max_length=8, choices=EventType.choices)
    # The event name for track, the page or screen name for page/screen, "" otherwise.
    name = models.CharField(max_length=255, blank=True, default="")
    timestamp = models.DateTimeField()
    received_at = models.DateTimeField()
    message_id = models.CharField(max_length=255)
    user_id = models.CharField(max_length=255, blank=True, default="")
    anonymous_id = models.CharField(max_length=255, blank=True, default="")
    # track/page/screen properties; identify/group traits.
    properties = models.JSONField(default=dict, blank=True)
    context = models.JSONField(default=dict, blank=True)
    # Stored through /v1/import: history, which feeds people, progress, funnels, KPIs and
    # backtests but never starts a rule (DESIGN §4.1).
    imported = models.BooleanField(default=False, db_default=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["source", "message_id"], name="event_unique_message_id"
            ),
        ]
        indexes = [
            models.Index(fields=["name", "timestamp"], name="event_name_ts"),
            models.Index(fields=["person", "timestamp"], name="event_person_ts"),
            models.Index(fields=["received_at"], name="event_received_at"),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.name}".strip()


class EventDedupe(models.Model):
    """The ``messageId`` guarantee on PostgreSQL, where events are partitioned by month.

    A unique constraint on a partitioned table must include the partition key (``timestamp``), so
    ``event_unique_message_id`` cannot hold there: the same messageId retried with another
    timestamp would land in another partition. This unpartitioned table carries it instead; the
    ingest transaction inserts here first and stores only the events whose key was new
    (``tracking/store.py``). On SQLite the table exists but stays empty: the events table keeps
    its unique constraint. Rows older than ``ONRAMP_EVENT_RETENTION_MONTHS`` (by ``received_at``)
    are trimmed with the old partitions (``services/partitions.py``).
    """

    pk = models.CompositePrimaryKey("source_id", "message_id")
    # No foreign key: the insert path stays one index probe per event.
    source_id = models.BigIntegerField()
    message_id = models.CharField(max_length=255)
    received_at = models.DateTimeField()

    class Meta:
        db_table = "onboarding_event_dedupe"

    def __str__(self) -> str:
        return f"{self.source_id}:{self.message_id}"


class FailedEvent(models.Model):
    """An authenticated payload that was rejected, kept so support staff can see why."""

    source = models.ForeignKey(Source, on_delete=models.CASCADE, null=True, related_name="+")
    received_at = models.DateTimeField(db_index=True)
    endpoint = models.CharField(max_length=32)
    index = models.IntegerField(null=True, help_text="Position in the batch, if any.")
    code = models.CharField(max_length=64, db_index=True)
    path = models.CharField(max_length=255, help_text="JSON path of the offending field.")
    message = models.TextField()
    # Truncated to 32 KB; the raw text when it was not valid JSON.
    payload = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-received_at"]
        constraints = [models.CheckConstraint(condition=~Q(code=""), name="failed_event_has_code")]

    def __str__(self) -> str:
        return f"{self.code} at {self.path}"


class PersonTrait(models.Model):
    """One top-level trait of a person whose value is a JSON string or boolean: an exact inverted
    index of ``Person.traits`` that finds a segment's members by (trait, value) without reading
    the people's rows (``onboarding.segments.index``).

    PostgreSQL only: triggers on ``onboarding_person`` keep it equal to the traits on every
    write (insert, trait change, deletion; migration 0013), so no write path maintains it by
    hand. ``value`` is the JSON text of the value as PostgreSQL renders it (``"pro"``, ``true``);
    a key longer than 256 bytes or a value longer than 1024 is left out (the compiler reads the
    traits for such a condition). Elsewhere (SQLite) the table stays empty and unread.
    """

    pk = models.CompositePrimaryKey("key", "value", "person_id")
    key = models.TextField()
    value = models.TextField()
    person_id = models.BigIntegerField()

    class Meta:
        db_table = "onboarding_persontrait"

    def __str__(self) -> str:
        return f"{self.person_id}: {self.key} = {self.value}"
