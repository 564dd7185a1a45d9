"""A real Celery worker and beat, started as processes against the test database and broker.

The processes inherit the environment, with DJANGO_SETTINGS_MODULE=config.settings.test and the
database pointed at the test database that pytest-django created (``test-<pid>.sqlite3`` on SQLite,
``test_onramp`` on PostgreSQL). On the embedded default the filesystem broker gets a folder of its
own, so a ``dev.py run`` in the same checkout neither steals these tasks nor hands over its own;
with Redis the broker is the configured one. Causality is read from the logs: a task counts only
when the worker logs that *this* task id succeeded.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.apps import apps
from django.conf import settings
from django.db import connection
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from config.celery import app as celery_app
from triggers.models import Heartbeat
from triggers.schedules import install_schedules
from triggers.tasks import heartbeat

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ROOT = Path(settings.BASE_DIR)
DEADLINE_SECONDS = 60


class CeleryProcess:
    """``celery -A config <role>`` from this interpreter, its output in a log file."""

    def __init__(self, role: str, args: list[str], env: dict[str, str], log: Path) -> None:
        self.role = role
        self.log = log
        self._log_file = log.open("w")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", role, *args],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopping it stops its pool too
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        """Kill the worker outright (a warm shutdown takes seconds, and nothing in flight here
        is worth finishing); beat stops promptly on SIGTERM."""
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL if self.role == "worker" else signal.SIGTERM)
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        self._log_file.close()


class Processes:
    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.started: list[CeleryProcess] = []

    def worker(self) -> CeleryProcess:
        args = ["-l", "info", "--concurrency", "2", "--without-gossip", "--without-mingle"]
        return self._start("worker", args)

    def beat(self) -> CeleryProcess:
        args = ["-l", "debug", "--scheduler", "django_celery_beat.schedulers:DatabaseScheduler"]
        args += ["--pidfile", str(self.logs / "beat.pid")]
        return self._start("beat", args)

    def _start(self, role: str, args: list[str]) -> CeleryProcess:
        process = CeleryProcess(role, args, self.env, self.logs / f"{role}.log")
        self.started.append(process)
        return process

    def wait_for(self, condition: Callable[[], bool], what: str) -> None:
        """Poll until ``condition()`` holds; fail with the processes' logs after the deadline."""
        deadline = time.monotonic() + DEADLINE_SECONDS
        while not condition():
            for process in self.started:
                if process.popen.poll() is not None:
                    pytest.fail(f"{process.role} exited early:\n{self.report()}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {what} within {DEADLINE_SECONDS}s:\n{self.report()}")
            time.sleep(0.2)

    def report(self) -> str:
        return "\n".join(f"--- {p.role} ---\n{p.output()[-4000:]}" for p in self.started)


def _test_database_env() -> dict[str, str]:
    """Environment that points a subprocess at the database this test session is using."""
    name = str(connection.settings_dict["NAME"])
    if connection.vendor == "sqlite":
        return {"ONRAMP_SQLITE_PATH": name}
    parts = urlsplit(os.environ["DATABASE_URL"])
    return {"DATABASE_URL": urlunsplit(parts._replace(path="/" + name))}


@pytest.fixture
def processes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Processes]:
    env = dict(os.environ)
    env.update(_test_database_env())
    env["DJANGO_SETTINGS_MODULE"] = "config.settings.test"
    env["PYTHONUNBUFFERED"] = "1"
    if settings.CELERY_BROKER_URL == "filesystem://":
        # Subprocesses derive their broker folders from ONRAMP_VAR_DIR (config/settings/test.py);
        # this process publishes to the same folders.
        var_dir = tmp_path / "var"
        env["ONRAMP_VAR_DIR"] = str(var_dir)
        broker_dir = var_dir / "test-broker"
        options = dict(settings.CELERY_BROKER_TRANSPORT_OPTIONS)
        for key, folder in [
            ("data_folder_in", "queue"),
            ("data_folder_out", "queue"),
            ("processed_folder", "processed"),
            ("control_folder", "control"),
        ]:
            (broker_dir / folder).mkdir(parents=True, exist_ok=True)
            options[key] = str(broker_dir / folder)
        old_options = celery_app.conf.broker_transport_options
        celery_app.conf.broker_transport_options = options
        # Forget pooled connections made with the old folders (what Celery does after a fork).
        monkeypatch.setattr(celery_app, "_pool", None)
        monkeypatch.setattr(celery_app.amqp, "_producer_pool", None)
    else:
        old_options = None
    started = Processes(env, tmp_path)
    try:
        yield started
    finally:
        for process in reversed(started.started):
            process.stop()
        if old_options is not None:
            celery_app.conf.broker_transport_options = old_options


def _succeeded(worker: CeleryProcess, task_id: str) -> bool:
    return f"[{task_id}] succeeded" in worker.output()


def test_worker_runs_a_task_sent_with_delay(processes: Processes) -> None:
    Heartbeat.objects.all().delete()
    worker = processes.worker()

    result = heartbeat.delay()

    processes.wait_for(lambda: _succeeded(worker, result.id), f"success of task {result.id}")
    assert Heartbeat.objects.filter(name="worker").exists()


def test_beat_schedule_makes_the_worker_write_the_heartbeat(processes: Processes) -> None:
    install_schedules(apps)  # a flush by an earlier transactional test removes migration data
    entry = PeriodicTask.objects.get(task="triggers.tasks.heartbeat")
    assert (entry.interval.every, entry.interval.period) == (30, "seconds")
    entry.interval, _ = IntervalSchedule.objects.get_or_create(every=1, period="seconds")
    entry.last_run_at = None
    entry.save()
    Heartbeat.objects.all().delete()

    worker = processes.worker()
    beat = processes.beat()

    def beat_sent_and_worker_ran() -> bool:
        sent = re.findall(r"triggers\.tasks\.heartbeat sent\. id->(\S+)", beat.output())
        return any(_succeeded(worker, task_id) for task_id in sent)

    processes.wait_for(beat_sent_and_worker_ran, "heartbeat sent by beat and run by the worker")
    assert Heartbeat.objects.filter(name="worker").exists()
