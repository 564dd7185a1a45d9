"""Counting an experiment's outcomes per arm, by intention to treat (DESIGN §4.7).

Everyone assigned counts, whether or not a message reached them; the conversion window is
anchored at assignment, and only people whose window has closed are counted, so early
assignments are not compared with late ones that have not had their chance yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from django.db.models import (
    Count,
    DateTimeField,
    Exists,
    ExpressionWrapper,
    F,
    OuterRef,
    Q,
    Value,
)
from django.db.models.functions import TruncDate

from onboarding.configfile.durations import parse_duration
from onboarding.models import Event, FlowProgress
from triggers.models import Assignment, DecisionLog, Experiment, Message
from triggers.rules.spec import CLICK_CHANNELS

DEFAULT_REENGAGED_WITHIN = 24 * 3600


@dataclass(frozen=True)
class ArmCounts:
    name: str
    holdout: bool
    weight: int
    assigned: int
    users: int  # assigned and with a closed window
    conversions: int
    reengaged: int
    sent: int
    responded: int
    unsubscribed: int
    # Sent on a channel whose clicks are tracked (email, in-app), and of those clicked.
    clickable: int = 0
    clicked: int = 0


def _windows(experiment: Experiment) -> tuple[timedelta, timedelta]:
    metric = experiment.metric or {}
    completed = timedelta(seconds=parse_duration(metric.get("completed_within", "14d")))
    reengaged = timedelta(
        seconds=parse_duration(metric["reengaged_within"])
        if metric.get("reengaged_within")
        else DEFAULT_REENGAGED_WITHIN
    )
    return completed, reengaged


def _annotated(experiment: Experiment, now: datetime, phase: int | None):
    completed_within, reengaged_within = _windows(experiment)
    window_end = ExpressionWrapper(
        OuterRef("assigned_at") + Value(completed_within), output_field=DateTimeField()
    )
    reengage_end = ExpressionWrapper(
        OuterRef("assigned_at") + Value(reengaged_within), output_field=DateTimeField()
    )
    flow = (experiment.metric or {}).get("flow", "")
    converted = FlowProgress.objects.filter(
        person_id=OuterRef("person_id"),
        flow__slug=flow,
        completed_at__isnull=False,
        completed_at__lte=window_end,
    )
    reengaged = Event.objects.filter(
        person_id=OuterRef("person_id"),
        received_at__gt=OuterRef("assigned_at"),
        received_at__lte=reengage_end,
    )
    unsubscribed = DecisionLog.objects.filter(
        person_id=OuterRef("person_id"), outcome="unsubscribed", at__gt=OuterRef("assigned_at")
    )
    rows = Assignment.objects.filter(experiment=experiment, phase=phase or experiment.phase)
    closed = Q(assigned_at__lte=now - completed_within)
    return rows.annotate(
        converted=Exists(converted),
        reengaged_=Exists(reengaged),
        unsubscribed_=Exists(unsubscribed),
    ), closed


def arm_counts(
    experiment: Experiment, *, now: datetime, phase: int | None = None
) -> list[ArmCounts]:
    rows, closed = _annotated(experiment, now, phase)
    grouped = {
        row["variant_id"]: row
        for row in rows.values("variant_id").annotate(
            assigned=Count("pk"),
            users=Count("pk", filter=closed),
            conversions=Count("pk", filter=closed & Q(converted=True)),
            reengaged=Count("pk", filter=closed & Q(reengaged_=True)),
            unsubscribed=Count("pk", filter=closed & Q(unsubscribed_=True)),
        )
    }
    messages = {
        row["enrollment__variant_id"]: row
        for row in Message.objects.filter(
            enrollment__variant__experiment=experiment, status="sent", fallback_of__isnull=True
        )
        .values("enrollment__variant_id")
        .annotate(
            sent=Count("pk"),
            responded=Count("pk", filter=Q(clicked_at__isnull=False) | Q(seen_at__isnull=False)),
            clickable=Count("pk", filter=Q(channel__in=CLICK_CHANNELS)),
            clicked=Count("pk", filter=Q(channel__in=CLICK_CHANNELS) & Q(clicked_at__isnull=False)),
        )
    }
    out = []
    for variant in experiment.variants.order_by("position"):
        row = grouped.get(variant.pk, {})
        sent = messages.get(variant.pk, {})
        out.append(
            ArmCounts(
                name=variant.name,
                holdout=variant.holdout,
                weight=variant.weight,
                assigned=row.get("assigned", 0),
                users=row.get("users", 0),
                conversions=row.get("conversions", 0),
                reengaged=row.get("reengaged", 0),
                sent=sent.get("sent", 0),
                responded=sent.get("responded", 0),
                unsubscribed=row.get("unsubscribed", 0),
                clickable=sent.get("clickable", 0),
                clicked=sent.get("clicked", 0),
            )
        )
    return out


def daily_counts(
    experiment: Experiment, *, now: datetime, phase: int | None = None
) -> list[tuple[date, str, int, int]]:
    """(assignment day, arm, users, conversions) for closed windows: the results over time."""
    rows, closed = _annotated(experiment, now, phase)
    result = (
        rows.filter(closed)
        .annotate(day=TruncDate("assigned_at"))
        .values("day", "variant__name")
        .annotate(users=Count("pk"), conversions=Count("pk", filter=Q(converted=True)))
        .order_by("day", F("variant__position").asc())
    )
    return [(r["day"], r["variant__name"], r["users"], r["conversions"]) for r in result]
