"""Monthly partitions of the events table on PostgreSQL, and event retention.

On PostgreSQL ``onboarding_event`` is partitioned by ``RANGE (timestamp)``, one partition per
calendar month in UTC (``onboarding_event_pYYYYMM``), plus ``onboarding_event_default`` for
timestamps outside the created months (very old client clocks, for instance). Migration
``onboarding.0006_event_partitions`` converts the table; the daily task
``onboarding.tasks.maintain_event_partitions`` calls :func:`maintain_event_partitions`, which

- creates the current month and ``ONRAMP_EVENT_PARTITIONS_AHEAD`` months ahead (moving any rows
  the default partition already holds for such a month into it), and
- with ``ONRAMP_EVENT_RETENTION_MONTHS`` > 0, detaches and drops the partitions that end before
  the cutoff (the first day of the current month minus that many months), deletes rows before
  the cutoff from the default partition, and deletes dedupe rows *received* before the cutoff.

Dedupe rows: ``onboarding_event_dedupe`` carries the ``messageId`` guarantee (see
:class:`~onboarding.models.EventDedupe`). Trimming it by ``received_at`` with the same cutoff
means a retry is recognised for at least the retention period (months), far longer than
Segment's own dedupe window (about 24 h). With retention 0 nothing is ever dropped.

On SQLite there are no partitions; retention is a ``DELETE`` of events older than the cutoff.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

logger = logging.getLogger(__name__)

PARENT = "onboarding_event"
DEFAULT_PARTITION = "onboarding_event_default"
DEDUPE = "onboarding_event_dedupe"
_NAME = re.compile(r"^onboarding_event_p(\d{4})(\d{2})$")
# How far back the conversion creates monthly partitions when the table is empty or young, and
# the furthest back it goes for existing rows (older rows go to the default partition).
MIGRATION_MONTHS_BACK = 12
MIGRATION_MAX_MONTHS_BACK = 36


def month_start(moment: datetime | date) -> date:
    return date(moment.year, moment.month, 1)


def add_months(month: date, months: int) -> date:
    index = month.year * 12 + month.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def partition_name(month: date) -> str:
    return f"{PARENT}_p{month.year:04d}{month.month:02d}"


def _bound(month: date) -> str:
    return f"'{month.isoformat()} 00:00:00+00'"


def _exists(cursor, name: str) -> bool:
    cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [name])
    return cursor.fetchone()[0]


def is_partitioned(cursor=None) -> bool:
    """Whether the events table is partitioned (PostgreSQL after migration 0006)."""
    if connection.vendor != "postgresql":
        return False
    if cursor is None:
        with connection.cursor() as own:
            return is_partitioned(own)
    cursor.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = to_regclass(%s))",
        [PARENT],
    )
    return cursor.fetchone()[0]


def monthly_partitions(cursor) -> dict[date, str]:
    """The monthly partitions attached to the events table, by month."""
    cursor.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = to_regclass(%s)",
        [PARENT],
    )
    found = {}
    for (name,) in cursor.fetchall():
        match = _NAME.match(name)
        if match:
            found[date(int(match[1]), int(match[2]), 1)] = name
    return found


def create_month_partition(cursor, month: date) -> bool:
    """Create the partition for ``month`` unless it exists; rows of that month already in the
    default partition move into it. Returns whether a partition was created."""
    name = partition_name(month)
    if _exists(cursor, name):
        return False
    lower, upper = _bound(month), _bound(add_months(month, 1))
    has_default = _exists(cursor, DEFAULT_PARTITION)
    stragglers = False
    if has_default:
        cursor.execute(
            f'SELECT EXISTS (SELECT 1 FROM {DEFAULT_PARTITION} WHERE "timestamp" >= {lower}'  # noqa: S608
            f' AND "timestamp" < {upper})'
        )
        stragglers = cursor.fetchone()[0]
    if not stragglers:
        cursor.execute(
            f"CREATE TABLE {name} PARTITION OF {PARENT} FOR VALUES FROM ({lower}) TO ({upper})"
        )
        return True
    # A new partition cannot be attached while the default one holds rows in its range: detach
    # the default, move the rows, attach both (all in the caller's transaction).
    cursor.execute(f"ALTER TABLE {PARENT} DETACH PARTITION {DEFAULT_PARTITION}")
    cursor.execute(
        f"CREATE TABLE {name} PARTITION OF {PARENT} FOR VALUES FROM ({lower}) TO ({upper})"
    )
    cursor.execute(
        f"WITH moved AS (DELETE FROM {DEFAULT_PARTITION} WHERE "  # noqa: S608
        f'"timestamp" >= {lower} AND "timestamp" < {upper} RETURNING *) '
        f"INSERT INTO {name} SELECT * FROM moved"
    )
    cursor.execute(f"ALTER TABLE {PARENT} ATTACH PARTITION {DEFAULT_PARTITION} DEFAULT")
    return True


def _lock_and_describe(cursor) -> tuple[list, list, str]:
    """Lock the events table; its secondary indexes, foreign keys and id sequence."""
    cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    cursor.execute(f"LOCK TABLE {PARENT} IN ACCESS EXCLUSIVE MODE")
    cursor.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() "
        "AND tablename = %s AND indexname NOT IN "
        "(SELECT conname FROM pg_constraint WHERE conrelid = to_regclass(%s))",
        [PARENT, PARENT],
    )
    indexes = cursor.fetchall()
    cursor.execute(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = to_regclass(%s) AND contype = 'f' ORDER BY conname",
        [PARENT],
    )
    foreign_keys = cursor.fetchall()
    cursor.execute("SELECT pg_get_serial_sequence(%s, 'id')", [PARENT])
    (sequence,) = cursor.fetchone()
    return indexes, foreign_keys, sequence


def convert_to_partitioned(cursor, now: datetime, ahead: int = 3) -> None:
    """Turn the plain events table into a partitioned one, moving its rows (migration 0006).

    Keeps the columns, the identity (restarted after the highest id), the foreign keys and the
    secondary indexes (re-created on the parent, so on every partition); the primary key becomes
    ``(id, timestamp)`` and the ``(source, message_id)`` unique constraint moves to the dedupe
    table, which is filled from the existing rows.
    """
    indexes, foreign_keys, sequence = _lock_and_describe(cursor)
    for name, _ in foreign_keys:
        cursor.execute(f'ALTER TABLE {PARENT} DROP CONSTRAINT "{name}"')
    for name, _ in indexes:
        cursor.execute(f'DROP INDEX "{name}"')
    cursor.execute(f"ALTER TABLE {PARENT} DROP CONSTRAINT IF EXISTS event_unique_message_id")
    cursor.execute(f"ALTER TABLE {PARENT} RENAME TO {PARENT}_old")
    cursor.execute(f"ALTER TABLE {PARENT}_old RENAME CONSTRAINT {PARENT}_pkey TO {PARENT}_old_pkey")
    if sequence:
        cursor.execute(f"ALTER SEQUENCE {sequence} RENAME TO {PARENT}_old_id_seq")
    cursor.execute(
        f"CREATE TABLE {PARENT} (LIKE {PARENT}_old INCLUDING DEFAULTS INCLUDING IDENTITY, "
        f'CONSTRAINT {PARENT}_pkey PRIMARY KEY (id, "timestamp")) PARTITION BY RANGE ("timestamp")'
    )
    cursor.execute(f"CREATE TABLE {DEFAULT_PARTITION} PARTITION OF {PARENT} DEFAULT")
    current = month_start(now)
    first = add_months(current, -MIGRATION_MONTHS_BACK)
    cursor.execute(f'SELECT min("timestamp") FROM {PARENT}_old')  # noqa: S608
    (earliest,) = cursor.fetchone()
    if earliest is not None:
        floor = add_months(current, -MIGRATION_MAX_MONTHS_BACK)
        first = max(min(first, month_start(earliest.astimezone(UTC))), floor)
    month = first
    while month <= add_months(current, ahead):
        create_month_partition(cursor, month)
        month = add_months(month, 1)
    cursor.execute(f"INSERT INTO {PARENT} SELECT * FROM {PARENT}_old")  # noqa: S608
    cursor.execute(
        f"INSERT INTO {DEDUPE} (source_id, message_id, received_at) "  # noqa: S608
        f"SELECT source_id, message_id, received_at FROM {PARENT}_old ON CONFLICT DO NOTHING"
    )
    cursor.execute(f"SELECT max(id) FROM {PARENT}_old")  # noqa: S608
    (highest,) = cursor.fetchone()
    cursor.execute(f"DROP TABLE {PARENT}_old")
    _carry_sequence(cursor, sequence, highest)
    for _, definition in indexes:
        # pg_indexes gives a partitioned table's indexes as "ON ONLY", which does not recurse.
        cursor.execute(definition.replace(" ON ONLY ", " ON ", 1))
    for name, definition in foreign_keys:
        cursor.execute(f'ALTER TABLE {PARENT} ADD CONSTRAINT "{name}" {definition}')
    cursor.execute(f"ANALYZE {PARENT}")


def _carry_sequence(cursor, sequence: str | None, highest: int | None) -> None:
    """The new table's id sequence takes the old one's name and continues after ``highest``."""
    cursor.execute("SELECT pg_get_serial_sequence(%s, 'id')", [PARENT])
    (new_sequence,) = cursor.fetchone()
    if sequence and new_sequence != sequence:
        cursor.execute(f"ALTER SEQUENCE {new_sequence} RENAME TO {sequence.split('.')[-1]}")
    if highest is not None:
        cursor.execute(f"ALTER TABLE {PARENT} ALTER COLUMN id RESTART WITH {highest + 1}")


def convert_to_plain(cursor) -> None:
    """The reverse of :func:`convert_to_partitioned` (for ``migrate onboarding 0005``)."""
    indexes, foreign_keys, sequence = _lock_and_describe(cursor)
    cursor.execute(f"ALTER TABLE {PARENT} RENAME TO {PARENT}_old")
    for name, _ in foreign_keys:
        cursor.execute(f'ALTER TABLE {PARENT}_old DROP CONSTRAINT "{name}"')
    for name, _ in indexes:
        cursor.execute(f'DROP INDEX "{name}"')
    cursor.execute(f"ALTER TABLE {PARENT}_old RENAME CONSTRAINT {PARENT}_pkey TO {PARENT}_old_pkey")
    if sequence:
        cursor.execute(f"ALTER SEQUENCE {sequence} RENAME TO {PARENT}_old_id_seq")
    cursor.execute(
        f"CREATE TABLE {PARENT} (LIKE {PARENT}_old INCLUDING DEFAULTS INCLUDING IDENTITY, "
        f"CONSTRAINT {PARENT}_pkey PRIMARY KEY (id))"
    )
    cursor.execute(f"INSERT INTO {PARENT} SELECT * FROM {PARENT}_old")  # noqa: S608
    cursor.execute(f"SELECT max(id) FROM {PARENT}_old")  # noqa: S608
    (highest,) = cursor.fetchone()
    cursor.execute(f"DROP TABLE {PARENT}_old CASCADE")
    _carry_sequence(cursor, sequence, highest)
    cursor.execute(
        f"ALTER TABLE {PARENT} ADD CONSTRAINT event_unique_message_id UNIQUE (source_id, message_id)"
    )
    for _, definition in indexes:
        # pg_indexes gives a partitioned table's indexes as "ON ONLY", which does not recurse.
        cursor.execute(definition.replace(" ON ONLY ", " ON ", 1))
    for name, definition in foreign_keys:
        cursor.execute(f'ALTER TABLE {PARENT} ADD CONSTRAINT "{name}" {definition}')


@dataclass
class MaintenanceResult:
    created: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    deleted_events: int = 0
    deleted_dedupe: int = 0
    cutoff: date | None = None


def retention_cutoff(now: datetime, months: int) -> date | None:
    """Events before this day are past retention: the first day of the current month minus
    ``months`` months (so at least ``months`` whole months are kept). None when keeping all."""
    if months <= 0:
        return None
    return add_months(month_start(now), -months)


def maintain_event_partitions(
    now: datetime | None = None, *, retention_months: int | None = None, ahead: int | None = None
) -> MaintenanceResult:
    """Create the coming months' partitions and apply the retention (see the module doc)."""
    now = (now or timezone.now()).astimezone(UTC)
    if retention_months is None:
        retention_months = settings.ONRAMP_EVENT_RETENTION_MONTHS
    if ahead is None:
        ahead = settings.ONRAMP_EVENT_PARTITIONS_AHEAD
    result = MaintenanceResult(cutoff=retention_cutoff(now, retention_months))
    cutoff_at = (
        datetime(result.cutoff.year, result.cutoff.month, 1, tzinfo=UTC) if result.cutoff else None
    )
    if not is_partitioned():
        if cutoff_at is not None:
            from onboarding.models import Event, EventDedupe

            result.deleted_events = Event.objects.filter(timestamp__lt=cutoff_at)._raw_delete(
                connection.alias
            )
            result.deleted_dedupe = EventDedupe.objects.filter(
                received_at__lt=cutoff_at
            )._raw_delete(connection.alias)
        return result
    current = month_start(now)
    with transaction.atomic(), connection.cursor() as cursor:
        # ALTER TABLE refuses to run with deferred foreign-key checks pending on the table.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        for step in range(ahead + 1):
            month = add_months(current, step)
            if create_month_partition(cursor, month):
                result.created.append(partition_name(month))
    if cutoff_at is None:
        _log(result)
        return result
    with transaction.atomic(), connection.cursor() as cursor:
        for month, name in sorted(monthly_partitions(cursor).items()):
            if add_months(month, 1) <= result.cutoff:
                cursor.execute(f"ALTER TABLE {PARENT} DETACH PARTITION {name}")
                cursor.execute(f"DROP TABLE {name}")
                result.dropped.append(name)
        if _exists(cursor, DEFAULT_PARTITION):
            cursor.execute(
                f'DELETE FROM {DEFAULT_PARTITION} WHERE "timestamp" < %s',  # noqa: S608
                [cutoff_at],
            )
            result.deleted_events = cursor.rowcount
        cursor.execute(f"DELETE FROM {DEDUPE} WHERE received_at < %s", [cutoff_at])  # noqa: S608
        result.deleted_dedupe = cursor.rowcount
    _log(result)
    return result


def _log(result: MaintenanceResult) -> None:
    if result.created or result.dropped or result.deleted_events or result.deleted_dedupe:
        logger.info(
            "event partitions: created %s, dropped %s, deleted %s default-partition rows and %s"
            " dedupe rows (cutoff %s)",
            result.created,
            result.dropped,
            result.deleted_events,
            result.deleted_dedupe,
            result.cutoff,
        )
