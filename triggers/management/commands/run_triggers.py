"""``manage.py run_triggers [--now ISO8601] [--dry-run]``: one evaluation pass in this process."""

from __future__ import annotations

from datetime import UTC, datetime

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from triggers.delivery.pipeline import deliver_due
from triggers.engine.evaluate import evaluate_rules


def _parse_now(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise CommandError(f"--now must be an ISO 8601 date-time, not {value!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class Command(BaseCommand):
    help = (
        "Run one trigger evaluation pass now (the same code the beat task runs): detect due "
        "occurrences, enroll people, schedule their follow-ups and deliver those that are due."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--now", help="Evaluate as if it were this moment (ISO 8601).")
        parser.add_argument(
            "--dry-run", action="store_true", help="Report what would happen; change nothing."
        )

    def handle(self, *args, **options) -> None:
        now = _parse_now(options["now"]) if options["now"] else timezone.now()
        report = evaluate_rules(now=now, dry_run=options["dry_run"])
        mode = " (dry run: nothing was changed)" if report.dry_run else ""
        self.stdout.write(f"Evaluated {len(report.rules)} active rules at {now.isoformat()}{mode}")
        header = (
            f"{'rule':<32} {'found':>6} {'enrolled':>8} {'scheduled':>9} {'exited':>6}  skipped"
        )
        self.stdout.write(header)
        for rule in report.rules:
            skipped = ", ".join(f"{k} {v}" for k, v in sorted(rule.skipped.items())) or "-"
            self.stdout.write(
                f"{rule.rule:<32} {rule.found:>6} {rule.enrolled:>8} {rule.scheduled:>9} "
                f"{rule.exited:>6}  {skipped}"
            )
        for slug in report.skipped_locked:
            self.stdout.write(f"{slug:<32} skipped: being evaluated by another process")
        if report.dry_run:
            return
        delivery = deliver_due(now=now)
        outcomes = (
            ", ".join(f"{k} {v}" for k, v in sorted(delivery.outcomes.items())) or "nothing due"
        )
        self.stdout.write(f"Delivery: {outcomes}")
