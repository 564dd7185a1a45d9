"""Celery entry points of the dashboard: thin, a clock in, the roll-up service does the work."""

from celery import shared_task
from django.utils import timezone

from .kpis import rollup_recent


@shared_task(name="dashboard.tasks.rollup_kpis", acks_late=True)
def rollup_kpis_task() -> int:
    """Recompute today's partial day and the days whose KPI windows may still change."""
    report = rollup_recent(now=timezone.now())
    return report.flow_rows + report.rule_rows
