"""The indexes of ``triggers_message`` (PostgreSQL): each row version a delivery writes goes into
every index that holds it, so the status indexes are partial and nothing is indexed twice; the
queries that need them can still use them."""

from __future__ import annotations

import pytest
from django.db import connection
from django.utils import timezone

from triggers.delivery.pipeline import due_message_ids
from triggers.models import Message

pytestmark = [
    pytest.mark.skipif("connection.vendor != 'postgresql'"),
    pytest.mark.django_db,
]


def _indexes() -> dict[str, str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'triggers_message'"
        )
        return dict(cursor.fetchall())


def test_no_index_repeats_another_and_final_rows_are_in_no_status_index():
    indexes = _indexes()
    definitions = " ".join(indexes.values())
    assert "varchar_pattern_ops" not in definitions  # nothing looks keys up by prefix
    # person_id alone is the leading column of message_person_sent
    assert not any(d.endswith("(person_id)") for d in indexes.values()), indexes
    assert "WHERE" in indexes["message_due"] and "'sent'" not in indexes["message_due"]
    assert indexes["message_lease"].endswith("WHERE ((status)::text = 'sending'::text)")
    assert "IS NOT NULL" in indexes["message_retry"]
    assert "IS NOT NULL" in indexes["message_fallback_of"]
    assert len(indexes) == 11, sorted(indexes)


def _plan(queryset) -> str:
    sql, params = queryset.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"EXPLAIN {sql}", params)
        return "\n".join(row[0] for row in cursor.fetchall())


def test_the_partial_indexes_serve_the_delivery_queries():
    """The planner can prove each query's status filter implies the index's predicate (with
    sequential scans off, so that the tiny test table does not decide)."""
    now = timezone.now()
    assert due_message_ids(now, 10) == []  # its filter, below
    due = Message.objects.filter(status__in=("scheduled", "deferred"), due_at__lte=now)
    assert "message_due" in _plan(due)
    backlog = Message.objects.filter(
        status__in=("scheduled", "deferred", "sending"), due_at__lte=now
    )
    assert "message_due" in _plan(backlog)
    stuck = Message.objects.filter(status="sending", lease_until__lt=now)
    assert "message_lease" in _plan(stuck)
    by_person = Message.objects.filter(person_id__in=[1, 2])
    assert "message_person_sent" in _plan(by_person)
