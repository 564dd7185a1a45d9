"""Test settings: the same stack as local, with fast password hashing and a fixed secret."""

import os

# Metrics of a test run go to a folder of its own (removed at the end of the session by
# tests/conftest.py) unless the environment names one; processes a test starts inherit it.
_METRICS_DIR_GIVEN = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))

from .base import *  # noqa: E402, F403

DEBUG = False
SECRET_KEY = "onramp-test-secret-key-not-for-production-0123456789"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# Tests that start other processes (a Celery worker, gunicorn) need a database they can open too,
# so SQLite test databases are files, not in-memory: one per test run, so that runs in parallel
# (two checkouts, an editor's test runner) never share one. Subprocesses read the name from
# settings.DATABASES after pytest-django has switched to the test database.
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-{os.getpid()}.sqlite3")}  # noqa: F405

# Tasks queued by tests (``.delay()``) must not land in the folder a ``dev.py run`` worker reads.
if CELERY_BROKER_URL == "filesystem://":  # noqa: F405
    _test_broker = VAR_DIR / "test-broker"  # noqa: F405
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_test_broker / "queue"),
        "data_folder_out": str(_test_broker / "queue"),
        "processed_folder": str(_test_broker / "processed"),
        "control_folder": str(_test_broker / "control"),
        "store_processed": False,
    }
    for _folder in ("queue", "processed", "control"):
        (_test_broker / _folder).mkdir(parents=True, exist_ok=True)

# Login failures are counted in the cache, which is Redis in CI and outlives a test (and a run): a
# few wrong-password tests would lock the personas out of later ones. tests/security sets the
# production figures (5 per 15 minutes) on a cache of its own.
ONRAMP_LOGIN_MAX_FAILURES = 1000

if not _METRICS_DIR_GIVEN:
    PROMETHEUS_MULTIPROC_DIR = str(VAR_DIR / f"metrics-test-{os.getpid()}")  # noqa: F405
    Path(PROMETHEUS_MULTIPROC_DIR).mkdir(parents=True, exist_ok=True)  # noqa: F405
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = PROMETHEUS_MULTIPROC_DIR
