"""KPIs (DESIGN §4.8): daily roll-ups written by a beat task, read by the KPI pages, and flags."""

from .flags import Flag, FlagSettings, RuleFigures, rule_flags
from .queries import (
    DEFAULT_RANGE,
    RANGES,
    KpiQuery,
    KpiQueryError,
    KpiResult,
    StalledPeople,
    run_kpis,
    stalled_people,
)
from .rollup import RollupReport, lookback_days, rollup_kpis, rollup_recent

__all__ = [
    "DEFAULT_RANGE",
    "RANGES",
    "Flag",
    "FlagSettings",
    "KpiQuery",
    "KpiQueryError",
    "KpiResult",
    "RollupReport",
    "RuleFigures",
    "StalledPeople",
    "lookback_days",
    "rollup_kpis",
    "rollup_recent",
    "rule_flags",
    "run_kpis",
    "stalled_people",
]
