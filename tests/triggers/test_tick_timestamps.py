"""During a tick, date-times are read with ``datetime.fromisoformat`` (PostgreSQL): the same
values, in Django's time zone, as Django's own loader reads; what it cannot parse falls back."""

from __future__ import annotations

from datetime import datetime

import pytest
from django.db import DataError, connection

from triggers.engine.timestamps import fast_timestamps

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

VALUES = [
    "2026-02-05 11:52:00.123456+00",
    "2026-02-05 11:52:00.12+00",
    "2026-02-05 11:52:00+00",
    "2026-02-05 23:59:59.999999+05:30",
    "1871-03-18 09:00:00-00:09:21",
    "0001-01-01 00:00:00+00",
    "9999-12-31 23:59:59.999999+00",
]


def _read(sql: str, params=()) -> list:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return list(cursor.fetchone())


def test_the_same_instants_in_djangos_time_zone():
    sql = "SELECT " + ", ".join(["%s::timestamptz"] * len(VALUES))
    before = _read(sql, VALUES)
    with fast_timestamps():
        fast = _read(sql, VALUES)
    after = _read(sql, VALUES)
    assert fast == before == after
    assert fast == [datetime.fromisoformat(value) for value in VALUES]
    assert [value.tzinfo for value in fast] == [connection.timezone] * len(VALUES)
    assert [value.tzinfo for value in before] == [connection.timezone] * len(VALUES)


def test_what_it_cannot_parse_goes_to_djangos_loader():
    with fast_timestamps(), pytest.raises(DataError, match="after year 10K"):
        _read("SELECT 'infinity'::timestamptz")
    with fast_timestamps():
        assert _read("SELECT NULL::timestamptz") == [None]


def test_the_loader_is_put_back():
    from psycopg.postgres import types
    from psycopg.pq import Format

    connection.ensure_connection()
    oid = types["timestamptz"].oid
    before = connection.connection.adapters.get_loader(oid, Format.TEXT)
    with fast_timestamps():
        assert connection.connection.adapters.get_loader(oid, Format.TEXT) is not before
    assert connection.connection.adapters.get_loader(oid, Format.TEXT) is before
