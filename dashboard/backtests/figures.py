"""The backtest report's chart: follow-ups per day, one panel per channel, stacked by outcome.
A pure function: the stored report's ``outcomes_per_day`` in, a Plotly figure dict out."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from dashboard.backtests.report import outcome_label, outcome_order
from dashboard.figures import COLORWAY, FONT_FAMILY

SENT_COLOR = COLORWAY[2]  # green: the one outcome that reaches people
_GRID = "#eef0f3"
_LINE = "#e5e7eb"
_PANEL_HEIGHT = 170


def _days(first: date, last: date) -> list[str]:
    days = []
    day = first
    while day <= last:
        days.append(day.isoformat())
        day += timedelta(days=1)
    return days


def outcome_colors(outcomes: list[str]) -> dict[str, str]:
    """Sent in green; every other outcome its own colour from the colourway, in pipeline order."""
    others = [c for c in COLORWAY if c != SENT_COLOR]
    colors, index = {}, 0
    for outcome in outcomes:
        if outcome == "sent":
            colors[outcome] = SENT_COLOR
        else:
            colors[outcome] = others[index % len(others)]
            index += 1
    return colors


def sends_per_day_figure(
    outcomes_per_day: dict[str, dict[str, dict[str, int]]], *, since: date, until: date
) -> dict[str, Any]:
    """Stacked bars per day (UTC) of each channel's follow-ups by outcome, every day of the period
    present (a quiet day is a zero, not a gap); a follow-up decided after ``until`` (deferred past
    it) extends the axis."""
    channels = sorted({c for per_channel in outcomes_per_day.values() for c in per_channel})
    outcomes = outcome_order(
        {o for per_channel in outcomes_per_day.values() for c in per_channel.values() for o in c}
    )
    last = max([until, *(date.fromisoformat(d) for d in outcomes_per_day)])
    days = _days(since, last)
    colors = outcome_colors(outcomes)
    panels = max(len(channels), 1)
    gap = 0.08
    height = (1 - gap * (panels - 1)) / panels
    data = []
    layout: dict[str, Any] = {
        "barmode": "stack",
        "bargap": 0.15,
        "height": 60 + _PANEL_HEIGHT * panels,
        "margin": {"l": 64, "r": 16, "t": 36, "b": 40},
        "paper_bgcolor": "rgba(0,0,0,0)",
        "plot_bgcolor": "rgba(0,0,0,0)",
        "font": {"family": FONT_FAMILY, "size": 12, "color": "#374151"},
        "hovermode": "x unified",
        "legend": {
            "orientation": "h",
            "x": 0,
            "y": 1.0,
            "yanchor": "bottom",
            "traceorder": "normal",
        },
    }
    for position, channel in enumerate(channels):
        suffix = "" if position == 0 else str(position + 1)
        top = 1 - position * (height + gap)
        layout[f"yaxis{suffix}"] = {
            "domain": [max(top - height, 0), top],
            "rangemode": "tozero",
            "gridcolor": _GRID,
            "zeroline": False,
            "tickformat": ",d",
            "title": {"text": channel, "font": {"size": 11}},
        }
        layout[f"xaxis{suffix}"] = {
            "type": "date",
            "anchor": f"y{suffix}",
            "showticklabels": position == panels - 1,
            "showgrid": False,
            "linecolor": _LINE,
            **({"matches": "x"} if position else {}),
        }
        for outcome in outcomes:
            counts = [
                outcomes_per_day.get(day, {}).get(channel, {}).get(outcome, 0) for day in days
            ]
            if not any(counts):
                continue
            data.append(
                {
                    "type": "bar",
                    "name": outcome_label(outcome),
                    "legendgroup": outcome,
                    "showlegend": not any(t["legendgroup"] == outcome for t in data),
                    "x": days,
                    "y": counts,
                    "xaxis": f"x{suffix}",
                    "yaxis": f"y{suffix}",
                    "marker": {"color": colors[outcome]},
                    "hovertemplate": f"%{{y:,}} {channel}<extra>%{{fullData.name}}</extra>",
                }
            )
    return {"data": data, "layout": layout, "config": {"displayModeBar": False, "responsive": True}}
