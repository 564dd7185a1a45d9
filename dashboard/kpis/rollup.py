"""Daily KPI roll-ups (DESIGN §4.8): one row per (day, flow) and per (day, rule), UTC days.

The pages read these small tables, never the event store. :func:`rollup_kpis` recomputes a range
of days with a fixed number of grouped queries (independent of the number of days) and replaces
what was stored for them: rows are upserted on (day, flow) / (day, rule), and rows of the range
that no longer have any activity are deleted, so re-running is idempotent.

Counts whose outcome arrives later (completions within a flow's window, responses, re-engagement
and conversions after a send, experiment windows) change while their windows are open; the beat
task therefore recomputes the last :func:`lookback_days` days every run.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import (
    Aggregate,
    Count,
    DateTimeField,
    Exists,
    ExpressionWrapper,
    F,
    FloatField,
    Func,
    OuterRef,
    Q,
    Value,
)
from django.db.models.functions import TruncDate

from dashboard.models import FlowDailyKpi, RuleDailyKpi
from onboarding.configfile.durations import DurationError, parse_duration
from onboarding.models import OFFSET_FIELDS, Event, FlowProgress, OnboardingFlow, offsets_of
from triggers.experiments.metrics import daily_counts
from triggers.models import DecisionLog, Enrollment, Experiment, Message, RuleVersion

from . import definitions as d

DAY = timedelta(days=1)
_CHUNK = 5000


@dataclass(frozen=True)
class RollupReport:
    first: date
    last: date
    flow_rows: int
    rule_rows: int
    deleted: int
    seconds: float


def day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _utc_day(field: str) -> TruncDate:
    return TruncDate(field, tzinfo=UTC)


class _Median(Aggregate):
    function = "percentile_cont"
    template = "%(function)s(0.5) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()


class _EpochSeconds(Func):
    template = "EXTRACT(EPOCH FROM %(expressions)s)"
    output_field = FloatField()


def _chunks(values: list, size: int = _CHUNK) -> Iterator[list]:
    for index in range(0, len(values), size):
        yield values[index : index + size]


# --- flows ---------------------------------------------------------------------------------------


def _flow_rows(start: datetime, end: datetime, now: datetime) -> dict[tuple[date, int], dict]:
    entries = FlowProgress.objects.filter(entered_at__gte=start, entered_at__lt=end).annotate(
        day=_utc_day("entered_at")
    )
    completed = Q(completed_at__isnull=False, completed_at__lte=F("window_ends_at"))
    rows: dict[tuple[date, int], dict] = {}
    for row in entries.values("day", "flow_id").annotate(
        entrants=Count("pk"),
        completions=Count("pk", filter=completed),
        still_open=Count("pk", filter=Q(completed_at__isnull=True, window_ends_at__gt=now)),
    ):
        rows[(row["day"], row["flow_id"])] = {
            "entrants": row["entrants"],
            "completions": row["completions"],
            "still_open": row["still_open"],
            "median_ttv_seconds": None,
        }
    completers = entries.filter(completed)
    if connection.vendor == "postgresql":
        medians = completers.values("day", "flow_id").annotate(
            median=_Median(_EpochSeconds(F("completed_at") - F("entered_at")))
        )
        for row in medians:
            rows[(row["day"], row["flow_id"])]["median_ttv_seconds"] = row["median"]
    else:
        gaps: dict[tuple[date, int], list[float]] = defaultdict(list)
        for day, flow_id, entered, done in completers.values_list(
            "day", "flow_id", "entered_at", "completed_at"
        ):
            gaps[(day, flow_id)].append((done - entered).total_seconds())
        for key, values in gaps.items():
            rows[key]["median_ttv_seconds"] = statistics.median(values)
    return rows


# --- rules ---------------------------------------------------------------------------------------


def _rule_flows(version_ids: Iterable[int]) -> dict[int, int]:
    """Rule version → the flow its conversions are judged in: the trigger's flow, else the flow of
    the rule's experiment metric; versions with neither are not attributed."""
    definitions = dict(
        RuleVersion.objects.filter(pk__in=set(version_ids)).values_list("pk", "definition")
    )
    rules = dict(RuleVersion.objects.filter(pk__in=definitions).values_list("pk", "rule_id"))
    by_slug = dict(OnboardingFlow.objects.values_list("slug", "pk"))
    experiment_flow: dict[int, str] = {}
    for rule_id, metric in Experiment.objects.filter(rule_id__in=set(rules.values())).values_list(
        "rule_id", "metric"
    ):
        if (metric or {}).get("flow"):
            experiment_flow.setdefault(rule_id, metric["flow"])
    out = {}
    for version_id, definition in definitions.items():
        slug = ((definition or {}).get("trigger") or {}).get("flow") or experiment_flow.get(
            rules[version_id]
        )
        if slug in by_slug:
            out[version_id] = by_slug[slug]
    return out


def _step_times(entered_at: datetime, step_offsets: list[int]) -> list[datetime]:
    """Entry plus each step's offset (microseconds from entry)."""
    return [entered_at + timedelta(microseconds=offset) for offset in step_offsets or [0]]


def _converted(
    sends: list[tuple[int, int, int, datetime]], attributed_within: timedelta
) -> dict[int, bool]:
    """Per message id: did the person reach a further step of the flow within the window after
    the send? Step times come from the person's flow progress (entry + per-step offsets)."""
    flows = _rule_flows({version_id for _, _, version_id, _ in sends})
    people = sorted({person_id for _, person_id, _, _ in sends})
    progress: dict[tuple[int, int], list[datetime]] = {}
    for chunk in _chunks(people):
        for row in FlowProgress.objects.filter(
            person_id__in=chunk, flow_id__in=set(flows.values())
        ).values("flow_id", "person_id", "entered_at", *OFFSET_FIELDS):
            key = (row["flow_id"], row["person_id"])
            progress[key] = _step_times(row["entered_at"], offsets_of(row))
    out = {}
    for message_id, person_id, version_id, sent_at in sends:
        times = progress.get((flows.get(version_id, -1), person_id), [])
        out[message_id] = any(sent_at < t <= sent_at + attributed_within for t in times)
    return out


def _rule_rows(
    first: date, last: date, now: datetime, windows: d.Windows
) -> dict[tuple[date, int], dict]:
    start, end = day_start(first), day_start(last) + DAY
    rows: dict[tuple[date, int], dict] = defaultdict(lambda: defaultdict(int))

    for row in (
        Enrollment.objects.filter(enrolled_at__gte=start, enrolled_at__lt=end)
        .annotate(day=_utc_day("enrolled_at"))
        .values("day", "rule_id")
        .annotate(fired=Count("pk"), holdout=Count("pk", filter=Q(variant__holdout=True)))
    ):
        target = rows[(row["day"], row["rule_id"])]
        target["fired"], target["holdout"] = row["fired"], row["holdout"]

    outcomes = (d.SKIPPED, d.SUPPRESSED, d.DEFERRED, d.FAILED, d.REVIEW, d.UNKNOWN)
    for row in (
        DecisionLog.objects.filter(
            at__gte=start, at__lt=end, outcome__in=(*outcomes, *d.CANCELLED_OUTCOMES)
        )
        .annotate(day=_utc_day("at"))
        .values("day", "rule_id", "outcome", "reason")
        .annotate(n=Count("pk"))
    ):
        target = rows[(row["day"], row["rule_id"])]
        outcome, n = row["outcome"], row["n"]
        if outcome in d.CANCELLED_OUTCOMES:
            target["cancelled"] += n
            continue
        column = {d.FAILED: "failed"}.get(outcome, outcome)
        target[column] += n
        if outcome in (d.SKIPPED, d.SUPPRESSED):
            reasons = target.setdefault(f"{outcome}_by_reason", {})
            reasons[row["reason"] or "other"] = reasons.get(row["reason"] or "other", 0) + n

    reengage_end = ExpressionWrapper(
        OuterRef("sent_at") + Value(windows.reengaged_within), output_field=DateTimeField()
    )
    active_after = Event.objects.filter(
        person_id=OuterRef("person_id"),
        received_at__gt=OuterRef("sent_at"),
        received_at__lte=reengage_end,
    )
    sent = Message.objects.filter(status="sent", sent_at__gte=start, sent_at__lt=end).annotate(
        day=_utc_day("sent_at")
    )
    for row in (
        sent.annotate(active=Exists(active_after))
        .values("day", "rule_id")
        .annotate(
            sent=Count("pk"),
            responded=Count("pk", filter=d.RESPONDED),
            reengaged=Count("pk", filter=Q(active=True)),
        )
    ):
        target = rows[(row["day"], row["rule_id"])]
        for key in ("sent", "responded", "reengaged"):
            target[key] = row[key]

    sends = list(
        sent.values_list("pk", "person_id", "rule_version_id", "sent_at", "rule_id", "day")
    )
    conversions = _converted([s[:4] for s in sends], windows.attributed_within)
    for pk, _, _, _, rule_id, day in sends:
        if conversions[pk]:
            rows[(day, rule_id)]["converted"] += 1

    _trailing_week(rows, first, last)
    _experiments(rows, first, last, now)
    return rows


def _trailing_week(rows: dict[tuple[date, int], dict], first: date, last: date) -> None:
    """Sends and distinct people sent to in the 7 days ending on each day (frequency flags)."""
    per_day: dict[int, dict[date, dict[int, int]]] = defaultdict(lambda: defaultdict(dict))
    for rule_id, person_id, day, n in (
        Message.objects.filter(
            status="sent",
            sent_at__gte=day_start(first - 6 * DAY),
            sent_at__lt=day_start(last) + DAY,
        )
        .annotate(day=_utc_day("sent_at"))
        .values_list("rule_id", "person_id", "day")
        .annotate(n=Count("pk"))
    ):
        per_day[rule_id][day][person_id] = n
    for rule_id, days in per_day.items():
        day = first
        while day <= last:
            people: set[int] = set()
            sent = 0
            for offset in range(7):
                counts = days.get(day - offset * DAY, {})
                people.update(counts)
                sent += sum(counts.values())
            if sent:
                target = rows[(day, rule_id)]
                target["sent_7d"], target["people_sent_7d"] = sent, len(people)
            day += DAY


def _experiments(
    rows: dict[tuple[date, int], dict], first: date, last: date, now: datetime
) -> None:
    """Intention-to-treat users and conversions of experiments with a holdout, by assignment
    day, over closed windows (:func:`triggers.experiments.metrics.daily_counts`)."""
    experiments = Experiment.objects.filter(
        status__in=("running", "stopped"), variants__holdout=True
    ).distinct()
    for experiment in experiments:
        holdouts = set(experiment.variants.filter(holdout=True).values_list("name", flat=True))
        for day, arm, users, conversions in daily_counts(experiment, now=now):
            if not first <= day <= last:
                continue
            target = rows[(day, experiment.rule_id)]
            prefix = "holdout" if arm in holdouts else "treated"
            target[f"{prefix}_users"] += users
            target[f"{prefix}_conversions"] += conversions


# --- writing ---------------------------------------------------------------------------------------

_FLOW_FIELDS = ["entrants", "completions", "still_open", "median_ttv_seconds", "computed_at"]
_RULE_FIELDS = [
    f.name for f in RuleDailyKpi._meta.concrete_fields if f.name not in ("id", "day", "rule")
]


def _has_activity(values: dict[str, Any]) -> bool:
    return any(v for k, v in values.items() if k != "computed_at")


def _delete_stale(model, key: str, written: dict, first: date, last: date) -> int:
    stale = [
        pk
        for pk, day, owner in model.objects.filter(day__gte=first, day__lte=last).values_list(
            "pk", "day", key
        )
        if (day, owner) not in written
    ]
    return model.objects.filter(pk__in=stale).delete()[0] if stale else 0


def lookback_days(now: datetime) -> int:
    """How far back the beat task recomputes: the longest window that can still change a day."""
    windows = d.windows()
    longest = max(windows.attributed_within, windows.reengaged_within)
    for seconds in OnboardingFlow.objects.values_list("window_seconds", flat=True):
        longest = max(longest, timedelta(seconds=seconds))
    for metric in Experiment.objects.filter(status__in=("running", "stopped")).values_list(
        "metric", flat=True
    ):
        try:
            longest = max(
                longest,
                timedelta(seconds=parse_duration((metric or {}).get("completed_within", "14d"))),
            )
        except DurationError:  # an invalid metric is the experiment editor's problem
            continue
    return min(d.MAX_LOOKBACK_DAYS, longest // DAY + 2)


@transaction.atomic
def rollup_kpis(*, first: date, last: date, now: datetime) -> RollupReport:
    """Recompute the roll-ups of the days ``first``…``last`` (inclusive) and replace them."""
    if last < first:
        raise ValueError("last must not be before first")
    started = time.perf_counter()
    windows = d.windows()
    flows = {
        key: {**values, "computed_at": now}
        for key, values in _flow_rows(day_start(first), day_start(last) + DAY, now).items()
    }
    rules = {
        key: {**dict(values), "computed_at": now}
        for key, values in _rule_rows(first, last, now, windows).items()
        if _has_activity(values)
    }
    FlowDailyKpi.objects.bulk_create(
        [
            FlowDailyKpi(day=day, flow_id=flow_id, **values)
            for (day, flow_id), values in flows.items()
        ],
        update_conflicts=True,
        unique_fields=["day", "flow"],
        update_fields=_FLOW_FIELDS,
        batch_size=1000,
    )
    RuleDailyKpi.objects.bulk_create(
        [
            RuleDailyKpi(day=day, rule_id=rule_id, **values)
            for (day, rule_id), values in rules.items()
        ],
        update_conflicts=True,
        unique_fields=["day", "rule"],
        update_fields=_RULE_FIELDS,
        batch_size=1000,
    )
    # Whatever in the range was not written now has no activity any more.
    deleted = _delete_stale(FlowDailyKpi, "flow_id", flows, first, last)
    deleted += _delete_stale(RuleDailyKpi, "rule_id", rules, first, last)
    return RollupReport(
        first=first,
        last=last,
        flow_rows=len(flows),
        rule_rows=len(rules),
        deleted=deleted,
        seconds=time.perf_counter() - started,
    )


def rollup_recent(*, now: datetime, days: int | None = None) -> RollupReport:
    """The beat task's pass: today (partial) and the days whose windows may still change."""
    today = now.astimezone(UTC).date()
    days = days or lookback_days(now)
    return rollup_kpis(first=today - (days - 1) * DAY, last=today, now=now)
