"""What the fault tests share: a recording SMTP server, real Celery processes, seeded follow-ups
and the checks every fault must leave true (DESIGN §6, research P3, P6, P7, P11).

Every duplicate check reads the SMTP server's own log, written outside the application's
processes and transactions, never the application's tables.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.parser
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from aiosmtpd.controller import Controller
from django.apps import apps
from django.conf import settings
from django.db import connection
from django.test import Client
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from tests.smtp import free_port
from triggers.models import DecisionLog, Enrollment, Message, ReviewItem
from triggers.schedules import install_schedules
from triggers.services.rules import rule_save, rule_set_status
from triggers.services.templates import template_save

ROOT = Path(settings.BASE_DIR)
logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every SMTP command
FINAL_STATUSES = {"sent", "unknown", "suppressed", "cancelled"}
LEASE_SECONDS = 3
# Messages a worker claims per batch (committed "sending" before the first provider call).
CLAIM = 25
DELIVER_TASK = "triggers.tasks.deliver_due"
EVALUATE_TASK = "triggers.tasks.evaluate_rules"


# --- the provider: an SMTP server that logs every idempotency key it accepts -----------------


class _Recorder:
    def __init__(self, log: Path) -> None:
        self.log = log
        self.lock = threading.Lock()
        self.keys: list[str] = []
        self.message_ids: list[str] = []
        self.delay = 0.0  # seconds before answering DATA: a provider call that takes time
        self.refusals = 0
        self.refuse_with: str | None = None  # e.g. "451 4.3.0 Try again later"
        self.refuse_at = "DATA"  # or "RCPT"
        self.after_refusal = None  # called with the count after each refusal
        self.connections = 0
        self._parser = email.parser.BytesHeaderParser()

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        with self.lock:
            self.connections += 1
        return responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.refuse_with and self.refuse_at == "RCPT":
            return self._refused()
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.refuse_with and self.refuse_at == "DATA":
            return self._refused()
        if self.delay:
            await asyncio.sleep(self.delay)  # the message is accepted even if the client died
        headers = self._parser.parsebytes(envelope.content)
        key = headers.get("X-Onramp-Message", "").strip()
        with self.lock:
            self.keys.append(key)
            self.message_ids.append(headers.get("Message-ID", "").strip())
            with self.log.open("a") as log:
                log.write(key + "\n")
        return "250 Message accepted for delivery"

    def _refused(self) -> str:
        with self.lock:
            self.refusals += 1
            count = self.refusals
        if self.after_refusal is not None:
            self.after_refusal(count)
        return self.refuse_with


class SmtpRecorder:
    """aiosmtpd on 127.0.0.1 in a thread of the test process; survives any worker crash.

    ``refuse()`` answers 451 until ``accept()``; ``stop()`` / ``start()`` take the server off
    the port entirely (connection refused) and bring it back on the same port."""

    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.recorder = _Recorder(log)
        self.log = log
        log.write_text("")
        self.controller: Controller | None = None
        self._stopper: threading.Thread | None = None

    def start(self) -> None:
        if self._stopper is not None:
            self._stopper.join(timeout=30)
            self._stopper = None
        self.controller = Controller(self.recorder, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def refuse(
        self, at: str = "DATA", reply: str = "451 4.3.0 Try again later", stop_after: int = 0
    ) -> None:
        """Answer ``reply``; with ``stop_after``, the server goes off the port by itself right
        after that many refusals (from 451 to connection refused at a known point, however fast
        the worker sends)."""
        self.recorder.refuse_at, self.recorder.refuse_with = at, reply
        self.recorder.after_refusal = None
        if stop_after:

            def after_refusal(count: int) -> None:
                if count == stop_after:  # in the server's thread: stop from another one
                    self._stopper = threading.Thread(target=self.stop, daemon=True)
                    self._stopper.start()

            self.recorder.after_refusal = after_refusal

    def accept(self) -> None:
        self.recorder.refuse_with = None
        self.recorder.after_refusal = None

    @property
    def received(self) -> int:
        with self.recorder.lock:
            return len(self.recorder.keys)

    def message_ids(self) -> Counter:
        with self.recorder.lock:
            return Counter(self.recorder.message_ids)

    @property
    def refusals(self) -> int:
        return self.recorder.refusals

    @property
    def connections(self) -> int:
        return self.recorder.connections

    def logged_keys(self) -> Counter:
        """The keys as the server's own log file has them."""
        return Counter(line for line in self.log.read_text().splitlines() if line)


# --- real worker and beat processes ----------------------------------------------------------


class CeleryProcess:
    """``celery -A config <role>`` in its own session, output in a log file."""

    def __init__(self, name: str, role: str, args: list[str], env: dict, log: Path) -> None:
        self.name, self.role, self.log = name, role, log
        self._log_file = log.open("w")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", role, *args],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pid = self.popen.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def children(self) -> list[int]:
        try:
            text = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text()
        except OSError:
            return []
        return [int(pid) for pid in text.split()]

    def kill_group(self) -> None:
        """SIGKILL everything in the session (orphaned pool children included)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        if self.popen.poll() is None:
            self.popen.wait(timeout=15)
        if not self._log_file.closed:
            self._log_file.close()


class Cluster:
    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs = env, logs
        self.started: list[CeleryProcess] = []

    def worker(self, concurrency: int = 2) -> CeleryProcess:
        name = f"worker{len(self.started)}"
        args = ["-l", "info", "--concurrency", str(concurrency), "--without-gossip"]
        args += ["--without-mingle", "--without-heartbeat", "-n", f"{name}@faults"]
        return self._start(name, "worker", args)

    def beat(self) -> CeleryProcess:
        name = f"beat{len(self.started)}"
        args = ["-l", "debug", "--scheduler", "django_celery_beat.schedulers:DatabaseScheduler"]
        args += ["--pidfile", str(self.logs / f"{name}.pid")]
        return self._start(name, "beat", args)

    def _start(self, name: str, role: str, args: list[str]) -> CeleryProcess:
        process = CeleryProcess(name, role, args, self.env, self.logs / f"{name}.log")
        self.started.append(process)
        return process

    def wait_for(
        self,
        condition: Callable[[], bool],
        what: str,
        timeout: float,
        must_live: Iterable[CeleryProcess] = (),
    ) -> float:
        """Poll until ``condition()`` holds; fail with the logs after ``timeout`` seconds."""
        started = time.monotonic()
        while not condition():
            for process in must_live:
                if not process.alive():
                    pytest.fail(f"{process.name} exited early:\n{self.report()}")
            if time.monotonic() - started > timeout:
                states = Counter(Message.objects.values_list("status", "attempts", "reason"))
                pytest.fail(f"no {what} within {timeout:.0f}s ({dict(states)}):\n{self.report()}")
            time.sleep(0.25)
        return time.monotonic() - started

    def report(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.output()[-3000:]}" for p in self.started)

    def stop_all(self) -> None:
        for process in reversed(self.started):
            process.kill_group()


def worker_ready(worker: CeleryProcess) -> bool:
    return f"{worker.name}@faults ready." in worker.output()


def subprocess_env(tmp_path: Path, smtp_port: int, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    name = str(connection.settings_dict["NAME"])
    if connection.vendor == "sqlite":
        env["ONRAMP_SQLITE_PATH"] = name
    else:
        parts = urlsplit(os.environ["DATABASE_URL"])
        env["DATABASE_URL"] = urlunsplit(parts._replace(path="/" + name))
    env.update(
        DJANGO_SETTINGS_MODULE="tests.faults.settings",
        PYTHONUNBUFFERED="1",
        ONRAMP_VAR_DIR=str(tmp_path / "var"),  # the filesystem broker's folders, if it is used
        ONRAMP_FAULTS_SMTP_PORT=str(smtp_port),
        ONRAMP_DELIVERY_LEASE_SECONDS=str(LEASE_SECONDS),
        ONRAMP_DELIVERY_CLAIM=str(CLAIM),
        ONRAMP_GLOBAL_CAP_MAX="100",
        ONRAMP_LOG_LEVEL="INFO",
    )
    env.update(extra)
    return env


def fast_schedules(*, evaluate: bool) -> None:
    """Beat schedules every second: delivery always, evaluation when the beats should enrol."""
    install_schedules(apps)  # transactional tests flush what the migration installed
    every_second, _ = IntervalSchedule.objects.get_or_create(every=1, period="seconds")
    wanted = {DELIVER_TASK} | ({EVALUATE_TASK} if evaluate else set())
    for entry in PeriodicTask.objects.all():
        entry.enabled = entry.task in wanted
        if entry.enabled:
            entry.interval, entry.last_run_at = every_second, None
        entry.save()


def beat_sends(beat: CeleryProcess, task: str = DELIVER_TASK) -> list[str]:
    """Task ids that this beat logged as sent."""
    return re.findall(rf"{re.escape(task)} sent\. id->(\S+)", beat.output())


# --- seeded follow-ups -----------------------------------------------------------------------


def seed_people(api: Client, count: int, *, prefix: str = "p") -> None:
    """People with an email address, each with a "Trial Ending" event, through the batch API."""
    chunk: list[dict] = []

    def flush() -> None:
        response = api.post(
            "/v1/batch", json.dumps({"batch": chunk}), content_type="application/json"
        )
        assert response.status_code == 200, response.content
        assert "rejected" not in response.json() or not response.json()["rejected"]
        chunk.clear()

    for n in range(count):
        user = f"{prefix}{n:05d}"
        chunk.append(
            {
                "type": "identify",
                "userId": user,
                "traits": {"email": f"{user}@example.com", "first_name": f"P{n}"},
                "messageId": f"identify-{user}",
            }
        )
        chunk.append(
            {"type": "track", "userId": user, "event": "Trial Ending", "messageId": f"t-{user}"}
        )
        if len(chunk) >= 400:
            flush()
    if chunk:
        flush()


def seed_rule(channels: tuple[str, ...] = ("email", "in_app"), slug: str = "trial") -> None:
    """One active event rule whose follow-ups (one per channel) are due at once."""
    template_save(
        slug="reminder",
        channel="email",
        subject="Finish setting up",
        body="Hi {{ first_name | default: 'there' }}, https://app.example.com/setup",
    )
    template_save(slug="nudge", channel="in_app", subject="", body="Need a hand, {{ first_name }}?")
    templates = {"email": "reminder", "in_app": "nudge"}
    rule, _ = rule_save(
        slug=slug,
        name="Trial ending",
        definition={
            "trigger": {"kind": "event", "event": "Trial Ending"},
            "follow_ups": [
                {"channel": channel, "template": templates[channel], "delay": "0s"}
                for channel in channels
            ],
            "reentry": "once",
        },
    )
    rule_set_status(rule=rule, status="active")


@dataclass
class Outcome:
    messages: int
    statuses: Counter
    emails_received: int
    duplicates: dict[str, int]
    unknown: int

    def summary(self) -> str:
        return (
            f"{self.messages} messages {dict(self.statuses)}; {self.emails_received} emails "
            f"received, {len(self.duplicates)} duplicated, {self.unknown} unknown"
        )


def open_messages() -> int:
    return Message.objects.exclude(status__in=FINAL_STATUSES).count()


def check_delivery(smtp: SmtpRecorder) -> Outcome:
    """The promises of DESIGN §4.5, checked after a fault; returns the figures for the report.

    - no idempotency key reached the SMTP server twice (its own log);
    - every message is final: sent, unknown (with a review item), suppressed or cancelled;
    - every email marked sent was received; every email received is sent or unknown;
    - in-app: exactly one "sent" decision per message."""
    received = smtp.logged_keys()
    duplicates = {key: n for key, n in received.items() if n > 1}
    assert duplicates == {}, f"sent twice: {duplicates}"

    rows = list(Message.objects.values("pk", "channel", "status", "idempotency_key"))
    statuses = Counter(row["status"] for row in rows)
    not_final = [row for row in rows if row["status"] not in FINAL_STATUSES]
    assert not_final == [], f"not final: {not_final[:10]} ({statuses})"

    emails = {row["idempotency_key"]: row["status"] for row in rows if row["channel"] == "email"}
    never_received = [
        key for key, status in emails.items() if status == "sent" and key not in received
    ]
    assert never_received == [], f"marked sent but never received: {never_received[:10]}"
    unexpected = [key for key in received if emails.get(key) not in ("sent", "unknown")]
    assert unexpected == [], f"received but not sent/unknown: {unexpected[:10]}"

    unknown = [row["pk"] for row in rows if row["status"] == "unknown"]
    assert ReviewItem.objects.filter(message_id__in=unknown).count() == len(unknown)

    in_app = [row["pk"] for row in rows if row["channel"] == "in_app"]
    assert all(row["status"] == "sent" for row in rows if row["channel"] == "in_app")
    sent_decisions = Counter(
        DecisionLog.objects.filter(message_id__in=in_app, outcome="sent").values_list(
            "message_id", flat=True
        )
    )
    assert set(sent_decisions) == set(in_app)
    assert max(sent_decisions.values(), default=1) == 1

    enrollments = Enrollment.objects.values_list("rule_id", "person_id", "occurrence_key")
    assert len(set(enrollments)) == len(enrollments)
    return Outcome(len(rows), statuses, sum(received.values()), duplicates, len(unknown))


def due_now() -> int:
    return Message.objects.filter(due_at__lte=timezone.now()).count()
