"""Plotly figures of the KPI pages. Pure functions: query results in, a figure dict out."""

from __future__ import annotations

from datetime import date
from typing import Any

from dashboard.figures import COLORWAY, FONT_FAMILY
from dashboard.kpis.queries import FlowKpis, RuleKpis

# Outcome series of a rule's chart, bottom to top, and their colours.
SEND_OUTCOMES: list[tuple[str, str, str]] = [
    ("sent", "Sent", "#10b981"),
    ("suppressed", "Suppressed", "#f59e0b"),
    ("failures", "Failed / review / unknown", "#ef4444"),
    ("cancelled", "Cancelled (exit)", "#9ca3af"),
]


def _x(days: list[date]) -> list[str]:
    return [day.isoformat() for day in days]


def _layout(height: int, *, percent: bool = False, y_title: str = "") -> dict[str, Any]:
    return {
        "height": height,
        "margin": {"l": 48, "r": 16, "t": 8, "b": 36},
        "paper_bgcolor": "rgba(0,0,0,0)",
        "plot_bgcolor": "rgba(0,0,0,0)",
        "font": {"family": FONT_FAMILY, "size": 12, "color": "#374151"},
        "hovermode": "x unified",
        "legend": {"orientation": "h", "x": 0, "y": 1.02, "yanchor": "bottom"},
        "xaxis": {
            "type": "date",
            "showgrid": False,
            "linecolor": "#e5e7eb",
            "tickformat": "%b %-d",
        },
        "yaxis": {
            "rangemode": "tozero",
            "gridcolor": "#eef0f3",
            "zeroline": False,
            "tickformat": ".0%" if percent else ",d",
            "title": {"text": y_title},
            **({"range": [0, 1.05]} if percent else {}),
        },
    }


_CONFIG = {"displayModeBar": False, "responsive": True}


def completion_rate_figure(flows: list[FlowKpis], days: list[date]) -> dict[str, Any]:
    """One line per flow: completion rate of each day's entrants (gaps on days nobody entered).

    Days whose entrants still have open windows are drawn apart, dotted: their rate can still
    rise, so they must not read as a drop.
    """
    traces = []
    for index, flow in enumerate(f for f in flows if f.days):
        color = COLORWAY[index % len(COLORWAY)]
        closed, open_, counts = [], [], []
        for day in days:
            row = flow.days.get(day)
            rate = row.completions / row.entrants if row and row.entrants else None
            still_converting = bool(row and row.still_open)
            closed.append(None if still_converting else rate)
            open_.append(rate if still_converting else None)
            counts.append(
                f"{row.completions} of {row.entrants}"
                + (f", {row.still_open} still converting" if still_converting else "")
                if row
                else "no entrants"
            )
        # The dotted series starts at the last closed day, so the two read as one line.
        last_closed = max((i for i, v in enumerate(closed) if v is not None), default=None)
        if last_closed is not None and any(v is not None for v in open_[last_closed + 1 :]):
            open_[last_closed] = closed[last_closed]
        common = {
            "type": "scatter",
            "mode": "lines+markers",
            "x": _x(days),
            "customdata": counts,
            "connectgaps": False,
            "legendgroup": flow.flow.name,
            "hovertemplate": "%{y:.1%} (%{customdata})<extra>%{fullData.name}</extra>",
        }
        traces.append(
            {
                **common,
                "name": flow.flow.name,
                "y": closed,
                "line": {"color": color, "width": 2},
                "marker": {"size": 5},
            }
        )
        if any(v is not None for v in open_):
            traces.append(
                {
                    **common,
                    "name": f"{flow.flow.name} (still converting)",
                    "y": open_,
                    "line": {"color": color, "width": 2, "dash": "dot"},
                    "marker": {"size": 5, "symbol": "circle-open"},
                    "opacity": 0.6,
                }
            )
    return {"data": traces, "layout": _layout(300, percent=True), "config": _CONFIG}


def time_to_value_figure(flows: list[FlowKpis], days: list[date]) -> dict[str, Any]:
    """One line per flow: median hours from entry to the last step, by entry day."""
    traces = []
    for index, flow in enumerate(f for f in flows if f.days):
        hours = []
        for day in days:
            row = flow.days.get(day)
            seconds = row.median_ttv_seconds if row else None
            hours.append(round(seconds / 3600, 2) if seconds is not None else None)
        traces.append(
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": flow.flow.name,
                "x": _x(days),
                "y": hours,
                "connectgaps": False,
                "line": {"color": COLORWAY[index % len(COLORWAY)], "width": 2},
                "marker": {"size": 5},
                "hovertemplate": "%{y:.1f} h<extra>%{fullData.name}</extra>",
            }
        )
    layout = _layout(300, y_title="hours")
    layout["yaxis"]["tickformat"] = ",~r"
    return {"data": traces, "layout": layout, "config": _CONFIG}


def _outcome(row, key: str) -> int:
    if row is None:
        return 0
    if key == "failures":
        return row.failed + row.review + row.unknown
    return getattr(row, key)


def rule_sends_figure(rule: RuleKpis, days: list[date]) -> dict[str, Any]:
    """Stacked bars per day: what happened to the rule's due follow-ups."""
    traces = []
    for key, label, color in SEND_OUTCOMES:
        values = [_outcome(rule.days.get(day), key) for day in days]
        if not any(values) and key != "sent":
            continue
        traces.append(
            {
                "type": "bar",
                "name": label,
                "x": _x(days),
                "y": values,
                "marker": {"color": color},
                "hovertemplate": "%{y:,}<extra>%{fullData.name}</extra>",
            }
        )
    layout = _layout(200)
    peak = max((sum(t["y"][i] for t in traces) for i in range(len(days))), default=0)
    if peak <= 5:
        layout["yaxis"]["dtick"] = 1
        layout["yaxis"]["range"] = [0, max(peak, 1) + 0.2]
    layout["showlegend"] = True
    layout["barmode"] = "stack"
    layout["bargap"] = 0.2
    layout["margin"] = {"l": 36, "r": 8, "t": 4, "b": 28}
    layout["legend"]["font"] = {"size": 11}
    return {"data": traces, "layout": layout, "config": _CONFIG}
