"""Flow progress is maintained by ingestion, exactly, including for late and merged events."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from onboarding.flows.progress import flow_specs, rebuild_flow_progress, refresh_progress
from onboarding.models import FlowProgress, FlowReentry, OnboardingFlow, Person, Step

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def flow(db) -> OnboardingFlow:
    flow = OnboardingFlow.objects.create(slug="activation", name="Activation", window_seconds=86400)
    for position, (name, event, where) in enumerate(
        [
            ("Signed up", "Signed Up", {}),
            ("Verified", "Email Verified", {}),
            ("Profile", "Profile Completed", {"completionPercentage": 100}),
        ],
        start=1,
    ):
        Step.objects.create(flow=flow, position=position, name=name, event_name=event, where=where)
    return flow


def _track(user: str, event: str, at: datetime, n: int, **properties) -> dict:
    return {
        "type": "track",
        "userId": user,
        "event": event,
        "timestamp": at.isoformat(),
        "messageId": f"{user}-{n}",
        "properties": properties,
    }


def _send(api, *events: dict) -> None:
    response = api.post(
        "/v1/batch", json.dumps({"batch": list(events)}), content_type="application/json"
    )
    assert response.status_code == 200, response.content


@pytest.mark.usefixtures("flow")
def test_progress_follows_events_and_filters(api):
    _send(
        api,
        _track("u1", "Signed Up", T0, 1),
        _track("u1", "Email Verified", T0 + timedelta(minutes=5), 2),
        _track("u1", "Profile Completed", T0 + timedelta(minutes=9), 3, completionPercentage=50),
    )
    progress = FlowProgress.objects.get()
    assert progress.furthest_step == 2
    assert progress.step_offsets == [0, 300_000_000]
    assert progress.gaps_seconds == [300.0]
    assert progress.completed_at is None
    assert progress.window_ends_at == T0 + timedelta(days=1)

    _send(
        api,
        _track("u1", "Profile Completed", T0 + timedelta(minutes=20), 4, completionPercentage=100),
    )
    progress.refresh_from_db()
    assert progress.furthest_step == 3
    assert progress.completed_at == T0 + timedelta(minutes=20)
    assert progress.step_offsets == [0, 300_000_000, 1_200_000_000]
    assert progress.gaps_seconds == [300.0, 900.0]


@pytest.mark.usefixtures("flow")
def test_late_event_with_older_timestamp_moves_the_entry(api):
    _send(api, _track("u2", "Signed Up", T0 + timedelta(hours=30), 1))
    _send(api, _track("u2", "Email Verified", T0 + timedelta(hours=2), 2))
    progress = FlowProgress.objects.get()
    assert (progress.furthest_step, progress.entered_at) == (1, T0 + timedelta(hours=30))
    # A sign-up that happened earlier arrives late: the entry moves and verification now counts.
    _send(api, _track("u2", "Signed Up", T0, 3))
    progress.refresh_from_db()
    assert progress.entered_at == T0
    assert progress.latest_entry_at == T0 + timedelta(hours=30)
    assert progress.furthest_step == 2


@pytest.mark.usefixtures("flow")
def test_events_outside_the_window_do_not_count(api):
    _send(
        api,
        _track("u3", "Signed Up", T0, 1),
        _track("u3", "Email Verified", T0 + timedelta(days=1), 2),  # exactly at the edge: counts
        _track(
            "u3",
            "Profile Completed",
            T0 + timedelta(days=1, seconds=1),
            3,
            completionPercentage=100,
        ),
    )
    assert FlowProgress.objects.get().furthest_step == 2


@pytest.mark.usefixtures("flow")
def test_merge_moves_progress_to_the_identified_person(api):
    anonymous = {"anonymousId": "anon-1"}
    _send(api, {**_track("x", "Signed Up", T0, 1), **anonymous, "userId": None})
    _send(
        api,
        {"type": "identify", "userId": "u4", "anonymousId": "anon-1", "messageId": "id-1"},
        _track("u4", "Email Verified", T0 + timedelta(minutes=1), 2),
    )
    progress = FlowProgress.objects.get()
    assert progress.person.external_id == "u4"
    assert progress.furthest_step == 2


def test_rebuild_matches_incremental(api, flow):
    _send(
        api,
        _track("u5", "Signed Up", T0, 1),
        _track("u5", "Email Verified", T0 + timedelta(minutes=1), 2),
        _track("u6", "Signed Up", T0, 3),
    )
    before = sorted(FlowProgress.objects.values_list("person_id", "furthest_step", "entered_at"))
    assert rebuild_flow_progress(flow) == 2
    after = sorted(FlowProgress.objects.values_list("person_id", "furthest_step", "entered_at"))
    assert before == after


def test_an_edited_flow_applies_to_the_next_batch(api, flow):
    """The flow definitions are cached per process; an edit by any path (here plain SQL updates,
    with no service and no signal involved) takes effect on the very next batch."""
    _send(api, _track("u7", "Signed Up", T0, 1), _track("u7", "Email Verified", T0, 2))
    assert FlowProgress.objects.get(person__external_id="u7").furthest_step == 2

    Step.objects.filter(flow=flow, position=2).update(event_name="Email Confirmed")
    _send(
        api,
        _track("u8", "Signed Up", T0, 3),
        _track("u8", "Email Confirmed", T0 + timedelta(minutes=5), 4),
    )
    progress = FlowProgress.objects.get(person__external_id="u8")
    assert progress.furthest_step == 2
    assert progress.window_ends_at == T0 + timedelta(days=1)

    OnboardingFlow.objects.filter(pk=flow.pk).update(window_seconds=60)
    _send(
        api,
        _track("u9", "Signed Up", T0, 5),
        _track("u9", "Email Confirmed", T0 + timedelta(minutes=5), 6),
    )
    progress = FlowProgress.objects.get(person__external_id="u9")
    assert progress.furthest_step == 1
    assert progress.window_ends_at == T0 + timedelta(seconds=60)


@pytest.mark.usefixtures("flow")
def test_a_new_persons_progress_counts_a_repeated_message_once(api):
    """A person created by the batch gets progress from the batch's stored events: a messageId
    repeated in the batch is stored once, from its first occurrence."""
    signed_up = _track("u10", "Signed Up", T0, 1)
    _send(
        api,
        signed_up,
        {**_track("u10", "Email Verified", T0 + timedelta(minutes=1), 1)},  # same messageId
        _track("u11", "Signed Up", T0, 2),
        _track("u11", "Email Verified", T0, 3),  # same time as its entry: still in order
    )
    progress = dict(FlowProgress.objects.values_list("person__external_id", "furthest_step"))
    assert progress == {"u10": 1, "u11": 2}
    stored = sorted(FlowProgress.objects.values_list("person_id", "entry_event_id", "entered_at"))
    FlowProgress.objects.all().delete()
    rebuild_flow_progress(OnboardingFlow.objects.get())
    rebuilt = sorted(FlowProgress.objects.values_list("person_id", "entry_event_id", "entered_at"))
    assert stored == rebuilt


@pytest.mark.usefixtures("flow")
def test_a_message_id_reused_by_a_new_person_gives_them_no_step(api):
    _send(api, _track("known", "Email Verified", T0, 1))
    _send(
        api,
        {**_track("known", "Signed Up", T0, 2), "messageId": "shared"},
        {**_track("fresh", "Signed Up", T0, 3), "messageId": "shared"},  # not stored
        _track("fresh", "Email Verified", T0 + timedelta(minutes=1), 4),
    )
    progress = dict(FlowProgress.objects.values_list("person__external_id", "furthest_step"))
    assert progress == {"known": 2}  # "fresh" never entered: its sign-up was not stored


def test_a_long_flow_keeps_every_step_offset(api, db):
    """Steps past the typed columns (``offset_2`` … ``offset_8``) go in ``offsets_after``, from
    the first batch (insert) and from a later one (update)."""
    flow = OnboardingFlow.objects.create(slug="long", name="Long", window_seconds=86400)
    for position in range(1, 11):
        Step.objects.create(
            flow=flow, position=position, name=f"S{position}", event_name=f"E{position}"
        )
    _send(api, *[_track("u12", f"E{k}", T0 + timedelta(seconds=k), k) for k in range(1, 10)])
    progress = FlowProgress.objects.get()
    assert progress.furthest_step == 9
    assert progress.step_offsets == [(k - 1) * 1_000_000 for k in range(1, 10)]
    assert progress.offsets_after == [8_000_000]

    _send(api, _track("u12", "E10", T0 + timedelta(seconds=10), 10))
    progress.refresh_from_db()
    assert (progress.furthest_step, progress.completed_at) == (10, T0 + timedelta(seconds=10))
    assert progress.offsets_after == [8_000_000, 9_000_000]


@pytest.mark.usefixtures("flow")
def test_reentry_rows_are_replaced_by_each_batch(api):
    day = timedelta(days=1)
    _send(api, _track("u13", "Signed Up", T0, 1), _track("u13", "Signed Up", T0 + 2 * day, 2))
    reentry = FlowReentry.objects.get()
    assert (reentry.entered_at, reentry.furthest_step) == (T0 + 2 * day, 1)
    assert reentry.first_entered_at == T0

    _send(
        api,
        _track("u13", "Email Verified", T0 + 2 * day + timedelta(minutes=1), 3),
        _track("u13", "Signed Up", T0 + 4 * day, 4),
    )
    rows = FlowReentry.objects.order_by("entered_at")
    assert [(r.entered_at, r.furthest_step) for r in rows] == [
        (T0 + 2 * day, 2),
        (T0 + 4 * day, 1),
    ]
    assert rows[0].step_offsets == [0, 60_000_000]
    progress = FlowProgress.objects.get()
    assert (progress.entered_at, progress.latest_entry_at) == (T0, T0 + 4 * day)


def test_people_who_no_longer_enter_lose_their_progress(api, flow):
    _send(
        api,
        _track("u14", "Signed Up", T0, 1),
        _track("u14", "Signed Up", T0 + timedelta(days=2), 2),
    )
    _send(api, _track("u15", "Signed Up", T0, 3))
    Step.objects.filter(flow=flow, position=1).update(event_name="Account Created")
    people = list(
        Person.objects.filter(external_id__in=["u14", "u15"]).values_list("pk", flat=True)
    )

    assert refresh_progress(flow_specs(), people) == 0
    assert not FlowProgress.objects.exists()
    assert not FlowReentry.objects.exists()
