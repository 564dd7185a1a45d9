"""Bulk writes of the ingestion pipeline, a few statements per batch.

PostgreSQL gets the batch by ``COPY`` (psycopg's C row writer) into a temporary staging table
(a handful of events, as single calls send, go in the statement itself: fewer round trips),
then one statement: ``INSERT … ON CONFLICT DO NOTHING RETURNING`` of the (source, messageId) keys
into ``onboarding_event_dedupe``, and an insert of only the events whose key was new into the
events table, which is partitioned by month (``services/partitions.py``) and so cannot carry the
unique constraint itself. The rows are never rendered into SQL text, so the cost per event is
the index maintenance. Other databases (SQLite in the embedded default) get a multi-row
``VALUES`` insert with ``ON CONFLICT`` on the events table's unique (source, message_id)
constraint. Either way a retried call is a no-op, within one transaction with the rest of the
batch.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from datetime import datetime

from django.db import connection, transaction

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
_PG_STAGE = "onramp_stage_event"
_PG_DEDUPE = "onboarding_event_dedupe"
# The staged rows have no person yet: ``n`` is the row's place in the batch, joined with the
# person ids once they are resolved. Rows are copied in binary (no text to parse for numbers and
# times); the JSON documents are staged as text and become jsonb in the insert.
_PG_STAGE_DDL = (
    f"CREATE TEMP TABLE IF NOT EXISTS {_PG_STAGE} (n integer, source_id bigint, type text,"
    " name text, timestamp timestamptz, received_at timestamptz, message_id text, user_id text,"
    " anonymous_id text, properties text, context text, imported boolean) ON COMMIT DELETE ROWS"
)
_STAGE_COLUMNS = ("n", *(c for c in _COLUMNS if c != "person_id"))
_STAGE_TYPES = ["int4", "int8", *["text"] * 2, *["timestamptz"] * 2, *["text"] * 5, "bool"]
# Up to this many events, one rendered statement beats COPY's extra round trips.
_PG_SMALL_BATCH = 20
_PG_ROW = (
    "(%s::integer, %s::bigint, %s::text, %s::text, %s::timestamptz, %s::timestamptz, %s::text, "
    "%s::text, %s::text, %s::jsonb, %s::jsonb, %s::boolean)"
)
_SQLITE_CHUNK = 1000
_TRAIT_FIELDS = ["traits", "trait_timestamps", "email", "phone", "timezone"]


# The database connections (psycopg's, which Django replaces when it reconnects) whose session
# has the staging table: created once per session, not once per batch.
_staged_sessions: weakref.WeakSet = weakref.WeakSet()


def _ensure_stage(cursor) -> None:
    session = connection.connection
    if session in _staged_sessions:
        return
    cursor.execute(_PG_STAGE_DDL)
    # A rollback would undo the CREATE: remember the table only once it is committed.
    transaction.on_commit(lambda: _staged_sessions.add(session))


@dataclass(frozen=True, slots=True)
class InsertedEvent:
    id: int
    message_id: str


_dumps = jsontext.lenient


@dataclass
class StagedEvents:
    """A batch's event rows, ready to insert once their people are known.

    ``rows`` follow ``_STAGE_COLUMNS`` (``n`` first, no person); ``positions[n]`` is the index in
    the batch of the event in row ``n``. A messageId repeated inside the batch is staged once:
    the first occurrence wins.
    """

    rows: list[tuple] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    copied: bool = False  # the rows are in the staging table (PostgreSQL, larger batches)


def stage_events(
    *, source_id: int, events: list[TrackedEvent], received_at: datetime, imported: bool = False
) -> StagedEvents:
    """Build the rows (JSON encoded once) and, on PostgreSQL, ``COPY`` a larger batch into the
    staging table: work that needs no lock, done before the people are resolved and locked."""
    staged = StagedEvents()
    seen: set[str] = set()
    for position, e in enumerate(events):
        if e.message_id in seen:
            continue
        seen.add(e.message_id)
        staged.rows.append(
            (
                len(staged.rows),
                source_id,
                e.type,
                e.name,
                e.timestamp,
                received_at,
                e.message_id,
                e.user_id,
                e.anonymous_id,
                _dumps(e.payload_for_storage),
                _dumps(e.context),
                imported,
            )
        )
        staged.positions.append(position)
    if connection.vendor == "postgresql" and len(staged.rows) > _PG_SMALL_BATCH:
        columns = ", ".join(connection.ops.quote_name(c) for c in _STAGE_COLUMNS)
        with connection.cursor() as cursor:
            _ensure_stage(cursor)
            copy_sql = f"COPY {_PG_STAGE} ({columns}) FROM STDIN (FORMAT BINARY)"
            with cursor.cursor.copy(copy_sql) as copy:
                copy.set_types(_STAGE_TYPES)
                for row in staged.rows:
                    copy.write_row(row)
        staged.copied = True
    return staged


def _selected(column: str) -> str:
    """The insert's expression for an events column, from the staged row ``s`` and ``p``."""
    if column == "person_id":
        return "p.person_id"
    if column in ("properties", "context"):
        return f"s.{column}::jsonb"
    return f"s.{connection.ops.quote_name(column)}"


def insert_events(staged: StagedEvents, person_ids: list[int]) -> list[InsertedEvent]:
    """Insert the staged events with their people (``person_ids`` by position in the batch),
    skipping any whose (source, messageId) is already stored."""
    if not staged.rows:
        return []
    table = connection.ops.quote_name(Event._meta.db_table)
    columns = ", ".join(connection.ops.quote_name(c) for c in _COLUMNS)
    people = [person_ids[position] for position in staged.positions]
    inserted: list[InsertedEvent] = []
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            stage_columns = ", ".join(connection.ops.quote_name(c) for c in _STAGE_COLUMNS)
            if staged.copied:
                # Emptied by the statement that reads it, so a second batch in the same
                # transaction starts from nothing.
                source = f"(DELETE FROM {_PG_STAGE} RETURNING {stage_columns})"  # noqa: S608
                params: list = []
            else:
                # A few rows: rendered into the statement, one round trip (COPY takes three).
                source = "(VALUES " + ", ".join([_PG_ROW] * len(staged.rows)) + ")"
                params = [value for row in staged.rows for value in row]
            selected = ", ".join(_selected(c) for c in _COLUMNS)
            # The keys are claimed in the dedupe table first (sorted, so concurrent batches lock
            # keys in the same order); only the events whose key was new are stored.
            cursor.execute(
                f"WITH s ({stage_columns}) AS {source}, "  # noqa: S608
                "p AS (SELECT person_id, (n - 1)::integer AS n "
                "FROM unnest(%s::bigint[]) WITH ORDINALITY AS p(person_id, n)), "
                f"fresh AS (INSERT INTO {_PG_DEDUPE} (source_id, message_id, received_at) "
                'SELECT source_id, message_id, received_at FROM s ORDER BY message_id COLLATE "C" '
                "ON CONFLICT (source_id, message_id) DO NOTHING RETURNING message_id) "
                f"INSERT INTO {table} ({columns}) SELECT {selected} FROM s JOIN p USING (n) "
                "JOIN fresh USING (message_id) RETURNING id, message_id",
                [*params, people],
            )
            inserted.extend(InsertedEvent(*row) for row in cursor.fetchall())
        else:
            adapt = connection.ops.adapt_datetimefield_value
            rows = [
                (r[1], person, *r[2:4], adapt(r[4]), adapt(r[5]), *r[6:])
                for r, person in zip(staged.rows, people, strict=True)
            ]
            placeholder = "(" + ", ".join(["%s"] * len(_COLUMNS)) + ")"
            for start in range(0, len(rows), _SQLITE_CHUNK):
                chunk = rows[start : start + _SQLITE_CHUNK]
                cursor.execute(
                    f"INSERT INTO {table} ({columns}) VALUES "  # noqa: S608
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
