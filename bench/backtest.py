"""Backtest benchmark (DESIGN §4.6): one rule replayed over about 10 M stored events.

    python bench/backtest.py [--scale 1.0] [--reuse] [--keep-db]

Data: the funnel benchmark's generator (``bench/funnel.py``: 1 M people, about 10 M events at
scale 1, a 5-step onboarding flow, seeded), loaded with ``COPY`` into its own database
(``DATABASE_URL``, default ``postgres://postgres@127.0.0.1:5432/onramp_bench_backtest``).
``--reuse`` keeps an already loaded database (it is checked for events); ``--keep-db`` keeps it
afterwards.

Timed: :func:`triggers.simulation.backtest.run_backtest` for an "inactive in onboarding for 30
minutes" rule with two follow-ups (email after 1 h, in-app after 3 d), over the whole 35 days of
signups and over the last 7 days, median of 3 runs after a warm-up. The baseline in the same run is
the cost of one plain scan: ``SELECT count(*), max(received_at) FROM onboarding_event``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import funnel  # noqa: E402  (the shared data generator)

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/onramp_bench_backtest"
RULE = {
    "trigger": {"kind": "inactive_in_flow", "flow": "activation", "minutes": 30},
    "follow_ups": [
        {"channel": "email", "template": "reminder", "delay": "1h"},
        {"channel": "in_app", "template": "nudge", "delay": "3d"},
    ],
    "reentry": {"once_per": "7d"},
}


def _has_data(url: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(url) as conn:
            return bool(
                conn.execute("SELECT EXISTS (SELECT 1 FROM onboarding_event)").fetchone()[0]
            )
    except psycopg.Error:
        return False


def prepare(url: str, scale: float) -> None:
    funnel.recreate_database(url)
    funnel.migrate(url)
    from django.db import connections

    from onboarding.models import OnboardingFlow, Source, Step

    source = Source.objects.create(name="bench", write_key_hash="0" * 64, write_key_prefix="bench")
    flow = OnboardingFlow.objects.create(
        slug="activation", name="Activation", window_seconds=funnel.WINDOW
    )
    for position, (name, event, where) in enumerate(funnel.STEPS, start=1):
        Step.objects.create(flow=flow, position=position, name=name, event_name=event, where=where)
    connections.close_all()
    with tempfile.TemporaryDirectory(prefix="onramp-bench-backtest-") as tmp:
        t0 = time.perf_counter()
        sizes = funnel.generate(int(1_000_000 * scale), Path(tmp), source.pk, flow.pk)
        print(f"generated {sizes} in {time.perf_counter() - t0:.1f} s", flush=True)
        t0 = time.perf_counter()
        funnel.load(url, Path(tmp))
        print(f"loaded in {time.perf_counter() - t0:.1f} s", flush=True)


def timed(fn, runs: int = 3):
    fn()
    seconds, result = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - t0)
    return statistics.median(seconds), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="1.0 = 1 M people, ~10 M events")
    parser.add_argument("--reuse", action="store_true", help="reuse a loaded database")
    parser.add_argument("--keep-db", action="store_true", help="keep the database afterwards")
    parser.add_argument("--setup-only", action="store_true", help="load the data and stop")
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL") or DEFAULT_URL
    if not url.startswith(("postgres://", "postgresql://")):
        raise SystemExit("bench/backtest.py runs on PostgreSQL only: set DATABASE_URL=postgres://…")
    info = [(k, v) for k, v in funnel.machine(funnel._admin_url(url)[0]) if k != "duckdb"]
    if args.reuse and _has_data(url):
        funnel.migrate(url)
    else:
        prepare(url, args.scale)
        funnel.migrate(url)
    if args.setup_only:
        return
    from django.db import connection, connections

    from triggers.services.templates import template_save
    from triggers.simulation.backtest import run_backtest

    for slug, channel in (("reminder", "email"), ("nudge", "in_app")):
        template_save(
            slug=slug,
            channel=channel,
            subject="Finish setting up" if channel == "email" else "",
            body="Hi {{ plan | default: 'there' }}",
        )
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM onboarding_event")
        events = cursor.fetchone()[0]

    def scan():
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*), max(received_at) FROM onboarding_event")
            return cursor.fetchone()

    scan_seconds, _ = timed(scan)
    rows = []
    for label, since, until in (
        ("35 days", funnel.START, funnel.START + timedelta(days=funnel.SIGNUP_DAYS + 2)),
        ("last 7 days", funnel.NOW - timedelta(days=7), funnel.NOW),
    ):
        seconds, result = timed(
            lambda since=since, until=until: run_backtest(
                definition=RULE, since=since, until=until, now=funnel.NOW
            )
        )
        rows.append((label, result, seconds))
    print()
    for name, value in info:
        print(f"{name:<20} {value}")
    print(f"{'data':<20} {events} events")
    print(f"{'baseline':<20} one scan of the events table: {scan_seconds:.2f} s")
    print()
    print(
        f"| {'backtest (inactive 30 min, 2 follow-ups)':<42} | {'ticks':>7} | {'entered':>8} |"
        f" {'sends':>8} | {'seconds':>8} | {'vs scan':>7} |"
    )
    print(f"|{'-' * 44}|{'-' * 8}:|{'-' * 9}:|{'-' * 9}:|{'-' * 9}:|{'-' * 8}:|")
    for label, result, seconds in rows:
        print(
            f"| {label:<42} | {result.ticks:>7} | {result.entered:>8} |"
            f" {result.scheduled:>8} | {seconds:>7.2f}s | {seconds / scan_seconds:>6.1f}x |"
        )
    connections.close_all()
    if not args.keep_db and not args.reuse:
        funnel.drop_database(url)


if __name__ == "__main__":
    main()
