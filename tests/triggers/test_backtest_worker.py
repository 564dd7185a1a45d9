"""A backtest requested from the editor, run by a real Celery worker (prefork pool), replays the
people in forked processes from inside the worker's own child process, and decides exactly as
one process does (ONRAMP_BACKTEST_PROCESSES, ONRAMP_BACKTEST_PROCESSES_FROM)."""

from __future__ import annotations

from datetime import datetime

import pytest

from tests.test_processes import Processes, processes  # noqa: F401 - the fixture
from triggers.models import BacktestRun, BacktestStatus
from triggers.services.backtests import STORED_ENTRIES, backtest_start
from triggers.simulation.backtest import run_backtest

from .conftest import T0
from .test_backtest_idle import SPLIT_DEFINITION, M, send_split_spells

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

FINISHED = (BacktestStatus.DONE, BacktestStatus.FAILED)


def test_a_worker_replays_a_backtest_in_forked_processes_as_one_process_does(
    flow,
    templates,
    timeline,
    processes: Processes,  # noqa: F811 - the fixture imported above
    settings,
) -> None:
    send_split_spells(timeline)
    definition = SPLIT_DEFINITION
    since, until = T0, T0 + 60 * M
    processes.env["ONRAMP_BACKTEST_PROCESSES"] = "2"
    processes.env["ONRAMP_BACKTEST_PROCESSES_FROM"] = "1"  # these 8 people are enough
    worker = processes.worker()

    run = backtest_start(None, since, until, actor=None, definition=definition)

    def finished() -> bool:
        return BacktestRun.objects.get(pk=run.pk).status in FINISHED

    processes.wait_for(finished, f"backtest run {run.pk} to finish")
    run.refresh_from_db()
    assert run.status == BacktestStatus.DONE, (run.error, processes.report())
    assert "replayed in 2 processes" in worker.output(), processes.report()
    assert run.progress == 100

    settings.ONRAMP_BACKTEST_PROCESSES = 1  # the reference: one process, in this one
    reference = run_backtest(
        definition=definition,
        since=since,
        until=until,
        now=datetime.fromisoformat(run.result["now"]),
    )
    stored, expected = run.result, reference.as_dict(entries_limit=STORED_ENTRIES)
    for key in ("entered", "people", "entries", "skipped", "scheduled", "scheduled_per_day"):
        assert stored[key] == expected[key], key
    assert stored["entered"] >= 8  # everyone had a spell: the forked shares were added up
