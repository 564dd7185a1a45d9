"""Helpers shared by the benchmark scripts in ``bench/`` (one implementation of each).

- the bench database: :func:`database_url`, :func:`maintenance_url`, :func:`with_database`,
  :func:`recreate_database`, :func:`drop_database`;
- Django and gunicorn with production settings: :func:`server_env`, :func:`configure_django`,
  :func:`migrate`, :func:`free_port`, :func:`start_gunicorn`, :func:`stop_gunicorn`;
- bulk loading with ``COPY``: :func:`ts_text`, :func:`copy_tables`, :func:`reset_sequences`,
  :func:`bulk_load`;
- timing and reporting: :func:`timed`, :func:`cpu_seconds`, :func:`percentile`, :func:`cpu_model`, :func:`machine`, :func:`print_machine`,
  :func:`print_table`.

Standard library only at import time (psycopg, Django are imported where used), so that
``bench/load.py`` can import it without the project's dependencies.
"""

# SQL here is built from this file's constants and table names only.
# ruff: noqa: S608

from __future__ import annotations

import http.client
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent

# --- the bench database ----------------------------------------------------------------------


def database_url(default: str, script: str) -> str:
    """``DATABASE_URL`` (or ``default``); exits unless it is a PostgreSQL URL."""
    url = os.environ.get("DATABASE_URL") or default
    if not url.startswith(("postgres://", "postgresql://")):
        raise SystemExit(f"{script} runs on PostgreSQL only: set DATABASE_URL=postgres://…")
    return url


def maintenance_url(url: str) -> tuple[str, str]:
    """The URL of the server's ``postgres`` database, and the name of the database in ``url``."""
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if not name:
        raise SystemExit("DATABASE_URL must name a database, e.g. …/onramp_bench")
    return urlunsplit(parts._replace(path="/postgres")), name


def with_database(url: str, name: str) -> str:
    """``url`` naming the database ``name`` on the same server."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def drop_database(url: str) -> None:
    """Drop the database in ``url`` if it exists, disconnecting its sessions."""
    import psycopg
    from psycopg import sql

    admin, name = maintenance_url(url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def recreate_database(url: str) -> None:
    """Drop (if it exists) and create the database in ``url``, empty."""
    import psycopg
    from psycopg import sql

    admin, name = maintenance_url(url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


# --- Django and gunicorn ---------------------------------------------------------------------


def server_env(url: str) -> dict[str, str]:
    """Environment for Django in this process and in gunicorn: production settings over HTTP,
    DEBUG off, the rate limiter off, no Redis."""
    env = dict(os.environ)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings.production",
            "DATABASE_URL": url,
            "DJANGO_SECRET_KEY": "bench-" + "x" * 50,
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "DJANGO_DEBUG": "0",
            "DJANGO_SECURE_SSL_REDIRECT": "0",
            "ONRAMP_RATE_LIMIT_REQUESTS": "0",
            "ONRAMP_LOG_LEVEL": "WARNING",
            "PYTHONPATH": str(ROOT),
        }
    )
    env.pop("REDIS_URL", None)  # the limiter is off; nothing else on this path uses the cache
    return env


def configure_django(url: str) -> None:
    """Point this process at the bench database with :func:`server_env` and set Django up."""
    os.environ.update(server_env(url))
    import django

    django.setup()


def migrate(url: str) -> None:
    """``manage.py migrate`` the bench database (in a child process), then set Django up here."""
    subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "migrate", "--verbosity", "0"],
        env=server_env(url),
        check=True,
    )
    configure_django(url)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_gunicorn(env: dict[str, str], port: int, workers: int, threads: int) -> subprocess.Popen:
    """gunicorn on 127.0.0.1:``port`` with ``env``; returns once it answers (30 s at most)."""
    command = [str(Path(sys.executable).with_name("gunicorn")), "config.wsgi:application"]
    command += ["--bind", f"127.0.0.1:{port}", "--workers", str(workers)]
    command += ["--worker-class", "gthread" if threads > 1 else "sync", "--threads", str(threads)]
    command += ["--keep-alive", "60", "--timeout", "120", "--log-level", "warning"]
    # Each instance its own: gunicorn's control socket is one path per user by default, so two
    # benchmarks (or a benchmark and the fault test) on one machine would take each other's.
    command += ["--no-control-socket"]
    process = subprocess.Popen(command, cwd=ROOT, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/v1/openapi.json")
            if conn.getresponse().status == 200:
                conn.close()
                return process
        except OSError:
            pass
        if process.poll() is not None:
            raise SystemExit("gunicorn exited during start-up")
        time.sleep(0.2)
    process.terminate()
    raise SystemExit("gunicorn did not answer within 30 s")


def stop_gunicorn(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)


# --- bulk loading with COPY ------------------------------------------------------------------

PERSON_COPY_COLUMNS = (
    "id, external_id, traits, trait_timestamps, email, phone, timezone, first_seen, last_seen,"
    " consent"
)
EVENT_COPY_COLUMNS = (
    "id, source_id, person_id, type, name, timestamp, received_at, message_id, user_id,"
    " anonymous_id, properties, context"
)
PROGRESS_COPY_COLUMNS = (
    "id, flow_id, person_id, entered_at, entry_event_id, latest_entry_at, furthest_step,"
    " offset_2, offset_3, offset_4, offset_5, offset_6, offset_7, offset_8, offsets_after,"
    " reached_at, completed_at, window_ends_at, updated_at, entry_source, entry_device, entry_plan"
)
REENTRY_COPY_COLUMNS = (
    "id, flow_id, person_id, first_entered_at, entered_at, entry_event_id, furthest_step,"
    " offset_2, offset_3, offset_4, offset_5, offset_6, offset_7, offset_8, offsets_after,"
    " reached_at, entry_source, entry_device, entry_plan"
)
OFFSET_COLUMNS = (*(f"offset_{k}" for k in range(2, 9)), "offsets_after")
LOADED_TABLES = (
    "onboarding_person",
    "onboarding_event",
    "onboarding_flowprogress",
    "onboarding_flowreentry",
)


def _copy_text(value) -> str:
    """One COPY text field: None as \\N, lists as arrays, datetimes in ISO, text escaped."""
    if value is None:
        return "\\N"
    if isinstance(value, list):
        return "{" + ",".join(str(int(v)) for v in value) + "}"
    if isinstance(value, datetime):
        return value.isoformat()
    text = str(value)
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def progress_copy_line(row, progress_id: int, updated: str) -> str:
    """A :class:`FlowProgress` row (unsaved) as a line for :data:`PROGRESS_COPY_COLUMNS`."""
    values = [
        progress_id,
        row.flow_id,
        row.person_id,
        row.entered_at,
        row.entry_event_id,
        row.latest_entry_at,
        row.furthest_step,
        *(getattr(row, name) for name in OFFSET_COLUMNS),
        row.reached_at,
        row.completed_at,
        row.window_ends_at,
    ]
    tail = [row.entry_source, row.entry_device, row.entry_plan]
    return "\t".join([*map(_copy_text, values), updated, *map(_copy_text, tail)]) + "\n"


def reentry_copy_line(row, reentry_id: int) -> str:
    """A :class:`FlowReentry` row (unsaved) as a line for :data:`REENTRY_COPY_COLUMNS`."""
    values = [
        reentry_id,
        row.flow_id,
        row.person_id,
        row.first_entered_at,
        row.entered_at,
        row.entry_event_id,
        row.furthest_step,
        *(getattr(row, name) for name in OFFSET_COLUMNS),
        row.reached_at,
        row.entry_source,
        row.entry_device,
        row.entry_plan,
    ]
    return "\t".join(map(_copy_text, values)) + "\n"


_DAY_TEXT: dict[int, str] = {}


def ts_text(seconds: int) -> str:
    """Epoch seconds as PostgreSQL timestamptz text, fast (a cache per day)."""
    day, rest = divmod(seconds, 86400)
    prefix = _DAY_TEXT.get(day)
    if prefix is None:
        prefix = _DAY_TEXT[day] = datetime.fromtimestamp(day * 86400, UTC).strftime("%Y-%m-%d")
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{prefix} {hours:02d}:{minutes:02d}:{secs:02d}+00"


def _copy_file(cursor, table: str, columns: str, path: Path) -> None:
    with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy, open(path, "rb") as f:
        while block := f.read(1 << 20):
            copy.write(block)


def copy_tables(cursor, workdir: Path) -> None:
    """COPY ``people.copy``, ``events.copy``, ``progress.copy`` and (if written)
    ``reentry.copy`` from ``workdir``."""
    _copy_file(cursor, "onboarding_person", PERSON_COPY_COLUMNS, workdir / "people.copy")
    # The generated events are live and on time: each person's last activity is their last
    # receipt (what the inactivity detector reads, DESIGN §4.1).
    cursor.execute(
        "UPDATE onboarding_person SET last_event_at = last_seen, last_event_received_at = last_seen"
    )
    _copy_file(cursor, "onboarding_event", EVENT_COPY_COLUMNS, workdir / "events.copy")
    _copy_file(cursor, "onboarding_flowprogress", PROGRESS_COPY_COLUMNS, workdir / "progress.copy")
    if (workdir / "reentry.copy").exists():
        _copy_file(cursor, "onboarding_flowreentry", REENTRY_COPY_COLUMNS, workdir / "reentry.copy")


def reset_sequences(cursor) -> None:
    """Move the id sequences of the loaded tables past the ids written by COPY."""
    for table in LOADED_TABLES:
        cursor.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"
        )


def bulk_load(url: str, workdir: Path) -> None:
    """COPY people, events and progress; the event table's indexes and FKs are rebuilt after."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        indexes = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'onboarding_event'"
            " AND indexname NOT IN (SELECT conname FROM pg_constraint"
            " WHERE conrelid = 'onboarding_event'::regclass)"
        ).fetchall()
        constraints = conn.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE conrelid = 'onboarding_event'::regclass AND contype IN ('u', 'f')"
        ).fetchall()
        for name, _ in constraints:
            conn.execute(f'ALTER TABLE onboarding_event DROP CONSTRAINT "{name}"')
        for name, _ in indexes:
            conn.execute(f'DROP INDEX "{name}"')
        conn.execute("SET maintenance_work_mem = '512MB'")
        with conn.cursor() as cursor:
            t0 = time.perf_counter()
            copy_tables(cursor, workdir)
            print(f"  COPY: {time.perf_counter() - t0:.1f} s", flush=True)
            t0 = time.perf_counter()
            for _, definition in indexes:
                # A partitioned table's index reads "ON ONLY parent", which would not build
                # the partitions' indexes.
                cursor.execute(definition.replace(" ON ONLY ", " ON ", 1))
            for name, definition in constraints:
                cursor.execute(f'ALTER TABLE onboarding_event ADD CONSTRAINT "{name}" {definition}')
            print(f"  indexes and constraints: {time.perf_counter() - t0:.1f} s", flush=True)
            reset_sequences(cursor)
            t0 = time.perf_counter()
            cursor.execute("VACUUM ANALYZE")
            print(f"  VACUUM ANALYZE: {time.perf_counter() - t0:.1f} s", flush=True)


# --- timing and reporting --------------------------------------------------------------------


def timed(fn: Callable[[], object], runs: int = 3) -> tuple[float, object]:
    """Median seconds of ``runs`` calls after a warm-up call, and the last result."""
    fn()  # warm-up
    times = []
    result = None
    for _ in range(runs):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process on this machine (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_model(default: str = "unknown") -> str:
    return next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        default,
    )


def machine(
    url: str, *, pg_settings: bool = False, extra: Iterable[tuple[str, str]] = ()
) -> list[tuple[str, str]]:
    """The machine, for the report: (name, value) rows.

    ``url`` is any database on the server; ``pg_settings`` adds shared_buffers, work_mem and
    max_parallel_workers_per_gather to the PostgreSQL version; ``extra`` rows go before Python's.
    """
    import psycopg

    mem_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    with psycopg.connect(url) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
        if pg_settings:
            settings = conn.execute(
                "SELECT string_agg(name || '=' || setting, ', ') FROM pg_settings WHERE name IN"
                " ('shared_buffers', 'work_mem', 'max_parallel_workers_per_gather')"
            ).fetchone()[0]
            version = f"{version} ({settings})"
    return [
        ("date", datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")),
        ("cpus (nproc)", str(os.cpu_count())),
        ("cpu model", cpu_model()),
        ("ram", f"{mem_kb / 1024 / 1024:.1f} GiB"),
        ("load average before", " ".join(f"{x:.2f}" for x in os.getloadavg())),
        ("postgresql", version),
        *extra,
        ("python", platform.python_version()),
    ]


def percentile(values: Sequence[float], q: float) -> float:
    """The value at quantile ``q`` by rank (no interpolation): with 10 values, q=0.95 is the
    largest."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def print_machine(info: Iterable[tuple[str, str]]) -> None:
    for name, value in info:
        print(f"{name:<20} {value}")


def print_table(
    header: Sequence[str], widths: Sequence[int], rows: Iterable[Sequence[str]]
) -> None:
    """A markdown table padded to ``widths``: the first column left-aligned, the others right."""

    def line(cells: Sequence[str]) -> str:
        first, *others = cells
        padded = [f"{first:<{widths[0]}}"]
        padded += [f"{cell:>{width}}" for cell, width in zip(others, widths[1:], strict=True)]
        return "| " + " | ".join(padded) + " |"

    print(line(header))
    print(
        "|" + "-" * (widths[0] + 2) + "|" + "|".join("-" * (w + 1) + ":" for w in widths[1:]) + "|"
    )
    for row in rows:
        print(line(row))
