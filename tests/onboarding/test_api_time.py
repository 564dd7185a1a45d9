"""DESIGN §3.1: clock-skew correction with sentAt, and timestamps too far in the future."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from onboarding.models import Event, FailedEvent, Person

NOW = datetime(2024, 6, 1, 12, 0, 0, tzinfo=UTC)


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@pytest.fixture
def clock():
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


def stored(message_id: str) -> Event:
    return Event.objects.get(message_id=message_id)


def test_received_at_is_the_server_clock(tracking, clock):
    tracking.post("/v1/track", {"userId": "u", "event": "E", "messageId": "m"})
    event = stored("m")
    assert event.received_at == NOW
    assert event.timestamp == NOW  # no client time at all: it happened when received


def test_without_sent_at_the_client_timestamp_is_kept(tracking, clock):
    client_time = NOW - timedelta(days=3)
    tracking.post(
        "/v1/track", {"userId": "u", "event": "E", "messageId": "m", "timestamp": iso(client_time)}
    )
    assert stored("m").timestamp == client_time


def test_event_level_sent_at_corrects_a_skewed_client_clock(tracking, clock):
    # The device clock is 2 h fast; the event happened 5 minutes before it was sent.
    sent_at = NOW + timedelta(hours=2)
    happened = sent_at - timedelta(minutes=5)
    tracking.post(
        "/v1/track",
        {
            "userId": "u",
            "event": "E",
            "messageId": "m",
            "timestamp": iso(happened),
            "sentAt": iso(sent_at),
        },
    )
    assert stored("m").timestamp == NOW - timedelta(minutes=5)


def test_batch_level_sent_at_corrects_every_event(tracking, clock):
    sent_at = NOW - timedelta(hours=7)  # the device clock is 7 h slow
    batch = [
        {
            "type": "track",
            "userId": "u",
            "event": "E",
            "messageId": f"m{i}",
            "timestamp": iso(sent_at - timedelta(seconds=10 * i)),
        }
        for i in range(3)
    ]
    response = tracking.post("/v1/batch", {"batch": batch, "sentAt": iso(sent_at)})

    assert response.status_code == 200
    assert [stored(f"m{i}").timestamp for i in range(3)] == [
        NOW,
        NOW - timedelta(seconds=10),
        NOW - timedelta(seconds=20),
    ]


def test_an_event_sent_at_overrides_the_batch_sent_at(tracking, clock):
    event = {
        "type": "track",
        "userId": "u",
        "event": "E",
        "messageId": "m",
        "timestamp": iso(NOW - timedelta(minutes=1)),
        "sentAt": iso(NOW),
    }
    tracking.post("/v1/batch", {"batch": [event], "sentAt": iso(NOW - timedelta(days=1))})
    assert stored("m").timestamp == NOW - timedelta(minutes=1)


def test_original_timestamp_is_used_when_timestamp_is_missing(tracking, clock):
    sent_at = NOW + timedelta(minutes=30)
    tracking.post(
        "/v1/track",
        {
            "userId": "u",
            "event": "E",
            "messageId": "m",
            "originalTimestamp": iso(sent_at - timedelta(seconds=3)),
            "sentAt": iso(sent_at),
        },
    )
    assert stored("m").timestamp == NOW - timedelta(seconds=3)


def test_offsets_and_naive_times_are_stored_in_utc(tracking, clock):
    tracking.post(
        "/v1/track",
        {"userId": "u", "event": "E", "messageId": "a", "timestamp": "2024-06-01T09:30:00+02:00"},
    )
    tracking.post(
        "/v1/track",
        {"userId": "u", "event": "E", "messageId": "b", "timestamp": "2024-06-01T07:30:00.250"},
    )
    assert stored("a").timestamp == datetime(2024, 6, 1, 7, 30, tzinfo=UTC)
    assert stored("b").timestamp == datetime(2024, 6, 1, 7, 30, 0, 250000, tzinfo=UTC)


def test_a_person_first_seen_uses_corrected_time_and_last_seen_server_time(tracking, clock):
    sent_at = NOW + timedelta(days=2)
    tracking.post(
        "/v1/track",
        {
            "userId": "u",
            "event": "E",
            "timestamp": iso(sent_at - timedelta(hours=1)),
            "sentAt": iso(sent_at),
        },
    )
    person = Person.objects.get()
    assert person.first_seen == NOW - timedelta(hours=1)
    assert person.last_seen == NOW


# --- the future -------------------------------------------------------------------------------


def test_a_timestamp_within_24_hours_of_the_future_is_accepted(tracking, clock):
    payload = {"userId": "u", "event": "E", "timestamp": iso(NOW + timedelta(hours=24))}
    assert tracking.post("/v1/track", payload).status_code == 200


def test_a_timestamp_more_than_24_hours_in_the_future_is_rejected(tracking, clock):
    payload = {"userId": "u", "event": "E", "timestamp": iso(NOW + timedelta(hours=24, seconds=1))}
    response = tracking.post("/v1/track", payload)

    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["path"]) == ("timestamp_in_future", "timestamp")
    assert Event.objects.count() == 0


def test_a_far_future_client_clock_is_fine_once_corrected(tracking, clock):
    sent_at = NOW + timedelta(days=400)  # a device with a badly wrong clock
    payload = {
        "userId": "u",
        "event": "E",
        "messageId": "m",
        "timestamp": iso(sent_at - timedelta(minutes=2)),
        "sentAt": iso(sent_at),
    }
    assert tracking.post("/v1/track", payload).status_code == 200
    assert stored("m").timestamp == NOW - timedelta(minutes=2)


def test_the_future_is_judged_after_correction(tracking, clock):
    # Sent "now" by a correct clock, but stamped two days ahead: still two days ahead.
    payload = {
        "userId": "u",
        "event": "E",
        "timestamp": iso(NOW + timedelta(days=2)),
        "sentAt": iso(NOW),
    }
    response = tracking.post("/v1/track", payload)
    assert response.json()["error"]["code"] == "timestamp_in_future"


def test_future_events_in_a_batch_are_rejected_alone(tracking, clock):
    sent_at = NOW - timedelta(hours=1)
    batch = [
        {"type": "track", "userId": "u", "event": "Now", "messageId": "ok1"},
        {
            "type": "track",
            "userId": "u",
            "event": "Later",
            "messageId": "future",
            "timestamp": iso(sent_at + timedelta(hours=25)),
        },
        {
            "type": "track",
            "userId": "u",
            "event": "Past",
            "messageId": "ok2",
            "timestamp": iso(sent_at - timedelta(hours=1)),
        },
    ]
    response = tracking.post("/v1/batch", {"batch": batch, "sentAt": iso(sent_at)})

    assert response.status_code == 200
    body = response.json()
    assert body["accepted"] == 2
    assert [(r["index"], r["code"], r["path"]) for r in body["rejected"]] == [
        (1, "timestamp_in_future", "batch[1].timestamp")
    ]
    assert set(Event.objects.values_list("message_id", flat=True)) == {"ok1", "ok2"}
    assert stored("ok2").timestamp == NOW - timedelta(hours=1)
    assert FailedEvent.objects.get().code == "timestamp_in_future"


def test_the_earliest_representable_time_is_stored(tracking, clock):
    payload = {"userId": "u", "event": "E", "messageId": "m", "timestamp": "0001-01-01T00:00:00Z"}
    assert tracking.post("/v1/track", {**payload, "sentAt": iso(NOW)}).status_code == 200
    assert stored("m").timestamp == datetime(1, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("timestamp", "0001-01-01T00:00:00+01:00"),  # before year 1 in UTC
        ("timestamp", "9999-12-31T23:59:59-01:00"),  # after year 9999 in UTC
        ("sentAt", "0001-01-01T00:00:00+01:00"),
    ],
)
def test_times_outside_the_representable_range_are_a_400(tracking, clock, field, value):
    payload = {"userId": "u", "event": "E", "timestamp": iso(NOW), "sentAt": iso(NOW)}
    response = tracking.post("/v1/track", {**payload, field: value})
    assert response.status_code == 400
    assert response.json()["error"] | {"message": ""} == {
        "code": "invalid_timestamp",
        "path": field,
        "message": "",
    }


def test_a_correction_that_leaves_the_calendar_is_a_400(tracking, clock):
    # A client clock at year 9999 sending an event stamped year 1: "received 9998 years ago".
    payload = {
        "userId": "u",
        "event": "E",
        "timestamp": "0001-01-01T00:00:00Z",
        "sentAt": "9999-12-31T00:00:00Z",
    }
    response = tracking.post("/v1/track", payload)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_timestamp"
