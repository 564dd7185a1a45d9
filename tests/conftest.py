"""Shared fixtures: personas, a source with its write key, and service requirements.

Tests that need PostgreSQL or Redis are marked ``postgres`` / ``redis``. On a developer's laptop
without those services they skip with the reason; in CI (``CI`` set) they fail loudly instead.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.db import connection
from django.test import Client

from onboarding.services.sources import IssuedKey, source_create
from tests.requirements import missing
from tests.smtp import SmtpServer


def _redis_reachable() -> str | None:
    url = settings.REDIS_URL
    if not url:
        return "REDIS_URL is not set"
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.RedisError as error:
        return f"cannot reach {url}: {error}"
    return None


@pytest.fixture(autouse=True)
def _service_markers(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("postgres") and connection.vendor != "postgresql":
        missing("PostgreSQL", "set DATABASE_URL=postgres://…")
    if request.node.get_closest_marker("redis"):
        problem = _redis_reachable()
        if problem:
            missing("Redis", problem)


@pytest.fixture
def issued_key(db) -> IssuedKey:
    return source_create(name="web")


@pytest.fixture
def write_key(issued_key: IssuedKey) -> str:
    return issued_key.write_key


def basic_auth(key: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


@pytest.fixture
def api(write_key: str) -> Client:
    """A client that sends the write key as HTTP Basic auth, like Segment's libraries."""
    return Client(HTTP_AUTHORIZATION=basic_auth(write_key))


def _user(username: str, *groups: str | None, **extra) -> User:
    user = User.objects.create_user(username=username, password="pw-" + username, **extra)
    for group in filter(None, groups):
        if not Group.objects.filter(name=group).exists():
            # Transactional tests flush the groups that the migration installed.
            from django.apps import apps

            from dashboard.permissions import install_groups

            install_groups(apps)
        user.groups.add(Group.objects.get(name=group))
    return user


@pytest.fixture
def alice(db) -> User:
    """A growth marketer."""
    return _user("alice", "growth")


@pytest.fixture
def bob(db) -> User:
    """A support agent (admin access through the support group)."""
    return _user("bob", "support", is_staff=True)


@pytest.fixture
def vera(db) -> User:
    """A viewer: reads every growth page, changes nothing."""
    return _user("vera", "viewer")


@pytest.fixture
def owen(db) -> User:
    """An experiment owner: starts, stops and ships experiments; reads the growth pages."""
    return _user("owen", "experiment owner")


@pytest.fixture
def root(db) -> User:
    """A superuser."""
    return User.objects.create_superuser(username="root", password="pw-root")


@pytest.fixture
def charlie(db) -> User:
    """Logged in but in no group."""
    return _user("charlie", None)


@pytest.fixture
def other_write_key(db) -> str:
    """The write key of a second source, to show that keys and messageIds are per source."""
    return source_create(name="ios").write_key


class TrackingApi:
    """Posts JSON to the tracking API the way Segment's libraries do (Basic auth, JSON body)."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def post(self, path: str, payload, **extra):
        body = payload if isinstance(payload, bytes | str) else json.dumps(payload)
        extra.setdefault("content_type", "application/json")
        return self.client.post(path, body, **extra)


@pytest.fixture
def tracking(api: Client) -> TrackingApi:
    """``tracking.post("/v1/track", {...})`` with the ``write_key`` source's Basic auth."""
    return TrackingApi(api)


def run_at_once(work, count: int, *, timeout: float = 60) -> list[BaseException]:
    """Run ``work(index)`` in ``count`` threads released together; return what they raised.

    Each thread uses its own database connection (closed at the end), as separate processes
    would: for tests of what concurrent requests, ticks or dispatchers do on PostgreSQL.
    """
    import threading

    from django.db import connection

    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait(timeout=10)
            work(index)
        except BaseException as error:  # reported to the test
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
    return errors


@pytest.fixture
def smtp(settings):
    """A real SMTP server on loopback, and Django's SMTP backend pointed at it (plain, 5 s timeout).

    The fault tests override this with their recording server (tests/faults/conftest.py)."""
    with SmtpServer() as server:
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", server.port
        settings.EMAIL_USE_TLS, settings.EMAIL_TIMEOUT = False, 5
        yield server


@pytest.fixture(autouse=True)
def _fresh_workspace_policy() -> Iterator[None]:
    """The Settings page's policy is cached per process for a moment: a row one test saved (and
    rolled back) must not decide the next test's caps."""
    from triggers.workspace import clear_cache

    clear_cache()
    yield
    clear_cache()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remove this run's metrics folder (config/settings/test.py), unless the environment chose it."""
    import os
    import shutil
    from pathlib import Path

    folder = Path(getattr(settings, "PROMETHEUS_MULTIPROC_DIR", ""))
    if folder.name == f"metrics-test-{os.getpid()}":
        shutil.rmtree(folder, ignore_errors=True)
