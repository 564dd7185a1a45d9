from celery import shared_task
from django.utils import timezone

from .models import Heartbeat


@shared_task(name="triggers.tasks.heartbeat")
def heartbeat() -> None:
    """Proves that beat schedules and a worker executes: ``/healthz`` reads the time."""
    Heartbeat.objects.update_or_create(name="worker", defaults={"beat_at": timezone.now()})
