"""Plotly figures built from selector results. Pure functions: rows in, a figure dict out.

The dict is what ``Plotly.newPlot(element, figure.data, figure.layout, figure.config)`` takes; the
template passes it through ``json_script``, so nothing here touches the database or the request.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from dashboard.selectors import HourlyCount

# Matches the accent colours in static/css/onramp.css; "Other" is always grey.
COLORWAY = [
    "#4f46e5",
    "#0ea5e9",
    "#10b981",
    "#f59e0b",
    "#ef4444",
    "#8b5cf6",
    "#14b8a6",
    "#ec4899",
]
OTHER_COLOR = "#9ca3af"
OTHER_LABEL = "Other"
FONT_FAMILY = (
    'system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, "Noto Sans", sans-serif'
)
_HOUR = timedelta(hours=1)


def event_label(event_type: str, name: str) -> str:
    """How an event series is called in the legend: track events by name, others by type."""
    if event_type == "track":
        return name or "(unnamed track)"
    if event_type in ("page", "screen"):
        return f"{event_type}: {name}" if name else event_type
    return event_type


def _hours(start: datetime, end: datetime) -> list[datetime]:
    hour = start.replace(minute=0, second=0, microsecond=0)
    hours = []
    while hour < end:
        hours.append(hour)
        hour += _HOUR
    return hours


def _axis_time(moment: datetime) -> str:
    # Plotly ignores time zones in date strings; every time on the dashboard is UTC.
    return moment.strftime("%Y-%m-%d %H:%M")


def events_per_hour_figure(
    rows: Iterable[HourlyCount], *, start: datetime, end: datetime, top: int = len(COLORWAY)
) -> dict[str, Any]:
    """A stacked bar chart of events per hour, one series per event name.

    The ``top`` busiest series get their own colour; the rest are summed into "Other", so the
    legend stays readable however many event names there are. Hours without events are zeros, so
    every series has a bar slot for every hour in ``[start, end)``.
    """
    per_label: dict[str, dict[datetime, int]] = defaultdict(lambda: defaultdict(int))
    for row in rows:
        per_label[event_label(row.type, row.name)][row.hour] += row.count

    totals = {label: sum(counts.values()) for label, counts in per_label.items()}
    ranked = sorted(totals, key=lambda label: (-totals[label], label))
    shown, folded = ranked[:top], ranked[top:]
    if folded:
        other: dict[datetime, int] = defaultdict(int)
        for label in folded:
            for hour, count in per_label[label].items():
                other[hour] += count
        per_label[OTHER_LABEL] = other

    hours = _hours(start, end)
    x = [_axis_time(hour) for hour in hours]
    traces = []
    series = [*shown, OTHER_LABEL] if folded else shown
    for index, label in enumerate(series):
        counts = per_label[label]
        color = OTHER_COLOR if label == OTHER_LABEL and folded else COLORWAY[index % len(COLORWAY)]
        traces.append(
            {
                "type": "bar",
                "name": label,
                "x": x,
                "y": [counts.get(hour, 0) for hour in hours],
                "marker": {"color": color},
                "hovertemplate": "%{y:,} events<extra>%{fullData.name}</extra>",
            }
        )

    return {
        "data": traces,
        "layout": {
            "barmode": "stack",
            "bargap": 0.15,
            "hovermode": "x unified",
            "height": 360,
            "margin": {"l": 48, "r": 16, "t": 8, "b": 40},
            "paper_bgcolor": "rgba(0,0,0,0)",
            "plot_bgcolor": "rgba(0,0,0,0)",
            "font": {"family": FONT_FAMILY, "size": 12, "color": "#374151"},
            "legend": {
                "orientation": "h",
                "traceorder": "normal",
                "x": 0,
                "y": 1.02,
                "yanchor": "bottom",
            },
            "xaxis": {
                "type": "date",
                "range": [_axis_time(start - _HOUR / 2), _axis_time(end)],
                "showgrid": False,
                "linecolor": "#e5e7eb",
                "title": {"text": ""},
            },
            "yaxis": {
                "rangemode": "tozero",
                "gridcolor": "#eef0f3",
                "zeroline": False,
                "tickformat": ",d",
                "title": {"text": ""},
            },
        },
        "config": {
            "displayModeBar": False,
            "responsive": True,
        },
    }
