"""The metrics journey (issue 21): events in through the HTTP API, a rule fires, an email goes to a
loopback SMTP server and one event is rejected, in gunicorn with 2 workers, a Celery worker and
beat; then ``GET /metrics`` must show each named metric moved by exactly what happened.

Every process writes to one fresh ``PROMETHEUS_MULTIPROC_DIR`` and logs JSON
(``ONRAMP_LOG_FORMAT=json``): the logs of all of them are checked for personal data afterwards.
Finally ``manage.py run_triggers`` runs as a process of its own while the worker and beat are
stopped, and its one tick must show up in the web's ``/metrics`` too (management commands count).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from django.apps import apps
from django.conf import settings
from django_celery_beat.models import IntervalSchedule, PeriodicTask
from prometheus_client.parser import text_string_to_metric_families

from config.celery import app as celery_app
from onboarding.services.sources import source_create
from tests.faults.harness import CeleryProcess, seed_rule, subprocess_env
from tests.smtp import SmtpServer, free_port
from triggers.schedules import install_schedules

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ROOT = Path(settings.BASE_DIR)
DEADLINE = 45.0  # seconds for any one wait; the whole test stays well under a minute when idle
EMAIL = "journey.person@example.com"
TRAITS = {"email": EMAIL, "first_name": "Zephyrine", "plan": "platinum-unicorn"}
FAST_TASKS = {
    "triggers.tasks.heartbeat",
    "triggers.tasks.evaluate_rules",
    "triggers.tasks.deliver_due",
}


class Gunicorn:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.log = log
        self._log_file = log.open("w")
        command = [str(Path(sys.executable).with_name("gunicorn")), "config.wsgi:application"]
        command += ["--bind", f"127.0.0.1:{self.port}", "--workers", "2", "--preload"]
        command += ["--timeout", "30", "--no-control-socket", "--log-level", "info"]
        self.popen = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def workers(self) -> int:
        try:
            text = Path(f"/proc/{self.popen.pid}/task/{self.popen.pid}/children").read_text()
        except OSError:
            return 0
        return len(text.split())

    def ready(self) -> bool:
        if self.popen.poll() is not None:
            pytest.fail(f"gunicorn exited:\n{self.log.read_text()[-3000:]}")
        with contextlib.suppress(requests.RequestException):
            return requests.get(f"{self.url}/v1/openapi.json", timeout=2).ok and self.workers() == 2
        return False

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=15)
        self._log_file.close()


def wait_for(condition: Callable[[], bool], what: str, logs: Callable[[], str]) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {DEADLINE:.0f}s:\n{logs()}")
        time.sleep(0.2)


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = requests.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def every_second() -> None:
    install_schedules(apps)  # transactional tests flush what the migration installed
    interval, _ = IntervalSchedule.objects.get_or_create(every=1, period="seconds")
    for entry in PeriodicTask.objects.all():
        entry.enabled = entry.task in FAST_TASKS
        if entry.enabled:
            entry.interval, entry.last_run_at = interval, None
        entry.save()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[dict]:
    smtp = SmtpServer()
    smtp.__enter__()
    env = subprocess_env(
        tmp_path,
        smtp.port,
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"),
        ONRAMP_LOG_FORMAT="json",
        ONRAMP_METRICS_TOKEN="",
    )
    (tmp_path / "metrics").mkdir()
    if settings.CELERY_BROKER_URL.startswith("redis"):
        celery_app.control.purge()
    started: dict = {"smtp": smtp, "env": env, "tmp": tmp_path, "celery": []}
    try:
        yield started
    finally:
        for process in started["celery"]:
            process.kill_group()
        if "web" in started:
            started["web"].stop()
        smtp.__exit__(None, None, None)


def test_metrics_move_by_the_journey(stack: dict) -> None:
    started_at = time.monotonic()
    tmp, env, smtp = stack["tmp"], stack["env"], stack["smtp"]
    key = source_create(name="journey").write_key
    seed_rule(channels=("email",), slug="trial")
    every_second()

    web = stack["web"] = Gunicorn(env, tmp / "gunicorn.log")
    worker_args = ["-l", "info", "--concurrency", "1", "--without-gossip", "--without-mingle"]
    worker_args += ["--without-heartbeat", "-n", "journey@faults"]
    worker = CeleryProcess("worker", "worker", worker_args, env, tmp / "worker.log")
    stack["celery"].append(worker)

    def logs() -> str:
        return "\n".join(
            f"--- {path.name} ---\n{path.read_text(errors='replace')[-3000:]}"
            for path in sorted(tmp.glob("*.log"))
        )

    # Beat starts once the worker listens, so no backlog of ticks piles up on a slow start.
    wait_for(lambda: "journey@faults ready." in worker.output(), "worker ready", logs)
    beat_args = ["-l", "info", "--scheduler", "django_celery_beat.schedulers:DatabaseScheduler"]
    beat_args += ["--pidfile", str(tmp / "beat.pid")]
    stack["celery"].append(CeleryProcess("beat", "beat", beat_args, env, tmp / "beat.log"))
    wait_for(web.ready, "gunicorn with 2 workers", logs)
    before = scrape(web.url)

    auth = (key, "")
    identify = {"userId": "u-journey", "traits": TRAITS, "messageId": "m-identify"}
    assert requests.post(f"{web.url}/v1/identify", json=identify, auth=auth, timeout=10).ok
    batch = {
        "batch": [
            {"type": "track", "userId": "u-journey", "event": "Trial Ending", "messageId": "m-1"},
            {"type": "page", "userId": "u-journey", "name": "Pricing", "messageId": "m-2"},
            {"type": "track", "userId": "u-journey", "messageId": "m-3"},  # no event: rejected
        ]
    }
    response = requests.post(f"{web.url}/v1/batch", json=batch, auth=auth, timeout=10)
    assert response.status_code == 200, response.text
    assert [r["code"] for r in response.json()["rejected"]] == ["missing_field"]
    # A 404 whose path carries the write key: Django logs it, and the log must not show the key.
    assert requests.get(f"{web.url}/v1/projects/{key}/settings/x", timeout=10).status_code == 404

    wait_for(lambda: len(smtp.messages) == 1, "email at the SMTP server", logs)
    assert smtp.messages[0]["To"] == EMAIL
    wait_for(lambda: "heartbeat" in worker.output(), "heartbeat task", logs)

    def settled() -> bool:
        now = scrape(web.url)
        return (
            value(now, "onramp_messages_total", channel="email", outcome="sent") >= 1
            and value(now, "onramp_worker_heartbeat_age_seconds") < 30
        )

    wait_for(settled, "sent email and heartbeat in /metrics", logs)
    after = scrape(web.url)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    figures = {
        "accepted identify": moved("onramp_events_accepted_total", type="identify"),
        "accepted track": moved("onramp_events_accepted_total", type="track"),
        "accepted page": moved("onramp_events_accepted_total", type="page"),
        "rejected missing_field": moved("onramp_events_rejected_total", code="missing_field"),
        "ingest identify": moved("onramp_ingest_request_seconds_count", endpoint="identify"),
        "ingest batch": moved("onramp_ingest_request_seconds_count", endpoint="batch"),
        "occurrences enrolled": moved("onramp_occurrences_total", rule="trial", outcome="enrolled"),
        "email sent": moved("onramp_messages_total", channel="email", outcome="sent"),
    }
    assert figures == {
        "accepted identify": 1,
        "accepted track": 1,
        "accepted page": 1,
        "rejected missing_field": 1,
        "ingest identify": 1,
        "ingest batch": 1,
        "occurrences enrolled": 1,
        "email sent": 1,
    }
    rejected = {k: v for k, v in after.items() if k[0] == "onramp_events_rejected_total"}
    assert sum(rejected.values()) == 1, rejected  # nothing else was refused
    email_outcomes = {
        labels: v
        for (name, labels), v in after.items()
        if name == "onramp_messages_total" and ("channel", "email") in labels and v
    }
    assert list(email_outcomes) == [(("channel", "email"), ("outcome", "sent"))]
    assert moved("onramp_ingest_request_seconds_sum", endpoint="batch") > 0
    ticks = moved("onramp_rule_tick_seconds_count", rule="trial")
    assert ticks >= 1
    assert value(after, "onramp_delivery_due") == 0
    assert value(after, "onramp_delivery_oldest_due_seconds") == 0
    assert value(after, "onramp_review_queue") == 0
    assert 0 <= value(after, "onramp_worker_heartbeat_age_seconds") < 30
    assert value(after, "onramp_database_up") == 1

    # A management command's tick counts too: stop the worker and beat, run one pass.
    for process in stack["celery"]:
        process.kill_group()
    quiet = scrape(web.url)
    result = subprocess.run(
        [sys.executable, "manage.py", "run_triggers"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    (tmp / "run_triggers.log").write_text(result.stdout + result.stderr)
    final = scrape(web.url)
    tick_delta = value(final, "onramp_rule_tick_seconds_count", rule="trial") - value(
        quiet, "onramp_rule_tick_seconds_count", rule="trial"
    )
    assert tick_delta == 1

    # The logs of every process: JSON lines from the app, and no personal data anywhere.
    everything = "\n".join(path.read_text(errors="replace") for path in tmp.glob("*.log"))
    for secret in (EMAIL, TRAITS["first_name"], TRAITS["plan"], key):
        assert secret not in everything, f"{secret!r} is in a log"
    records = []
    for line in everything.splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))
    ticks_logged = [r for r in records if r["logger"] == "triggers.engine.evaluate"]
    assert any(r.get("rule") == "trial" and r.get("enrolled") == 1 for r in ticks_logged)
    passes = [r for r in records if r["logger"] == "triggers.delivery.pipeline"]
    assert any(r.get("outcomes") == {"sent": 1} and "duration_seconds" in r for r in passes)
    not_found = [r for r in records if r["logger"] == "django.request"]
    assert not_found and all(r["request_id"] for r in not_found)
    assert "/v1/projects/[key]/settings/x" in not_found[0]["message"]

    print(
        f"\nmetrics after the journey ({time.monotonic() - started_at:.1f}s, "
        f"load {os.getloadavg()[0]:.2f}): {figures}, rule ticks {ticks:.0f} (+1 by run_triggers), "
        f"due {value(after, 'onramp_delivery_due'):.0f}, oldest due "
        f"{value(after, 'onramp_delivery_oldest_due_seconds'):.0f}s, review "
        f"{value(after, 'onramp_review_queue'):.0f}, heartbeat age "
        f"{value(after, 'onramp_worker_heartbeat_age_seconds'):.1f}s"
    )
