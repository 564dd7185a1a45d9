"""Celery entry points: thin, ids and clocks in, services do the work."""

from celery import shared_task
from django.utils import timezone

from .delivery.pipeline import deliver_due
from .engine.evaluate import evaluate_rules
from .models import Heartbeat


@shared_task(name="triggers.tasks.heartbeat")
def heartbeat() -> None:
    """Proves that beat schedules and a worker executes: ``/healthz`` reads the time."""
    Heartbeat.objects.update_or_create(name="worker", defaults={"beat_at": timezone.now()})


@shared_task(name="triggers.tasks.evaluate_rules", acks_late=True)
def evaluate_rules_task() -> int:
    """One evaluation pass over the active rules; overlapping passes skip each other's rules.

    A pass that enrolled people rings the delivery doorbell at once, so a follow-up due now goes
    out in seconds instead of at the next scheduled delivery pass (up to 15 s later); the
    scheduled pass still picks up anything this misses (the ledger, not the queue, is the truth).
    """
    enrolled = evaluate_rules(now=timezone.now()).enrolled
    if enrolled:
        deliver_due_task.delay()
    return enrolled


@shared_task(name="triggers.tasks.deliver_due", acks_late=True)
def deliver_due_task() -> int:
    """Deliver what is due; several workers may run this at once (rows are claimed, not shared)."""
    return deliver_due().sent


@shared_task(name="triggers.tasks.run_backtest", acks_late=False)
def run_backtest_task(run_id: int) -> str:
    """A backtest requested from the rule editor; not acks_late: a backtest that crashed a worker
    is marked failed, not rerun forever. The service is imported here, when a backtest runs, so
    loading the worker's tasks does not load the simulation stack."""
    from triggers.services.backtests import backtest_execute

    return backtest_execute(run_id).status
