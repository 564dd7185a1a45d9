"""DESIGN §3.1 and §6: write-key auth (Basic or ``writeKey``), 401s, hashed keys, no cookie auth."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.test import Client

from onboarding.models import Event, FailedEvent, Source
from onboarding.services.sources import source_create, source_for_write_key, source_rotate

from ..conftest import basic_auth

TRACK = {"userId": "u-1", "event": "Signed Up"}


def post(client: Client, payload, path: str = "/v1/track", **extra):
    body = payload if isinstance(payload, bytes | str) else json.dumps(payload)
    return client.post(
        path, body, content_type=extra.pop("content_type", "application/json"), **extra
    )


def assert_unauthorized(response) -> None:
    assert response.status_code == 401, response.content
    assert response.json()["error"]["code"] == "unauthorized"
    assert response.json()["error"]["path"] == "writeKey"
    assert response["WWW-Authenticate"].startswith("Basic")


def test_basic_auth_with_the_write_key_as_user_name(write_key):
    response = post(Client(HTTP_AUTHORIZATION=basic_auth(write_key)), TRACK)
    assert response.status_code == 200
    assert Event.objects.count() == 1


def test_write_key_in_the_body(write_key):
    response = post(Client(), {**TRACK, "writeKey": write_key})
    assert response.status_code == 200
    assert Event.objects.count() == 1


def test_write_key_in_a_batch_body(write_key):
    body = {"writeKey": write_key, "batch": [{"type": "track", **TRACK}]}
    assert post(Client(), body, "/v1/batch").status_code == 200
    assert Event.objects.count() == 1


@pytest.mark.parametrize(
    "path", ["/v1/track", "/v1/identify", "/v1/page", "/v1/screen", "/v1/batch", "/v1/import"]
)
def test_a_missing_key_is_a_401_on_every_endpoint(db, path):
    body = {"batch": [{"type": "track", **TRACK}]} if path in ("/v1/batch", "/v1/import") else TRACK
    assert_unauthorized(post(Client(), body, path))
    assert Event.objects.count() == 0
    assert FailedEvent.objects.count() == 0


@pytest.mark.parametrize(
    "authorization",
    [
        basic_auth("onr_not-a-real-key"),
        "Basic !!!not-base64!!!",
        "Basic " + base64.b64encode(b"\xff\xfe:").decode(),  # not UTF-8
        "Basic ",
        "Bearer something",
    ],
)
def test_an_unknown_or_malformed_basic_key_is_a_401(write_key, authorization):
    assert_unauthorized(post(Client(HTTP_AUTHORIZATION=authorization), TRACK))
    assert Event.objects.count() == 0


def test_an_unknown_body_key_is_a_401(write_key):
    assert_unauthorized(post(Client(), {**TRACK, "writeKey": write_key + "x"}))
    assert_unauthorized(post(Client(), {**TRACK, "writeKey": 12345}))


def test_the_key_is_the_user_name_not_the_password(write_key):
    header = "Basic " + base64.b64encode(f":{write_key}".encode()).decode()
    assert_unauthorized(post(Client(HTTP_AUTHORIZATION=header), TRACK))


def test_a_password_after_the_key_is_ignored(write_key):
    header = "Basic " + base64.b64encode(f"{write_key}:anything".encode()).decode()
    assert post(Client(HTTP_AUTHORIZATION=header), TRACK).status_code == 200


def test_an_inactive_source_is_a_401(issued_key):
    Source.objects.filter(pk=issued_key.source.pk).update(is_active=False)
    assert_unauthorized(post(Client(HTTP_AUTHORIZATION=basic_auth(issued_key.write_key)), TRACK))
    assert Event.objects.count() == 0


def test_a_rotated_key_stops_working_and_the_new_one_works(issued_key):
    new = source_rotate(name="web")

    assert_unauthorized(post(Client(HTTP_AUTHORIZATION=basic_auth(issued_key.write_key)), TRACK))
    assert post(Client(HTTP_AUTHORIZATION=basic_auth(new.write_key)), TRACK).status_code == 200


def test_a_rotated_key_with_grace_works_until_the_grace_period_ends(db):
    start = datetime(2024, 5, 1, 12, tzinfo=UTC)
    with time_machine.travel(start, tick=False) as traveller:
        old = source_create(name="web").write_key
        new = source_rotate(name="web", grace=timedelta(hours=1)).write_key
        old_client = Client(HTTP_AUTHORIZATION=basic_auth(old))
        assert post(old_client, TRACK).status_code == 200
        assert post(Client(HTTP_AUTHORIZATION=basic_auth(new)), TRACK).status_code == 200

        traveller.shift(timedelta(hours=1, seconds=1))
        assert_unauthorized(post(old_client, TRACK))
        assert post(Client(HTTP_AUTHORIZATION=basic_auth(new)), TRACK).status_code == 200


def test_write_keys_are_stored_only_as_sha256_hashes(issued_key):
    source = Source.objects.get()
    stored = [str(getattr(source, f.attname)) for f in Source._meta.concrete_fields]

    assert source.write_key_hash == hashlib.sha256(issued_key.write_key.encode()).hexdigest()
    assert all(issued_key.write_key not in value for value in stored)
    # The prefix helps tell keys apart but is far too short to authenticate with.
    assert len(source.write_key_prefix) <= 12
    assert source_for_write_key(source.write_key_prefix) is None
    assert source_for_write_key(source.write_key_hash) is None


def test_a_bad_body_without_a_key_is_a_401_not_a_400(db):
    assert_unauthorized(post(Client(), b"{not json"))


def test_a_bad_body_with_a_key_is_a_400(write_key):
    response = post(Client(HTTP_AUTHORIZATION=basic_auth(write_key)), b"{not json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"


# --- no cookie auth (DESIGN §6) ---------------------------------------------------------------


def test_a_logged_in_session_without_a_key_is_a_401(charlie):
    client = Client()
    client.force_login(charlie)
    assert client.cookies  # the session cookie is sent with the request

    assert_unauthorized(post(client, TRACK))
    assert Event.objects.count() == 0


def test_a_staff_session_is_not_a_write_key_either(bob):
    client = Client()
    client.force_login(bob)
    assert_unauthorized(post(client, {"batch": [{"type": "track", **TRACK}]}, "/v1/batch"))


def test_the_api_needs_no_csrf_token(write_key, charlie):
    client = Client(enforce_csrf_checks=True, HTTP_AUTHORIZATION=basic_auth(write_key))
    client.force_login(charlie)
    assert post(client, TRACK).status_code == 200
