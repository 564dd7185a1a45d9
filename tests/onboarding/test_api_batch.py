"""DESIGN §3.1: every endpoint stores a valid Segment payload; batches, idempotency, partial batches."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from onboarding.models import Event, FailedEvent, Identity, Person

from ..conftest import basic_auth

# One valid message per endpoint, as analytics-python / analytics.js send them.
VALID = {
    "track": {
        "type": "track",
        "userId": "u-1",
        "event": "Signed Up",
        "properties": {"plan": "pro", "seats": 3},
        "context": {"ip": "127.0.0.1", "library": {"name": "analytics-python", "version": "2.4"}},
        "integrations": {"All": True},
        "messageId": "m-track",
        "timestamp": "2024-03-01T10:00:00Z",
    },
    "identify": {
        "type": "identify",
        "userId": "u-1",
        "traits": {"email": "ada@example.com", "name": "Ada"},
        "messageId": "m-identify",
    },
    "page": {
        "type": "page",
        "anonymousId": "a-1",
        "name": "Pricing",
        "properties": {"url": "https://example.com/pricing"},
        "messageId": "m-page",
    },
    "screen": {
        "type": "screen",
        "userId": "u-1",
        "name": "Home",
        "properties": {"variation": "blue"},
        "messageId": "m-screen",
    },
    "alias": {
        "type": "alias",
        "previousId": "old-1",
        "userId": "u-1",
        "messageId": "m-alias",
    },
    "group": {
        "type": "group",
        "userId": "u-1",
        "groupId": "acme",
        "traits": {"name": "Acme Inc"},
        "messageId": "m-group",
    },
}
EXPECTED_NAME = {
    "track": "Signed Up",
    "identify": "",
    "page": "Pricing",
    "screen": "Home",
    "alias": "",
    "group": "",
}


@pytest.mark.parametrize("event_type", list(VALID))
def test_each_endpoint_stores_a_valid_segment_message(tracking, event_type):
    response = tracking.post(f"/v1/{event_type}", VALID[event_type])

    assert response.status_code == 200, response.content
    assert response.json() == {"success": True}
    event = Event.objects.get()
    assert event.type == event_type
    assert event.name == EXPECTED_NAME[event_type]
    assert event.message_id == f"m-{event_type}"
    assert FailedEvent.objects.count() == 0


def test_the_type_field_is_optional_on_single_endpoints(tracking):
    payload = {k: v for k, v in VALID["track"].items() if k != "type"}
    assert tracking.post("/v1/track", payload).status_code == 200
    assert Event.objects.get().type == "track"


def test_track_stores_properties_context_and_ids(tracking):
    tracking.post("/v1/track", VALID["track"])

    event = Event.objects.get()
    assert event.properties == {"plan": "pro", "seats": 3}
    assert event.context["library"]["name"] == "analytics-python"
    assert event.user_id == "u-1"
    assert event.person.external_id == "u-1"


def test_identify_and_group_store_traits_as_properties(tracking):
    tracking.post("/v1/identify", VALID["identify"])
    tracking.post("/v1/group", VALID["group"])

    identify = Event.objects.get(type="identify")
    group = Event.objects.get(type="group")
    assert identify.properties == {"email": "ada@example.com", "name": "Ada"}
    assert group.properties == {"name": "Acme Inc", "groupId": "acme"}
    # Group traits describe the group, not the person.
    assert "groupId" not in Person.objects.get().traits


def test_page_name_falls_back_to_properties_name(tracking):
    payload = {"anonymousId": "a-1", "properties": {"name": "Docs"}}
    assert tracking.post("/v1/page", payload).status_code == 200
    assert Event.objects.get().name == "Docs"


def test_integer_user_ids_are_accepted_as_strings(tracking):
    assert tracking.post("/v1/track", {"userId": 42, "event": "Opened"}).status_code == 200
    assert Identity.objects.get(kind="user").value == "42"


def test_unknown_fields_are_accepted(tracking):
    payload = {**VALID["track"], "version": 2, "channel": "server", "_metadata": {"x": [1]}}
    assert tracking.post("/v1/track", payload).status_code == 200


@pytest.mark.parametrize("path", ["/v1/batch", "/v1/import"])
def test_batch_and_import_store_every_type(tracking, path):
    response = tracking.post(path, {"batch": list(VALID.values())})

    assert response.status_code == 200, response.content
    assert response.json() == {"success": True}
    assert sorted(Event.objects.values_list("type", flat=True)) == sorted(VALID)


def test_an_empty_batch_is_a_no_op(tracking):
    response = tracking.post("/v1/batch", {"batch": []})
    assert (response.status_code, response.json()) == (200, {"success": True})
    assert Event.objects.count() == 0


def test_batch_level_context_applies_to_events_without_their_own(tracking):
    batch = {
        "context": {"library": {"name": "analytics.js"}},
        "batch": [
            {"type": "track", "userId": "u", "event": "A", "messageId": "1"},
            {
                "type": "track",
                "userId": "u",
                "event": "B",
                "messageId": "2",
                "context": {"ip": "x"},
            },
        ],
    }
    assert tracking.post("/v1/batch", batch).status_code == 200
    contexts = dict(Event.objects.values_list("message_id", "context"))
    assert contexts == {"1": {"library": {"name": "analytics.js"}}, "2": {"ip": "x"}}


def test_events_without_message_id_get_distinct_generated_ids(tracking):
    for _ in range(2):
        tracking.post("/v1/track", {"userId": "u", "event": "Clicked"})
    ids = list(Event.objects.values_list("message_id", flat=True))
    assert len(ids) == 2 and len(set(ids)) == 2


# --- idempotency -----------------------------------------------------------------------------


def test_a_retried_call_is_accepted_and_stored_once(tracking):
    first = tracking.post("/v1/track", VALID["track"])
    retry = tracking.post("/v1/track", VALID["track"])

    assert first.status_code == retry.status_code == 200
    assert retry.json() == {"success": True}
    assert Event.objects.count() == 1
    assert Person.objects.count() == 1


def test_a_retried_batch_is_stored_once(tracking):
    batch = {"batch": list(VALID.values())}
    tracking.post("/v1/batch", batch)
    assert tracking.post("/v1/batch", batch).status_code == 200
    assert Event.objects.count() == len(VALID)


def test_the_same_message_id_from_two_sources_is_two_events(write_key, other_write_key):
    payload = json.dumps(VALID["track"])
    for key in (write_key, other_write_key):
        response = Client(HTTP_AUTHORIZATION=basic_auth(key)).post(
            "/v1/track", payload, content_type="application/json"
        )
        assert response.status_code == 200
    assert Event.objects.filter(message_id="m-track").count() == 2
    assert Event.objects.values("source").distinct().count() == 2


def test_duplicate_message_ids_inside_one_batch_store_one_event(tracking):
    event = {"type": "track", "userId": "u", "event": "Clicked", "messageId": "dup"}
    response = tracking.post("/v1/batch", {"batch": [event, event, {**event, "event": "Other"}]})

    assert response.status_code == 200
    assert response.json() == {"success": True}
    assert Event.objects.filter(message_id="dup").count() == 1
    assert Event.objects.get().name == "Clicked"  # the first one wins


# --- partial batches -------------------------------------------------------------------------


def test_a_partial_batch_stores_the_valid_events_and_lists_the_rejected_ones(tracking):
    batch = [
        {"type": "track", "userId": "u", "event": "Good 0", "messageId": "g0"},
        {"type": "track", "userId": "u", "messageId": "bad1"},
        {"type": "track", "userId": "u", "event": "Good 2", "messageId": "g2"},
        {"type": "identify", "userId": "u", "traits": "not-an-object", "messageId": "bad3"},
        "not an object",
    ]
    response = tracking.post("/v1/batch", {"batch": batch})

    assert response.status_code == 200
    body = response.json()
    assert body["success"] is False
    assert body["accepted"] == 2
    assert [(r["index"], r["code"], r["path"]) for r in body["rejected"]] == [
        (1, "missing_field", "batch[1].event"),
        (3, "invalid_type", "batch[3].traits"),
        (4, "invalid_type", "batch[4]"),
    ]
    assert all(r["message"] for r in body["rejected"])
    assert set(Event.objects.values_list("message_id", flat=True)) == {"g0", "g2"}


def test_rejected_batch_events_are_kept_for_support(tracking, issued_key):
    bad = {"type": "track", "userId": "u", "messageId": "bad", "properties": {"k": "v"}}
    tracking.post("/v1/batch", {"batch": [{"type": "track", "userId": "u", "event": "ok"}, bad]})

    failed = FailedEvent.objects.get()
    assert failed.source == issued_key.source
    assert (failed.endpoint, failed.index, failed.code, failed.path) == (
        "batch",
        1,
        "missing_field",
        "batch[1].event",
    )
    assert json.loads(failed.payload) == bad
    assert failed.message


def test_a_batch_with_every_event_rejected_is_a_400_naming_the_first_problem(tracking):
    batch = [{"type": "track", "userId": "u"}, {"type": "nonsense", "userId": "u"}]
    response = tracking.post("/v1/batch", {"batch": batch})

    assert response.status_code == 400
    body = response.json()
    assert body["success"] is False
    assert body["accepted"] == 0
    assert [(r["index"], r["code"], r["path"]) for r in body["rejected"]] == [
        (0, "missing_field", "batch[0].event"),
        (1, "invalid_value", "batch[1].type"),
    ]
    # Like every other 4xx, the body has an ``error`` naming the field.
    assert body["error"]["code"] == "missing_field"
    assert body["error"]["path"] == "batch[0].event"
    assert Event.objects.count() == 0
    assert FailedEvent.objects.count() == 2


def test_a_rejected_single_call_is_kept_for_support(tracking):
    response = tracking.post("/v1/track", {"userId": "u", "properties": {"a": 1}})

    assert response.status_code == 400
    failed = FailedEvent.objects.get()
    assert (failed.endpoint, failed.index, failed.path) == ("track", None, "event")
    assert json.loads(failed.payload) == {"userId": "u", "properties": {"a": 1}}


@pytest.mark.parametrize("size", [3, 60], ids=["in-statement", "staged"])
def test_repeats_and_retries_store_each_message_once_small_or_large(tracking, size):
    """Small batches go in one statement, larger ones through the staging table: same rules."""
    events = [
        {"type": "track", "userId": f"u{n % 7}", "event": f"E{n}", "messageId": f"m{n}"}
        for n in range(size)
    ]
    batch = {"batch": [*events, {**events[0], "event": "Repeat"}]}
    assert tracking.post("/v1/batch", batch).json() == {"success": True}
    assert tracking.post("/v1/batch", batch).json() == {"success": True}
    more = {"batch": [*events[:2], {**events[0], "messageId": "m-new"}]}
    assert tracking.post("/v1/batch", more).json() == {"success": True}

    assert Event.objects.count() == size + 1
    assert Event.objects.get(message_id="m0").name == "E0"
    assert Person.objects.count() == min(size, 7)
