"""``manage.py rollup_kpis [--days 30] [--until YYYY-MM-DD]``: recompute the KPI roll-ups.

The beat task does this every hour for recent days; this command backfills (after an import, a
definition change, or a first deployment). Re-running replaces the days it covers.
"""

from __future__ import annotations

from datetime import date, timedelta

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from dashboard.kpis import rollup_kpis


class Command(BaseCommand):
    help = "Recompute the daily KPI roll-ups of the last N days (today included)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--days", type=int, default=30, help="How many days (30).")
        parser.add_argument("--until", help="Last day to recompute (YYYY-MM-DD; today).")

    def handle(self, *args, **options) -> None:
        now = timezone.now()
        if options["days"] < 1:
            raise CommandError("--days must be at least 1")
        try:
            last = date.fromisoformat(options["until"]) if options["until"] else now.date()
        except ValueError:
            raise CommandError(f"--until: {options['until']!r} is not a date") from None
        first = last - timedelta(days=options["days"] - 1)
        report = rollup_kpis(first=first, last=last, now=now)
        self.stdout.write(
            f"Rolled up {first} … {last}: {report.flow_rows} flow-days, "
            f"{report.rule_rows} rule-days, {report.deleted} stale rows removed "
            f"({report.seconds:.2f} s)"
        )
