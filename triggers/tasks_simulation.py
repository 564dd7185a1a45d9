"""Celery entry point for backtests requested from the rule editor: an id in, a service call."""

from celery import shared_task

from .services.backtests import backtest_execute


@shared_task(name="triggers.tasks.run_backtest", acks_late=False)
def run_backtest_task(run_id: int) -> str:
    """Not acks_late: a backtest that crashed a worker is marked failed, not rerun forever."""
    return backtest_execute(run_id).status
