"""``manage.py simulate_rule RULE_SLUG --since DATE [--until DATE] [--format table|json]``."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from triggers.simulation.backtest import BacktestError, run_backtest
from triggers.simulation.report import format_table


def _day(value: str, option: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise CommandError(f"{option} must be a date (YYYY-MM-DD), not {value!r}") from None


class Command(BaseCommand):
    help = (
        "Backtest a rule: replay it over the stored events of a period on a virtual clock and "
        "report who would have entered, what would have been sent, capped, deferred or aborted. "
        "Reads only; changes nothing."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("rule", metavar="RULE_SLUG")
        parser.add_argument("--since", required=True, help="First day (UTC), inclusive.")
        parser.add_argument("--until", help="Last day (UTC), inclusive; default: up to now.")
        parser.add_argument("--format", choices=["table", "json"], default="table")

    def handle(self, *args, **options) -> None:
        now = timezone.now()
        since = datetime.combine(_day(options["since"], "--since"), time.min, tzinfo=UTC)
        if options["until"]:
            end = _day(options["until"], "--until") + timedelta(days=1)
            until = min(datetime.combine(end, time.min, tzinfo=UTC), now)
        else:
            until = now
        try:
            result = run_backtest(rule=options["rule"], since=since, until=until, now=now)
        except BacktestError as error:
            raise CommandError(f"{error.code}: {error.message}") from None
        if options["format"] == "json":
            self.stdout.write(json.dumps(result.as_dict(entries_limit=None), indent=2))
        else:
            self.stdout.write(format_table(result))
