from __future__ import annotations

from datetime import timedelta

from dashboard.selectors import events_per_hour, overview_totals
from tests.dashboard.conftest import NOW


def test_events_per_hour_groups_by_hour_type_and_name(journeys, django_assert_num_queries):
    start = NOW.replace(minute=0) - timedelta(hours=47)
    with django_assert_num_queries(1):
        rows = events_per_hour(start=start, end=NOW.replace(minute=0) + timedelta(hours=1))
    by_key = {(row.hour, row.type, row.name): row.count for row in rows}
    signed_up_3h_ago = (NOW - timedelta(hours=3)).replace(minute=0)
    assert by_key[(signed_up_3h_ago, "track", "Signed Up")] == 1
    assert by_key[(NOW.replace(minute=0), "page", "Pricing")] == 1
    assert all(row.hour.tzinfo is not None and row.hour.minute == 0 for row in rows)
    assert sum(by_key.values()) == 6


def test_totals_when_empty(db):
    totals = overview_totals(now=NOW)
    assert totals.people == 0
    assert totals.identified_share is None
