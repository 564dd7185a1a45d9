"""Migration 0009 (narrow progress rows): existing rows get their step offsets, the entry event's
breakdown properties and their re-entry rows, computed from the stored events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from onboarding.models import FlowProgress, FlowReentry

BEFORE = ("onboarding", "0009_flow_segment_archived_at")
AFTER = ("onboarding", "0010_narrow_flow_progress")
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def _migrate(target):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate([target])
    return executor.loader.project_state([target]).apps


@pytest.mark.django_db(transaction=True)
def test_backfill_from_events():
    apps = _migrate(BEFORE)
    source = apps.get_model("onboarding", "Source").objects.create(
        name="s", write_key_hash="0" * 64, write_key_prefix="s"
    )
    flow = apps.get_model("onboarding", "OnboardingFlow").objects.create(
        slug="activation", name="Activation", window_seconds=86400
    )
    for position, event in enumerate(["Signed Up", "Email Verified"], start=1):
        flow.steps.create(position=position, name=event, event_name=event, where={})
    Person = apps.get_model("onboarding", "Person")
    Event = apps.get_model("onboarding", "Event")
    Progress = apps.get_model("onboarding", "FlowProgress")

    def event(person, name, at, **properties):
        return Event.objects.create(
            source=source,
            person=person,
            type="track",
            name=name,
            timestamp=at,
            received_at=at,
            message_id=f"{person.pk}-{name}-{at.isoformat()}",
            properties=properties,
            context={},
        )

    a = Person.objects.create(external_id="a", traits={}, first_seen=T0, last_seen=T0)
    entry = event(a, "Signed Up", T0, source="ads", plan=3)
    event(a, "Email Verified", T0 + timedelta(seconds=90, microseconds=5))
    again = event(a, "Signed Up", T0 + 2 * DAY, source="newsletter")
    event(a, "Email Verified", T0 + 2 * DAY + timedelta(minutes=1))
    Progress.objects.create(
        flow=flow,
        person=a,
        entered_at=T0,
        entry_event_id=entry.pk,
        latest_entry_at=T0 + 2 * DAY,
        furthest_step=2,
        step_seconds=[90.000005],
        reached_at=T0 + timedelta(seconds=90),
        window_ends_at=T0 + DAY,
    )
    b = Person.objects.create(external_id="b", traits={}, first_seen=T0, last_seen=T0)
    entry_b = event(b, "Signed Up", T0)
    Progress.objects.create(
        flow=flow,
        person=b,
        entered_at=T0,
        entry_event_id=entry_b.pk,
        latest_entry_at=T0,
        furthest_step=1,
        step_seconds=[],
        reached_at=T0,
        window_ends_at=T0 + DAY,
    )

    _migrate(AFTER)

    row = FlowProgress.objects.get(person_id=a.pk)
    assert row.step_offsets == [0, 90_000_005]
    assert (row.entry_source, row.entry_device, row.entry_plan) == ("ads", None, "3")
    other = FlowProgress.objects.get(person_id=b.pk)
    assert (other.step_offsets, other.entry_source) == ([0], None)
    reentry = FlowReentry.objects.get()
    assert (reentry.person_id, reentry.entered_at, reentry.entry_event_id) == (
        a.pk,
        T0 + 2 * DAY,
        again.pk,
    )
    assert (reentry.furthest_step, reentry.step_offsets) == (2, [0, 60_000_000])
    assert (reentry.first_entered_at, reentry.entry_source) == (T0, "newsletter")
