"""Parsers of the tracking API: unit tests, and property tests that no input yields a 5xx (DESIGN §6)."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onboarding.tracking.envelope import MAX_JSON_DEPTH, decode_body, read_envelope
from onboarding.tracking.errors import EnvelopeError, EventRejected
from onboarding.tracking.parsing import corrected_timestamp, parse_event, parse_timestamp

NOW = datetime(2024, 6, 1, 12, tzinfo=UTC)
LIMITS = {"received_at": NOW, "max_event_bytes": 32 * 1024, "max_future": timedelta(hours=24)}


def parse(payload, *, event_type="track", path=""):
    return parse_event(payload, path, event_type=event_type, **LIMITS)


def rejected(payload, **kwargs) -> tuple[str, str]:
    with pytest.raises(EventRejected) as raised:
        parse(payload, **kwargs)
    return raised.value.problem.code, raised.value.problem.path


# --- parse_event ------------------------------------------------------------------------------


def test_parse_event_normalizes_a_track():
    event = parse(
        {"userId": 7, "event": "Signed Up", "properties": {"a": 1}, "messageId": "m", "x": 1}
    )
    assert (event.type, event.name, event.user_id, event.message_id) == (
        "track",
        "Signed Up",
        "7",
        "m",
    )
    assert event.properties == {"a": 1}
    assert event.timestamp == NOW


def test_parse_event_in_a_batch_reads_the_type_and_prefixes_paths():
    assert parse({"type": "page", "anonymousId": "a"}, event_type=None).type == "page"
    assert rejected({"type": "track", "userId": "u"}, event_type=None, path="batch[3]") == (
        "missing_field",
        "batch[3].event",
    )


def test_parse_event_generates_a_message_id_when_missing():
    first, second = parse({"userId": "u", "event": "E"}), parse({"userId": "u", "event": "E"})
    assert first.message_id != second.message_id
    assert first.message_id.startswith("onramp-")


def test_identify_traits_come_from_context_traits_only_when_traits_are_empty():
    event = parse(
        {"userId": "u", "context": {"traits": {"a": 1}}, "traits": {}}, event_type="identify"
    )
    assert event.traits == {"a": 1}
    event = parse(
        {"userId": "u", "context": {"traits": {"a": 1}}, "traits": {"b": 2}}, event_type="identify"
    )
    assert event.traits == {"b": 2}


def test_group_traits_carry_the_group_id():
    event = parse({"userId": "u", "groupId": 9, "traits": {"n": 1}}, event_type="group")
    assert event.traits == {"n": 1, "groupId": "9"}
    assert event.payload_for_storage == event.traits


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ([], ("invalid_type", "body")),
        ({"event": "E"}, ("missing_field", "userId")),
        ({"userId": False, "event": "E"}, ("invalid_type", "userId")),
        ({"userId": "u", "event": "E", "properties": {"k": "\x00"}}, ("invalid_string", "body")),
        ({"userId": "u", "event": "E", "properties": {"\ud800": 1}}, ("invalid_string", "body")),
        ({"userId": "u", "event": "E", "pad": "x" * 40_000}, ("event_too_large", "body")),
    ],
)
def test_parse_event_rejections(payload, problem):
    assert rejected(payload) == problem


# --- timestamps -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-06-01T12:00:00Z", NOW),
        ("2024-06-01T14:00:00+02:00", NOW),
        ("2024-06-01T12:00:00", NOW),
        ("  2024-06-01T12:00:00.000Z ", NOW),
        ("2024-06-01", datetime(2024, 6, 1, tzinfo=UTC)),
    ],
)
def test_parse_timestamp_accepts_iso_8601(text, expected):
    assert parse_timestamp(text, "timestamp") == expected


@pytest.mark.parametrize("value", [None, 0, 1.5, [], {}, "", "now", "2024-02-30T00:00:00Z"])
def test_parse_timestamp_rejects_everything_else(value):
    with pytest.raises(EventRejected) as raised:
        parse_timestamp(value, "batch[0].timestamp")
    assert raised.value.problem.path == "batch[0].timestamp"


def test_corrected_timestamp_applies_the_skew_of_the_sending_clock():
    payload = {"timestamp": "2024-06-01T15:00:00Z", "sentAt": "2024-06-01T15:00:10Z"}
    assert corrected_timestamp(payload, "", received_at=NOW, batch_sent_at=None) == NOW - timedelta(
        seconds=10
    )
    batch_sent = datetime(2024, 6, 1, 15, 0, 20, tzinfo=UTC)
    assert corrected_timestamp(
        {"timestamp": "2024-06-01T15:00:00Z"}, "", received_at=NOW, batch_sent_at=batch_sent
    ) == NOW - timedelta(seconds=20)


@pytest.mark.parametrize("payload", [{}, {"timestamp": "2024-06-01T15:00:00Z"}])
def test_a_malformed_sent_at_is_refused_with_or_without_a_timestamp_to_correct(payload):
    with pytest.raises(EventRejected) as raised:
        corrected_timestamp(
            {**payload, "sentAt": 1.5e16}, "batch[2]", received_at=NOW, batch_sent_at=None
        )
    assert raised.value.problem.path == "batch[2].sentAt"


# --- decode_body and read_envelope ------------------------------------------------------------


def decode(raw: bytes, encoding: str = "") -> object:
    return decode_body(raw, content_encoding=encoding, max_bytes=1024)


def envelope_error(raw: bytes, encoding: str = "") -> tuple[int, str, str]:
    with pytest.raises(EnvelopeError) as raised:
        decode(raw, encoding)
    return raised.value.status, raised.value.problem.code, raised.value.problem.path


def test_decode_body_reads_plain_and_gzip_json():
    assert decode(b'{"a": 1}') == {"a": 1}
    assert decode(gzip.compress(b'{"a": 1}'), "gzip") == {"a": 1}
    assert decode(gzip.compress(b'{"a": 1}'), " Gzip ") == {"a": 1}


def test_decode_body_limits_and_encodings():
    assert envelope_error(b"x" * 10, "br") == (415, "unsupported_encoding", "Content-Encoding")
    assert envelope_error(gzip.compress(b" " * 1025), "gzip")[:2] == (413, "payload_too_large")
    assert envelope_error(b"\x1f\x8b nope", "gzip") == (400, "invalid_encoding", "body")
    assert envelope_error(b'{"a": NaN}') == (400, "invalid_json", "body")
    assert envelope_error(b"\xff\xfe{}") == (400, "invalid_json", "body")


def test_decode_body_caps_nesting():
    at_cap = b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH
    assert decode_body(at_cap, content_encoding="", max_bytes=10_000) is not None
    over = b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1)
    with pytest.raises(EnvelopeError):
        decode_body(over, content_encoding="", max_bytes=10_000)


def read(document, event_type=None):
    return read_envelope(document, event_type=event_type, **LIMITS)


def test_read_envelope_splits_a_batch_into_events_and_rejections():
    envelope = read(
        {
            "sentAt": "2024-06-01T12:00:05Z",
            "context": {"ip": "1"},
            "batch": [
                {"type": "track", "userId": "u", "event": "E", "timestamp": "2024-06-01T12:00:00Z"},
                {"type": "track", "userId": "u"},
            ],
        }
    )
    [event] = envelope.events
    assert (event.index, event.context, event.timestamp) == (
        0,
        {"ip": "1"},
        NOW - timedelta(seconds=5),
    )
    [rejection] = envelope.rejections
    assert (rejection.index, rejection.problem.path) == (1, "batch[1].event")
    assert json.loads(rejection.payload) == {"type": "track", "userId": "u", "context": {"ip": "1"}}


def test_read_envelope_rejects_a_too_deep_event_without_raising():
    deep = {"type": "track", "userId": "u", "event": "E", "properties": {"x": nested_list(5000)}}
    envelope = read({"batch": [deep, {"type": "track", "userId": "u", "event": "ok"}]})

    [rejection] = envelope.rejections
    assert (rejection.index, rejection.problem.code) == (0, "invalid_value")
    assert json.loads(rejection.payload)  # still JSON text for the FailedEvent row
    assert [e.name for e in envelope.events] == ["ok"]


def test_read_envelope_of_a_single_call():
    envelope = read({"userId": "u"}, event_type="track")
    assert envelope.events == []
    assert envelope.rejections[0].index is None


@pytest.mark.parametrize(
    ("document", "path"),
    [
        ([], "body"),
        ({}, "batch"),
        ({"batch": {}}, "batch"),
        ({"batch": [], "sentAt": "x"}, "sentAt"),
    ],
)
def test_read_envelope_rejects_a_malformed_envelope(document, path):
    with pytest.raises(EnvelopeError) as raised:
        read(document)
    assert (raised.value.status, raised.value.problem.path) == (400, path)


# --- properties: no input is a 5xx ------------------------------------------------------------

# Text with every code point, including NUL, control characters and lone surrogates.
any_text = st.text(st.characters(exclude_categories=()), max_size=20)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**200), max_value=2**200)
    | st.floats(allow_nan=False, allow_infinity=False)
    | any_text
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(any_text, children, max_size=4)
    ),
    max_leaves=20,
)


def nested_list(depth: int) -> list:
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


deep_values = st.integers(min_value=1, max_value=3000).map(nested_list)
id_values = st.one_of(any_text, st.integers(), st.none(), st.booleans(), json_values)
timestamps = st.one_of(
    st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat()),
    st.datetimes().map(lambda d: d.isoformat()),
    any_text,
    json_values,
)
# Payloads close to valid events, so that the properties exercise the deeper checks too.
event_like = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["track", "identify", "page", "screen", "alias", "group", "x"])
        | json_values,
        "userId": id_values,
        "anonymousId": id_values,
        "previousId": id_values,
        "groupId": id_values,
        "messageId": id_values,
        "event": any_text | json_values,
        "name": any_text | json_values,
        "properties": json_values | deep_values,
        "traits": json_values,
        "context": json_values,
        "integrations": json_values,
        "timestamp": timestamps,
        "originalTimestamp": timestamps,
        "sentAt": timestamps,
    },
)
documents = st.one_of(
    json_values,
    deep_values,
    event_like,
    st.fixed_dictionaries(
        {"batch": st.lists(event_like | json_values, max_size=5) | json_values},
        optional={"sentAt": timestamps, "context": json_values},
    ),
)


@settings(max_examples=300, deadline=None)
@given(document=documents, event_type=st.sampled_from([None, "track", "identify", "alias"]))
def test_read_envelope_only_ever_raises_envelope_errors(document, event_type):
    try:
        envelope = read(document, event_type)
    except EnvelopeError as error:
        assert 400 <= error.status < 500
        assert error.problem.code and error.problem.path
        return
    for rejection in envelope.rejections:
        assert rejection.problem.code and rejection.problem.path
        json.loads(rejection.payload)  # kept as JSON text for support staff
    for event in envelope.events:
        assert event.timestamp.tzinfo is not None
        assert event.timestamp - NOW <= timedelta(hours=24)
        assert event.user_id or event.anonymous_id


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=300), encoding=st.sampled_from(["", "gzip", "deflate", "identity"]))
def test_decode_body_only_ever_raises_envelope_errors(raw, encoding):
    try:
        decode(raw, encoding)
    except EnvelopeError as error:
        assert 400 <= error.status < 500
        assert error.problem.code and error.problem.path


def assert_well_formed(response) -> None:
    assert response.status_code < 500, response.content[:500]
    body = response.json()
    if response.status_code == 200:
        assert body["success"] is True or body["accepted"] > 0
        for rejection in body.get("rejected", []):
            assert rejection["code"] and rejection["path"]
    else:
        assert 400 <= response.status_code < 500
        assert body["error"]["code"] and body["error"]["path"]


HTTP = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def unlimited(settings):
    settings.ONRAMP_RATE_LIMIT_REQUESTS = 0


@HTTP
@given(document=documents, path=st.sampled_from(["/v1/batch", "/v1/track"]))
def test_any_json_posted_is_never_a_5xx(tracking, unlimited, document, path):
    try:
        body = json.dumps(document)
    except (ValueError, RecursionError):
        return  # not representable as JSON text: a client cannot send it either
    assert_well_formed(tracking.post(path, body))


@HTTP
@given(
    raw=st.binary(max_size=500) | st.binary(max_size=200).map(gzip.compress),
    path=st.sampled_from(["/v1/batch", "/v1/track", "/v1/identify"]),
    content_type=st.sampled_from(["application/json", "text/plain", "application/octet-stream"]),
    encoding=st.sampled_from(["", "gzip"]),
)
def test_any_bytes_posted_are_never_a_5xx(tracking, unlimited, raw, path, content_type, encoding):
    extra = {"HTTP_CONTENT_ENCODING": encoding} if encoding else {}
    assert_well_formed(tracking.post(path, raw, content_type=content_type, **extra))
