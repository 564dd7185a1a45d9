"""Backtest benchmark (DESIGN §4.6): one rule replayed over about 10 M stored events.

    python bench/backtest.py [--scale 1.0] [--db NAME] [--reuse] [--keep-db] [--period 7d|35d]

Data: the funnel benchmark's generator (``bench/funnel.py``: 1 M people, about 10 M events at
scale 1, a 5-step onboarding flow, seeded), loaded with ``COPY`` into its own database
(``DATABASE_URL``, default ``postgres://postgres@127.0.0.1:5432/onramp_bench_backtest``; ``--db``
names another database on the same server, so runs never share the funnel benchmark's).
``--reuse`` keeps an already loaded database (it is checked for events); ``--keep-db`` keeps it
afterwards.

Timed: :func:`triggers.simulation.backtest.run_backtest` for an "inactive in onboarding for 30
minutes" rule with two follow-ups (email after 1 h, in-app after 3 d), over the whole 35 days of
signups and over the last 7 days, median of 3 runs after a warm-up. The baseline in the same run is
the cost of one plain scan: ``SELECT count(*), max(received_at) FROM onboarding_event``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import funnel  # noqa: E402  (the shared data generator)
from common import (  # noqa: E402 - bench/common.py, next to this file
    bulk_load,
    database_url,
    drop_database,
    machine,
    maintenance_url,
    migrate,
    print_machine,
    print_table,
    recreate_database,
    timed,
    with_database,
)

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
    recreate_database(url)
    migrate(url)
    from django.db import connections

    source, flow = funnel.create_flow()
    connections.close_all()
    with tempfile.TemporaryDirectory(prefix="onramp-bench-backtest-") as tmp:
        t0 = time.perf_counter()
        sizes = funnel.generate(int(1_000_000 * scale), Path(tmp), source.pk, flow.pk)
        print(f"generated {sizes} in {time.perf_counter() - t0:.1f} s", flush=True)
        t0 = time.perf_counter()
        bulk_load(url, Path(tmp))
        print(f"loaded in {time.perf_counter() - t0:.1f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="1.0 = 1 M people, ~10 M events")
    parser.add_argument("--reuse", action="store_true", help="reuse a loaded database")
    parser.add_argument("--keep-db", action="store_true", help="keep the database afterwards")
    parser.add_argument("--setup-only", action="store_true", help="load the data and stop")
    parser.add_argument("--runs", type=int, default=3, help="timed runs after the warm-up")
    parser.add_argument("--db", help="database name (default: the one in DATABASE_URL)")
    parser.add_argument(
        "--period", choices=("7d", "35d"), action="append", help="time only these periods"
    )
    args = parser.parse_args()
    url = database_url(DEFAULT_URL, "bench/backtest.py")
    if args.db:
        url = with_database(url, args.db)
    info = machine(maintenance_url(url)[0], pg_settings=True)
    if args.reuse and _has_data(url):
        migrate(url)
    else:
        prepare(url, args.scale)
        migrate(url)
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
    periods = {
        "35d": ("35 days", funnel.START, funnel.START + timedelta(days=funnel.SIGNUP_DAYS + 2)),
        "7d": ("last 7 days", funnel.NOW - timedelta(days=7), funnel.NOW),
    }
    for key in args.period or ("35d", "7d"):
        label, since, until = periods[key]
        seconds, result = timed(
            lambda since=since, until=until: run_backtest(
                definition=RULE, since=since, until=until, now=funnel.NOW
            ),
            runs=args.runs,
        )
        rows.append((label, result, seconds))
    print()
    print_machine(info)
    print(f"{'data':<20} {events} events")
    print(f"{'baseline':<20} one scan of the events table: {scan_seconds:.2f} s")
    print()
    print_table(
        [
            "backtest (inactive 30 min, 2 follow-ups)",
            "ticks",
            "entered",
            "skipped",
            "sends",
            "seconds",
            "vs scan",
        ],
        [42, 7, 8, 9, 8, 8, 7],
        [
            [
                label,
                str(result.ticks),
                str(result.entered),
                str(result.skipped["reentry"]),
                str(result.scheduled),
                f"{seconds:.2f}s",
                f"{seconds / scan_seconds:.1f}x",
            ]
            for label, result, seconds in rows
        ],
    )
    connections.close_all()
    if not args.keep_db and not args.reuse:
        drop_database(url)


if __name__ == "__main__":
    main()
