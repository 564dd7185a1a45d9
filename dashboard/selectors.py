"""Read-only queries behind the dashboard pages."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import DatabaseError, connection
from django.db.models import Count
from django.db.models.functions import Trunc
from django.utils import timezone

from config.celery import app as celery_app
from onboarding.models import Event, FailedEvent, Person
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


@dataclass(frozen=True, slots=True)
class OverviewTotals:
    events_24h: int
    people: int
    identified_people: int
    failed_events_24h: int

    @property
    def identified_share(self) -> float | None:
        """Identified people as a fraction of all people; None when there is nobody yet."""
        return self.identified_people / self.people if self.people else None


def overview_totals(*, now: datetime) -> OverviewTotals:
    """The headline numbers of the overview page, in three aggregate queries."""
    since = now - timedelta(hours=24)
    people = Person.objects.aggregate(total=Count("id"), identified=Count("external_id"))
    return OverviewTotals(
        events_24h=Event.objects.filter(timestamp__gte=since, timestamp__lte=now).count(),
        people=people["total"],
        identified_people=people["identified"],
        failed_events_24h=FailedEvent.objects.filter(received_at__gte=since).count(),
    )


@dataclass(frozen=True, slots=True)
class HourlyCount:
    hour: datetime
    type: str
    name: str
    count: int


def events_per_hour(*, start: datetime, end: datetime) -> list[HourlyCount]:
    """Events per UTC hour, event type and name with ``start <= timestamp < end``; one grouped query.

    ``Trunc`` is portable: ``date_trunc`` on PostgreSQL, Django's own function on SQLite.
    """
    rows = (
        Event.objects.filter(timestamp__gte=start, timestamp__lt=end)
        .annotate(hour=Trunc("timestamp", "hour", tzinfo=UTC))
        .values("hour", "type", "name")
        .annotate(count=Count("id"))
        .order_by("hour", "type", "name")
    )
    return [HourlyCount(r["hour"], r["type"], r["name"], r["count"]) for r in rows]


def latest_events(*, limit: int = 15) -> list[Event]:
    """The most recently received events with their person, newest first.

    A batch arrives at one instant, so within it the later event (by its own time) comes first.
    """
    newest_first = ("-received_at", "-timestamp", "-id")
    return list(Event.objects.select_related("person").order_by(*newest_first)[:limit])


def known_event_names(*, now: datetime, days: int = 30, limit: int = 200) -> list[str]:
    """Event names seen recently, most frequent first: the suggestions of every event-name field
    (the rule editor's trigger, the segment editor's behaviour conditions), shown by
    ``dashboard/_event_names.html``."""
    return list(
        Event.objects.filter(received_at__gte=now - timedelta(days=days))
        .exclude(name="")
        .order_by()
        .values("name")
        .annotate(n=Count("id"))
        .order_by("-n", "name")
        .values_list("name", flat=True)[:limit]
    )
