"""Settings from the environment: strict parsing, production refusing to start half-configured,
a clean deployment check, and ``/healthz``.

Settings modules are loaded in subprocesses: they run once per interpreter, at start-up.
"""

from __future__ import annotations

import os
import secrets
import string
import subprocess
import sys
from datetime import timedelta

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.test import Client
from django.utils import timezone

from config.celery import app as celery_app
from config.env import env_bool, env_int, env_list, env_required, env_str
from triggers.models import Heartbeat

PRODUCTION_HOST = "onramp.example.com"


def _secret_key() -> str:
    alphabet = string.ascii_letters + string.digits + "!@#%^&*(-_=+)"
    return "".join(secrets.choice(alphabet) for _ in range(50))


def _manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``manage.py ARGS`` in a fresh interpreter, without the DJANGO_* variables of this one."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=settings.BASE_DIR,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


# --- env parsing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["1", "true", "TRUE", "yes", "on", " On "])
def test_env_bool_accepts_true_spellings(monkeypatch, value):
    monkeypatch.setenv("ONRAMP_TEST_FLAG", value)
    assert env_bool("ONRAMP_TEST_FLAG", False) is True


@pytest.mark.parametrize("value", ["0", "false", "no", "off", ""])
def test_env_bool_accepts_false_spellings(monkeypatch, value):
    monkeypatch.setenv("ONRAMP_TEST_FLAG", value)
    assert env_bool("ONRAMP_TEST_FLAG", True) is False


def test_env_bool_uses_the_default_when_unset(monkeypatch):
    monkeypatch.delenv("ONRAMP_TEST_FLAG", raising=False)
    assert env_bool("ONRAMP_TEST_FLAG", True) is True


@pytest.mark.parametrize("value", ["ture", "2", "enabled", "y"])
def test_env_bool_refuses_anything_else_naming_the_variable(monkeypatch, value):
    monkeypatch.setenv("DJANGO_DEBUG", value)
    with pytest.raises(ImproperlyConfigured, match=r"DJANGO_DEBUG must be a boolean") as error:
        env_bool("DJANGO_DEBUG", False)
    assert repr(value) in str(error.value)


def test_env_int_refuses_a_non_integer_naming_the_variable(monkeypatch):
    monkeypatch.setenv("EMAIL_PORT", "twenty-five")
    with pytest.raises(ImproperlyConfigured, match="EMAIL_PORT must be an integer"):
        env_int("EMAIL_PORT", 25)


def test_env_int_parses_and_defaults(monkeypatch):
    monkeypatch.setenv("EMAIL_PORT", "587")
    assert env_int("EMAIL_PORT", 25) == 587
    monkeypatch.setenv("EMAIL_PORT", "")
    assert env_int("EMAIL_PORT", 25) == 25


def test_env_list_splits_on_commas_and_drops_blanks(monkeypatch):
    monkeypatch.setenv("DJANGO_ALLOWED_HOSTS", " a.example.com, ,b.example.com ")
    assert env_list("DJANGO_ALLOWED_HOSTS", []) == ["a.example.com", "b.example.com"]
    monkeypatch.delenv("DJANGO_ALLOWED_HOSTS")
    assert env_list("DJANGO_ALLOWED_HOSTS", ["localhost"]) == ["localhost"]


def test_env_str_and_env_required(monkeypatch):
    monkeypatch.delenv("DJANGO_SECRET_KEY", raising=False)
    assert env_str("DJANGO_SECRET_KEY", "fallback") == "fallback"
    with pytest.raises(ImproperlyConfigured, match="DJANGO_SECRET_KEY must be set"):
        env_required("DJANGO_SECRET_KEY")
    monkeypatch.setenv("DJANGO_SECRET_KEY", "")
    with pytest.raises(ImproperlyConfigured, match="DJANGO_SECRET_KEY must be set"):
        env_required("DJANGO_SECRET_KEY")


def test_a_bad_boolean_stops_start_up_naming_the_variable():
    result = _manage("check", DJANGO_SETTINGS_MODULE="config.settings.local", DJANGO_DEBUG="ture")
    assert result.returncode != 0
    assert "DJANGO_DEBUG must be a boolean" in result.stderr


def test_a_tracking_url_that_is_not_http_stops_start_up_naming_the_variable():
    result = _manage(
        "check", DJANGO_SETTINGS_MODULE="config.settings.local", ONRAMP_TRACKING_URL="t.example.com"
    )
    assert result.returncode != 0
    assert "ONRAMP_TRACKING_URL must be an http:// or https:// URL" in result.stderr


def test_a_metrics_folder_that_cannot_be_created_stops_start_up_naming_the_variable(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = _manage(
        "check",
        DJANGO_SETTINGS_MODULE="config.settings.local",
        PROMETHEUS_MULTIPROC_DIR=str(blocker / "metrics"),
    )
    assert result.returncode != 0
    assert "PROMETHEUS_MULTIPROC_DIR=" in result.stderr
    assert "must be a writable folder" in result.stderr


def test_an_unknown_log_format_stops_start_up_naming_the_variable():
    result = _manage(
        "check", DJANGO_SETTINGS_MODULE="config.settings.local", ONRAMP_LOG_FORMAT="xml"
    )
    assert result.returncode != 0
    assert "ONRAMP_LOG_FORMAT must be plain or json, not 'xml'" in result.stderr


# --- production settings -------------------------------------------------------------------------


def test_production_refuses_to_start_without_a_secret_key():
    result = _manage(
        "check",
        DJANGO_SETTINGS_MODULE="config.settings.production",
        DJANGO_ALLOWED_HOSTS=PRODUCTION_HOST,
    )
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY must be set" in result.stderr


def test_production_refuses_to_start_without_allowed_hosts():
    result = _manage(
        "check",
        DJANGO_SETTINGS_MODULE="config.settings.production",
        DJANGO_SECRET_KEY=_secret_key(),
    )
    assert result.returncode != 0
    assert "DJANGO_ALLOWED_HOSTS must be set" in result.stderr


def test_production_passes_the_deployment_checklist():
    result = _manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        DJANGO_SETTINGS_MODULE="config.settings.production",
        DJANGO_SECRET_KEY=_secret_key(),
        DJANGO_ALLOWED_HOSTS=PRODUCTION_HOST,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


# --- /healthz ------------------------------------------------------------------------------------


def test_healthz_reports_database_and_broker(db):
    response = Client().get("/healthz")

    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["ok"], body["database"], body["broker"]) == (True, "ok", "ok")
    assert body["worker"] == "unknown"  # no heartbeat yet


def test_healthz_reports_a_recent_worker_heartbeat(db):
    Heartbeat.objects.create(name="worker", beat_at=timezone.now() - timedelta(seconds=30))

    body = Client().get("/healthz").json()

    assert body["worker"] == "ok"
    assert "worker_last_seen" in body


def test_healthz_reports_a_stale_worker_heartbeat(db):
    Heartbeat.objects.create(name="worker", beat_at=timezone.now() - timedelta(hours=1))

    assert Client().get("/healthz").json()["worker"] == "stale"


def test_healthz_is_503_when_the_broker_is_unreachable(db, monkeypatch):
    unreachable = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    monkeypatch.setenv("CELERY_BROKER_URL", unreachable)  # Celery reads it before its settings
    monkeypatch.setitem(celery_app.conf, "broker_url", unreachable)

    response = Client().get("/healthz")

    assert response.status_code == 503
    body = response.json()
    assert body["database"] == "ok"
    assert body["broker"].startswith("down")
    assert body["ok"] is False
