"""DESIGN §3.1, browsers: the settings document analytics.js loads from
``/v1/projects/<writeKey>/settings``, and the one-letter paths it then posts to.

tests/browser/test_analytics_js.py runs the real library against all of this; these tests pin
each answer down on its own.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.test import Client

from onboarding.models import Event, Source
from onboarding.services.sources import source_create, source_rotate

ORIGIN = "http://app.example.com"


def settings_url(key: str) -> str:
    return f"/v1/projects/{key}/settings"


def test_the_settings_point_analytics_js_at_the_host_it_was_loaded_from(write_key):
    response = Client().get(settings_url(write_key), HTTP_ORIGIN=ORIGIN)

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    document = response.json()
    assert document["integrations"] == {
        "Segment.io": {
            "apiKey": write_key,
            "apiHost": "testserver/v1",
            "protocol": "http",
            "unbundledIntegrations": [],
            "addBundledMetadata": True,
            "maybeBundledConfigIds": {},
        }
    }
    # The library's remote metrics would go to api.segment.io: off, and pointed here anyway.
    assert document["metrics"] == {"sampleRate": 0, "host": "testserver/v1"}
    assert document["remotePlugins"] == [] and document["enabledMiddleware"] == {}
    assert response["Access-Control-Allow-Origin"] == "*"


def test_behind_a_tls_proxy_the_protocol_is_https(write_key, settings):
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.ALLOWED_HOSTS = ["onramp.example.com"]

    response = Client().get(
        settings_url(write_key),
        HTTP_HOST="onramp.example.com",
        HTTP_X_FORWARDED_PROTO="https",
    )

    segment = response.json()["integrations"]["Segment.io"]
    assert (segment["protocol"], segment["apiHost"]) == ("https", "onramp.example.com/v1")


@pytest.mark.parametrize(
    ("url", "protocol", "api_host"),
    [
        ("https://t.example.com", "https", "t.example.com/v1"),
        ("https://example.com/onramp/", "https", "example.com/onramp/v1"),
        ("http://127.0.0.1:8080", "http", "127.0.0.1:8080/v1"),
    ],
)
def test_onramp_tracking_url_wins_over_the_request(write_key, settings, url, protocol, api_host):
    settings.ONRAMP_TRACKING_URL = url

    document = Client().get(settings_url(write_key)).json()

    segment = document["integrations"]["Segment.io"]
    assert (segment["protocol"], segment["apiHost"]) == (protocol, api_host)
    assert document["metrics"]["host"] == api_host


def test_the_settings_are_cacheable_and_revalidate_with_their_etag(write_key):
    client = Client()
    first = client.get(settings_url(write_key))

    cache_control = {part.strip() for part in first["Cache-Control"].split(",")}
    assert cache_control == {"public", "max-age=300"}
    assert first["ETag"].startswith('"') and len(first["ETag"]) > 10

    again = client.get(settings_url(write_key), HTTP_IF_NONE_MATCH=first["ETag"])
    assert again.status_code == 304 and again.content == b""
    assert again["ETag"] == first["ETag"]
    stale = client.get(settings_url(write_key), HTTP_IF_NONE_MATCH='"something-else"')
    assert stale.status_code == 200 and stale.content == first.content


def test_a_head_request_and_a_preflight_are_answered(write_key):
    head = Client().head(settings_url(write_key))
    preflight = Client().options(
        settings_url(write_key), HTTP_ORIGIN=ORIGIN, HTTP_ACCESS_CONTROL_REQUEST_METHOD="GET"
    )

    assert head.status_code == 200
    assert preflight.status_code == 204
    assert preflight["Access-Control-Allow-Origin"] == "*"
    assert Client().post(settings_url(write_key)).status_code == 405


def test_unknown_rotated_and_inactive_keys_get_the_same_404(write_key, issued_key):
    rotated_out = write_key
    current = source_rotate(name=issued_key.source.name).write_key
    inactive = source_create(name="retired").write_key
    Source.objects.filter(name="retired").update(is_active=False)

    answers = [
        Client().get(settings_url(key), HTTP_ORIGIN=ORIGIN)
        for key in ("onr_nothing-like-a-key", rotated_out, inactive, "x" * 300, "%00")
    ]

    for response in answers:
        assert response.status_code == 404
        assert response.json() == {
            "success": False,
            "error": {
                "code": "not_found",
                "path": "writeKey",
                "message": "no active source has this write key",
            },
        }
        assert "no-store" in response["Cache-Control"]
        assert "ETag" not in response
        assert response["Access-Control-Allow-Origin"] == "*"
    assert Client().get(settings_url(current)).status_code == 200


def test_a_rotated_key_in_its_grace_period_still_gets_settings(write_key, issued_key):
    source_rotate(name=issued_key.source.name, grace=timedelta(hours=1))

    response = Client().get(settings_url(write_key))

    assert response.status_code == 200
    assert response.json()["integrations"]["Segment.io"]["apiKey"] == write_key


# analytics.js posts {protocol}://{apiHost}/{first letter of the type}, JSON as text/plain, with the
# key both in the body and as Basic auth.
@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("t", {"type": "track", "event": "Signed Up"}),
        ("i", {"type": "identify", "traits": {"email": "ada@example.com"}}),
        ("p", {"type": "page", "name": "Home", "properties": {"path": "/"}}),
        ("s", {"type": "screen", "name": "Home"}),
        ("a", {"type": "alias", "previousId": "legacy-7", "userId": "u1"}),
        ("g", {"type": "group", "groupId": "acme"}),
    ],
)
def test_the_one_letter_paths_store_the_message_once(write_key, path, message):
    body = json.dumps(
        {
            "anonymousId": "a-1",
            "messageId": f"ajs-next-{path}",
            "timestamp": "2026-12-01T10:00:00.000Z",
            "sentAt": "2026-12-01T10:00:00.120Z",
            "writeKey": write_key,
            "_metadata": {"bundled": ["Segment.io"], "unbundled": [], "bundledIds": []},
            **message,
        }
    )
    client = Client()
    answers = [
        client.post(f"/v1/{path}", body, content_type="text/plain", HTTP_X_RETRY_COUNT=str(n))
        for n in (0, 1)
    ]

    assert [a.status_code for a in answers] == [200, 200], answers[0].content
    stored = Event.objects.get()
    assert (stored.type, stored.message_id) == (message["type"], f"ajs-next-{path}")


def test_the_batching_path_stores_each_message_once(write_key):
    body = json.dumps(
        {
            "writeKey": write_key,
            "sentAt": "2026-12-01T10:00:05.000Z",
            "batch": [
                {"type": "track", "event": "A", "anonymousId": "a-1", "messageId": "m-1"},
                {"type": "page", "name": "Home", "anonymousId": "a-1", "messageId": "m-2"},
            ],
        }
    )

    for _ in range(2):  # a retry of a batch whose answer was lost
        response = Client().post("/v1/b", body, content_type="text/plain")
        assert response.json() == {"success": True}
    assert sorted(Event.objects.values_list("message_id", flat=True)) == ["m-1", "m-2"]


def test_a_retry_may_carry_analytics_js_retry_count_header(db):
    response = Client().options(
        "/v1/t",
        HTTP_ORIGIN=ORIGIN,
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization, x-retry-count",
    )

    allowed = {h.strip().lower() for h in response["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "x-retry-count"} <= allowed
