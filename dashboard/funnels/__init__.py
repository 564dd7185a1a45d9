"""Funnels as typed query runners: ``run_funnel(FunnelQuery) -> FunnelResult`` (DESIGN §4.2).

PostgreSQL aggregates the per-person progress rows maintained at ingestion in set-based SQL; other
databases (SQLite, the embedded default) aggregate the same outcomes in Python. ``mode="events"``
evaluates every entrant from raw events instead, for ad-hoc funnels and verification.
"""

from .people import (
    FunnelPerson,
    PeoplePage,
    funnel_people,
    iter_funnel_people,
    people_csv_lines,
)
from .query import FunnelQuery, FunnelQueryError, FunnelResult, StepResult
from .runner import Gathered, gather, run_funnel, step_median_seconds
from .trends import StepHistogram, TrendPoint, funnel_trends, time_to_convert

__all__ = [
    "FunnelPerson",
    "FunnelQuery",
    "FunnelQueryError",
    "FunnelResult",
    "Gathered",
    "PeoplePage",
    "StepHistogram",
    "StepResult",
    "TrendPoint",
    "funnel_people",
    "funnel_trends",
    "gather",
    "iter_funnel_people",
    "people_csv_lines",
    "run_funnel",
    "step_median_seconds",
    "time_to_convert",
]
