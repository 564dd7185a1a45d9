"""Bulk writes of the ingestion pipeline, a few statements per batch.

PostgreSQL gets the batch by ``COPY`` (psycopg's C row writer) into a temporary staging table,
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

import json
from dataclasses import dataclass
from datetime import datetime

from django.db import connection

from onboarding.models import Event, Person

from .parsing import TrackedEvent

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
)
_PG_STAGE = "onramp_stage_event"
_PG_DEDUPE = "onboarding_event_dedupe"
_PG_STAGE_DDL = (
    f"CREATE TEMP TABLE IF NOT EXISTS {_PG_STAGE} (source_id bigint, person_id bigint, type text,"
    " name text, timestamp timestamptz, received_at timestamptz, message_id text, user_id text,"
    " anonymous_id text, properties jsonb, context jsonb) ON COMMIT DELETE ROWS"
)
_SQLITE_CHUNK = 1000


@dataclass(frozen=True, slots=True)
class InsertedEvent:
    id: int
    message_id: str


def _dumps(value: dict) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def insert_events(
    *, source_id: int, events: list[TrackedEvent], person_ids: list[int], received_at: datetime
) -> list[InsertedEvent]:
    """Insert events, skipping any whose (source, messageId) is already stored."""
    if not events:
        return []
    table = connection.ops.quote_name(Event._meta.db_table)
    columns = ", ".join(connection.ops.quote_name(c) for c in _COLUMNS)
    rows = [
        (
            source_id,
            person_id,
            e.type,
            e.name,
            e.timestamp,
            received_at,
            e.message_id,
            e.user_id,
            e.anonymous_id,
            _dumps(e.payload_for_storage),
            _dumps(e.context),
        )
        for e, person_id in zip(events, person_ids, strict=True)
    ]
    inserted: list[InsertedEvent] = []
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # A messageId repeated inside the batch: the first occurrence wins, as on SQLite.
            unique: dict[str, tuple] = {}
            for row in rows:
                unique.setdefault(row[6], row)
            rows = list(unique.values())
            cursor.execute(_PG_STAGE_DDL)
            cursor.execute(f"DELETE FROM {_PG_STAGE}")  # noqa: S608
            with cursor.cursor.copy(f"COPY {_PG_STAGE} ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            # The key is claimed in the dedupe table first (sorted, so concurrent batches lock
            # keys in the same order); only the events whose key was new are stored.
            staged = ", ".join(f"s.{connection.ops.quote_name(c)}" for c in _COLUMNS)
            cursor.execute(
                f"WITH fresh AS (INSERT INTO {_PG_DEDUPE} (source_id, message_id, received_at) "  # noqa: S608
                f"SELECT source_id, message_id, received_at FROM {_PG_STAGE} ORDER BY message_id "
                "ON CONFLICT (source_id, message_id) DO NOTHING RETURNING message_id) "
                f"INSERT INTO {table} ({columns}) SELECT {staged} FROM {_PG_STAGE} s "
                "JOIN fresh USING (message_id) RETURNING id, message_id"
            )
            inserted.extend(InsertedEvent(*row) for row in cursor.fetchall())
        else:
            adapt = connection.ops.adapt_datetimefield_value
            rows = [(*r[:4], adapt(r[4]), adapt(r[5]), *r[6:]) for r in rows]
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


def touch_people(seen: dict[int, tuple[datetime, datetime]]) -> None:
    """Widen each person's first_seen / last_seen to cover the batch, in one statement.

    ``seen`` maps person id to (earliest event timestamp, latest received_at).
    """
    if not seen:
        return
    table = connection.ops.quote_name(Person._meta.db_table)
    ids = sorted(seen)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                f"UPDATE {table} AS p SET first_seen = LEAST(p.first_seen, v.fs), "  # noqa: S608
                "last_seen = GREATEST(p.last_seen, v.ls) "
                "FROM unnest(%s::bigint[], %s::timestamptz[], %s::timestamptz[]) AS v(id, fs, ls) "
                "WHERE p.id = v.id AND (p.first_seen > v.fs OR p.last_seen < v.ls)",
                [ids, [seen[i][0] for i in ids], [seen[i][1] for i in ids]],
            )
        else:
            for start in range(0, len(ids), _SQLITE_CHUNK):
                chunk = ids[start : start + _SQLITE_CHUNK]
                values = ", ".join(["(%s, %s, %s)"] * len(chunk))
                params: list = []
                for i in chunk:
                    params.extend(
                        [i, *(connection.ops.adapt_datetimefield_value(v) for v in seen[i])]
                    )
                cursor.execute(
                    f"WITH v(id, fs, ls) AS (VALUES {values}) "  # noqa: S608
                    f"UPDATE {table} SET "
                    "first_seen = MIN(first_seen, (SELECT fs FROM v WHERE v.id = "
                    f"{table}.id)), last_seen = MAX(last_seen, (SELECT ls FROM v WHERE v.id = "
                    f"{table}.id)) WHERE id IN (SELECT id FROM v)",
                    params,
                )


_TRAIT_FIELDS = ["traits", "trait_timestamps", "email", "phone", "timezone"]


def update_people_traits(people: list[Person]) -> None:
    """Write the trait columns of these (locked) people: one ``UPDATE … FROM unnest`` on
    PostgreSQL instead of the ORM's CASE-per-row ``bulk_update``."""
    if not people:
        return
    if connection.vendor != "postgresql":
        Person.objects.bulk_update(people, _TRAIT_FIELDS)
        return
    table = connection.ops.quote_name(Person._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} AS p SET traits = v.traits, trait_timestamps = v.stamps, "  # noqa: S608
            "email = v.email, phone = v.phone, timezone = v.tz "
            "FROM unnest(%s::bigint[], %s::jsonb[], %s::jsonb[], %s::text[], %s::text[], %s::text[])"
            " AS v(id, traits, stamps, email, phone, tz) WHERE p.id = v.id",
            [
                [p.pk for p in people],
                [_dumps(p.traits) for p in people],
                [_dumps(p.trait_timestamps) for p in people],
                [p.email for p in people],
                [p.phone for p in people],
                [p.timezone for p in people],
            ],
        )
