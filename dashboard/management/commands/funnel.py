"""``manage.py funnel FLOW_SLUG`` — the funnel report on the command line (DESIGN §3.5)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

from django.core.management.base import BaseCommand, CommandError, CommandParser

from dashboard.formatting import duration_short as _duration
from dashboard.funnels import FunnelQuery, FunnelQueryError, FunnelResult, StepResult, run_funnel
from onboarding.csvsafe import csv_writer
from onboarding.models import OnboardingFlow, Segment

DEFAULT_DAYS = 30
STEP_COLUMNS = [
    "index",
    "name",
    "event",
    "count",
    "conversion_from_start",
    "conversion_from_previous",
    "median_seconds_from_previous",
]


def _date(value: str, option: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise CommandError(f"{option}: {value!r} is not a date (use YYYY-MM-DD)") from None


class Command(BaseCommand):
    help = "Print a funnel: entrants per step, conversion, median time between steps."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("flow", metavar="FLOW_SLUG")
        parser.add_argument(
            "--since", help="first entry day, YYYY-MM-DD (UTC; default 29 days ago)"
        )
        parser.add_argument("--until", help="last entry day, YYYY-MM-DD (UTC; default today)")
        parser.add_argument("--segment", metavar="SLUG", help="only entrants in this segment")
        parser.add_argument("--breakdown", metavar="PROPERTY", help="group entrants by property")
        parser.add_argument("--format", choices=["table", "json", "csv"], default="table")

    def handle(self, *args, **options) -> None:
        today = datetime.now(UTC).date()
        until = _date(options["until"], "--until") if options["until"] else today
        since = (
            _date(options["since"], "--since")
            if options["since"]
            else until - timedelta(days=DEFAULT_DAYS - 1)
        )
        flow = OnboardingFlow.objects.filter(slug=options["flow"]).first()
        if flow is None:
            raise CommandError(f"unknown flow {options['flow']!r}")
        segment = None
        if options["segment"]:
            segment = Segment.objects.filter(slug=options["segment"]).first()
            if segment is None:
                raise CommandError(f"unknown segment {options['segment']!r}")
        try:
            result = run_funnel(
                FunnelQuery(
                    flow=flow,
                    since=since,
                    until=until,
                    segment=segment,
                    breakdown=options["breakdown"] or None,
                )
            )
        except FunnelQueryError as error:
            raise CommandError(str(error)) from None
        output = {"json": self._json, "csv": self._csv, "table": self._table}[options["format"]]
        output(result)

    def _json(self, result: FunnelResult) -> None:
        self.stdout.write(json.dumps(result.as_dict(), indent=2))

    def _csv(self, result: FunnelResult) -> None:
        writer = csv_writer(self.stdout)
        with_breakdown = result.breakdown is not None
        writer.writerow((["breakdown"] if with_breakdown else []) + STEP_COLUMNS)
        groups: list[tuple[str, list[StepResult]]] = [("(all)", result.steps)]
        groups += list((result.breakdown or {}).items())
        for value, steps in groups:
            for step in steps:
                row = step.as_dict()
                median = row["median_seconds_from_previous"]
                cells = [row[column] for column in STEP_COLUMNS[:-1]]
                cells.append("" if median is None else median)
                writer.writerow(([value] if with_breakdown else []) + cells)

    def _table(self, result: FunnelResult) -> None:
        segment = f", segment {result.segment}" if result.segment else ""
        self.stdout.write(
            f"Funnel {result.flow}: entries {result.since.isoformat()} to "
            f"{result.until.isoformat()} (UTC), window {_duration(result.window_seconds)}{segment}"
        )
        self._steps_table(result.steps, result.friction_step)
        self.stdout.write(
            f"Still converting (window open, not finished): {result.still_converting}"
        )
        drop = result.friction_drop()
        if drop is not None:
            step = result.steps[result.friction_step - 1]
            before, reached = drop
            lost = 1 - reached / before if before else 1.0
            self.stdout.write(
                f"Friction step: {step.index}. {step.name} ({lost:.1%} of the previous step "
                f"lost, judged on the {result.settled_entrants} settled entrants whose window "
                "has closed)"
            )
        elif result.entrants:
            self.stdout.write(
                "Friction step: none yet (judged on settled entrants; every window is still open)"
            )
        for value, steps in (result.breakdown or {}).items():
            self.stdout.write(f"\n{value}")
            self._steps_table(steps, None)

    def _steps_table(self, steps: list[StepResult], friction: int | None) -> None:
        name_width = max([len(f"{s.index}. {s.name}") for s in steps] + [4])
        header = (
            f"  {'Step':<{name_width}}  {'People':>9}  {'From start':>10}  "
            f"{'From prev':>9}  {'Median':>8}"
        )
        self.stdout.write(header)
        for step in steps:
            label = f"{step.index}. {step.name}"
            marker = "  <- friction" if step.index == friction else ""
            self.stdout.write(
                f"  {label:<{name_width}}  {step.count:>9}  {step.conversion_from_start:>10.1%}  "
                f"{step.conversion_from_previous:>9.1%}  "
                f"{_duration(step.median_seconds_from_previous):>8}{marker}"
            )
