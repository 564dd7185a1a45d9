"""No accepted event is lost, and client retries never double-count (DESIGN §6; research P1, P2,
P8): batches go to a real gunicorn (2 workers) while a worker is ``kill -9``-ed every ~2 s and
PostgreSQL becomes unreachable for ~5 s.

The outage is simulated without touching the machine's shared PostgreSQL server: gunicorn reaches
the test database through a TCP proxy that this test runs on 127.0.0.1. Cutting the proxy closes
every open connection and refuses new ones (the listening socket is closed), which is what the
application sees when the server restarts: broken connections, then "connection refused".

The client behaves like a Segment library: batches of 20 events with unique messageIds; timeouts,
connection errors, 5xx and 429 are retried with the SAME body (same messageIds) after a backoff
with jitter (``Retry-After`` honoured, capped at 1 s to keep the run short); 10 % of the batches
are sent again after their 2xx, as a client whose response got lost would. Every messageId
acknowledged with a 2xx is logged.

Size: ``ONRAMP_FAULT_EVENTS`` events (10 000 by default: 20–75 s depending on machine load; set e.g.
``ONRAMP_FAULT_EVENTS=50000`` for the research's full run by hand).
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.db import connection

from onboarding.services.sources import source_create
from tests.smtp import free_port

from .harness import ROOT, subprocess_env

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

EVENTS = int(os.environ.get("ONRAMP_FAULT_EVENTS", "10000"))
BATCH = 20
CLIENTS = 4
KILL_EVERY = 2.0  # seconds between kill -9 of a gunicorn worker
OUTAGE_SECONDS = 5.0
REPLAY_EVERY = 10  # every 10th batch is sent again after its 2xx
REQUEST_TIMEOUT = 10.0
DEADLINE = 150.0  # the whole send phase must finish within this (CI budget)
SEED = 20260806


# --- a TCP proxy between gunicorn and PostgreSQL that can be cut --------------------------------


class CuttableProxy:
    """Forwards 127.0.0.1:<port> to PostgreSQL; ``cut()`` closes every connection and the
    listening socket (new connections are refused), ``restore()`` listens again on the same port."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self.lock = threading.Lock()
        self.sockets: set[socket.socket] = set()
        self.listener: socket.socket | None = None
        self.connections = 0
        self.restore()

    def restore(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self.lock:
            listener, self.listener = self.listener, None
            doomed = list(self.sockets)
            self.sockets.clear()
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for sock in doomed:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self.lock:
                if self.listener is not listener:  # cut while connecting
                    client.close()
                    upstream.close()
                    continue
                self.sockets.update((client, upstream))
                self.connections += 1
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with self.lock:
                self.sockets.discard(sock)


# --- gunicorn ------------------------------------------------------------------------------------


class Gunicorn:
    def __init__(self, env: dict[str, str], log: Path, workers: int = 2) -> None:
        self.port = free_port()
        self.log = log
        self._log_file = log.open("w")
        command = [str(Path(sys.executable).with_name("gunicorn")), "config.wsgi:application"]
        command += ["--bind", f"127.0.0.1:{self.port}", "--workers", str(workers)]
        command += ["--timeout", "30", "--graceful-timeout", "5", "--log-level", "info"]
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

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-5000:]

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=15)
        self._log_file.close()


# --- the client --------------------------------------------------------------------------------


@dataclass
class Tally:
    lock: threading.Lock = field(default_factory=threading.Lock)
    acked: set[str] = field(default_factory=set)
    statuses: Counter = field(default_factory=Counter)
    retries: int = 0
    replays: int = 0
    bad_503: list[str] = field(default_factory=list)  # 503s without a usable Retry-After
    bad_429: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)  # 500s, 4xx other than 429, bad 200s
    first_503: float | None = None
    acked_batches: int = 0


def make_batches(events: int) -> list[tuple[list[str], bytes]]:
    rng = random.Random(SEED)
    batches = []
    for start in range(0, events, BATCH):
        items = []
        for n in range(start, min(start + BATCH, events)):
            user = f"u{rng.randrange(events // 10 + 1):05d}"
            if n % 10 == 0:
                items.append(
                    {
                        "type": "identify",
                        "userId": user,
                        "traits": {"plan": rng.choice(["free", "pro"]), "n": n},
                        "messageId": f"fault-{n:06d}",
                    }
                )
            else:
                items.append(
                    {
                        "type": "track",
                        "userId": user,
                        "event": rng.choice(["Signed Up", "Project Created", "Invite Sent"]),
                        "properties": {"n": n},
                        "messageId": f"fault-{n:06d}",
                    }
                )
        body = json.dumps({"batch": items}).encode()
        batches.append(([item["messageId"] for item in items], body))
    return batches


def retry_after(response: http.client.HTTPResponse) -> int | None:
    value = response.getheader("Retry-After")
    if value is None or not value.strip().isdigit():
        return None
    return int(value)


def send_all(
    port: int,
    key: str,
    batches: list[tuple[list[str], bytes]],
    tally: Tally,
    stop_at: float,
    rng: random.Random,
) -> None:
    headers = {
        "Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode(),
        "Content-Type": "application/json",
    }
    conn: http.client.HTTPConnection | None = None
    for index, (ids, body) in enumerate(batches):
        sends = 2 if index % REPLAY_EVERY == 0 else 1
        for send in range(sends):
            attempt = 0
            while True:
                if time.monotonic() > stop_at:
                    tally.unexpected.append(f"gave up on batch {ids[0]} at the deadline")
                    return
                status, wait = 0, None
                try:
                    if conn is None:
                        conn = http.client.HTTPConnection(
                            "127.0.0.1", port, timeout=REQUEST_TIMEOUT
                        )
                    conn.request("POST", "/v1/batch", body, headers)
                    response = conn.getresponse()
                    payload = response.read()
                    status = response.status
                    wait = retry_after(response)
                except (OSError, http.client.HTTPException):
                    if conn is not None:
                        conn.close()
                    conn = None
                with tally.lock:
                    tally.statuses[status] += 1
                    if status == 200:
                        if json.loads(payload) != {"success": True}:
                            tally.unexpected.append(f"200 with {payload[:200]!r}")
                        tally.acked.update(ids)
                        tally.acked_batches += send == 0
                        tally.replays += send == 1
                    elif status == 503:
                        tally.first_503 = tally.first_503 or time.monotonic()
                        if wait is None or wait < 1:
                            tally.bad_503.append(repr(response.getheaders()))
                    elif status == 429:
                        if wait is None or wait < 1:
                            tally.bad_429.append(repr(response.getheaders()))
                    elif status != 0:  # a 500, or a 4xx other than 429: never retried away
                        tally.unexpected.append(f"{status}: {payload[:300]!r}")
                    if status != 200:
                        tally.retries += 1
                if status == 200:
                    break
                attempt += 1
                backoff = min(1.0, 0.05 * 2**attempt) * rng.uniform(0.5, 1.5)
                time.sleep(min(1.0, wait) if wait else backoff)
    if conn is not None:
        conn.close()


# --- the test ------------------------------------------------------------------------------------


def test_acked_events_survive_worker_kills_and_a_database_outage(tmp_path: Path) -> None:
    key = source_create(name="fault-client").write_key
    settings_dict = connection.settings_dict
    proxy = CuttableProxy(
        (settings_dict["HOST"] or "127.0.0.1", int(settings_dict["PORT"] or 5432))
    )

    env = subprocess_env(tmp_path, smtp_port=free_port(), ONRAMP_LOG_LEVEL="WARNING")
    parts = urlsplit(env["DATABASE_URL"])
    netloc = parts.netloc.rsplit("@", 1)
    credentials = netloc[0] + "@" if len(netloc) == 2 else ""
    env["DATABASE_URL"] = urlunsplit(parts._replace(netloc=f"{credentials}127.0.0.1:{proxy.port}"))
    env["DATABASE_CONNECT_TIMEOUT"] = "2"

    batches = make_batches(EVENTS)
    server = Gunicorn(env, tmp_path / "gunicorn.log")
    tally = Tally()
    kills: list[int] = []
    outage: dict[str, float] = {}
    done = threading.Event()
    try:
        server.wait_ready()
        started = time.monotonic()
        stop_at = started + DEADLINE

        def killer() -> None:
            rng = random.Random(SEED + 1)
            while not done.wait(KILL_EVERY * rng.uniform(0.75, 1.25)):
                workers = server.workers()
                if workers:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(rng.choice(workers), signal.SIGKILL)
                        kills.append(int(time.monotonic() - started))

        def cutter() -> None:
            # Cut once a quarter of the batches are acknowledged: the outage hits a busy system.
            while not done.is_set() and tally.acked_batches < len(batches) // 4:
                time.sleep(0.05)
            if done.is_set():
                return
            outage["start"] = time.monotonic() - started
            proxy.cut()
            time.sleep(OUTAGE_SECONDS)
            proxy.restore()
            outage["end"] = time.monotonic() - started

        clients = [
            threading.Thread(
                target=send_all,
                args=(server.port, key, batches[i::CLIENTS], tally, stop_at, random.Random(i)),
            )
            for i in range(CLIENTS)
        ]
        helpers = [threading.Thread(target=killer), threading.Thread(target=cutter)]
        for thread in [*clients, *helpers]:
            thread.start()
        for thread in clients:
            thread.join()
        duration = time.monotonic() - started
        done.set()
        for thread in helpers:
            thread.join()
        assert server.popen.poll() is None, f"the gunicorn master died:\n{server.output()}"
        server_log = server.log.read_text(errors="replace")
    finally:
        done.set()
        server.stop()
        proxy.cut()

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*), count(DISTINCT message_id) FROM onboarding_event"
            " WHERE message_id LIKE 'fault-%%'"
        )
        stored_count, stored_distinct = cursor.fetchone()
        cursor.execute("SELECT message_id FROM onboarding_event WHERE message_id LIKE 'fault-%%'")
        stored = {row[0] for row in cursor.fetchall()}

    print(
        f"\ningest faults: {EVENTS} events in {len(batches)} batches of {BATCH} from {CLIENTS} "
        f"clients in {duration:.1f}s; {len(kills)} worker kills (at s {kills}); outage "
        f"{outage.get('start', -1):.1f}s-{outage.get('end', -1):.1f}s; {tally.statuses[503]} "
        f"503s, {tally.statuses[429]} 429s, {tally.statuses[0]} connection errors/timeouts, "
        f"{tally.retries} retries, {tally.replays} replays of acked batches; responses "
        f"{dict(tally.statuses)}; stored {stored_count} rows, {stored_distinct} distinct; "
        f"{proxy.connections} database connections through the proxy"
    )
    assert tally.unexpected == [], tally.unexpected[:10]
    assert tally.statuses[500] == 0
    assert "Internal Server Error" not in server_log, server_log[-5000:]
    assert "Traceback" not in server_log, server_log[-5000:]
    assert outage.get("end"), "the outage never happened"
    assert tally.statuses[503] >= 1, "no 503 during the database outage"
    assert tally.bad_503 == [], f"503 without Retry-After: {tally.bad_503[:3]}"
    assert tally.bad_429 == [], f"429 without Retry-After: {tally.bad_429[:3]}"
    assert len(kills) >= 3, f"only {len(kills)} worker kills: the run was too short"
    assert stored_count == stored_distinct, "a messageId is stored twice"
    assert tally.acked - stored == set(), f"acked but lost: {sorted(tally.acked - stored)[:10]}"
    assert len(tally.acked) == EVENTS  # every batch was eventually acknowledged
    assert stored_count == EVENTS


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
