"""Read-only queries behind the dashboard pages."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db import DatabaseError, connection
from django.utils import timezone

from config.celery import app as celery_app
from triggers.models import Heartbeat

HEARTBEAT_STALE_AFTER = timedelta(minutes=2)


def service_health() -> dict[str, Any]:
    """Database and broker reachability, and whether the worker has run the heartbeat lately."""
    result: dict[str, Any] = {"database": "ok", "broker": "ok", "worker": "unknown"}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        beat = Heartbeat.objects.filter(name="worker").values_list("beat_at", flat=True).first()
        if beat is not None:
            stale = timezone.now() - beat > HEARTBEAT_STALE_AFTER
            result["worker"] = "stale" if stale else "ok"
            result["worker_last_seen"] = beat.isoformat()
    except DatabaseError as error:
        result["database"] = f"down: {error.__class__.__name__}"
    try:
        with celery_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
    except Exception as error:  # any broker failure is reported, not raised
        result["broker"] = f"down: {error.__class__.__name__}"
    result["ok"] = result["database"] == "ok" and result["broker"] == "ok"
    return result
