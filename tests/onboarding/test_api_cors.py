"""DESIGN §3.1: browsers may call the tracking API from any origin, with analytics.js's text/plain."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from onboarding.models import Event

ENDPOINTS = ["track", "identify", "page", "screen", "alias", "group", "batch", "import"]
ORIGIN = "https://app.example.com"


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_a_preflight_is_answered_for_any_origin(db, endpoint):
    response = Client().options(
        f"/v1/{endpoint}",
        HTTP_ORIGIN=ORIGIN,
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization, content-type",
    )

    assert response.status_code == 204
    assert response["Access-Control-Allow-Origin"] == "*"
    assert "POST" in response["Access-Control-Allow-Methods"]
    allowed = {h.strip().lower() for h in response["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type", "content-encoding"} <= allowed
    assert int(response["Access-Control-Max-Age"]) > 0
    # Write keys are not cookies: credentials are never allowed.
    assert "Access-Control-Allow-Credentials" not in response
    assert Event.objects.count() == 0


def test_responses_carry_the_allow_origin_header(tracking, db):
    ok = tracking.post("/v1/track", {"userId": "u", "event": "E"}, HTTP_ORIGIN=ORIGIN)
    bad = tracking.post("/v1/track", {"userId": "u"}, HTTP_ORIGIN=ORIGIN)
    unauthorized = Client().post("/v1/track", "{}", content_type="application/json")

    assert (ok.status_code, bad.status_code, unauthorized.status_code) == (200, 400, 401)
    for response in (ok, bad, unauthorized):
        assert response["Access-Control-Allow-Origin"] == "*"


def test_pages_outside_the_api_get_no_cors_headers(db):
    assert "Access-Control-Allow-Origin" not in Client().get("/healthz")


def test_a_text_plain_body_is_read_as_json(write_key):
    # analytics.js sends text/plain to avoid a preflight, with the key in the body.
    body = json.dumps({"writeKey": write_key, "anonymousId": "a-1", "name": "Home"})
    response = Client().post("/v1/page", body, content_type="text/plain;charset=UTF-8")

    assert response.status_code == 200, response.content
    assert Event.objects.get().name == "Home"


def test_a_form_content_type_is_still_read_as_json(write_key):
    body = json.dumps(
        {"writeKey": write_key, "batch": [{"type": "track", "userId": "u", "event": "E"}]}
    )
    response = Client().post("/v1/batch", body, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 200
    assert Event.objects.count() == 1


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("method", ["get", "put", "patch", "delete"])
def test_other_methods_are_a_405(tracking, endpoint, method):
    response = getattr(tracking.client, method)(f"/v1/{endpoint}")
    assert response.status_code == 405
    assert "POST" in response["Allow"]


def test_posting_to_the_openapi_document_is_a_405(tracking):
    assert (
        tracking.client.post("/v1/openapi.json", "{}", content_type="application/json").status_code
        == 405
    )
