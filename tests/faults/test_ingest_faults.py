"""No accepted event is lost, and client retries never double-count (DESIGN §6; research P1, P2,
P8), through ``kill -9`` of web workers and a crash-like restart of PostgreSQL.

The machine's PostgreSQL server is shared, so the test restarts a server of its own
(tests/faults/postgres.py): a throwaway instance in a temporary directory, on 127.0.0.1 and a free
port, with fsync on. It migrates the Onramp schema into it, creates a source with
``manage.py sources create``, and points a real gunicorn (2 sync workers, test settings) at it.

Four client threads (tests/faults/ingest_client.py) send ``ONRAMP_FAULT_EVENTS`` events (50 000 by
default) in batches of 100, analytics-python's default upload size, retrying with the same
messageIds, while a gunicorn worker is ``kill -9``-ed every ~2 s. Once 40 % of the batches are
acknowledged, the server is restarted with ``pg_ctl restart -m immediate``: every backend dies
without a checkpoint and the server comes back through crash recovery, the strongest case for
"acknowledged means committed".

Checked afterwards, in that server: every acknowledged messageId is stored, and exactly once; every
response other than a 200 was a 503 ``database_unavailable`` with ``Retry-After`` (or a 429 with
one), and the 503s fall within the outage; the only connection-level errors are resets by the
killed workers: each one's request was outstanding when a worker was killed, at most one per kill;
no worker died other than by our kills; and the server's log shows the immediate shutdown and the
crash recovery.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import psycopg
import pytest
from django.db import connection

from onboarding.services.sources import source_create
from tests.smtp import free_port

from .harness import ROOT
from .ingest_client import Tally, make_batches, send_all
from .postgres import ThrowawayPostgres

EVENTS = int(os.environ.get("ONRAMP_FAULT_EVENTS", "50000"))
BATCH = 100
CLIENTS = 4
KILL_EVERY = 2.0  # seconds between kill -9 of a gunicorn worker (± 25 %)
RESTART_AT = 0.4  # share of the batches acknowledged when PostgreSQL is restarted
BUDGET = 110.0  # seconds from the start of the set-up: the clients give up after that (CI)
OUTAGE_SLACK = 3.0  # a 503 produced just before the server is back may arrive this much later
DATABASE = "onramp"
SEED = 20260806


# --- gunicorn, against the private server ------------------------------------------------------


class Gunicorn:
    def __init__(self, env: dict[str, str], log: Path, workers: int = 2) -> None:
        self.port = free_port()
        self.log = log
        self._log_file = log.open("w")
        command = [str(Path(sys.executable).with_name("gunicorn")), "config.wsgi:application"]
        command += ["--bind", f"127.0.0.1:{self.port}", "--workers", str(workers)]
        command += ["--timeout", "30", "--graceful-timeout", "5", "--log-level", "info"]
        # The app is imported once, in the master: a replacement worker serves at once. Importing
        # it takes 3-4 s per worker on a loaded 2-core machine, longer than between two kills.
        command += ["--preload"]
        command += ["--no-control-socket"]  # the per-user default path is shared with benchmarks
        self.popen = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pid = self.popen.pid

    def workers(self) -> list[int]:
        try:
            text = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text()
        except OSError:
            return []
        return [int(pid) for pid in text.split()]

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                pytest.fail(f"gunicorn exited during start-up:\n{self.output()}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/v1/openapi.json")
                if conn.getresponse().status == 200 and len(self.workers()) >= 2:
                    conn.close()
                    return
            time.sleep(0.2)
        pytest.fail(f"gunicorn did not answer within {timeout:.0f}s:\n{self.output()}")

    def boots(self) -> int:
        """Workers started so far: the first ones and every replacement."""
        return self.log.read_text(errors="replace").count("Booting worker with pid")

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-5000:]

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=15)
        self._log_file.close()


def server_env(database_url: str, tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.test",
        DATABASE_URL=database_url,
        DATABASE_CONNECT_TIMEOUT="2",
        ONRAMP_LOG_LEVEL="WARNING",
        ONRAMP_VAR_DIR=str(tmp_path / "var"),
        PYTHONUNBUFFERED="1",
    )
    return env


def manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        pytest.fail(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def unavailable_causes(server_log: str) -> Counter:
    """Why the middleware answered 503, from its log lines (the driver's message, port removed)."""
    causes = re.findall(r"database unavailable during \S+: (.*)", server_log)
    prefix = r'connection to server at "127\.0\.0\.1", port \d+ failed: (FATAL: +)?'
    return Counter(re.sub(prefix, "", cause).strip()[:80] for cause in causes)


def match_to_kills(
    errors: list[tuple[float, float]], kills: list[float]
) -> tuple[list[tuple[float, float]], list[float]]:
    """Explain each connection error (request sent, error seen) by a kill while the request was
    outstanding. A sync worker serves one request at a time, so a kill explains at most one error.
    Returns the errors no kill explains, and the time from each explaining kill to its error."""
    available = sorted(kills)
    unexplained, delays = [], []
    for sent, seen in sorted(errors, key=lambda error: error[1]):  # earliest deadline first
        kill = next((k for k in available if sent <= k <= seen), None)
        if kill is None:
            unexplained.append((sent, seen))
        else:
            available.remove(kill)
            delays.append(seen - kill)
    return unexplained, delays


# --- the tests -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_acked_events_survive_worker_kills_and_a_postgres_restart(
    private_postgres: ThrowawayPostgres, tmp_path: Path
) -> None:
    pg = private_postgres
    setup_started = time.monotonic()
    with psycopg.connect(pg.url("postgres"), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {DATABASE}")
    env = server_env(pg.url(DATABASE), tmp_path)
    # gunicorn boots while the schema is migrated: it needs the database only to answer requests.
    server = Gunicorn(env, tmp_path / "gunicorn.log")
    tally = Tally()
    kills: list[float] = []
    restart: dict = {}
    done = threading.Event()
    helpers: list[threading.Thread] = []
    try:
        manage(env, "migrate", "--noinput")
        created = manage(env, "sources", "create", "fault-client")
        key = re.search(r"Write key: (\S+)", created).group(1)  # type: ignore[union-attr]
        server.wait_ready()
        setup = time.monotonic() - setup_started
        batches = make_batches(EVENTS, BATCH, SEED)
        started = time.monotonic()

        def killer() -> None:
            rng = random.Random(SEED + 1)
            while not done.wait(KILL_EVERY * rng.uniform(0.75, 1.25)):
                workers = server.workers()
                if workers:
                    at = time.monotonic()
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(rng.choice(workers), signal.SIGKILL)
                        kills.append(at)

        def restarter() -> None:
            while not done.is_set() and tally.acked_batches < len(batches) * RESTART_AT:
                time.sleep(0.05)
            if done.is_set():
                return
            with tally.lock:
                restart["acked_before"] = set(tally.acked)
            restart["start"] = time.monotonic()
            try:
                pg.restart_immediate()
            except RuntimeError as error:
                restart["error"] = str(error)
            restart["end"] = time.monotonic()

        clients = [
            threading.Thread(
                target=send_all,
                args=(server.port, key, batches[i::CLIENTS], tally),
                kwargs={
                    "stop_at": setup_started + BUDGET,
                    "cancelled": done,
                    "rng": random.Random(i),
                },
                daemon=True,
            )
            for i in range(CLIENTS)
        ]
        helpers = [threading.Thread(target=f, daemon=True) for f in (killer, restarter)]
        for thread in [*clients, *helpers]:
            thread.start()
        for thread in clients:
            thread.join()
        duration = time.monotonic() - started
        done.set()
        for thread in helpers:
            thread.join(timeout=90)
        assert server.popen.poll() is None, f"the gunicorn master died:\n{server.output()}"
        boots = server.boots()
        server_log = server.log.read_text(errors="replace")
    finally:
        done.set()
        server.stop()
        for thread in helpers:
            thread.join(timeout=90)  # never tear the server down under a restart

    with psycopg.connect(pg.url(DATABASE)) as db:
        rows = db.execute("SELECT message_id FROM onboarding_event WHERE message_id LIKE 'fault-%'")
        stored_ids = [row[0] for row in rows]
    stored = set(stored_ids)
    pg_log = pg.log_text()

    def since(moment: float) -> float:
        return round(moment - started, 1)

    outage = (restart.get("start", 0.0), restart.get("end", 0.0))
    unexplained, delays = match_to_kills(
        [(sent, seen) for sent, seen, _ in tally.connection_errors], kills
    )
    in_outage = Counter(status for at, status in tally.responses if outage[0] <= at <= outage[1])
    times_503 = [since(at) for at, status in tally.responses if status == 503]
    restarted = (
        f"PostgreSQL restarted at {since(outage[0])}s, back after {outage[1] - outage[0]:.1f}s"
        if "end" in restart
        else "PostgreSQL NOT restarted"
    )
    print(
        f"\ningest faults: setup {setup:.1f}s; {EVENTS} events in {len(batches)} batches of "
        f"{BATCH} from {CLIENTS} clients in {duration:.1f}s: {tally.requests} requests carrying "
        f"{tally.events_sent} events, {len(tally.acked)} events acked "
        f"({len(restart.get('acked_before', ()))} before the restart); {len(kills)} worker "
        f"kills, {boots} worker boots; {restarted}; responses during it {dict(in_outage)}; "
        f"{tally.statuses[503]} 503s (first {times_503[:1]}, last {times_503[-1:]} s), "
        f"{tally.statuses[429]} 429s, {len(tally.connection_errors)} connection errors "
        f"{dict(Counter(name for _, _, name in tally.connection_errors))} (seen at most "
        f"{max(delays, default=0):.2f}s after a kill); {tally.retries} retries, {tally.replays} "
        f"replays of acked batches; stored {len(stored_ids)} rows, {len(stored)} distinct; "
        f"503 causes {dict(unavailable_causes(server_log))}; transactions left open by a killed "
        f"worker: {pg_log.count('unexpected EOF on client connection with an open transaction')}"
    )
    assert tally.unexpected == [], tally.unexpected[:10]
    assert restart.get("end"), "PostgreSQL was never restarted: the run was too short"
    assert "error" not in restart, restart.get("error")
    assert "received immediate shutdown request" in pg_log, pg_log[-3000:]
    assert "automatic recovery in progress" in pg_log, pg_log[-3000:]

    assert set(tally.statuses) <= {0, 200, 429, 503}, tally.statuses
    assert tally.statuses[503] >= 1, "no 503 during the restart"
    assert tally.bad_503 == [], f"503 without database_unavailable/Retry-After: {tally.bad_503[:3]}"
    assert tally.bad_429 == [], f"429 without Retry-After: {tally.bad_429[:3]}"
    stray_503 = [
        since(at)
        for at, status in tally.responses
        if status == 503 and not outage[0] <= at <= outage[1] + OUTAGE_SLACK
    ]
    assert stray_503 == [], (
        f"503s at {stray_503}s, outside the restart ({since(outage[0])}-{since(outage[1])}s)"
    )

    assert len(kills) >= 3, f"only {len(kills)} worker kills: the run was too short"
    assert unexplained == [], (
        f"connection errors that no kill explains (sent, seen): "
        f"{[(since(sent), since(seen)) for sent, seen in unexplained]}s; "
        f"kills at {[since(at) for at in kills]}s"
    )
    assert boots <= 2 + len(kills), f"a worker died on its own:\n{server_log[-5000:]}"
    for sign in ("Traceback", "Internal Server Error", "WORKER TIMEOUT"):
        assert sign not in server_log, server_log[-5000:]

    assert len(stored_ids) == len(stored), "a messageId is stored twice"
    lost_in_crash = restart["acked_before"] - stored
    assert lost_in_crash == set(), f"acked before the crash, lost: {sorted(lost_in_crash)[:10]}"
    assert tally.acked - stored == set(), f"acked but lost: {sorted(tally.acked - stored)[:10]}"
    assert len(tally.acked) == EVENTS  # every batch was eventually acknowledged
    assert len(stored_ids) == EVENTS


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_read_only_database_is_a_503_not_a_500(tmp_path: Path) -> None:
    """A primary that refuses writes (a standby not yet promoted after a failover, or
    ``default_transaction_read_only`` during maintenance) is unavailable for ingestion: the
    client must retry, so 503 with ``Retry-After``, never a 500 (SQLSTATE 25006 is an
    ``InternalError`` in psycopg, not an ``OperationalError``)."""
    from django.test import Client

    key = source_create(name="read-only").write_key
    client = Client(HTTP_AUTHORIZATION="Basic " + base64.b64encode(f"{key}:".encode()).decode())
    batch = {"batch": [{"type": "track", "userId": "ro", "event": "E", "messageId": "ro-1"}]}
    with connection.cursor() as cursor:
        cursor.execute("SET SESSION default_transaction_read_only = on")
    try:
        response = client.post("/v1/batch", json.dumps(batch), content_type="application/json")
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SET SESSION default_transaction_read_only = off")
    assert response.status_code == 503, response.content
    assert int(response["Retry-After"]) >= 1
    assert response.json()["error"]["code"] == "database_unavailable"
