"""DESIGN §3.1: every validation error is a 4xx whose JSON names the field, and nothing is stored."""

from __future__ import annotations

import json

import pytest

from onboarding.models import Event, FailedEvent

TRACK = {"userId": "u-1", "event": "Signed Up"}


def assert_problem(response, status: int, code: str, path: str) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert body["success"] is False
    assert (body["error"]["code"], body["error"]["path"]) == (code, path)
    assert body["error"]["message"]
    return body


# (endpoint, payload, code, path): one event that is wrong in one way.
EVENT_ERRORS = [
    ("track", {"event": "E"}, "missing_field", "userId"),
    ("track", {"userId": "", "anonymousId": None, "event": "E"}, "missing_field", "userId"),
    ("identify", {"traits": {"a": 1}}, "missing_field", "userId"),
    ("track", {"userId": "u"}, "missing_field", "event"),
    ("track", {"userId": "u", "event": ""}, "missing_field", "event"),
    ("track", {"userId": "u", "event": 7}, "invalid_type", "event"),
    ("track", {"userId": "u", "event": "x" * 256}, "too_long", "event"),
    ("track", {**TRACK, "properties": []}, "invalid_type", "properties"),
    ("track", {**TRACK, "properties": "a=b"}, "invalid_type", "properties"),
    ("track", {**TRACK, "context": ["ip"]}, "invalid_type", "context"),
    ("track", {**TRACK, "integrations": True}, "invalid_type", "integrations"),
    ("identify", {"userId": "u", "traits": "vip"}, "invalid_type", "traits"),
    ("identify", {"userId": "u", "traits": [1]}, "invalid_type", "traits"),
    ("track", {**TRACK, "timestamp": 1700000000}, "invalid_type", "timestamp"),
    ("track", {**TRACK, "timestamp": "yesterday"}, "invalid_timestamp", "timestamp"),
    ("track", {**TRACK, "timestamp": "2024-13-45T99:00:00Z"}, "invalid_timestamp", "timestamp"),
    ("track", {**TRACK, "originalTimestamp": "soon"}, "invalid_timestamp", "originalTimestamp"),
    (
        "track",
        {**TRACK, "timestamp": "2024-01-01T00:00:00Z", "sentAt": 5},
        "invalid_type",
        "sentAt",
    ),
    ("track", {"userId": True, "event": "E"}, "invalid_type", "userId"),
    ("track", {"userId": 1.5, "event": "E"}, "invalid_type", "userId"),
    ("track", {"anonymousId": {"id": 1}, "event": "E"}, "invalid_type", "anonymousId"),
    ("track", {"userId": "u" * 256, "event": "E"}, "too_long", "userId"),
    ("track", {**TRACK, "messageId": ["m"]}, "invalid_type", "messageId"),
    ("track", {**TRACK, "type": "identify"}, "invalid_value", "type"),
    ("page", {"anonymousId": "a", "name": 3}, "invalid_type", "name"),
    ("alias", {"userId": "u"}, "missing_field", "previousId"),
    ("alias", {"anonymousId": "a", "previousId": "p"}, "missing_field", "userId"),
    ("group", {"userId": "u"}, "missing_field", "groupId"),
    ("track", {**TRACK, "properties": {"note": "a\u0000b"}}, "invalid_string", "body"),
    ("track", {**TRACK, "properties": {"note": "\ud800"}}, "invalid_string", "body"),
]


@pytest.mark.parametrize(("endpoint", "payload", "code", "path"), EVENT_ERRORS)
def test_an_invalid_single_event_is_a_400_naming_the_field(tracking, endpoint, payload, code, path):
    response = tracking.post(f"/v1/{endpoint}", payload)

    assert_problem(response, 400, code, path)
    assert Event.objects.count() == 0
    assert FailedEvent.objects.get().code == code


@pytest.mark.parametrize(("endpoint", "payload", "code", "path"), EVENT_ERRORS)
def test_the_same_event_in_a_batch_is_rejected_at_its_index(
    tracking, endpoint, payload, code, path
):
    item = {"type": endpoint, **payload}
    if endpoint == "track" and payload.get("type") == "identify":
        # In a batch ``type`` selects the kind; a mismatch there is an unknown type instead.
        item = {**payload, "type": "tracking"}
        code, path = "invalid_value", "type"
    good = {"type": "track", "userId": "ok", "event": "Fine"}
    response = tracking.post("/v1/batch", {"batch": [good, item]})

    assert response.status_code == 200, response.content
    [rejected] = response.json()["rejected"]
    expected_path = "batch[1]" if path == "body" else f"batch[1].{path}"
    assert (rejected["index"], rejected["code"], rejected["path"]) == (1, code, expected_path)
    assert Event.objects.get().user_id == "ok"


@pytest.mark.parametrize(
    ("item", "code", "path"),
    [
        ({"userId": "u", "event": "E"}, "missing_field", "batch[0].type"),
        ({"type": "bogus", "userId": "u"}, "invalid_value", "batch[0].type"),
        ({"type": ["track"], "userId": "u"}, "invalid_value", "batch[0].type"),
        ([1, 2], "invalid_type", "batch[0]"),
        (None, "invalid_type", "batch[0]"),
    ],
)
def test_batch_items_need_a_known_type_and_an_object(tracking, item, code, path):
    response = tracking.post("/v1/batch", {"batch": [item]})
    body = assert_problem(response, 400, code, path)
    assert body["rejected"][0]["index"] == 0


@pytest.mark.parametrize(
    ("document", "code", "path"),
    [
        ({}, "missing_field", "batch"),
        ({"batch": None}, "missing_field", "batch"),
        ({"batch": {"type": "track"}}, "invalid_type", "batch"),
        ({"batch": "[]"}, "invalid_type", "batch"),
        ({"batch": 3}, "invalid_type", "batch"),
        ({"batch": [], "sentAt": "not a date"}, "invalid_timestamp", "sentAt"),
        ({"batch": [], "sentAt": 12}, "invalid_type", "sentAt"),
    ],
)
def test_a_malformed_batch_envelope_is_a_400_naming_the_field(tracking, document, code, path):
    assert_problem(tracking.post("/v1/batch", document), 400, code, path)
    assert FailedEvent.objects.count() == 0


@pytest.mark.parametrize("endpoint", ["track", "batch"])
@pytest.mark.parametrize("body", ["[]", "[{}]", '"track"', "42", "null", "true"])
def test_a_body_that_is_not_an_object_is_a_400(tracking, endpoint, body):
    assert_problem(tracking.post(f"/v1/{endpoint}", body), 400, "invalid_type", "body")


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"   \n",
        b"{",
        b'{"userId": "u", "event": "E",}',
        b"{'userId': 'u'}",
        b'{"userId": "u"} trailing',
        b'{"userId": "u", "event": "E", "properties": {"x": NaN}}',
        b'{"userId": "u", "event": "E", "properties": {"x": Infinity}}',
        b'{"userId": "u", "event": "E", "properties": {"x": -Infinity}}',
        b'{"userId": "u", "event": "E", "properties": {"x": 1e999}}',
        b'{"userId": "u", "event": "E", "properties": {"x": ' + b"9" * 5000 + b"}}",
        '{"userId": "café", "event": "E"}'.encode("latin-1"),
        json.dumps(TRACK).encode("utf-16"),
        json.dumps(TRACK).encode("utf-32"),
        b'{"userId": "\xed\xa0\x80", "event": "E"}',  # an encoded surrogate is not UTF-8
    ],
)
def test_invalid_json_is_a_400_naming_the_body(tracking, body):
    assert_problem(tracking.post("/v1/track", body), 400, "invalid_json", "body")
    assert Event.objects.count() == 0


def test_a_utf8_byte_order_mark_is_tolerated(tracking):
    body = b"\xef\xbb\xbf" + json.dumps(TRACK).encode()
    assert tracking.post("/v1/track", body).status_code == 200


def test_non_ascii_utf8_is_stored_intact(tracking):
    payload = {"userId": "zoë", "event": "Café ☕", "properties": {"emoji": "🎉", "cjk": "漢字"}}
    assert tracking.post("/v1/track", payload).status_code == 200
    event = Event.objects.get()
    assert (event.user_id, event.name, event.properties) == (
        "zoë",
        "Café ☕",
        {"emoji": "🎉", "cjk": "漢字"},
    )


def nested(depth: int) -> dict:
    value: object = "leaf"
    for _ in range(depth):
        value = [value]
    return value  # type: ignore[return-value]


def test_deeply_nested_json_is_a_400_whatever_the_depth(tracking):
    for depth in (100, 500, 905, 910, 912, 915, 2000, 50_000):
        body = '{"userId":"u","event":"E","properties":{"x":' + "[" * depth + "]" * depth + "}}"
        response = tracking.post("/v1/track", body)
        assert_problem(response, 400, "invalid_json", "body")
    assert Event.objects.count() == 0


def test_reasonable_nesting_is_accepted(tracking):
    payload = {**TRACK, "properties": {"x": nested(40)}}
    assert tracking.post("/v1/track", payload).status_code == 200
    assert Event.objects.get().properties == {"x": nested(40)}


def test_an_unsupported_content_encoding_is_a_415(tracking):
    response = tracking.post("/v1/track", json.dumps(TRACK), HTTP_CONTENT_ENCODING="br")
    assert_problem(response, 415, "unsupported_encoding", "Content-Encoding")
