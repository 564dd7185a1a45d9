"""Ingestion metrics in one process: what the docs promise about counting refusals."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import basic_auth

pytestmark = pytest.mark.django_db


def samples() -> dict:
    response = Client(REMOTE_ADDR="127.0.0.1").get("/metrics")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def delta(before: dict, after: dict, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def test_refusals_count_per_event_and_once_per_refused_request(write_key: str) -> None:
    api = Client(HTTP_AUTHORIZATION=basic_auth(write_key))
    stranger = Client(HTTP_AUTHORIZATION=basic_auth("onr_unknown"))
    before = samples()
    batch = {
        "batch": [
            {"type": "track", "userId": "u1", "event": "A", "messageId": "a"},
            {"type": "track", "userId": "u1", "messageId": "b"},
            {"type": "identify", "messageId": "c"},
        ]
    }
    response = api.post("/v1/batch", json.dumps(batch), content_type="application/json")
    assert response.status_code == 200
    codes = [r["code"] for r in response.json()["rejected"]]
    assert stranger.post("/v1/track", "{}", content_type="application/json").status_code == 401
    assert api.post("/v1/track", "{nope", content_type="application/json").status_code == 400
    after = samples()

    assert delta(before, after, "onramp_events_accepted_total", type="track") == 1
    for code in set(codes):
        expected = codes.count(code)
        assert delta(before, after, "onramp_events_rejected_total", code=code) == expected
    assert delta(before, after, "onramp_events_rejected_total", code="unauthorized") == 1
    assert delta(before, after, "onramp_events_rejected_total", code="invalid_json") == 1
    assert delta(before, after, "onramp_ingest_request_seconds_count", endpoint="batch") == 1
    assert delta(before, after, "onramp_ingest_request_seconds_count", endpoint="track") == 2
