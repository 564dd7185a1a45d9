"""Fixtures for the fault tests: the recording SMTP server, a cluster of Celery processes and a
private PostgreSQL server to restart."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from config.celery import app as celery_app
from tests.requirements import missing

from .harness import Cluster, SmtpRecorder, subprocess_env
from .postgres import PostgresUnavailable, ThrowawayPostgres


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[SmtpRecorder]:
    server = SmtpRecorder(tmp_path / "smtp-received.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def cluster(transactional_db, tmp_path: Path, smtp: SmtpRecorder) -> Iterator[Cluster]:
    """Workers and beats against the test database; all killed (whole sessions) afterwards."""
    if settings.CELERY_BROKER_URL.startswith("redis"):
        celery_app.control.purge()  # ticks left over by an earlier test
    started = Cluster(subprocess_env(tmp_path, smtp.port), tmp_path)
    try:
        yield started
    finally:
        started.stop_all()


@pytest.fixture
def private_postgres(tmp_path: Path) -> Iterator[ThrowawayPostgres]:
    """A throwaway PostgreSQL server of this test's own (never the machine's shared one), stopped
    and deleted afterwards whatever happens; its log is kept in ``tmp_path``. Missing server
    binaries skip the test on a laptop and fail it in CI."""
    try:
        server = ThrowawayPostgres()
    except PostgresUnavailable as error:
        missing(
            "A PostgreSQL server installation",
            str(error),
            "install postgresql in .ci/run",
        )
    try:
        server.start()
        yield server
    finally:
        server.destroy(keep_log=tmp_path / "postgres.log")
