"""Plotly figures of the experiment results page. Pure functions: an ExperimentResult in, a dict out."""

from __future__ import annotations

from typing import Any

from dashboard.figures import COLORWAY, FONT_FAMILY
from triggers.experiments.results import ExperimentResult

CONTROL_COLOR = "#6b7280"
_CONFIG = {"displayModeBar": False, "responsive": True}


def _base_layout(height: int) -> dict[str, Any]:
    return {
        "height": height,
        "margin": {"l": 110, "r": 24, "t": 8, "b": 40},
        "paper_bgcolor": "rgba(0,0,0,0)",
        "plot_bgcolor": "rgba(0,0,0,0)",
        "font": {"family": FONT_FAMILY, "size": 12, "color": "#374151"},
        "showlegend": False,
    }


def _color(index: int, is_control: bool) -> str:
    return CONTROL_COLOR if is_control else COLORWAY[index % len(COLORWAY)]


def rates_figure(result: ExperimentResult) -> dict[str, Any]:
    """Each arm's conversion rate as a dot with its 95 % interval, top to bottom in arm order."""
    arms = result.analysis.arms
    data = []
    for index, arm in enumerate(arms):
        if arm.rate is None or arm.ci is None:
            continue
        is_control = arm.name == result.control
        color = _color(index, is_control)
        low, high = arm.ci
        label = f"{arm.name} (control)" if is_control else arm.name
        data.append(
            {
                "type": "scatter",
                "mode": "markers",
                "x": [arm.rate],
                "y": [label],
                "marker": {
                    "color": color,
                    "size": 11,
                    "symbol": "diamond" if is_control else "circle",
                },
                "error_x": {
                    "type": "data",
                    "symmetric": False,
                    "array": [high - arm.rate],
                    "arrayminus": [arm.rate - low],
                    "color": color,
                    "thickness": 2.5,
                    "width": 6,
                },
                "customdata": [[low, high, arm.conversions, arm.users]],
                "hovertemplate": (
                    "%{y}: %{x:.2%} (95% interval %{customdata[0]:.2%} to %{customdata[1]:.2%})"
                    "<br>%{customdata[2]:,} of %{customdata[3]:,} users<extra></extra>"
                ),
                "name": arm.name,
            }
        )
    layout = _base_layout(max(280, 80 + 56 * len(arms)))
    labels = [f"{a.name} (control)" if a.name == result.control else a.name for a in arms]
    layout["yaxis"] = {
        "type": "category",
        "categoryorder": "array",
        "categoryarray": list(reversed(labels)),
        "showgrid": False,
        "automargin": True,
    }
    highest = max((a.ci[1] for a in arms if a.ci is not None), default=1.0)
    layout["xaxis"] = {
        "tickformat": ".0%" if highest >= 0.1 else ".1%",
        "gridcolor": "#eef0f3",
        "zeroline": False,
        "title": {"text": "Conversion rate, with its 95 % interval"},
        "rangemode": "tozero",
    }
    control = next((a for a in arms if a.name == result.control), None)
    if control is not None and control.rate is not None:
        layout["shapes"] = [
            {
                "type": "line",
                "xref": "x",
                "yref": "paper",
                "x0": control.rate,
                "x1": control.rate,
                "y0": 0,
                "y1": 1,
                "line": {"color": CONTROL_COLOR, "width": 1, "dash": "dot"},
            }
        ]
    return {"data": data, "layout": layout, "config": _CONFIG}


def over_time_figure(result: ExperimentResult) -> dict[str, Any]:
    """Each variant's cumulative difference from the control by assignment day, with its band."""
    data = []
    names = [a.counts.name for a in result.arms]
    for name, points in result.over_time.items():
        index = names.index(name)
        color = _color(index, False)
        days = [p.day.isoformat() for p in points if p.difference is not None]
        if not days:
            continue
        kept = [p for p in points if p.difference is not None]
        band_x = days + list(reversed(days))
        band_y = [_points(p.high) for p in kept] + [_points(p.low) for p in reversed(kept)]
        data.append(
            {
                "type": "scatter",
                "x": band_x,
                "y": band_y,
                "fill": "toself",
                "fillcolor": _rgba(color, 0.14),
                "line": {"width": 0},
                "hoverinfo": "skip",
                "showlegend": False,
                "name": f"{name} 95 % interval",
            }
        )
        data.append(
            {
                "type": "scatter",
                "mode": "lines+markers",
                "x": days,
                "y": [_points(p.difference) for p in kept],
                "line": {"color": color, "width": 2},
                "marker": {"size": 5},
                "customdata": [[_points(p.low), _points(p.high), p.users] for p in kept],
                "hovertemplate": (
                    f"{name} − {result.control}: "
                    "%{y:+.1f} pp (%{customdata[0]:+.1f} to %{customdata[1]:+.1f})"
                    "<br>%{customdata[2]:,} users so far<extra></extra>"
                ),
                "name": f"{name} − {result.control}",
            }
        )
    layout = _base_layout(300)
    layout["margin"] = {"l": 60, "r": 16, "t": 8, "b": 36}
    layout["showlegend"] = len(result.over_time) > 1
    layout["legend"] = {"orientation": "h", "x": 0, "y": 1.02, "yanchor": "bottom"}
    layout["hovermode"] = "x unified"
    layout["xaxis"] = {
        "type": "date",
        "showgrid": False,
        "linecolor": "#e5e7eb",
        "tickformat": "%b %-d",
    }
    layout["yaxis"] = {
        "tickformat": "+.0f",
        "ticksuffix": " pp",
        "gridcolor": "#eef0f3",
        "zeroline": True,
        "zerolinecolor": "#9ca3af",
        "zerolinewidth": 1.5,
    }
    return {"data": data, "layout": layout, "config": _CONFIG}


def _points(value: float | None) -> float | None:
    """A difference of rates in percentage points (0.012 → 1.2)."""
    return None if value is None else value * 100


def _rgba(hex_color: str, alpha: float) -> str:
    red, green, blue = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({red},{green},{blue},{alpha})"
