"""Who may read ``GET /metrics``: with ``ONRAMP_METRICS_TOKEN`` set, a matching bearer token;
without one, loopback clients only."""

from __future__ import annotations

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db

TOKEN = "s3cret-scrape-token"


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1"])
def test_without_a_token_loopback_clients_read_metrics(settings, address: str) -> None:
    settings.ONRAMP_METRICS_TOKEN = ""
    response = Client(REMOTE_ADDR=address).get("/metrics")
    assert response.status_code == 200
    assert b"# TYPE onramp_delivery_due gauge" in response.content
    assert b"onramp_delivery_due " in response.content


@pytest.mark.parametrize("address", ["10.0.0.7", "192.0.2.1", "2001:db8::1", ""])
def test_without_a_token_other_clients_are_refused(settings, address: str) -> None:
    settings.ONRAMP_METRICS_TOKEN = ""
    response = Client(REMOTE_ADDR=address).get("/metrics")
    assert response.status_code == 403
    assert b"onramp_" not in response.content


def test_with_a_token_the_bearer_token_is_required_even_on_loopback(settings) -> None:
    settings.ONRAMP_METRICS_TOKEN = TOKEN
    loopback = Client(REMOTE_ADDR="127.0.0.1")
    refused = loopback.get("/metrics")
    assert refused.status_code == 401
    assert refused["WWW-Authenticate"].startswith("Bearer")
    for header in (f"Bearer {TOKEN}x", "Bearer ", f"Basic {TOKEN}", TOKEN):
        assert loopback.get("/metrics", HTTP_AUTHORIZATION=header).status_code == 401, header


def test_with_a_token_any_client_holding_it_reads_metrics(settings) -> None:
    settings.ONRAMP_METRICS_TOKEN = TOKEN
    remote = Client(REMOTE_ADDR="203.0.113.9", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    response = remote.get("/metrics")
    assert response.status_code == 200
    assert b"onramp_review_queue " in response.content


def test_metrics_answer_get_only(settings) -> None:
    settings.ONRAMP_METRICS_TOKEN = ""
    assert Client(REMOTE_ADDR="127.0.0.1").post("/metrics").status_code == 405


def test_dev_run_starts_with_an_empty_metrics_folder(tmp_path) -> None:
    import importlib.util

    from django.conf import settings

    spec = importlib.util.spec_from_file_location("dev", settings.BASE_DIR / "dev.py")
    dev = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dev)
    default = tmp_path / "var" / "metrics"
    chosen = tmp_path / "chosen"
    for folder in (default, chosen):
        folder.mkdir(parents=True)
        (folder / "counter_123.db").write_bytes(b"x")
        (folder / "keep.txt").write_text("not a metrics file")
    dev.reset_metrics({"ONRAMP_VAR_DIR": str(tmp_path / "var")})
    assert sorted(p.name for p in default.iterdir()) == ["keep.txt"]
    dev.reset_metrics({"PROMETHEUS_MULTIPROC_DIR": str(chosen)})
    assert sorted(p.name for p in chosen.iterdir()) == ["keep.txt"]
