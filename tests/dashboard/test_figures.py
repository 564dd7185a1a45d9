"""The events-per-hour figure, from hand-built rows: no database."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from dashboard.figures import OTHER_COLOR, OTHER_LABEL, event_label, events_per_hour_figure
from dashboard.selectors import HourlyCount

START = datetime(2025, 3, 14, 0, 0, tzinfo=UTC)
END = START + timedelta(hours=4)


def hour(n: int) -> datetime:
    return START + timedelta(hours=n)


def test_one_series_per_name_with_zeros_for_quiet_hours():
    rows = [
        HourlyCount(hour(0), "track", "Signed Up", 3),
        HourlyCount(hour(2), "track", "Signed Up", 1),
        HourlyCount(hour(2), "track", "Created Project", 5),
    ]
    figure = events_per_hour_figure(rows, start=START, end=END)
    traces = {trace["name"]: trace for trace in figure["data"]}
    assert list(traces) == ["Created Project", "Signed Up"]  # busiest first
    assert traces["Signed Up"]["y"] == [3, 0, 1, 0]
    assert traces["Created Project"]["y"] == [0, 0, 5, 0]
    assert traces["Signed Up"]["x"] == [
        "2025-03-14 00:00",
        "2025-03-14 01:00",
        "2025-03-14 02:00",
        "2025-03-14 03:00",
    ]
    assert figure["layout"]["barmode"] == "stack"
    json.dumps(figure)  # ready for json_script / Plotly.newPlot


def test_quiet_names_fold_into_other():
    rows = [HourlyCount(hour(0), "track", f"Event {i}", 10 - i) for i in range(5)]
    figure = events_per_hour_figure(rows, start=START, end=END, top=2)
    names = [trace["name"] for trace in figure["data"]]
    assert names == ["Event 0", "Event 1", OTHER_LABEL]
    other = figure["data"][-1]
    assert other["y"] == [8 + 7 + 6, 0, 0, 0]
    assert other["marker"]["color"] == OTHER_COLOR


def test_types_without_names_are_labelled_by_type():
    assert event_label("track", "Signed Up") == "Signed Up"
    assert event_label("page", "Pricing") == "page: Pricing"
    assert event_label("screen", "") == "screen"
    assert event_label("identify", "") == "identify"


def test_same_label_from_two_rows_is_summed():
    rows = [HourlyCount(hour(1), "identify", "", 2), HourlyCount(hour(1), "identify", "", 3)]
    figure = events_per_hour_figure(rows, start=START, end=END)
    assert figure["data"][0]["y"] == [0, 5, 0, 0]


def test_no_rows_no_traces():
    figure = events_per_hour_figure([], start=START, end=END)
    assert figure["data"] == []
