"""Funnel figures and sentences, built from the typed funnel results. Pure functions.

Each ``*_figure`` returns the ``{data, layout, config}`` dict that ``static/js/onramp.js`` hands to
``Plotly.newPlot``; templates pass it through ``json_script``. Nothing here touches the database or
the request, so every figure can be tested from a hand-built :class:`FunnelResult`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dashboard.figures import COLORWAY, FONT_FAMILY, OTHER_COLOR, OTHER_LABEL
from dashboard.formatting import duration_label, percent
from dashboard.funnels import FunnelResult, StepHistogram, StepResult, TrendPoint

STEP_COLOR = "#6366f1"
FRICTION_COLOR = "#dc2626"
STILL_CONVERTING_COLOR = "#fcd34d"
INCOMPLETE_COLOR = "#9ca3af"
ENTRANTS_COLOR = "#e0e7ff"
MAX_BREAKDOWN_SERIES = 6
_GRID = "#eef0f3"
_LINE = "#e5e7eb"


def step_label(step: StepResult) -> str:
    return f"{step.index}. {step.name}"


def friction_sentence(result: FunnelResult) -> str | None:
    """One sentence naming the step that loses the largest share of the step before it, judged
    on settled entrants (whose conversion window has closed), as DESIGN §4.2 says, so that
    people still converting never count as drop-off.

    None when there is nothing to say (no entrants, or a one-step flow).
    """
    if len(result.steps) < 2 or result.entrants == 0:
        return None
    drop = result.friction_drop()
    if drop is None:
        return (
            "No friction step yet: it is judged on settled entrants, whose conversion window has "
            "closed, and every entrant's window is still open."
        )
    before, reached = drop
    settled = result.settled_entrants
    basis = f"Judged on the {settled:,} settled {'entrant' if settled == 1 else 'entrants'}"
    basis += " (conversion window closed)"
    if before - reached <= 0:
        return f"{basis}: nobody drops out between steps; everyone reached every step."
    step = result.steps[result.friction_step - 1]
    previous = result.steps[result.friction_step - 2]
    loss = 1 - reached / before
    people = "person" if before == 1 else "people"
    return (
        f"{basis}: {step.name} loses {percent(loss)} of those who reached {previous.name} "
        f"({before - reached:,} of {before:,} {people}) — the largest drop."
    )


def still_converting_sentence(result: FunnelResult) -> str | None:
    if not result.still_converting:
        return None
    people = "person is" if result.still_converting == 1 else "people are"
    return (
        f"{result.still_converting:,} {people} still inside their conversion window: "
        "not counted as drop-off yet, they may still reach the last step."
    )


def _layout(height: int, **extra: Any) -> dict[str, Any]:
    layout: dict[str, Any] = {
        "height": height,
        "margin": {"l": 16, "r": 16, "t": 8, "b": 40},
        "paper_bgcolor": "rgba(0,0,0,0)",
        "plot_bgcolor": "rgba(0,0,0,0)",
        "font": {"family": FONT_FAMILY, "size": 12, "color": "#374151"},
        "hoverlabel": {"font": {"family": FONT_FAMILY}},
        "showlegend": False,
    }
    layout.update(extra)
    return layout


def _figure(data: list[dict[str, Any]], layout: dict[str, Any]) -> dict[str, Any]:
    return {"data": data, "layout": layout, "config": {"displayModeBar": False, "responsive": True}}


def funnel_figure(result: FunnelResult) -> dict[str, Any]:
    """Horizontal funnel bars per step with counts and conversion; the friction step in red.

    People still inside their window are a separate, pale segment after the last step's bar:
    they may still get there, so they are shown apart from the drop-off.
    """
    labels = [step_label(step) for step in result.steps]
    colors = [
        FRICTION_COLOR if step.index == result.friction_step else STEP_COLOR
        for step in result.steps
    ]
    text = [
        f"{step.count:,} · {percent(step.conversion_from_start)}"
        if step.index > 1
        else f"{step.count:,}"
        for step in result.steps
    ]
    hover = [
        f"{step.count:,} people<br>{percent(step.conversion_from_start)} of entrants"
        + (
            f"<br>{percent(step.conversion_from_previous)} of step {step.index - 1}"
            f"<br>median {duration_label(step.median_seconds_from_previous)} from step"
            f" {step.index - 1}"
            if step.index > 1
            else ""
        )
        for step in result.steps
    ]
    data: list[dict[str, Any]] = [
        {
            "type": "funnel",
            "name": "Reached",
            "y": labels,
            "x": [step.count for step in result.steps],
            "text": text,
            "textinfo": "text",
            "textposition": "inside",
            "insidetextanchor": "middle",
            "textfont": {"color": "#ffffff"},
            "hovertext": hover,
            "hoverinfo": "text",
            "marker": {"color": colors},
            "connector": {"fillcolor": "#eef2ff", "line": {"width": 0}},
        }
    ]
    if result.still_converting and result.steps:
        data.append(
            {
                "type": "funnel",
                "name": "Still converting",
                "y": [labels[-1]],
                "x": [result.still_converting],
                "text": [f"+{result.still_converting:,} still converting"],
                "textinfo": "text",
                "textposition": "outside",
                "textfont": {"color": "#92400e"},
                "hovertext": [f"{result.still_converting:,} people whose window is still open"],
                "hoverinfo": "text",
                "marker": {"color": STILL_CONVERTING_COLOR},
                "connector": {"visible": False},
            }
        )
    height = max(220, 64 * len(result.steps) + 40)
    return _figure(
        data,
        _layout(
            height,
            funnelmode="stack",
            margin={"l": 16, "r": 16, "t": 8, "b": 8},
            yaxis={"automargin": True, "ticklen": 6, "tickcolor": "rgba(0,0,0,0)"},
        ),
    )


def trend_figure(points: Sequence[TrendPoint], interval: str) -> dict[str, Any]:
    """Conversion (entry to last step) per entry period as a line over pale entrant bars.

    Periods whose windows are still open are drawn hollow and dashed: their rate can still rise.
    """
    x = [point.period_start.isoformat() for point in points]
    rates = [point.conversion if point.entrants else None for point in points]
    complete_y = [
        rate if not point.incomplete else None for rate, point in zip(rates, points, strict=True)
    ]
    # The dashed line starts at the last complete point so the two lines join.
    incomplete_y: list[float | None] = []
    for index, (rate, point) in enumerate(zip(rates, points, strict=True)):
        joins = not point.incomplete and index + 1 < len(points) and points[index + 1].incomplete
        incomplete_y.append(rate if point.incomplete or joins else None)
    period = "Week of %{x|%b %-d}" if interval == "week" else "%{x|%a %b %-d}"
    data = [
        {
            "type": "bar",
            "name": "Entrants",
            "x": x,
            "y": [point.entrants for point in points],
            "yaxis": "y2",
            "marker": {"color": ENTRANTS_COLOR},
            "hovertemplate": f"{period}<br>%{{y:,}} entrants<extra></extra>",
        },
        {
            "type": "scatter",
            "mode": "lines+markers",
            "name": "Conversion",
            "x": x,
            "y": complete_y,
            "line": {"color": STEP_COLOR, "width": 2},
            "marker": {"size": 6},
            "hovertemplate": f"{period}<br>%{{y:.0%}} converted<extra></extra>",
        },
        {
            "type": "scatter",
            "mode": "lines+markers",
            "name": "Still open",
            "x": x,
            "y": incomplete_y,
            "line": {"color": INCOMPLETE_COLOR, "width": 2, "dash": "dot"},
            "marker": {"size": 7, "symbol": "circle-open"},
            "hovertemplate": f"{period}<br>%{{y:.0%}} so far (windows still open)<extra></extra>",
        },
    ]
    return _figure(
        data,
        _layout(
            280,
            showlegend=True,
            legend={"orientation": "h", "x": 0, "y": 1.02, "yanchor": "bottom"},
            margin={"l": 48, "r": 48, "t": 8, "b": 40},
            hovermode="x",
            bargap=0.3,
            xaxis={"type": "date", "showgrid": False, "linecolor": _LINE},
            yaxis={
                "tickformat": ".0%",
                "rangemode": "tozero",
                "gridcolor": _GRID,
                "zeroline": False,
            },
            yaxis2={
                "overlaying": "y",
                "side": "right",
                "rangemode": "tozero",
                "showgrid": False,
                "tickformat": ",d",
                "title": {"text": "entrants", "font": {"size": 11, "color": "#9ca3af"}},
            },
        ),
    )


_UNITS = (("seconds", 1), ("minutes", 60), ("hours", 3600), ("days", 86400))


def _unit_for(seconds: float) -> tuple[str, int]:
    """The largest unit in which ``seconds`` is at least 2 (so the axis shows sensible numbers)."""
    chosen = _UNITS[0]
    for unit in _UNITS:
        if seconds >= 2 * unit[1]:
            chosen = unit
    return chosen


def time_to_convert_step(
    histograms: Sequence[StepHistogram | StepResult], wanted: int | None
) -> int | None:
    """The step whose histogram the page shows: ``wanted`` if someone reached it, else the first
    step anyone reached (None when nobody reached step 2). ``histograms`` may be the funnel's
    steps k ≥ 2 (the same indexes and counts), so that only the shown one is binned."""
    shown = [h.index for h in histograms if h.count]
    if not shown:
        return None
    return wanted if wanted in shown else shown[0]


def time_to_convert_figure(
    histograms: Sequence[StepHistogram], *, step: int, friction: int | None = None
) -> dict[str, Any]:
    """The histogram of the time from step ``step - 1`` to ``step``, in its own unit (a sign-up
    confirmation takes minutes, a first project can take days); in the friction colour when it
    is the friction step. The page picks the step with a <select> (the ``#funnel-time-chart``
    partial), not with a control inside the chart, so it works from the keyboard."""
    histogram = next((h for h in histograms if h.index == step and h.count), None)
    if histogram is None:
        return _figure([], _layout(240))
    unit, size = _unit_for(histogram.bins[-1].end_seconds if histogram.bins else 0)
    trace = {
        "type": "bar",
        "name": f"{histogram.index}. {histogram.name}",
        "x": [(b.start_seconds + b.end_seconds) / 2 / size for b in histogram.bins],
        "y": [b.count for b in histogram.bins],
        "width": [(b.end_seconds - b.start_seconds) / size for b in histogram.bins],
        "customdata": [
            [round(b.start_seconds / size, 1), round(b.end_seconds / size, 1)]
            for b in histogram.bins
        ],
        "hovertemplate": (
            f"%{{customdata[0]}}–%{{customdata[1]}} {unit}<br>%{{y:,}} people<extra></extra>"
        ),
        "marker": {
            "color": FRICTION_COLOR if histogram.index == friction else STEP_COLOR,
            "line": {"color": "#ffffff", "width": 1},
        },
    }
    return _figure(
        [trace],
        _layout(
            260,
            margin={"l": 48, "r": 16, "t": 12, "b": 48},
            bargap=0,
            xaxis={
                "title": {
                    "text": f"{unit} from step {histogram.index - 1} to step {histogram.index}",
                    "font": {"size": 11},
                },
                "rangemode": "tozero",
                "showgrid": False,
                "linecolor": _LINE,
            },
            yaxis={"gridcolor": _GRID, "zeroline": False, "tickformat": ",d"},
        ),
    )


def _fold_breakdown(
    breakdown: dict[str, list[StepResult]], top: int
) -> list[tuple[str, list[int]]]:
    """(value, counts per step) for the ``top`` largest groups, the rest summed into "Other"."""
    items = list(breakdown.items())
    shown = [(value, [s.count for s in steps]) for value, steps in items[:top]]
    rest = items[top:]
    if rest:
        totals = [sum(steps[i].count for _, steps in rest) for i in range(len(rest[0][1]))]
        shown.append((OTHER_LABEL, totals))
    return shown


def breakdown_figure(result: FunnelResult, property_name: str) -> dict[str, Any]:
    """Grouped bars: conversion from entry per step, one bar per breakdown value.

    Rates, not counts, so small and large groups compare; the hover gives the counts.
    """
    groups = _fold_breakdown(result.breakdown or {}, MAX_BREAKDOWN_SERIES)
    labels = [step_label(step) for step in result.steps]
    data = []
    for position, (value, counts) in enumerate(groups):
        entrants = counts[0] if counts else 0
        rates = [count / entrants if entrants else 0.0 for count in counts]
        color = OTHER_COLOR if value == OTHER_LABEL else COLORWAY[position % len(COLORWAY)]
        data.append(
            {
                "type": "bar",
                "name": f"{value} ({entrants:,})",
                "x": labels,
                "y": rates,
                "customdata": counts,
                "marker": {"color": color},
                "hovertemplate": (
                    f"{property_name} = {value}<br>%{{customdata:,}} people · %{{y:.0%}}"
                    "<extra></extra>"
                ),
            }
        )
    return _figure(
        data,
        _layout(
            320,
            showlegend=True,
            barmode="group",
            bargap=0.25,
            legend={
                "orientation": "h",
                "x": 0,
                "y": 1.02,
                "yanchor": "bottom",
                "title": {"text": f"{property_name}: "},
            },
            margin={"l": 48, "r": 16, "t": 8, "b": 40},
            xaxis={"showgrid": False, "linecolor": _LINE, "automargin": True},
            yaxis={
                "tickformat": ".0%",
                "range": [0, 1.05],
                "gridcolor": _GRID,
                "zeroline": False,
            },
        ),
    )


@dataclass(frozen=True, slots=True)
class Sparkline:
    """An inline SVG line: ``points`` for a solid polyline, ``open_points`` for its dotted tail."""

    width: int
    height: int
    points: str
    open_points: str
    last_x: float
    last_y: float
    label: str


def sparkline(
    points: Sequence[TrendPoint], *, width: int = 120, height: int = 32
) -> Sparkline | None:
    """Conversion per period as SVG coordinates (0..100 % mapped to the box); None without data.

    Periods without entrants are skipped; periods still open are drawn as a dotted tail.
    """
    pad = 3
    usable = [(i, p) for i, p in enumerate(points) if p.entrants]
    if not usable:
        return None
    span = max(1, len(points) - 1)

    def xy(index: int, point: TrendPoint) -> tuple[float, float]:
        x = pad + (width - 2 * pad) * index / span
        y = height - pad - (height - 2 * pad) * point.conversion
        return round(x, 1), round(y, 1)

    solid = [xy(i, p) for i, p in usable if not p.incomplete]
    tail_start = [xy(i, p) for i, p in usable if not p.incomplete][-1:]
    tail = tail_start + [xy(i, p) for i, p in usable if p.incomplete]
    last_x, last_y = xy(*usable[-1])
    first, last = usable[0][1], usable[-1][1]
    label = (
        f"Conversion by entry week: {percent(first.conversion)} in the first week, "
        f"{percent(last.conversion)} in the latest" + (" (still open)" if last.incomplete else "")
    )
    return Sparkline(
        width=width,
        height=height,
        points=" ".join(f"{x},{y}" for x, y in solid),
        open_points=" ".join(f"{x},{y}" for x, y in tail) if len(tail) > 1 else "",
        last_x=last_x,
        last_y=last_y,
        label=label,
    )
