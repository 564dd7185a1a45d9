"""Bulk writes of the ingestion pipeline, a few statements per batch.

PostgreSQL gets the batch in one statement whose rows are bound server-side in binary, as
arrays (``unnest``; psycopg dumps them in C, nothing is rendered into SQL text):
``INSERT … ON CONFLICT DO NOTHING RETURNING`` of the (source, messageId) keys into
``onboarding_event_dedupe``, and an insert of only the events whose key was new into the events
table, which is partitioned by month (``services/partitions.py``) and so cannot carry the unique
constraint itself. The same statement locks the batch's existing people and its source
``FOR KEY SHARE``, once per batch, and reports any of them that is gone: this replaces the events
table's two foreign keys, which checked both once per event at commit (DESIGN §6; the delete side
is guarded by triggers, migration ``0012_event_references_checked_per_batch``). Other databases
(SQLite in the embedded default) get a multi-row ``VALUES`` insert with ``ON CONFLICT`` on the
events table's unique (source, message_id) constraint, and keep the foreign keys. Either way a
retried call is a no-op, within one transaction with the rest of the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from django.db import IntegrityError, connection

from onboarding.bulk import binary_cursor
from onboarding.models import Event, Person

from . import jsontext
from .parsing import TrackedEvent
from .traits import TraitState

_COLUMNS = (
    "source_id",
    "person_id",
    "type",
    "name",
    "timestamp",
    "received_at",
    "message_id",
    "user_id",
    "anonymous_id",
    "properties",
    "context",
    "imported",
)
_SQLITE_CHUNK = 1000
_TRAIT_FIELDS = ["traits", "trait_timestamps", "email", "phone", "timezone"]

# The keys are claimed in the dedupe table first (sorted, so concurrent batches lock keys in the
# same order); only the events whose key was new are stored. ``present`` and ``source`` lock the
# rows the events point at, as a foreign key's check would, but once per batch: until the commit
# no merge, erasure or delete can remove them (each locks or deletes the row, so it waits), and a
# row removed before the lock is missing from the count. Then the statement returns one extra
# row with a null messageId, and the batch is retried against the committed state.
_PG_INSERT = """
WITH s AS (
    SELECT * FROM unnest(%b::bigint[], %b::text[], %b::text[], %b::timestamptz[], %b::text[],
                         %b::text[], %b::text[], %b::text[], %b::text[])
      AS s(person_id, type, name, "timestamp", message_id, user_id, anonymous_id, properties,
           context)
),
fresh AS (
    INSERT INTO onboarding_event_dedupe (source_id, message_id, received_at)
    SELECT %b::bigint, message_id, %b::timestamptz FROM s ORDER BY message_id COLLATE "C"
    ON CONFLICT (source_id, message_id) DO NOTHING RETURNING message_id
),
stored AS (
    INSERT INTO onboarding_event (source_id, person_id, type, name, "timestamp", received_at,
        message_id, user_id, anonymous_id, properties, context, imported)
    SELECT %b::bigint, s.person_id, s.type, s.name, s."timestamp", %b::timestamptz,
        s.message_id, s.user_id, s.anonymous_id, s.properties::jsonb, s.context::jsonb,
        %b::boolean
    FROM s JOIN fresh USING (message_id)
    RETURNING id, message_id
),
present AS (SELECT id FROM onboarding_person WHERE id = ANY(%b::bigint[]) FOR KEY SHARE),
source AS (SELECT id FROM onboarding_source WHERE id = %b::bigint FOR KEY SHARE)
SELECT id, message_id FROM stored
UNION ALL
SELECT NULL, NULL
WHERE (SELECT count(*) FROM present) <> %b::bigint OR NOT EXISTS (SELECT FROM source)
"""


class PeopleGone(IntegrityError):
    """A person (or the source) the batch resolved was merged away, erased or deleted before its
    events were stored: the transaction is rolled back and the batch resolved again."""


@dataclass(frozen=True, slots=True)
class InsertedEvent:
    id: int
    message_id: str


_dumps = jsontext.lenient


@dataclass
class StagedEvents:
    """A batch's event rows, ready to insert once their people are known.

    ``rows`` follow ``_COLUMNS`` without the person; ``positions[n]`` is the index in the batch
    of the event in row ``n``. A messageId repeated inside the batch is staged once: the first
    occurrence wins.
    """

    source_id: int
    received_at: datetime
    imported: bool
    rows: list[tuple] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)


def stage_events(
    *, source_id: int, events: list[TrackedEvent], received_at: datetime, imported: bool = False
) -> StagedEvents:
    """Build the rows, JSON encoded once: work that needs no lock, done before the people are
    resolved and locked."""
    staged = StagedEvents(source_id=source_id, received_at=received_at, imported=imported)
    seen: set[str] = set()
    for position, e in enumerate(events):
        if e.message_id in seen:
            continue
        seen.add(e.message_id)
        staged.rows.append(
            (
                e.type,
                e.name,
                e.timestamp,
                e.message_id,
                e.user_id,
                e.anonymous_id,
                _dumps(e.payload_for_storage),
                _dumps(e.context),
            )
        )
        staged.positions.append(position)
    return staged


def insert_events(
    staged: StagedEvents, person_ids: list[int], created: frozenset[int] = frozenset()
) -> list[InsertedEvent]:
    """Insert the staged events with their people (``person_ids`` by position in the batch),
    skipping any whose (source, messageId) is already stored. ``created`` are the people this
    batch inserted (nobody else sees them before the commit, so they need no lock).

    Raises :class:`PeopleGone` (PostgreSQL) when one of the other people or the source no
    longer exists.
    """
    if not staged.rows:
        return []
    people = [person_ids[position] for position in staged.positions]
    if connection.vendor == "postgresql":
        existing = sorted(set(people) - created)
        columns = [list(column) for column in zip(*staged.rows, strict=True)]
        with binary_cursor() as cursor:
            cursor.execute(
                _PG_INSERT,
                [
                    people,
                    *columns,
                    staged.source_id,
                    staged.received_at,
                    staged.source_id,
                    staged.received_at,
                    staged.imported,
                    existing,
                    staged.source_id,
                    len(existing),
                ],
            )
            rows = cursor.fetchall()
        if rows and rows[-1][1] is None:
            raise PeopleGone("a person or the source of this batch was removed concurrently")
        return [InsertedEvent(*row) for row in rows]
    table = connection.ops.quote_name(Event._meta.db_table)
    names = ", ".join(connection.ops.quote_name(c) for c in _COLUMNS)
    adapt = connection.ops.adapt_datetimefield_value
    received_at = adapt(staged.received_at)
    rows = [
        (staged.source_id, person, r[0], r[1], adapt(r[2]), received_at, *r[3:], staged.imported)
        for r, person in zip(staged.rows, people, strict=True)
    ]
    placeholder = "(" + ", ".join(["%s"] * len(_COLUMNS)) + ")"
    inserted: list[InsertedEvent] = []
    with connection.cursor() as cursor:
        for start in range(0, len(rows), _SQLITE_CHUNK):
            chunk = rows[start : start + _SQLITE_CHUNK]
            cursor.execute(
                f"INSERT INTO {table} ({names}) VALUES "  # noqa: S608
                + ", ".join([placeholder] * len(chunk))
                + " ON CONFLICT (source_id, message_id) DO NOTHING RETURNING id, message_id",
                [value for row in chunk for value in row],
            )
            inserted.extend(InsertedEvent(*row) for row in cursor.fetchall())
    return inserted


@dataclass(frozen=True, slots=True)
class PersonUpdate:
    """What a batch changes on a person who existed before it."""

    id: int
    first_seen: datetime  # earliest event timestamp of the batch: first_seen only moves back
    last_seen: datetime  # received_at: last_seen only moves forward
    # The latest activity time of the batch (live batches only): last_event_at only moves forward,
    # and when it moves, last_event_received_at becomes this batch's receipt (last_seen).
    last_event_at: datetime | None = None
    traits: TraitState | None = None  # the new trait columns, when identify changed them
    context_timezone: str = ""  # the timezone column, unless the person has a timezone trait


def lock_trait_states(person_ids: list[int]) -> dict[int, TraitState]:
    """The trait columns of these people, locked until the end of the transaction."""
    rows = (
        Person.objects.select_for_update()
        .filter(pk__in=person_ids)
        .order_by("pk")
        .values_list("pk", *_TRAIT_FIELDS)
    )
    return {pk: TraitState(*values) for pk, *values in rows}


# The person's timezone trait is missing or false-like (null, false, 0, "", [], {}), as Python's
# ``not traits.get("timezone")`` has it: only then does context.timezone set the column.
_NO_TIMEZONE_TRAIT = (
    "COALESCE(p.traits -> 'timezone', 'null'::jsonb) IN "
    "('null'::jsonb, 'false'::jsonb, '0'::jsonb, '\"\"'::jsonb, '[]'::jsonb, '{}'::jsonb)"
)


# The batch's activity time moves the person's forward (v.le is null for imported batches).
_MOVES = "(v.le IS NOT NULL AND (p.last_event_at IS NULL OR v.le > p.last_event_at))"


def update_people(updates: list[PersonUpdate]) -> None:
    """Write a batch's changes to existing people: on PostgreSQL one ``UPDATE … FROM unnest``
    widening first/last seen, setting changed traits and context timezones together."""
    if not updates:
        return
    if connection.vendor != "postgresql":
        _update_people_portably(updates)
        return
    updates = sorted(updates, key=lambda u: u.id)
    table = connection.ops.quote_name(Person._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} AS p SET first_seen = LEAST(p.first_seen, v.fs), "  # noqa: S608
            "last_seen = GREATEST(p.last_seen, v.ls), "
            f"last_event_at = CASE WHEN {_MOVES} THEN v.le ELSE p.last_event_at END, "
            f"last_event_received_at = CASE WHEN {_MOVES} THEN v.ls "
            "ELSE p.last_event_received_at END, "
            "traits = COALESCE(v.traits, p.traits), "
            "trait_timestamps = COALESCE(v.stamps, p.trait_timestamps), "
            "email = COALESCE(v.email, p.email), phone = COALESCE(v.phone, p.phone), "
            "timezone = CASE WHEN v.traits IS NOT NULL THEN v.tz "
            f"WHEN v.ctz IS NOT NULL AND {_NO_TIMEZONE_TRAIT} THEN v.ctz ELSE p.timezone END "
            "FROM unnest(%s::bigint[], %s::timestamptz[], %s::timestamptz[], %s::timestamptz[], "
            "%s::jsonb[], %s::jsonb[], %s::text[], %s::text[], %s::text[], %s::text[]) "
            "AS v(id, fs, ls, le, traits, stamps, email, phone, tz, ctz) "
            f"WHERE p.id = v.id AND (p.first_seen > v.fs OR p.last_seen < v.ls OR {_MOVES} "
            "OR v.traits IS NOT NULL "
            f"OR (v.ctz IS NOT NULL AND p.timezone <> v.ctz AND {_NO_TIMEZONE_TRAIT}))",
            [
                [u.id for u in updates],
                [u.first_seen for u in updates],
                [u.last_seen for u in updates],
                [u.last_event_at for u in updates],
                [_dumps(u.traits.traits) if u.traits else None for u in updates],
                [_dumps(u.traits.trait_timestamps) if u.traits else None for u in updates],
                [u.traits.email if u.traits else None for u in updates],
                [u.traits.phone if u.traits else None for u in updates],
                [u.traits.timezone if u.traits else None for u in updates],
                [u.context_timezone or None for u in updates],
            ],
        )


def _update_people_portably(updates: list[PersonUpdate]) -> None:
    """The same writes through the ORM (SQLite serializes writers, so no locks are needed)."""
    touch_people({u.id: (u.first_seen, u.last_seen, u.last_event_at) for u in updates})
    changed = [
        Person(pk=u.id, **{name: getattr(u.traits, name) for name in _TRAIT_FIELDS})
        for u in updates
        if u.traits is not None
    ]
    if changed:
        Person.objects.bulk_update(changed, _TRAIT_FIELDS)
    timezones = {
        u.id: u.context_timezone for u in updates if u.traits is None and u.context_timezone
    }
    if timezones:
        people = Person.objects.filter(pk__in=timezones).values_list("pk", "traits", "timezone")
        moved = [
            Person(pk=pk, timezone=timezones[pk])
            for pk, traits, timezone in people
            if not traits.get("timezone") and timezone != timezones[pk]
        ]
        if moved:
            Person.objects.bulk_update(moved, ["timezone"])


def touch_people(seen: dict[int, tuple[datetime, datetime, datetime | None]]) -> None:
    """Widen each person's first_seen / last_seen to cover the batch, and move their last activity
    forward (SQLite; PostgreSQL folds this into :func:`update_people`).

    ``seen`` maps person id to (earliest event timestamp, latest received_at, latest activity time
    or None).
    """
    if not seen:
        return
    table = connection.ops.quote_name(Person._meta.db_table)
    ids = sorted(seen)
    with connection.cursor() as cursor:
        for start in range(0, len(ids), _SQLITE_CHUNK):
            chunk = ids[start : start + _SQLITE_CHUNK]
            values = ", ".join(["(%s, %s, %s, %s)"] * len(chunk))
            params: list = []
            for i in chunk:
                params.extend([i, *(connection.ops.adapt_datetimefield_value(v) for v in seen[i])])
            row = f"FROM v WHERE v.id = {table}.id"
            moves = (
                f"(SELECT le IS NOT NULL AND ({table}.last_event_at IS NULL "
                f"OR le > {table}.last_event_at) {row})"
            )
            cursor.execute(
                f"WITH v(id, fs, ls, le) AS (VALUES {values}) "  # noqa: S608
                f"UPDATE {table} SET "
                f"first_seen = MIN(first_seen, (SELECT fs {row})), "
                f"last_seen = MAX(last_seen, (SELECT ls {row})), "
                f"last_event_at = CASE WHEN {moves} THEN (SELECT le {row}) "
                "ELSE last_event_at END, "
                f"last_event_received_at = CASE WHEN {moves} THEN (SELECT ls {row}) "
                "ELSE last_event_received_at END "
                "WHERE id IN (SELECT id FROM v)",
                params,
            )
