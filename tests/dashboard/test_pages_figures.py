"""The funnel figures and sentences are pure functions of the typed results."""

from __future__ import annotations

from datetime import date

from dashboard import figures_funnels as figures
from dashboard.funnels import FunnelResult, StepResult, TrendPoint
from dashboard.funnels.aggregate import friction_step
from dashboard.funnels.trends import Bin, StepHistogram


def step(index: int, name: str, count: int, previous: int, first: int) -> StepResult:
    return StepResult(
        index,
        name,
        name,
        count,
        count / first if first else 0.0,
        count / previous if previous else 0.0,
        60.0 if index > 1 else None,
    )


def result(*counts: int, still: int = 0, breakdown=None, settled=None) -> FunnelResult:
    """A funnel with these counts; ``settled`` (default: everyone) are the settled entrants'."""
    names = ["Signed up", "Email verified", "Profile completed"][: len(counts)]
    steps = [
        step(i + 1, n, c, counts[i - 1] if i else c, counts[0])
        for i, (n, c) in enumerate(zip(names, counts, strict=True))
    ]
    settled = list(counts if settled is None else settled)
    return FunnelResult(
        "f",
        date(2025, 1, 1),
        date(2025, 1, 31),
        86400,
        None,
        steps,
        still,
        friction_step(settled),
        breakdown,
        settled=settled,
    )


def test_friction_sentence():
    text = figures.friction_sentence(result(100, 80, 30))
    assert text == (
        "Judged on the 100 settled entrants (conversion window closed): Profile completed loses"
        " 62\u202f% of those who reached Email verified (50 of 80 people) — the largest drop."
    )


def test_friction_sentence_counts_settled_entrants_only():
    text = figures.friction_sentence(result(100, 80, 30, still=45, settled=(40, 40, 10)))
    assert text == (
        "Judged on the 40 settled entrants (conversion window closed): Profile completed loses"
        " 75\u202f% of those who reached Email verified (30 of 40 people) — the largest drop."
    )


def test_friction_sentence_without_entrants_drop_or_settled_entrants():
    assert figures.friction_sentence(result(0, 0, 0)) is None
    assert figures.friction_sentence(result(5)) is None
    assert "nobody drops out" in figures.friction_sentence(result(5, 5, 5))
    assert figures.friction_sentence(result(5, 2, 1, still=4, settled=(0, 0, 0))).startswith(
        "No friction step yet: it is judged on settled entrants"
    )


def test_small_shares_keep_a_decimal():
    assert figures.percent(0.045) == "4.5\u202f%"
    assert figures.percent(0.0) == "0\u202f%"


def test_funnel_figure_highlights_friction_and_keeps_still_converting_apart():
    fig = figures.funnel_figure(result(100, 80, 30, still=12))
    reached, still = fig["data"]
    assert reached["marker"]["color"] == [
        figures.STEP_COLOR,
        figures.STEP_COLOR,
        figures.FRICTION_COLOR,
    ]
    assert still["x"] == [12] and still["y"] == ["3. Profile completed"]


def test_trend_figure_marks_incomplete_periods():
    points = [
        TrendPoint(date(2025, 1, 1), 10, 5, 0.5, False),
        TrendPoint(date(2025, 1, 2), 10, 2, 0.2, True),
    ]
    fig = figures.trend_figure(points, "day")
    assert fig["data"][1]["y"] == [0.5, None]
    assert fig["data"][2]["y"] == [0.5, 0.2]  # joins the last complete point


def test_time_to_convert_draws_the_chosen_step_in_its_unit():
    histograms = [
        StepHistogram(2, "Email verified", 3, [Bin(0, 60, 2), Bin(60, 120, 1)]),
        StepHistogram(3, "Profile completed", 2, [Bin(0, 86400, 1), Bin(86400, 172800, 1)]),
        StepHistogram(4, "Invited", 0, []),
    ]
    fig = figures.time_to_convert_figure(histograms, step=3, friction=3)
    (trace,) = fig["data"]  # one step at a time: the page's <select> picks it
    assert trace["x"] == [0.5, 1.5]  # days
    assert trace["marker"]["color"] == figures.FRICTION_COLOR
    assert fig["layout"]["xaxis"]["title"]["text"] == "days from step 2 to step 3"
    assert "updatemenus" not in fig["layout"]  # no control inside the chart
    fig = figures.time_to_convert_figure(histograms, step=2, friction=3)
    assert fig["data"][0]["marker"]["color"] == figures.STEP_COLOR
    assert fig["layout"]["xaxis"]["title"]["text"] == "minutes from step 1 to step 2"
    # The step shown: the one asked for if anyone reached it, else the first reached.
    assert figures.time_to_convert_step(histograms, 3) == 3
    assert figures.time_to_convert_step(histograms, 4) == 2
    assert figures.time_to_convert_step(histograms, None) == 2
    assert figures.time_to_convert_step(histograms[2:], 4) is None


def test_breakdown_folds_small_groups_into_other():
    groups = {f"v{i}": result(10 - i, 5 - i // 2, 1).steps for i in range(8)}
    fig = figures.breakdown_figure(result(10, 5, 1, breakdown=groups), "device")
    names = [trace["name"] for trace in fig["data"]]
    assert len(names) == figures.MAX_BREAKDOWN_SERIES + 1
    assert names[-1] == "Other (7)"  # 4 + 3


def test_sparkline():
    points = [TrendPoint(date(2025, 1, d), 10, d, d / 10, d == 3) for d in (1, 2, 3)]
    line = figures.sparkline(points)
    assert line.points.count(",") == 2 and line.open_points.count(",") == 2
    assert figures.sparkline([TrendPoint(date(2025, 1, 1), 0, 0, 0.0, False)]) is None
