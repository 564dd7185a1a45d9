"""DESIGN §3.1: 32 KB per event, 512 KB per request (after gzip, capped), rate limit per write key."""

from __future__ import annotations

import gzip
import json
import time
import tracemalloc
import uuid
import zlib
from datetime import UTC, datetime

import pytest
import time_machine
from django.test import Client

from onboarding.models import Event, FailedEvent
from onboarding.tracking.envelope import decode_body
from onboarding.tracking.errors import EnvelopeError

from ..conftest import basic_auth

EVENT_LIMIT = 32 * 1024
BODY_LIMIT = 512 * 1024


def stored_size(payload: dict) -> int:
    return len(json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode())


def event_of_size(size: int, *, pad_char: str = "x", **fields) -> dict:
    """A track event whose stored JSON is exactly ``size`` bytes."""
    payload = {"userId": "u", "event": "Big", **fields, "properties": {"pad": ""}}
    missing = size - stored_size(payload)
    width = len(pad_char.encode())
    assert missing % width == 0, "pick a size the pad character divides"
    payload["properties"]["pad"] = pad_char * (missing // width)
    assert stored_size(payload) == size
    return payload


def assert_problem(response, status: int, code: str, path: str) -> None:
    assert response.status_code == status, response.content[:300]
    error = response.json()["error"]
    assert (error["code"], error["path"]) == (code, path)


# --- 32 KB per event --------------------------------------------------------------------------


def test_an_event_of_exactly_32_kb_is_accepted(tracking):
    assert tracking.post("/v1/track", event_of_size(EVENT_LIMIT)).status_code == 200
    assert Event.objects.count() == 1


def test_an_event_over_32_kb_is_rejected(tracking):
    response = tracking.post("/v1/track", event_of_size(EVENT_LIMIT + 1))

    assert_problem(response, 400, "event_too_large", "body")
    assert Event.objects.count() == 0
    assert FailedEvent.objects.get().code == "event_too_large"


def test_the_event_limit_counts_utf8_bytes_not_characters(tracking):
    # 2-byte characters: under 32 K characters but over 32 KB.
    payload = event_of_size(EVENT_LIMIT + 2, pad_char="é")
    assert len(json.dumps(payload, ensure_ascii=False)) < EVENT_LIMIT
    assert_problem(tracking.post("/v1/track", payload), 400, "event_too_large", "body")


def test_an_oversized_event_in_a_batch_is_rejected_alone(tracking):
    small = {"type": "track", "userId": "u", "event": "Small"}
    big = event_of_size(EVENT_LIMIT + 1, type="track")
    response = tracking.post("/v1/batch", {"batch": [small, big, small | {"event": "Also"}]})

    assert response.status_code == 200
    assert response.json()["rejected"] == [
        {
            "index": 1,
            "code": "event_too_large",
            "path": "batch[1]",
            "message": response.json()["rejected"][0]["message"],
        }
    ]
    assert sorted(Event.objects.values_list("name", flat=True)) == ["Also", "Small"]


# --- 512 KB per request -----------------------------------------------------------------------


def batch_body(total: int) -> bytes:
    """A valid batch padded with trailing whitespace to exactly ``total`` bytes."""
    events = [event_of_size(30_000, type="track", messageId=f"m{i}") for i in range(16)]
    text = json.dumps({"batch": events}).encode()
    assert len(text) <= total
    return text + b" " * (total - len(text))


def test_a_body_of_exactly_512_kb_is_accepted(tracking):
    response = tracking.post("/v1/batch", batch_body(BODY_LIMIT))
    assert response.status_code == 200, response.content[:300]
    assert Event.objects.count() == 16


def test_a_body_over_512_kb_is_a_413(tracking):
    response = tracking.post("/v1/batch", batch_body(BODY_LIMIT + 1))
    assert_problem(response, 413, "payload_too_large", "body")
    assert Event.objects.count() == 0


def test_a_much_larger_body_is_a_413_without_reading_it_all(tracking):
    body = b"[" + b" " * (20 * BODY_LIMIT) + b"]"
    assert_problem(tracking.post("/v1/batch", body), 413, "payload_too_large", "body")


def test_an_oversized_body_without_a_key_is_a_401(db):
    response = Client().post(
        "/v1/batch", batch_body(BODY_LIMIT + 1), content_type="application/json"
    )
    assert response.status_code == 401


# --- gzip -------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["gzip", "x-gzip", "GZIP"])
def test_a_gzip_body_is_accepted(tracking, encoding):
    batch = {"batch": [{"type": "track", "userId": "u", "event": f"E{i}"} for i in range(50)]}
    body = gzip.compress(json.dumps(batch).encode())

    response = tracking.post("/v1/batch", body, HTTP_CONTENT_ENCODING=encoding)

    assert response.status_code == 200, response.content
    assert Event.objects.count() == 50


def test_a_deflate_body_is_accepted(tracking):
    body = zlib.compress(json.dumps({"userId": "u", "event": "Zipped"}).encode())
    assert tracking.post("/v1/track", body, HTTP_CONTENT_ENCODING="deflate").status_code == 200
    assert Event.objects.get().name == "Zipped"


def test_the_512_kb_limit_applies_after_decompression(tracking):
    exact = gzip.compress(batch_body(BODY_LIMIT))
    over = gzip.compress(batch_body(BODY_LIMIT + 1))
    assert len(over) < BODY_LIMIT // 10  # small on the wire

    assert tracking.post("/v1/batch", exact, HTTP_CONTENT_ENCODING="gzip").status_code == 200
    response = tracking.post("/v1/batch", over, HTTP_CONTENT_ENCODING="gzip")
    assert_problem(response, 413, "payload_too_large", "body")


@pytest.fixture(scope="module")
def gzip_bomb() -> bytes:
    """About 100 KB on the wire, 200 MB when decompressed."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = b" " * (1 << 20)
    parts = [compressor.compress(b'{"batch": [')]
    parts.extend(compressor.compress(chunk) for _ in range(200))
    parts.append(compressor.compress(b"]}") + compressor.flush())
    return b"".join(parts)


def test_a_gzip_bomb_is_a_413_quickly(tracking, gzip_bomb):
    assert len(gzip_bomb) < BODY_LIMIT
    started = time.perf_counter()
    response = tracking.post("/v1/batch", gzip_bomb, HTTP_CONTENT_ENCODING="gzip")
    elapsed = time.perf_counter() - started

    assert_problem(response, 413, "payload_too_large", "body")
    # Inflating all 200 MB takes well over a second; stopping at the cap takes milliseconds.
    assert elapsed < 0.5


def test_a_gzip_bomb_is_never_inflated_in_memory(gzip_bomb):
    tracemalloc.start()
    try:
        with pytest.raises(EnvelopeError) as raised:
            decode_body(gzip_bomb, content_encoding="gzip", max_bytes=BODY_LIMIT)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert raised.value.status == 413
    assert peak < 4 * BODY_LIMIT  # 2 MB, against 200 MB if it were inflated


@pytest.mark.parametrize(
    "body",
    [
        b"this is not gzip",
        b"\x1f\x8b\x08\x00garbage-after-a-gzip-magic",
        gzip.compress(json.dumps({"userId": "u", "event": "E"}).encode())[:-8],  # no trailer
        gzip.compress(json.dumps({"userId": "u", "event": "E"}).encode())[:20],
    ],
    ids=["plain", "bad-deflate", "truncated-trailer", "truncated"],
)
def test_invalid_gzip_is_a_400(tracking, body):
    response = tracking.post("/v1/track", body, HTTP_CONTENT_ENCODING="gzip")
    assert_problem(response, 400, "invalid_encoding", "body")
    assert Event.objects.count() == 0


# --- rate limit per write key -----------------------------------------------------------------

WINDOW_START = datetime(2024, 6, 1, 12, 0, 0, tzinfo=UTC)


def burst(client: Client, count: int) -> list:
    body = json.dumps({"userId": "u", "event": "E"})
    return [client.post("/v1/track", body, content_type="application/json") for _ in range(count)]


def assert_rate_limit(write_key: str, other_write_key: str) -> None:
    client = Client(HTTP_AUTHORIZATION=basic_auth(write_key))
    with time_machine.travel(WINDOW_START.replace(second=15), tick=False) as traveller:
        first, second, third = burst(client, 3)
        assert first.status_code == second.status_code == 200
        assert third.status_code == 429
        assert third["Retry-After"] == "45"  # the rest of the 60-second window
        assert third.json()["error"]["code"] == "rate_limited"
        assert Event.objects.count() == 2  # the refused request stored nothing

        # Another write key has its own budget.
        assert (
            burst(Client(HTTP_AUTHORIZATION=basic_auth(other_write_key)), 1)[0].status_code == 200
        )

        traveller.move_to(WINDOW_START.replace(minute=1))
        assert burst(client, 1)[0].status_code == 200


@pytest.fixture
def small_rate_limit(settings):
    settings.ONRAMP_RATE_LIMIT_REQUESTS = 2
    settings.ONRAMP_RATE_LIMIT_WINDOW = 60


def test_over_the_limit_is_a_429_with_retry_after_locmem(
    settings, small_rate_limit, write_key, other_write_key
):
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": f"rate-{uuid.uuid4()}",
        }
    }
    assert_rate_limit(write_key, other_write_key)


@pytest.mark.redis
def test_over_the_limit_is_a_429_with_retry_after_redis(
    settings, small_rate_limit, write_key, other_write_key
):
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": settings.REDIS_URL,
            "KEY_PREFIX": f"test-{uuid.uuid4()}",
        }
    }
    assert_rate_limit(write_key, other_write_key)


def test_an_unreachable_cache_lets_requests_through(settings, small_rate_limit, tracking):
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        }
    }
    responses = [tracking.post("/v1/track", {"userId": "u", "event": "E"}) for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 200]
