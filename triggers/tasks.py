"""Celery entry points: thin, ids and clocks in, services do the work."""

from celery import shared_task
from django.utils import timezone

from . import tasks_simulation  # noqa: F401  (registers the backtest task with the worker)
from .delivery.pipeline import deliver_due, deliver_message
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


@shared_task(name="triggers.tasks.deliver_due", acks_late=True)
def deliver_due_task() -> int:
    """Deliver what is due; several workers may run this at once (rows are claimed, not shared)."""
    return deliver_due().sent


@shared_task(name="triggers.tasks.deliver_message", acks_late=True)
def deliver_message_task(message_id: int) -> int:
    return deliver_message(message_id).sent
