"""Delivery benchmark (DESIGN §5: at least 200 emails/s to a local SMTP server from one worker
process).

    python bench/deliver.py [--messages 5000] [--backends postgres,sqlite] [--profile]

For each database (PostgreSQL: its own database ``onramp_bench_deliver``, dropped, re-created and
migrated; SQLite: a fresh file, migrated):

1. N people with an email address and a "Trial Ending" event go in through the batch API (the
   Django test client, in-process), and one ``evaluate_rules`` tick enrols them in an active rule
   whose one follow-up is an email due at once: N messages due (fixed seed, fixed names);
2. ``deliver_due()`` runs in this one process, exactly what one Celery worker process runs for a
   ``triggers.tasks.deliver_due`` tick (checks, person lock, render, ledger, SMTP, fenced update);
3. the same number of emails, rendered beforehand, go over one connection with ``smtplib``
   (the baseline: the SMTP server and the socket alone).

The SMTP server is aiosmtpd on 127.0.0.1 in a separate process (it would share the GIL in this
one); it counts what it accepts, and the benchmark checks that every message arrived once.
``--profile`` also runs ``deliver_due`` under cProfile and prints the top functions;
``--timings`` prints the wall-clock time of the pipeline's parts instead (no profiler overhead):
the claims, the hand-over commits, building each email, the waits for the helper thread's
``start`` (and for the writer thread's claim), the ``finish``. On PostgreSQL the claims and the
batch-end records run in the pass's writer thread while it sends (``ONRAMP_DELIVERY_OVERLAP``,
on by default; set it to ``false`` in the environment for the serial pass). The hand-over marks wait for their WAL flush unless the environment
sets ``ONRAMP_DELIVERY_DURABLE_MARK=false`` (docs/reliability.md); the table says which.
``--timings`` also gives each part's CPU time (of the thread that ran it), ``--profile`` profiles
the CPU time of the pass's thread (with ``ONRAMP_DELIVERY_OVERLAP=false`` the claims are in it).
The table gives the CPU per email, read from ``/proc``, of the delivering process (all its
threads), its PostgreSQL backends and the SMTP server, and of the SMTP server and the client
during the raw baseline: on 2 cores these share, the sum against two cores is the ceiling.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import smtplib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import (  # noqa: E402 - bench/common.py, next to this file
    cpu_model,
    cpu_seconds,
    free_port,
    recreate_database,
)

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/onramp_bench_deliver"
SEED = 20261128

_SERVER = """
import sys, threading
from aiosmtpd.controller import Controller
class Count:
    def __init__(self): self.keys = {}
    async def handle_DATA(self, server, session, envelope):
        head = envelope.content.split(b"\\r\\n\\r\\n", 1)[0]
        self.keys[hash(head)] = self.keys.get(hash(head), 0) + 1
        return "250 OK"
handler = Count()
controller = Controller(handler, hostname="127.0.0.1", port=int(sys.argv[1]))
controller.start()
print("ready", flush=True)
for line in sys.stdin:
    if line.strip() == "count":
        print(sum(handler.keys.values()), max(handler.keys.values(), default=0), flush=True)
        handler.keys.clear()
controller.stop()
"""


class SmtpProcess:
    def __init__(self) -> None:
        self.port = free_port()
        self.popen = subprocess.Popen(
            [sys.executable, "-c", _SERVER, str(self.port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.popen.stdout.readline().strip() == "ready"

    def take_count(self) -> tuple[int, int]:
        """Messages received since the last call, and the most times one message was."""
        self.popen.stdin.write("count\n")
        self.popen.stdin.flush()
        total, most = self.popen.stdout.readline().split()
        return int(total), int(most)

    def close(self) -> None:
        self.popen.stdin.close()
        self.popen.wait(timeout=10)


# --- the child: one backend -----------------------------------------------------------------


def _seed(count: int) -> None:
    from django.test import Client
    from django.utils import timezone

    from onboarding.services.sources import source_create
    from triggers.engine.evaluate import evaluate_rules
    from triggers.services.rules import rule_save, rule_set_status
    from triggers.services.templates import template_save

    rng = random.Random(SEED)
    template_save(
        slug="reminder",
        channel="email",
        subject="Finish setting up, {{ first_name }}",
        body="Hi {{ first_name | default: 'there' }},\n\nYou are one step away. "
        "Pick up where you left off: https://app.example.com/setup\n\nThe Onramp team",
    )
    rule, _ = rule_save(
        slug="trial",
        name="Trial ending",
        definition={
            "trigger": {"kind": "event", "event": "Trial Ending"},
            "follow_ups": [{"channel": "email", "template": "reminder", "delay": "0s"}],
            "reentry": "once",
        },
    )
    rule_set_status(rule=rule, status="active")
    key = source_create(name="bench").write_key
    client = Client()
    batch: list[dict] = []

    def flush() -> None:
        body = json.dumps({"writeKey": key, "batch": batch})
        response = client.post("/v1/batch", body, content_type="application/json")
        assert response.status_code == 200, response.content
        batch.clear()

    for n in range(count):
        user = f"bench{n:06d}"
        first = rng.choice(["Ada", "Grace", "Alan", "Edsger", "Barbara", "Ken"])
        traits = {"email": f"{user}@example.com", "first_name": first}
        batch.append({"type": "identify", "userId": user, "traits": traits, "messageId": f"i{n}"})
        batch.append(
            {"type": "track", "userId": user, "event": "Trial Ending", "messageId": f"t{n}"}
        )
        if len(batch) >= 1000:
            flush()
    if batch:
        flush()
    evaluate_rules(now=timezone.now())


def _prerendered(count: int) -> list[tuple[str, list[str], bytes]]:
    """The baseline's emails: rendered by Django's email classes, before the clock starts."""
    from django.core.mail import EmailMultiAlternatives

    from triggers.channels.email import html_body
    from triggers.links import click_url, open_pixel_url

    out = []
    for n in range(count):
        text = f"Hi Ada,\n\nYou are one step away. Pick up where you left off: https://app.example.com/setup\n\nThe Onramp team {n}"
        email = EmailMultiAlternatives(
            subject="Finish setting up, Ada",
            body=text,
            from_email="Onramp <onramp@localhost>",
            to=[f"raw{n:06d}@example.com"],
            headers={"X-Onramp-Message": f"{n:064d}"},
        )
        html = html_body(
            text,
            link=lambda target, n=n: click_url(n, target),
            unsubscribe="http://127.0.0.1:8000/u/x",
            pixel=open_pixel_url(n),
        )
        email.attach_alternative(html, "text/html")
        out.append((email.from_email, email.to, email.message().as_bytes(linesep="\r\n")))
    return out


def _time_parts() -> dict[str, list[float]]:
    """Wrap the pipeline's parts with accumulators: name → [wall seconds, calls, CPU seconds of
    the calling thread]."""
    import concurrent.futures
    import functools

    from triggers.channels.email import EmailChannel
    from triggers.delivery import pipeline

    parts: dict[str, list[float]] = {}

    def wrap(owner, name: str, label: str) -> None:
        function = getattr(owner, name)
        part = parts.setdefault(label, [0.0, 0, 0.0])

        @functools.wraps(function)
        def timed(*args, **kwargs):
            started, cpu = time.perf_counter(), time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                part[0] += time.perf_counter() - started
                part[1] += 1
                part[2] += time.thread_time() - cpu

        setattr(owner, name, timed)

    wrap(pipeline, "_claim", "claim (lock, check, ledger; writer thread*)")
    wrap(pipeline, "_lock_messages", "  of which: read and lock the messages")
    wrap(pipeline, "_passes_checks", "  of which: the checks, with rendering")
    wrap(pipeline, "_save_each", "  of which (and of the record): ledger writes")
    wrap(pipeline, "_hand", "hand-over commit")
    wrap(EmailChannel, "prepare", "prepare (build the email and its bytes)")
    wrap(concurrent.futures.Future, "result", "wait for start, or for a claim*")
    wrap(EmailChannel, "finish", "finish (the final '.' and its reply)")
    wrap(pipeline, "_record_sent", "record at the end of a batch (writer*)")
    return parts


def _flush_ms() -> float | None:
    """PostgreSQL: the median time of a one-row UPDATE committed synchronously (a round trip and
    a WAL flush: the floor of the hand-over mark each email costs), over 100 commits."""
    from django.db import connection

    if connection.vendor != "postgresql":
        return None
    times = []
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS bench_flush_durable (id int PRIMARY KEY, n int)")
        cursor.execute("INSERT INTO bench_flush_durable VALUES (1, 0) ON CONFLICT DO NOTHING")
        for _ in range(100):
            started = time.perf_counter()
            cursor.execute("UPDATE bench_flush_durable SET n = n + 1 WHERE id = 1")
            times.append(time.perf_counter() - started)
        cursor.execute("DROP TABLE bench_flush_durable")
    times.sort()
    return times[len(times) // 2] * 1000


class BackendCpu:
    """CPU seconds used by the bench database's PostgreSQL backends (the pass's connection and
    its writer thread's) between :meth:`start` and :meth:`stop`, when the server runs on this
    machine: a thread samples them every 0.1 s over its own connection, so the last reading of
    a backend that exits in between is kept (at most 0.1 s of its CPU is missed)."""

    def __init__(self) -> None:
        import threading

        import psycopg
        from django.conf import settings

        db = settings.DATABASES["default"]
        self.conn = psycopg.connect(
            host=db["HOST"],
            port=db["PORT"] or 5432,
            user=db["USER"],
            dbname=db["NAME"],
            password=db["PASSWORD"] or None,
            autocommit=True,
        )
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def _read(self) -> dict[int, float]:
        rows = self.conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid()"
        )
        return {pid: cpu_seconds(pid) for (pid,) in rows}

    def _sample(self) -> None:
        while not self.done.wait(0.1):
            self.last.update({pid: cpu for pid, cpu in self._read().items() if cpu})

    def start(self) -> None:
        self.first = self._read()
        self.last = dict(self.first)
        self.thread.start()

    def stop(self) -> float:
        self.done.set()
        self.thread.join()
        self.last.update({pid: cpu for pid, cpu in self._read().items() if cpu})
        self.conn.close()
        return sum(cpu - self.first.get(pid, 0.0) for pid, cpu in self.last.items())


def child(args: argparse.Namespace) -> None:
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection

    from triggers.delivery.pipeline import deliver_due
    from triggers.models import Message

    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", args.smtp_port
    settings.EMAIL_TIMEOUT = 10
    settings.ALLOWED_HOSTS = ["testserver"]  # the in-process test client
    call_command("migrate", verbosity=0)
    started = time.perf_counter()
    _seed(args.messages)
    seeded = time.perf_counter() - started
    due = Message.objects.filter(status="scheduled").count()
    assert due == args.messages, due

    parts = _time_parts() if args.timings else None
    backends = BackendCpu() if connection.vendor == "postgresql" else None
    smtp_cpu = cpu_seconds(args.smtp_pid)
    if backends:
        backends.start()
    if args.profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile(time.thread_time)
        started, cpu = time.perf_counter(), time.process_time()
        profiler.enable()
        report = deliver_due(time_budget=3600)
        profiler.disable()
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu
        stats = pstats.Stats(profiler, stream=sys.stderr)
        stats.sort_stats("tottime").print_stats(25)
        stats.sort_stats("cumulative").print_stats(40)
    else:
        started, cpu = time.perf_counter(), time.process_time()
        report = deliver_due(time_budget=3600)
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu
    backend_cpu = backends.stop() if backends else None
    smtp_cpu = cpu_seconds(args.smtp_pid) - smtp_cpu
    assert report.sent == args.messages, report.outcomes
    if parts:
        for label, (spent, calls, used) in parts.items():
            per_call = (
                f"{spent / max(calls, 1) * 1e3:6.2f} ms ({used / max(calls, 1) * 1e3:5.2f} CPU)"
            )
            print(f"{label:<46} {spent:7.2f} s {calls:6} calls {per_call}", file=sys.stderr)
        print(
            "* with ONRAMP_DELIVERY_OVERLAP (PostgreSQL), claims and batch-end records run in the "
            "writer thread, alongside the sends: their time is not the pass's",
            file=sys.stderr,
        )

    flush_ms = _flush_ms()
    emails = _prerendered(args.messages)
    raw_smtp_cpu, raw_cpu = cpu_seconds(args.smtp_pid), time.process_time()
    started = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", args.smtp_port) as raw:
        for sender, recipients, data in emails:
            raw.sendmail(sender, recipients, data)
    raw_seconds = time.perf_counter() - started
    raw_cpu = time.process_time() - raw_cpu
    raw_smtp_cpu = cpu_seconds(args.smtp_pid) - raw_smtp_cpu
    print(
        json.dumps(
            {
                "seconds": seconds,
                "cpu": cpu,
                "backend_cpu": backend_cpu,
                "smtp_cpu": smtp_cpu,
                "raw_seconds": raw_seconds,
                "raw_cpu": raw_cpu,
                "raw_smtp_cpu": raw_smtp_cpu,
                "seeded": seeded,
                "flush_ms": flush_ms,
                "durable_mark": settings.ONRAMP_DELIVERY_DURABLE_MARK,
            }
        )
    )


# --- the parent -------------------------------------------------------------------------------


def _machine() -> str:
    return f"{os.cpu_count()} × {cpu_model('unknown CPU')}, Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--backends", default="postgres,sqlite")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL))
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--timings", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--smtp-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--smtp-pid", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    smtp = SmtpProcess()
    rows = []
    try:
        for backend in args.backends.split(","):
            env = dict(
                os.environ,
                DJANGO_SETTINGS_MODULE="config.settings.test",
                ONRAMP_LOG_LEVEL="WARNING",
            )
            env.pop("DATABASE_URL", None)
            tmp = None
            if backend == "postgres":
                recreate_database(args.database_url)
                env["DATABASE_URL"] = args.database_url
            else:
                tmp = tempfile.TemporaryDirectory()
                env["ONRAMP_SQLITE_PATH"] = str(Path(tmp.name) / "bench.sqlite3")
            command = [sys.executable, __file__, "--child", "--smtp-port", str(smtp.port)]
            command += ["--smtp-pid", str(smtp.popen.pid)]
            command += ["--messages", str(args.messages)] + (["--profile"] if args.profile else [])
            command += ["--timings"] if args.timings else []
            done = subprocess.run(
                command, env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True, check=True
            )
            result = json.loads(done.stdout.strip().splitlines()[-1])
            received, most = smtp.take_count()
            assert received == 2 * args.messages and most == 1, (received, most)
            rows.append((backend, result))
            if tmp:
                tmp.cleanup()
    finally:
        smtp.close()

    n = args.messages
    print(f"\nDelivery: {n} emails due, one process, aiosmtpd on 127.0.0.1 — {_machine()}\n")
    print(f"{'what':<34} {'messages':>8} {'seconds':>8} {'emails/s':>9} {'CPU s':>7}")
    for backend, result in rows:
        print(
            f"{'deliver_due, ' + backend:<34} {n:>8} {result['seconds']:>8.2f} {n / result['seconds']:>9.0f} {result['cpu']:>7.2f}"
        )
        print(
            f"{'raw smtplib, one connection':<34} {n:>8} {result['raw_seconds']:>8.2f} {n / result['raw_seconds']:>9.0f}"
        )
        mode = "durable (a WAL flush each)" if result["durable_mark"] else "asynchronous"
        print(f"{'  hand-over marks':<34} {mode:>36}")
        ratio = result["raw_seconds"] / result["seconds"]
        flush = result.get("flush_ms")
        print(
            f"{'  ratio to raw smtplib':<34} {ratio:>36.2f}"
            + (f"   (synchronous commit, median: {flush:.2f} ms)" if flush else "")
        )
        per_email = [
            ("the delivering process", result["cpu"]),
            ("the SMTP server", result["smtp_cpu"]),
        ]
        if result["backend_cpu"] is not None:
            per_email.insert(1, ("its PostgreSQL backends", result["backend_cpu"]))
        print(
            "  CPU ms per email: "
            + ", ".join(f"{who} {cpu / n * 1e3:.2f}" for who, cpu in per_email)
            + f"; raw smtplib: the client {result['raw_cpu'] / n * 1e3:.2f},"
            f" the SMTP server {result['raw_smtp_cpu'] / n * 1e3:.2f}"
        )
    print("\n(every email was received exactly once; target: at least 200 emails/s)")
    print("(CPU s: CPU time of the delivering process itself, out of its wall-clock seconds;")
    print(" CPU per email from /proc: the delivering process with its threads, its PostgreSQL")
    print(" backends, the SMTP server; all share the machine's cores)")


if __name__ == "__main__":
    main()
