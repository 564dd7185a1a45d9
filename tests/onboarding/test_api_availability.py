"""DESIGN §3.1: 503 with Retry-After only when the database is unavailable, never a 500.

No mocks: the connection is really pointed at a database that cannot be opened.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client

from onboarding.models import Event

from ..conftest import basic_auth

TRACK = json.dumps({"userId": "u", "event": "E", "messageId": "m-1"})
BATCH = json.dumps({"batch": [{"type": "track", "userId": "u", "event": "E", "messageId": "m-2"}]})


@contextmanager
def database_down(tmp_path: Path) -> Iterator[None]:
    saved = dict(connection.settings_dict)
    connection.close()
    if connection.vendor == "postgresql":
        connection.settings_dict.update(HOST="127.0.0.1", PORT="1")  # nothing listens there
    else:
        connection.settings_dict["NAME"] = str(tmp_path / "no-such-dir" / "onramp.sqlite3")
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(saved)
        connection.ensure_connection()


def assert_unavailable(response) -> None:
    assert response.status_code == 503, response.content
    assert response["Retry-After"] == str(settings.ONRAMP_DB_UNAVAILABLE_RETRY_AFTER)
    assert int(response["Retry-After"]) > 0
    assert response["Access-Control-Allow-Origin"] == "*"
    body = response.json()
    assert body["success"] is False
    assert body["error"]["code"] == "database_unavailable"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("path", "body"), [("/v1/track", TRACK), ("/v1/batch", BATCH)])
def test_a_database_outage_is_a_503_and_the_retry_is_stored(write_key, tmp_path, path, body):
    client = Client(HTTP_AUTHORIZATION=basic_auth(write_key))

    with database_down(tmp_path):
        response = client.post(path, body, content_type="application/json")
    assert_unavailable(response)
    assert Event.objects.count() == 0

    # The client retries the same request once the database is back: stored once.
    assert client.post(path, body, content_type="application/json").status_code == 200
    assert client.post(path, body, content_type="application/json").status_code == 200
    assert Event.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_an_outage_is_a_503_even_when_the_body_is_invalid(write_key, tmp_path):
    client = Client(HTTP_AUTHORIZATION=basic_auth(write_key))
    with database_down(tmp_path):
        response = client.post("/v1/track", b"{not json", content_type="application/json")
    # The key cannot be checked without the database, so the client must retry later.
    assert_unavailable(response)


@pytest.mark.django_db(transaction=True)
def test_the_openapi_document_does_not_need_the_database(tmp_path):
    with database_down(tmp_path):
        response = Client().get("/v1/openapi.json")
    assert response.status_code == 200
