"""Flags for rules that need a look (DESIGN §4.8): a pure function over rolled-up numbers.

- **Fires too often**: more than ``max_sends_per_person_week`` sends per person over the last
  7 days, or more than ``max_capped_share`` of the due messages suppressed by a frequency cap
  (with at least ``min_due_for_caps`` due messages).
- **Responds poorly**: a response rate below ``min_response_rate`` with at least
  ``min_sends_for_response`` sends in the range.
- **No better than holdout**: an experiment with a holdout whose conversion difference
  (treated − holdout, closed windows) is ≤ 0; the 95 % interval is carried along.

Every flag carries the numbers behind it, so the page can say why.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from dashboard.formatting import percent_tenths as _percent
from dashboard.formatting import points_tenths as _points

from .interval import Lift

TOO_OFTEN = "too_often"
MOSTLY_CAPPED = "mostly_capped"
POOR_RESPONSE = "poor_response"
NO_LIFT = "no_lift"


@dataclass(frozen=True)
class FlagSettings:
    max_sends_per_person_week: float = 3.0
    max_capped_share: float = 0.5
    min_due_for_caps: int = 10
    min_response_rate: float = 0.02
    min_sends_for_response: int = 100

    @classmethod
    def from_settings(cls) -> FlagSettings:
        overrides = getattr(settings, "ONRAMP_KPI_FLAGS", {}) or {}
        return cls(**{k: v for k, v in overrides.items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class RuleFigures:
    """One rule's numbers, as the KPI query rolled them up."""

    slug: str
    name: str
    sent_7d: int  # sends in the last 7 days
    people_sent_7d: int  # distinct people those went to
    due_7d: int  # messages that reached a delivery outcome in the last 7 days
    capped_7d: int  # of those, suppressed by a global or per-rule cap
    sent: int  # sends in the page's range
    responded: int
    lift: Lift | None = None


@dataclass(frozen=True)
class Flag:
    slug: str
    name: str
    kind: str
    title: str
    detail: str
    numbers: dict[str, Any] = field(default_factory=dict)

    @property
    def rule_url(self) -> str:
        return f"/rules/{self.slug}/"


def rule_flags(rules: Iterable[RuleFigures], config: FlagSettings) -> list[Flag]:
    flags: list[Flag] = []
    for rule in rules:
        if rule.people_sent_7d:
            per_person = rule.sent_7d / rule.people_sent_7d
            if per_person > config.max_sends_per_person_week:
                flags.append(
                    Flag(
                        rule.slug,
                        rule.name,
                        TOO_OFTEN,
                        "Fires too often",
                        f"{per_person:.1f} sends per person in the last 7 days "
                        f"({rule.sent_7d} sends to {rule.people_sent_7d} people; "
                        f"threshold {config.max_sends_per_person_week:g})",
                        {
                            "sends_per_person": per_person,
                            "sent_7d": rule.sent_7d,
                            "people_sent_7d": rule.people_sent_7d,
                            "threshold": config.max_sends_per_person_week,
                        },
                    )
                )
        if rule.due_7d >= config.min_due_for_caps and rule.due_7d:
            share = rule.capped_7d / rule.due_7d
            if share > config.max_capped_share:
                flags.append(
                    Flag(
                        rule.slug,
                        rule.name,
                        MOSTLY_CAPPED,
                        "Mostly suppressed by caps",
                        f"{_percent(share)} of due messages suppressed by frequency caps in the "
                        f"last 7 days ({rule.capped_7d} of {rule.due_7d})",
                        {
                            "capped_share": share,
                            "capped_7d": rule.capped_7d,
                            "due_7d": rule.due_7d,
                            "threshold": config.max_capped_share,
                        },
                    )
                )
        if rule.sent >= config.min_sends_for_response:
            rate = rule.responded / rule.sent
            if rate < config.min_response_rate:
                flags.append(
                    Flag(
                        rule.slug,
                        rule.name,
                        POOR_RESPONSE,
                        "Responds poorly",
                        f"{_percent(rate)} response rate ({rule.responded} of {rule.sent} sent; "
                        f"threshold {_percent(config.min_response_rate)})",
                        {
                            "response_rate": rate,
                            "responded": rule.responded,
                            "sent": rule.sent,
                            "threshold": config.min_response_rate,
                        },
                    )
                )
        lift = rule.lift
        if lift is not None and lift.difference <= 0:
            verdict = "worse than" if lift.high < 0 else "no better than"
            flags.append(
                Flag(
                    rule.slug,
                    rule.name,
                    NO_LIFT,
                    f"Converts {verdict} holdout",
                    f"{_points(lift.difference)} vs holdout (95 % interval "
                    f"{_points(lift.low)} to {_points(lift.high)}): "
                    f"{_percent(lift.treated_rate)} of {lift.treated_users} treated vs "
                    f"{_percent(lift.holdout_rate)} of {lift.holdout_users} held out",
                    {
                        "difference": lift.difference,
                        "interval": (lift.low, lift.high),
                        "treated": (lift.treated_conversions, lift.treated_users),
                        "holdout": (lift.holdout_conversions, lift.holdout_users),
                    },
                )
            )
    return flags
