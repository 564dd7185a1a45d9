"""What one write-key lookup costs, per request, on the configured database.

    DATABASE_URL=postgres://… python bench/write_key.py [--sources 100] [--lookups 5000]
    python bench/write_key.py                     # SQLite, a scratch file

Every API request looks its write key up in the database (``source_for_write_key``: SHA-256 of the
key, one indexed query, a constant-time compare); there is no per-process cache, so a rotation or
deactivation holds from the next request (docs/api.md). This measures that lookup for a current
key, a previous key within its grace period and an unknown key, against the floor of any
per-request check (one primary-key read: what a "version row" would cost instead). The database
is migrated first; on SQLite a scratch file is used and removed, on PostgreSQL the given database
(use a scratch one: sources named ``bench-key-*`` are created and deleted).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sources", type=int, default=100)
    parser.add_argument("--lookups", type=int, default=5000)
    args = parser.parse_args()
    scratch = None
    if not os.environ.get("DATABASE_URL"):
        scratch = tempfile.mkdtemp(prefix="onramp-bench-key-")
        os.environ["ONRAMP_SQLITE_PATH"] = str(Path(scratch) / "bench.sqlite3")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")
    import django

    django.setup()
    from datetime import timedelta

    from django.core.management import call_command
    from django.db import connection

    from onboarding.models import Source
    from onboarding.services.sources import source_create, source_for_write_key, source_rotate

    call_command("migrate", verbosity=0)
    Source.objects.filter(name__startswith="bench-key-").delete()
    keys = [source_create(name=f"bench-key-{n}").write_key for n in range(args.sources)]
    previous = keys[0]
    current = source_rotate(name="bench-key-0", grace=timedelta(hours=1)).write_key
    known = keys[1]

    def timed(label: str, call) -> None:
        for _ in range(200):  # warm up: connection, statement caches
            call()
        samples = []
        for _ in range(args.lookups):
            start = time.perf_counter_ns()
            call()
            samples.append((time.perf_counter_ns() - start) / 1000)
        samples.sort()
        p99 = samples[int(len(samples) * 0.99)]
        median = statistics.median(samples)
        print(f"| {label:<34} | {samples[0]:8.1f} | {median:8.1f} | {p99:8.1f} |")

    first = Source.objects.order_by("pk").values_list("pk", flat=True).first()
    print(
        f"{connection.vendor}, {args.sources} sources, {args.lookups} lookups each; load {os.getloadavg()}"
    )
    print(f"| {'what':<34} | {'min µs':>8} | {'p50 µs':>8} | {'p99 µs':>8} |")
    print(f"|{'-' * 36}|{'-' * 9}:|{'-' * 9}:|{'-' * 9}:|")
    timed("current key", lambda: source_for_write_key(known))
    timed("previous key (grace)", lambda: source_for_write_key(previous))
    timed("rotated key, new", lambda: source_for_write_key(current))
    timed("unknown key", lambda: source_for_write_key("onr_unknown-key-for-bench"))
    timed(
        "floor: one primary-key read",
        lambda: list(Source.objects.filter(pk=first).values_list("pk")),
    )
    Source.objects.filter(name__startswith="bench-key-").delete()
    if scratch:
        connection.close()
        for path in Path(scratch).iterdir():
            path.unlink()
        os.rmdir(scratch)


if __name__ == "__main__":
    main()
