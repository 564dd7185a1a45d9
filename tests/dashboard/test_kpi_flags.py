"""Flags over rolled-up numbers: each threshold just below and just above."""

from __future__ import annotations

import pytest

from dashboard.kpis.flags import (
    MOSTLY_CAPPED,
    NO_LIFT,
    POOR_RESPONSE,
    TOO_OFTEN,
    FlagSettings,
    RuleFigures,
    rule_flags,
)
from dashboard.kpis.interval import lift
from triggers.stats import Arm, analyse

CONFIG = FlagSettings()


def figures(**overrides) -> RuleFigures:
    base = {
        "slug": "nudge",
        "name": "Nudge",
        "sent_7d": 10,
        "people_sent_7d": 10,
        "due_7d": 10,
        "capped_7d": 0,
        "sent": 10,
        "responded": 5,
        "lift": None,
    }
    return RuleFigures(**{**base, **overrides})


def kinds(rule: RuleFigures) -> list[str]:
    return [flag.kind for flag in rule_flags([rule], CONFIG)]


def test_a_healthy_rule_has_no_flags():
    assert kinds(figures()) == []


def test_sends_per_person_per_week_over_the_threshold():
    assert kinds(figures(sent_7d=30, people_sent_7d=10)) == []  # exactly 3: not over
    assert kinds(figures(sent_7d=31, people_sent_7d=10)) == [TOO_OFTEN]
    [flag] = rule_flags([figures(sent_7d=31, people_sent_7d=10)], CONFIG)
    assert flag.numbers["sends_per_person"] == pytest.approx(3.1)
    assert "31 sends to 10 people" in flag.detail
    assert flag.rule_url == "/rules/nudge/"


def test_mostly_suppressed_by_caps():
    assert kinds(figures(due_7d=20, capped_7d=10)) == []  # 50 %: not more than half
    assert kinds(figures(due_7d=20, capped_7d=11)) == [MOSTLY_CAPPED]
    assert kinds(figures(due_7d=9, capped_7d=9)) == []  # too few due messages to judge
    [flag] = rule_flags([figures(due_7d=20, capped_7d=11)], CONFIG)
    assert flag.numbers == {"capped_share": 0.55, "capped_7d": 11, "due_7d": 20, "threshold": 0.5}


def test_poor_response_needs_enough_sends():
    assert kinds(figures(sent=100, responded=2)) == []  # 2.0 %: not below
    assert kinds(figures(sent=100, responded=1)) == [POOR_RESPONSE]
    assert kinds(figures(sent=99, responded=0)) == []  # fewer than 100 sends
    [flag] = rule_flags([figures(sent=100, responded=1)], CONFIG)
    assert "1.0 % response rate (1 of 100 sent" in flag.detail


def test_no_better_than_holdout_carries_its_interval():
    better = lift(
        treated_users=200, treated_conversions=41, holdout_users=100, holdout_conversions=20
    )
    same = lift(
        treated_users=200, treated_conversions=40, holdout_users=100, holdout_conversions=20
    )
    assert better.difference > 0 and kinds(figures(lift=better)) == []
    assert same.difference == 0 and kinds(figures(lift=same)) == [NO_LIFT]
    [flag] = rule_flags([figures(lift=same)], CONFIG)
    low, high = flag.numbers["interval"]
    assert low < 0 < high
    assert flag.title == "Converts no better than holdout"
    assert "20.0 % of 200 treated vs 20.0 % of 100 held out" in flag.detail
    worse = lift(
        treated_users=500, treated_conversions=50, holdout_users=500, holdout_conversions=100
    )
    [flag] = rule_flags([figures(lift=worse)], CONFIG)
    assert flag.title == "Converts worse than holdout"


def test_lift_needs_both_arms_and_matches_the_experiment_statistics():
    assert (
        lift(treated_users=0, treated_conversions=0, holdout_users=5, holdout_conversions=1) is None
    )
    assert (
        lift(treated_users=5, treated_conversions=1, holdout_users=0, holdout_conversions=0) is None
    )
    result = lift(
        treated_users=120, treated_conversions=30, holdout_users=80, holdout_conversions=12
    )
    [comparison] = analyse(
        [Arm("holdout", 80, 12), Arm("treated", 120, 30)], control="holdout"
    ).comparisons
    difference, (low, high) = comparison.difference, comparison.difference_ci
    assert result.difference == pytest.approx(difference) == pytest.approx(30 / 120 - 12 / 80)
    assert (result.low, result.high) == (pytest.approx(low), pytest.approx(high))


def test_thresholds_come_from_settings(settings):
    settings.ONRAMP_KPI_FLAGS = {"max_sends_per_person_week": 1, "min_sends_for_response": 10}
    config = FlagSettings.from_settings()
    flags = rule_flags([figures(sent_7d=11, people_sent_7d=10, responded=0)], config)
    assert [f.kind for f in flags] == [TOO_OFTEN, POOR_RESPONSE]


def test_completion_figure_draws_still_converting_days_apart():
    from datetime import date, datetime

    from dashboard.figures_kpis import completion_rate_figure
    from dashboard.kpis.queries import FlowKpis, Ratio
    from dashboard.models import FlowDailyKpi
    from onboarding.models import OnboardingFlow

    days = [date(2026, 11, n) for n in (1, 2, 3)]
    flow = OnboardingFlow(pk=1, slug="activation", name="Activation")
    at = datetime(2026, 11, 3)
    rows = {
        days[0]: FlowDailyKpi(
            day=days[0], entrants=10, completions=4, still_open=0, computed_at=at
        ),
        days[2]: FlowDailyKpi(day=days[2], entrants=5, completions=0, still_open=5, computed_at=at),
    }
    kpis = FlowKpis(flow, rows, Ratio(4, 15, "entrants"), 5, None)
    closed, open_ = completion_rate_figure([kpis], days)["data"]
    assert closed["y"] == [0.4, None, None]
    assert open_["y"] == [0.4, None, 0.0] and open_["line"]["dash"] == "dot"
    assert open_["customdata"][2] == "0 of 5, 5 still converting"
