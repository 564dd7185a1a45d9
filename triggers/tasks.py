"""Celery entry points: thin, ids and clocks in, services do the work."""

from celery import shared_task
from django.utils import timezone

from .engine.evaluate import evaluate_rules
from .models import Heartbeat


@shared_task(name="triggers.tasks.heartbeat")
def heartbeat() -> None:
    """Proves that beat schedules and a worker executes: ``/healthz`` reads the time."""
    Heartbeat.objects.update_or_create(name="worker", defaults={"beat_at": timezone.now()})


@shared_task(name="triggers.tasks.evaluate_rules", acks_late=True)
def evaluate_rules_task() -> int:
    """One evaluation pass over the active rules; overlapping passes skip each other's rules."""
    return evaluate_rules(now=timezone.now()).enrolled
