"""Fixtures for the fault tests: the recording SMTP server and a cluster of Celery processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from config.celery import app as celery_app

from .harness import Cluster, SmtpRecorder, subprocess_env


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
