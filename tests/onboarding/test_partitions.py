"""Events partitioned by month on PostgreSQL: the messageId guarantee across partitions, the
partition maintenance (months ahead, retention) and the conversion of an existing table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.utils import timezone

from onboarding.models import Event, EventDedupe, Person, Source
from onboarding.services import partitions
from onboarding.services.partitions import (
    add_months,
    maintain_event_partitions,
    month_start,
    partition_name,
)

postgres = pytest.mark.postgres


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _at(month, day: int = 10) -> datetime:
    return datetime(month.year, month.month, day, 12, tzinfo=UTC)


def _partition_of(event_id: int) -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tableoid::regclass::text FROM onboarding_event WHERE id = %s", [event_id]
        )
        return cursor.fetchone()[0]


def _tables() -> set[str]:
    with connection.cursor() as cursor:
        return set(partitions.monthly_partitions(cursor).values())


def _event(person: Person, source: Source, timestamp: datetime, message_id: str) -> Event:
    return Event.objects.create(
        source=source,
        person=person,
        type="track",
        name="Seen",
        timestamp=timestamp,
        received_at=timezone.now(),
        message_id=message_id,
    )


@pytest.fixture
def person(db) -> Person:
    now = timezone.now()
    return Person.objects.create(external_id="p-1", first_seen=now, last_seen=now)


@pytest.fixture
def source(issued_key) -> Source:
    return Source.objects.get(name="web")


@postgres
def test_the_events_table_is_partitioned_by_month(db):
    assert partitions.is_partitioned()
    current = month_start(timezone.now())
    with connection.cursor() as cursor:
        months = partitions.monthly_partitions(cursor)
        assert current in months and add_months(current, 3) in months
        cursor.execute("SELECT to_regclass('onboarding_event_default')::text")
        assert cursor.fetchone()[0] == "onboarding_event_default"


@postgres
def test_a_messageid_is_stored_once_across_partitions(tracking, source):
    """The same messageId retried with a timestamp in another month (another partition)."""
    now = timezone.now()
    first = {"userId": "u-1", "event": "Signed Up", "messageId": "m-1", "timestamp": _iso(now)}
    older = {**first, "timestamp": _iso(now - timedelta(days=45))}
    assert tracking.post("/v1/track", first).status_code == 200
    assert tracking.post("/v1/track", older).status_code == 200
    response = tracking.post(
        "/v1/batch",
        {
            "batch": [
                {**older, "type": "track"},
                {**first, "type": "track", "timestamp": _iso(now - timedelta(days=100))},
            ]
        },
    )
    assert response.status_code == 200
    events = list(Event.objects.filter(message_id="m-1"))
    assert len(events) == 1
    assert _partition_of(events[0].pk) == partition_name(month_start(now))
    assert EventDedupe.objects.filter(source_id=source.pk, message_id="m-1").count() == 1


@postgres
def test_duplicates_inside_one_batch_spanning_months_are_stored_once(tracking):
    now = timezone.now()
    message = {"type": "track", "userId": "u-1", "event": "Step", "messageId": "m-dup"}
    batch = [
        {**message, "timestamp": _iso(now - timedelta(days=70)), "properties": {"n": 1}},
        {**message, "timestamp": _iso(now), "properties": {"n": 2}},
        {**message, "messageId": "m-other", "timestamp": _iso(now)},
    ]
    assert tracking.post("/v1/batch", {"batch": batch}).status_code == 200
    stored = Event.objects.get(message_id="m-dup")
    assert stored.properties == {"n": 1}  # the first occurrence wins
    assert Event.objects.count() == 2
    assert tracking.post("/v1/batch", {"batch": batch}).status_code == 200
    assert Event.objects.count() == 2


@postgres
def test_messageids_are_per_source(tracking, other_write_key):
    from django.test import Client

    from ..conftest import basic_auth

    message = {"userId": "u-1", "event": "Signed Up", "messageId": "m-same"}
    assert tracking.post("/v1/track", message).status_code == 200
    other = Client(HTTP_AUTHORIZATION=basic_auth(other_write_key))
    assert other.post("/v1/track", message, content_type="application/json").status_code == 200
    assert Event.objects.filter(message_id="m-same").count() == 2


@postgres
def test_maintenance_creates_the_coming_months(db):
    later = timezone.now() + timedelta(days=200)
    result = maintain_event_partitions(later, retention_months=0, ahead=2)
    months = [add_months(month_start(later), step) for step in range(3)]
    assert set(result.created) <= {partition_name(m) for m in months}
    assert {partition_name(m) for m in months} <= _tables()
    assert maintain_event_partitions(later, retention_months=0, ahead=2).created == []


@postgres
def test_a_new_partition_takes_over_its_rows_from_the_default_partition(person, source):
    far = add_months(month_start(timezone.now()), 8)  # beyond the partitions created ahead
    event = _event(person, source, _at(far), "m-far")
    assert _partition_of(event.pk) == "onboarding_event_default"
    result = maintain_event_partitions(_at(far), retention_months=0, ahead=0)
    assert result.created == [partition_name(far)]
    assert _partition_of(event.pk) == partition_name(far)
    assert Event.objects.get(pk=event.pk).message_id == "m-far"


@postgres
def test_retention_drops_only_the_partitions_past_the_cutoff(person, source):
    now = timezone.now()
    current = month_start(now)
    dropped = _event(person, source, _at(add_months(current, -8)), "m-old")
    kept_edge = _event(person, source, _at(add_months(current, -6), 1), "m-edge")
    kept = _event(person, source, now, "m-now")
    ancient = _event(person, source, datetime(2001, 5, 1, tzinfo=UTC), "m-ancient")
    assert _partition_of(ancient.pk) == "onboarding_event_default"
    EventDedupe.objects.create(
        source_id=source.pk, message_id="m-old", received_at=_at(add_months(current, -8))
    )
    EventDedupe.objects.create(source_id=source.pk, message_id="m-now", received_at=now)

    assert maintain_event_partitions(now, retention_months=0).dropped == []
    result = maintain_event_partitions(now, retention_months=6)

    assert result.cutoff == add_months(current, -6)
    assert partition_name(add_months(current, -7)) in result.dropped
    assert partition_name(add_months(current, -6)) not in result.dropped
    assert all(name not in _tables() for name in result.dropped)
    assert partition_name(add_months(current, -6)) in _tables()
    remaining = set(Event.objects.values_list("pk", flat=True))
    assert remaining == {kept_edge.pk, kept.pk}
    assert dropped.pk not in remaining and ancient.pk not in remaining
    assert result.deleted_events == 1  # the ancient one, from the default partition
    assert list(EventDedupe.objects.values_list("message_id", flat=True)) == ["m-now"]


@postgres
def test_the_conversion_moves_existing_rows(person, source):
    """What migration 0006 does, on a plain table holding rows (rolled back with the test)."""
    with connection.cursor() as cursor:
        partitions.convert_to_plain(cursor)
    assert not partitions.is_partitioned()
    now = timezone.now()
    stamps = [
        now,
        now - timedelta(days=40),
        now - timedelta(days=400),
        datetime(2001, 1, 1, tzinfo=UTC),
    ]
    events = [_event(person, source, at, f"m-{i}") for i, at in enumerate(stamps)]
    with connection.cursor() as cursor:
        partitions.convert_to_partitioned(cursor, now)
    assert partitions.is_partitioned()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FILTER (WHERE NOT i.indisvalid), count(*) FROM pg_index i"
            " WHERE i.indrelid = to_regclass(%s)",
            [partition_name(month_start(now))],
        )
        invalid, count = cursor.fetchone()
    # The primary key and the five secondary indexes, built on every partition.
    assert (invalid, count) == (0, 6)
    assert sorted(Event.objects.values_list("pk", flat=True)) == sorted(e.pk for e in events)
    assert _partition_of(events[0].pk) == partition_name(month_start(now))
    assert _partition_of(events[1].pk) == partition_name(month_start(now - timedelta(days=40)))
    # 400 days back: older than the usual 12 months, so the window reaches back to it.
    assert _partition_of(events[2].pk) == partition_name(month_start(now - timedelta(days=400)))
    assert _partition_of(events[3].pk) == "onboarding_event_default"
    assert set(EventDedupe.objects.values_list("message_id", flat=True)) == {
        f"m-{i}" for i in range(4)
    }
    # The identity continues after the moved rows; Django still reads `id` as the primary key.
    newer = _event(person, source, now, "m-new")
    assert newer.pk > max(e.pk for e in events)
    assert Event.objects.get(pk=events[2].pk).message_id == "m-2"


def test_retention_on_sqlite_deletes_old_events(person, source):
    if connection.vendor == "postgresql":
        pytest.skip("SQLite-only path (plain deletes); PostgreSQL drops partitions, tested above")
    now = timezone.now()
    old = _event(person, source, now - timedelta(days=400), "m-old")
    new = _event(person, source, now, "m-new")
    assert maintain_event_partitions(now, retention_months=0).deleted_events == 0
    result = maintain_event_partitions(now, retention_months=3)
    assert result.deleted_events == 1
    assert list(Event.objects.values_list("pk", flat=True)) == [new.pk]
    assert old.pk != new.pk


def test_the_maintenance_task_is_scheduled():
    from triggers.schedules import SCHEDULES

    assert ("onboarding.tasks.maintain_event_partitions", 86400) in SCHEDULES.values()
