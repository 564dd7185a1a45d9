"""Reading the KPIs: a typed query in, a typed result out, from the daily roll-ups only.

:func:`run_kpis` issues a fixed number of queries whatever the range or the size of the event
store: the flows, the rules, and the roll-up rows of the range. :func:`stalled_people` reads the
narrow per-person progress table (live: "right now" cannot be rolled up).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from django.db.models import OuterRef, Q, Subquery

from dashboard.formatting import duration_label, percent_tenths
from dashboard.models import FlowDailyKpi, RuleDailyKpi
from onboarding.models import FlowProgress, OnboardingFlow, Step
from triggers.models import Rule, RuleStatus

from . import definitions as d
from .flags import Flag, FlagSettings, RuleFigures, rule_flags
from .interval import Lift, lift

RANGES: dict[str, int] = {"7d": 7, "30d": 30, "90d": 90}
DEFAULT_RANGE = "30d"


class KpiQueryError(ValueError):
    pass


@dataclass(frozen=True)
class KpiQuery:
    days: int
    today: date

    def __post_init__(self) -> None:
        if self.days not in RANGES.values():
            raise KpiQueryError(f"days must be one of {sorted(RANGES.values())}")

    @property
    def first(self) -> date:
        return self.today - timedelta(days=self.days - 1)

    @property
    def dates(self) -> list[date]:
        return [self.first + timedelta(days=n) for n in range(self.days)]


@dataclass(frozen=True)
class Ratio:
    """A rate with its basis: ``part`` of ``whole`` ``unit``; ``rate`` is None when whole is 0."""

    part: int
    whole: int
    unit: str

    @property
    def rate(self) -> float | None:
        return self.part / self.whole if self.whole else None

    @property
    def percent(self) -> str:
        return percent_tenths(self.rate)

    @property
    def basis(self) -> str:
        return f"{self.part:,} of {self.whole:,} {self.unit}"


@dataclass(frozen=True)
class FlowKpis:
    flow: OnboardingFlow
    days: dict[date, FlowDailyKpi]
    completion: Ratio
    still_open: int
    median_ttv_seconds: float | None


@dataclass(frozen=True)
class RuleKpis:
    rule: Rule
    days: dict[date, RuleDailyKpi]
    fired: int
    holdout: int
    skipped: int
    skipped_by_reason: dict[str, int]
    suppressed: int
    suppressed_by_reason: dict[str, int]
    deferred: int
    cancelled: int
    sent: int
    failed: int
    review: int
    unknown: int
    response: Ratio
    reengagement: Ratio
    conversion: Ratio
    lift: Lift | None
    flags: list[Flag] = field(default_factory=list)

    @property
    def failures(self) -> int:
        return self.failed + self.review + self.unknown


@dataclass(frozen=True)
class KpiResult:
    query: KpiQuery
    flows: list[FlowKpis]
    rules: list[RuleKpis]
    completion: Ratio
    median_ttv_seconds: float | None
    ttv_completions: int
    response: Ratio
    reengagement: Ratio
    conversion: Ratio
    lift: Lift | None
    flags: list[Flag]
    computed_at: datetime | None


def weighted_median(pairs: list[tuple[float, int]]) -> float | None:
    """The median of values given as (value, weight): daily medians weighted by completions.

    Exact per day; across days an approximation of the median of all completions.
    """
    pairs = sorted((v, w) for v, w in pairs if w > 0)
    total = sum(w for _, w in pairs)
    if not total:
        return None
    running = 0
    for value, weight in pairs:
        running += weight
        if running * 2 >= total:
            return value
    return pairs[-1][0]  # pragma: no cover


def _sum_reasons(rows: list[RuleDailyKpi], attribute: str) -> dict[str, int]:
    totals: dict[str, int] = defaultdict(int)
    for row in rows:
        for reason, n in (getattr(row, attribute) or {}).items():
            totals[reason] += n
    return dict(sorted(totals.items(), key=lambda item: (-item[1], item[0])))


def _rule_kpis(rule: Rule, rows: list[RuleDailyKpi]) -> RuleKpis:
    def total(attribute: str) -> int:
        return sum(getattr(row, attribute) for row in rows)

    sent = total("sent")
    return RuleKpis(
        rule=rule,
        days={row.day: row for row in rows},
        fired=total("fired"),
        holdout=total("holdout"),
        skipped=total("skipped"),
        skipped_by_reason=_sum_reasons(rows, "skipped_by_reason"),
        suppressed=total("suppressed"),
        suppressed_by_reason=_sum_reasons(rows, "suppressed_by_reason"),
        deferred=total("deferred"),
        cancelled=total("cancelled"),
        sent=sent,
        failed=total("failed"),
        review=total("review"),
        unknown=total("unknown"),
        response=Ratio(total("responded"), sent, "sent"),
        reengagement=Ratio(total("reengaged"), sent, "sent"),
        conversion=Ratio(total("converted"), sent, "sent"),
        lift=lift(
            treated_users=total("treated_users"),
            treated_conversions=total("treated_conversions"),
            holdout_users=total("holdout_users"),
            holdout_conversions=total("holdout_conversions"),
        ),
    )


def _figures(kpis: RuleKpis, today: date) -> RuleFigures:
    """The numbers the flags judge: the last 7 days for frequency and caps, the range for the
    rest."""
    week = [row for day, row in kpis.days.items() if day > today - timedelta(days=7)]
    latest = kpis.days.get(today)
    capped = sum((row.suppressed_by_reason or {}).get(r, 0) for row in week for r in d.CAP_REASONS)
    due = sum(row.sent + row.suppressed + row.failed + row.review + row.unknown for row in week)
    return RuleFigures(
        slug=kpis.rule.slug,
        name=kpis.rule.name,
        sent_7d=latest.sent_7d if latest else 0,
        people_sent_7d=latest.people_sent_7d if latest else 0,
        due_7d=due,
        capped_7d=capped,
        sent=kpis.sent,
        responded=kpis.response.part,
        lift=kpis.lift,
    )


def run_kpis(query: KpiQuery, flag_settings: FlagSettings | None = None) -> KpiResult:
    flag_settings = flag_settings or FlagSettings.from_settings()
    span = {"day__gte": query.first, "day__lte": query.today}
    flows = list(OnboardingFlow.objects.order_by("name"))
    flow_rows: dict[int, list[FlowDailyKpi]] = defaultdict(list)
    computed: list[datetime] = []
    for row in FlowDailyKpi.objects.filter(**span).order_by("day"):
        flow_rows[row.flow_id].append(row)
        computed.append(row.computed_at)
    rule_rows: dict[int, list[RuleDailyKpi]] = defaultdict(list)
    for row in RuleDailyKpi.objects.filter(**span).order_by("day"):
        rule_rows[row.rule_id].append(row)
        computed.append(row.computed_at)
    rules = list(Rule.objects.filter(~Q(status=RuleStatus.ARCHIVED) | Q(pk__in=list(rule_rows))))

    flow_kpis = []
    for flow in flows:
        rows = flow_rows.get(flow.pk, [])
        flow_kpis.append(
            FlowKpis(
                flow=flow,
                days={row.day: row for row in rows},
                completion=Ratio(
                    sum(r.completions for r in rows), sum(r.entrants for r in rows), "entrants"
                ),
                still_open=sum(r.still_open for r in rows),
                median_ttv_seconds=weighted_median(
                    [
                        (r.median_ttv_seconds, r.completions)
                        for r in rows
                        if r.median_ttv_seconds is not None
                    ]
                ),
            )
        )

    rule_kpis = [_rule_kpis(rule, rule_rows.get(rule.pk, [])) for rule in rules]
    flags = rule_flags([_figures(k, query.today) for k in rule_kpis], flag_settings)
    by_slug = defaultdict(list)
    for flag in flags:
        by_slug[flag.slug].append(flag)
    for kpis in rule_kpis:
        kpis.flags.extend(by_slug.get(kpis.rule.slug, []))
    rule_kpis.sort(key=lambda k: (-k.sent, -k.fired, k.rule.name))

    all_flow_rows = [row for rows in flow_rows.values() for row in rows]
    all_rule_rows = [row for rows in rule_rows.values() for row in rows]
    sent = sum(r.sent for r in all_rule_rows)
    return KpiResult(
        query=query,
        flows=flow_kpis,
        rules=rule_kpis,
        completion=Ratio(
            sum(r.completions for r in all_flow_rows),
            sum(r.entrants for r in all_flow_rows),
            "entrants",
        ),
        median_ttv_seconds=weighted_median(
            [
                (r.median_ttv_seconds, r.completions)
                for r in all_flow_rows
                if r.median_ttv_seconds is not None
            ]
        ),
        ttv_completions=sum(
            r.completions for r in all_flow_rows if r.median_ttv_seconds is not None
        ),
        response=Ratio(sum(r.responded for r in all_rule_rows), sent, "sent"),
        reengagement=Ratio(sum(r.reengaged for r in all_rule_rows), sent, "sent"),
        conversion=Ratio(sum(r.converted for r in all_rule_rows), sent, "sent"),
        lift=lift(
            treated_users=sum(r.treated_users for r in all_rule_rows),
            treated_conversions=sum(r.treated_conversions for r in all_rule_rows),
            holdout_users=sum(r.holdout_users for r in all_rule_rows),
            holdout_conversions=sum(r.holdout_conversions for r in all_rule_rows),
        ),
        flags=flags,
        computed_at=max(computed) if computed else None,
    )


# --- people stalled right now ------------------------------------------------------------------


@dataclass(frozen=True)
class StalledPerson:
    person_id: int
    person_label: str
    flow_name: str
    step: int
    step_name: str
    steps: int
    reached_at: datetime
    idle: timedelta
    window_ends_at: datetime

    @property
    def idle_label(self) -> str:
        return duration_label(self.idle.total_seconds())


@dataclass(frozen=True)
class StalledPeople:
    total: int
    people: list[StalledPerson]
    stalled_after: timedelta

    @property
    def stalled_after_label(self) -> str:
        return duration_label(self.stalled_after.total_seconds())


def stalled_people(*, now: datetime, limit: int = 20) -> StalledPeople:
    """People in a flow, not completed, whose window is open and who made no progress for at
    least the stall threshold (1 h by default); the most recently stalled first."""
    stalled_after = d.windows().stalled_after
    flows = list(OnboardingFlow.objects.values_list("pk", "window_seconds"))
    if not flows:
        return StalledPeople(0, [], stalled_after)
    # Bounding entry time per flow lets the (flow, entered_at) index do the work.
    open_windows = Q()
    for flow_id, seconds in flows:
        open_windows |= Q(flow_id=flow_id, entered_at__gt=now - timedelta(seconds=seconds))
    rows = FlowProgress.objects.filter(
        open_windows,
        completed_at__isnull=True,
        window_ends_at__gt=now,
        reached_at__lte=now - stalled_after,
    )
    step = Step.objects.filter(flow_id=OuterRef("flow_id"), position=OuterRef("furthest_step"))
    last_step = Step.objects.filter(flow_id=OuterRef("flow_id")).order_by("-position")
    page = (
        rows.select_related("person", "flow")
        .annotate(
            step_name=Subquery(step.values("name")[:1]),
            steps=Subquery(last_step.values("position")[:1]),
        )
        .order_by("-reached_at", "pk")[:limit]
    )
    people = [
        StalledPerson(
            person_id=row.person_id,
            person_label=str(row.person),
            flow_name=row.flow.name,
            step=row.furthest_step,
            step_name=row.step_name or "",
            steps=row.steps or row.furthest_step,
            reached_at=row.reached_at,
            idle=now - row.reached_at,
            window_ends_at=row.window_ends_at,
        )
        for row in page
    ]
    return StalledPeople(rows.count(), people, stalled_after)
