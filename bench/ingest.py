"""Ingestion benchmark (DESIGN §5): the batch endpoint over HTTP against a raw ``COPY`` baseline.

    python bench/ingest.py [--events 1000000] [--clients 4] [--batch 500] [--workers 4]
                           [--threads 1]

PostgreSQL only. In one run, on one machine:

1. creates its own database (``DATABASE_URL``, default
   ``postgres://postgres@127.0.0.1:5432/onramp_bench``; dropped and re-created), migrates it,
   installs the demo's 5-step activation flow (so flow progress is maintained as events arrive)
   and creates a source;
2. generates N events with the seeded demo generator (:mod:`onboarding.demo`, fixed seed), as
   pre-serialized Segment batch bodies, and the same rows in ``COPY`` text format;
3. (a) baseline: ``COPY`` of those rows into a scratch table created ``LIKE onboarding_event
   INCLUDING ALL`` (same columns, indexes and unique constraint; with events partitioned by
   month, plus the unique (source_id, message_id) index of the dedupe table), timed including
   the commit;
4. (b) starts gunicorn on 127.0.0.1 (production settings, DEBUG off, rate limiter off; by default
   4 sync workers, the README's production command: one request per accepted connection, so the
   clients' requests spread over the workers) and sends the batches to ``POST /v1/batch`` from
   several client processes, from the first request to the last 200; then checks that exactly N
   events are stored;
5. measures single ``POST /v1/track`` latency (one client, sequential calls, p50/p99);
6. prints a table with the ratio b/a (target ≥ 0.30) and drops the database (``--keep-db`` keeps it).

Alongside the wall-clock rates it reports the CPU time each side used, read from ``/proc``: the
COPY's PostgreSQL backend in (a); the gunicorn workers and their PostgreSQL backends in (b). On a
shared machine the wall clock follows the other users' load; CPU per event is the steadier
figure for comparing two trees.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import multiprocessing as mp
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import (  # noqa: E402 - bench/common.py, next to this file
    configure_django,
    cpu_seconds,
    database_url,
    drop_database,
    free_port,
    machine,
    maintenance_url,
    percentile,
    print_machine,
    print_table,
    recreate_database,
    server_env,
    start_gunicorn,
    stop_gunicorn,
)

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/onramp_bench"
SEED = 20240601
EVENT_COLUMNS = (
    "source_id",
    "person_id",
    "type",
    "name",
    "timestamp",
    "received_at",
    "message_id",
    "user_id",
    "anonymous_id",
    "properties",
    "context",
)
COPY_TABLE = "bench_copy_event"


# --- database --------------------------------------------------------------------------------


def setup_django(url: str) -> str:
    """Migrate the bench database, install the demo flow, create a source; return its key."""
    configure_django(url)
    from django.core.management import call_command

    from onboarding.demo_config import install_demo_config
    from onboarding.services.sources import source_create

    call_command("migrate", verbosity=0)
    install_demo_config()  # the 5-step activation flow, so ingestion maintains flow progress
    return source_create(name="bench").write_key


# --- data ------------------------------------------------------------------------------------


def _copy_text(value: str) -> str:
    return (
        value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    )


def _dumps(value: dict) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def generate(
    events: int, batch_size: int, source_id: int, track_calls: int
) -> tuple[list[bytes], list[bytes], list[bytes]]:
    """Batch bodies for HTTP, the same rows as COPY text chunks, and single track bodies."""
    from onboarding.demo import iter_journeys

    now = datetime.now(UTC).replace(microsecond=0)
    sent_at = now.isoformat().replace("+00:00", "Z")
    received = now.isoformat()
    bodies: list[bytes] = []
    copy_chunks: list[bytes] = []
    batch: list[dict] = []
    lines: list[str] = []
    users: list[str] = []
    produced = 0
    for person_id, (person, payloads) in enumerate(
        iter_journeys(people=events, seed=SEED, now=now), start=1
    ):
        users.append(person.user_id)
        for payload in payloads:
            batch.append(payload)
            is_traits = payload["type"] == "identify"
            row = (
                str(source_id),
                str(person_id),
                payload["type"],
                payload.get("event", ""),
                payload["timestamp"],
                received,
                payload["messageId"],
                payload.get("userId", ""),
                payload["anonymousId"],
                _dumps(payload["traits"] if is_traits else payload["properties"]),
                _dumps(payload["context"]),
            )
            lines.append("\t".join(_copy_text(v) for v in row))
            produced += 1
            if len(batch) == batch_size or produced == events:
                bodies.append(
                    json.dumps({"batch": batch, "sentAt": sent_at}, separators=(",", ":")).encode()
                )
                copy_chunks.append(("\n".join(lines) + "\n").encode())
                batch, lines = [], []
            if produced == events:
                break
        if produced == events:
            break
    tracks = [
        json.dumps(
            {
                "userId": users[i % len(users)],
                "event": "Settings Opened",
                "properties": {"section": "notifications"},
                "context": {"library": {"name": "analytics-python", "version": "2.3.3"}},
                "messageId": f"bench-track-{i}",
            }
        ).encode()
        for i in range(track_calls + 50)
    ]
    return bodies, copy_chunks, tracks


# --- CPU accounting --------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (gunicorn's workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def backends(conn) -> list[int]:
    """The other PostgreSQL backends connected to the bench database (the workers')."""
    return [
        pid
        for (pid,) in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid()"
        )
    ]


class CpuMeter:
    """CPU seconds used by the gunicorn workers and their PostgreSQL backends between
    :meth:`start` and :meth:`stop`, sampled every 0.2 s by a thread: Django closes a connection
    after 60 s and its backend exits, so a backend's last reading is kept (at most 0.2 s of its
    CPU is missed). A backend opened in between started from zero."""

    def __init__(self, url: str, master_pid: int) -> None:
        import threading

        import psycopg

        self.conn = psycopg.connect(url, autocommit=True)
        self.master_pid = master_pid
        self.first: tuple[dict[int, float], dict[int, float]] = ({}, {})
        self.last: tuple[dict[int, float], dict[int, float]] = ({}, {})
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def _read(self) -> tuple[dict[int, float], dict[int, float]]:
        workers = {pid: cpu_seconds(pid) for pid in children(self.master_pid)}
        return workers, {pid: cpu_seconds(pid) for pid in backends(self.conn)}

    def _sample(self) -> None:
        while not self.done.wait(0.2):
            for last, now in zip(self.last, self._read(), strict=True):
                last.update({pid: seconds for pid, seconds in now.items() if seconds})

    def start(self) -> None:
        self.first = self._read()
        self.last = (dict(self.first[0]), dict(self.first[1]))
        self.thread.start()

    def stop(self) -> tuple[float, float]:
        self.done.set()
        self.thread.join()
        for last, now in zip(self.last, self._read(), strict=True):
            last.update({pid: seconds for pid, seconds in now.items() if seconds})
        self.conn.close()
        return tuple(  # type: ignore[return-value]
            sum(seconds - first.get(pid, 0.0) for pid, seconds in last.items())
            for first, last in zip(self.first, self.last, strict=True)
        )


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# --- (a) COPY --------------------------------------------------------------------------------


def run_copy(url: str, chunks: list[bytes]) -> tuple[float, float]:
    """Seconds of the COPY up to its commit, and the CPU seconds its backend used."""
    import psycopg

    columns = ", ".join(f'"{c}"' for c in EVENT_COLUMNS)
    with psycopg.connect(url) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {COPY_TABLE}")
        conn.execute(f"CREATE TABLE {COPY_TABLE} (LIKE onboarding_event INCLUDING ALL)")
        # Events partitioned by month carry the messageId key in onboarding_event_dedupe, which
        # LIKE does not copy: give the baseline the same unique (source_id, message_id) index.
        has_key = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = %s::regclass"
            " AND contype = 'u')",
            [COPY_TABLE],
        ).fetchone()[0]
        if not has_key:
            conn.execute(f"CREATE UNIQUE INDEX ON {COPY_TABLE} (source_id, message_id)")
        conn.commit()
        conn.execute("CHECKPOINT")
        backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        conn.commit()
        cpu_before = cpu_seconds(backend)
        started = time.perf_counter()
        copy_sql = f"COPY {COPY_TABLE} ({columns}) FROM STDIN"
        with conn.cursor() as cursor, cursor.copy(copy_sql) as copy:
            for chunk in chunks:
                copy.write(chunk)
        conn.commit()
        elapsed = time.perf_counter() - started
        copy_cpu = cpu_seconds(backend) - cpu_before
        count = conn.execute(f"SELECT count(*) FROM {COPY_TABLE}").fetchone()[0]  # noqa: S608
        if count != sum(chunk.count(b"\n") for chunk in chunks):
            raise SystemExit(f"COPY stored {count} rows, expected more")
        conn.execute(f"DROP TABLE {COPY_TABLE}")
        conn.commit()
        conn.execute("CHECKPOINT")
    return elapsed, copy_cpu


# --- (b) HTTP --------------------------------------------------------------------------------


def start_profiler(pid: int, output: str) -> subprocess.Popen:
    """Sample every gunicorn worker, idle threads included, so waits on PostgreSQL show too."""
    spy = Path(sys.executable).with_name("py-spy")
    command = [str(spy), "record", "--pid", str(pid), "--subprocesses", "--idle"]
    command += ["--format", "raw", "--rate", "200", "--output", output, "--nonblocking"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    time.sleep(1)
    return process


def _post(conn: http.client.HTTPConnection, path: str, body: bytes, headers: dict) -> int:
    conn.request("POST", path, body, headers)
    response = conn.getresponse()
    response.read()
    return response.status


def _client(port, auth, bodies, start, results) -> None:
    headers = {"Authorization": auth, "Content-Type": "application/json"}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.connect()
    start.wait()
    failures = 0
    for body in bodies:
        for attempt in range(5):
            try:
                status = _post(conn, "/v1/batch", body, headers)
            except (OSError, http.client.HTTPException):
                conn.close()
                status = 0
            if status == 200:
                break
            failures += 1
            time.sleep(0.1 * (attempt + 1))
        else:
            results.put(("error", f"batch failed with status {status}"))
            return
    results.put(("done", time.monotonic(), failures))


def run_http(port: int, key: str, bodies: list[bytes], clients: int) -> tuple[float, int]:
    auth = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
    context = mp.get_context("fork")
    start = context.Event()
    results = context.Queue()
    processes = [
        context.Process(target=_client, args=(port, auth, bodies[i::clients], start, results))
        for i in range(clients)
    ]
    for process in processes:
        process.start()
    time.sleep(0.5)  # let every client connect
    started = time.monotonic()
    start.set()
    finished, retries = [], 0
    for _ in processes:
        outcome = results.get()
        if outcome[0] == "error":
            raise SystemExit(outcome[1])
        finished.append(outcome[1])
        retries += outcome[2]
    for process in processes:
        process.join()
    return max(finished) - started, retries


def run_track_latency(port: int, key: str, bodies: list[bytes], calls: int) -> list[float]:
    auth = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
    headers = {"Authorization": auth, "Content-Type": "application/json"}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for body in bodies[:50]:  # warm-up
        _post(conn, "/v1/track", body, headers)
    latencies = []
    for body in bodies[50 : 50 + calls]:
        started = time.perf_counter()
        status = _post(conn, "/v1/track", body, headers)
        latencies.append(time.perf_counter() - started)
        if status != 200:
            raise SystemExit(f"/v1/track answered {status}")
    conn.close()
    return latencies


def stored_counts(url: str) -> tuple[int, int, int]:
    import psycopg

    with psycopg.connect(url) as conn:
        return tuple(
            conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: S608
            for table in ("onboarding_event", "onboarding_person", "onboarding_flowprogress")
        )


# --- report ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=4, help="client processes (4)")
    parser.add_argument("--batch", type=int, default=500, help="events per batch request (500)")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers (4)")
    parser.add_argument(
        "--threads", type=int, default=1, help="threads per worker (1: sync; more: gthread)"
    )
    parser.add_argument("--track-calls", type=int, default=2000)
    parser.add_argument("--keep-db", action="store_true", help="keep the database afterwards")
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="run gunicorn under py-spy (pip install py-spy) and write collapsed stacks to FILE",
    )
    args = parser.parse_args()
    url = database_url(DEFAULT_URL, "bench/ingest.py")

    info = machine(maintenance_url(url)[0])
    t0 = time.perf_counter()
    recreate_database(url)
    key = setup_django(url)
    from django.db import connections

    from onboarding.models import Source

    source_id = Source.objects.get(name="bench").pk
    connections.close_all()
    print(f"setup: {time.perf_counter() - t0:.1f} s", flush=True)

    t0 = time.perf_counter()
    bodies, chunks, tracks = generate(args.events, args.batch, source_id, args.track_calls)
    size = sum(map(len, bodies))
    print(
        f"generated {args.events} events in {len(bodies)} batches "
        f"({size / 1e6:.0f} MB of JSON) in {time.perf_counter() - t0:.1f} s",
        flush=True,
    )

    load_before_copy = load_average()
    copy_seconds, copy_cpu = run_copy(url, chunks)
    del chunks
    print(f"(a) COPY: {copy_seconds:.2f} s", flush=True)

    port = free_port()
    server = start_gunicorn(server_env(url), port, args.workers, args.threads)
    try:
        spy = start_profiler(server.pid, args.profile) if args.profile else None
        load_before_http = load_average()
        meter = CpuMeter(url, server.pid)
        meter.start()
        http_seconds, retries = run_http(port, key, bodies, args.clients)
        worker_cpu, backend_cpu = meter.stop()
        load_after_http = load_average()
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
            spy.wait(timeout=60)
        print(f"(b) HTTP: {http_seconds:.2f} s", flush=True)
        stored, people, progress = stored_counts(url)
        latencies = run_track_latency(port, key, tracks, args.track_calls)
    finally:
        stop_gunicorn(server)
    if stored != args.events:
        raise SystemExit(f"stored {stored} events, expected {args.events}")

    copy_rate = args.events / copy_seconds
    http_rate = args.events / http_seconds
    print()
    print_machine(info)
    print(
        f"{'setup':<20} {args.clients} client processes, gunicorn {args.workers} workers x "
        f"{args.threads} threads, {args.batch} events per batch; {retries} retried requests"
    )
    print()
    print_table(
        ["method", "rows", "seconds", "events/s"],
        [32, 9, 8, 9],
        [
            [
                "(a) COPY, indexed scratch table",
                str(args.events),
                f"{copy_seconds:.2f}",
                f"{copy_rate:.0f}",
            ],
            [
                "(b) POST /v1/batch over HTTP",
                str(args.events),
                f"{http_seconds:.2f}",
                f"{http_rate:.0f}",
            ],
        ],
    )
    verdict = "meets" if http_rate / copy_rate >= 0.30 else "BELOW"
    print(f"\nratio b/a: {http_rate / copy_rate:.2f} ({verdict} the 0.30 target)")
    print(f"stored: {stored} events (= N), {people} people, {progress} flow progress rows")
    per_event = (worker_cpu + backend_cpu) / args.events * 1e6
    print(
        f"CPU: (a) COPY backend {copy_cpu:.2f} s ({copy_cpu / args.events * 1e6:.1f} µs per row); "
        f"(b) gunicorn workers {worker_cpu:.2f} s + PostgreSQL backends {backend_cpu:.2f} s "
        f"({per_event:.1f} µs per event)"
    )
    print(
        f"load average: before (a) {load_before_copy}; before (b) {load_before_http}; "
        f"after (b) {load_after_http}"
    )
    print(
        f"single /v1/track, 1 client, {len(latencies)} sequential calls: "
        f"p50 {percentile(latencies, 0.5) * 1000:.1f} ms, "
        f"p99 {percentile(latencies, 0.99) * 1000:.1f} ms, "
        f"max {max(latencies) * 1000:.1f} ms (target p99 < 20 ms)"
    )
    if not args.keep_db:
        drop_database(url)


if __name__ == "__main__":
    main()
