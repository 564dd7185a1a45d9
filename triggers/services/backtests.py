"""Backtest runs: request one (queued for a worker), and the worker's side of running it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from celery import current_app
from django.db import transaction
from django.utils import timezone

from triggers.models import BacktestRun, BacktestStatus, Rule
from triggers.rules.spec import parse_rule
from triggers.services.audit import audit
from triggers.simulation.backtest import BacktestError, run_backtest

RUN_BACKTEST_TASK = "triggers.tasks.run_backtest"  # triggers.tasks.run_backtest_task
# The entries (occurrence, person, each follow-up's outcome) a stored report keeps, in time order:
# the report page lists and exports them; the counts cover every occurrence.
STORED_ENTRIES = 10_000


def backtest_start(
    rule: Rule | None,
    since: datetime,
    until: datetime,
    actor: Any,
    *,
    definition: dict | None = None,
) -> BacktestRun:
    """Queue a backtest of ``rule`` (or of an unsaved ``definition``) over ``(since, until]``.

    The task is enqueued after commit; the returned run's status view shows its progress.
    """
    if definition is None:
        if rule is None or rule.current_version is None:
            raise BacktestError("no_definition", "a saved rule or a definition is needed")
        definition = rule.current_version.definition
    spec, problems = parse_rule(definition)
    if spec is None:
        raise BacktestError("invalid_rule", "; ".join(f"{p.path}: {p.message}" for p in problems))
    if until <= since:
        raise BacktestError("bad_period", "until must be after since")
    user = actor if getattr(actor, "is_authenticated", False) else None
    run = BacktestRun(rule=rule, definition=definition, since=since, until=until, requested_by=user)
    run.full_clean()
    run.save()
    audit(actor=actor, action="backtest.start", obj=run, changes={"rule": rule and rule.slug})

    # By the task's name, not its function: tasks import services, never the other way round.
    transaction.on_commit(lambda: current_app.send_task(RUN_BACKTEST_TASK, args=[run.pk]))
    return run


def backtest_execute(run_id: int) -> BacktestRun:
    """Run a queued backtest, storing progress as it goes and the report (or error) at the end."""
    claimed = BacktestRun.objects.filter(pk=run_id, status=BacktestStatus.QUEUED).update(
        status=BacktestStatus.RUNNING, progress=1
    )
    run = BacktestRun.objects.select_related("rule").get(pk=run_id)
    if not claimed:
        return run  # another worker got there first, or it already finished

    def progress(percent: int) -> None:
        BacktestRun.objects.filter(pk=run_id).update(progress=max(1, min(99, percent)))

    try:
        result = run_backtest(
            rule=run.rule,
            definition=run.definition,
            since=run.since,
            until=run.until,
            progress=progress,
        )
    except Exception as error:  # recorded for the editor; the worker logs the traceback
        BacktestRun.objects.filter(pk=run_id).update(
            status=BacktestStatus.FAILED, error=str(error)[:2000], finished_at=timezone.now()
        )
        raise
    BacktestRun.objects.filter(pk=run_id).update(
        status=BacktestStatus.DONE,
        progress=100,
        result=result.as_dict(entries_limit=STORED_ENTRIES),
        finished_at=timezone.now(),
    )
    run.refresh_from_db()
    return run
