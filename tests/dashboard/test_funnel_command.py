"""``manage.py funnel``: the JSON shape of DESIGN §3.5, the table and CSV outputs, and errors."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core.management import CommandError, call_command

from onboarding.models import OnboardingFlow, Segment

from .test_funnel_semantics import T0, identify, make_flow, send, track


@pytest.fixture
def flow(db) -> OnboardingFlow:
    return make_flow(
        "activation",
        timedelta(days=7),
        ("Signed Up", {}),
        ("Email Verified", {}),
        ("Profile Completed", {}),
    )


@pytest.fixture
def timeline(api, flow) -> None:
    minute = timedelta(minutes=1)
    send(
        api,
        identify("a", T0 - timedelta(days=1), plan="pro"),
        track("a", "Signed Up", T0, source="ads"),
        track("a", "Email Verified", T0 + 2 * minute),
        track("a", "Profile Completed", T0 + 5 * minute),
        track("b", "Signed Up", T0, source="ads"),
        track("b", "Email Verified", T0 + 4 * minute),
        track("c", "Signed Up", T0 + timedelta(days=1)),
        track("d", "Signed Up", T0 - timedelta(days=40)),  # outside the default range
    )


def run(*args: str, days: float = 3) -> str:
    """The command ``days`` after T0 (3: every window of the timeline's entrants still open)."""
    out = io.StringIO()
    with time_machine.travel(T0 + timedelta(days=days), tick=False):
        call_command("funnel", *args, stdout=out)
    return out.getvalue()


def test_json_shape_exactly(timeline):
    data = json.loads(
        run("activation", "--since", "2026-03-02", "--until", "2026-03-03", "--format", "json")
    )
    assert list(data) == [
        "flow",
        "since",
        "until",
        "window_seconds",
        "segment",
        "steps",
        "still_converting",
        "friction_step",
        "breakdown",
    ]
    assert data["flow"] == "activation"
    assert (data["since"], data["until"]) == ("2026-03-02", "2026-03-03")
    assert data["window_seconds"] == 7 * 86400
    assert data["segment"] is None
    assert data["breakdown"] is None
    assert [list(step) for step in data["steps"]] == [
        [
            "index",
            "name",
            "event",
            "count",
            "conversion_from_start",
            "conversion_from_previous",
            "median_seconds_from_previous",
        ]
    ] * 3
    assert [s["count"] for s in data["steps"]] == [3, 2, 1]
    assert data["steps"][1]["median_seconds_from_previous"] == 180
    assert data["steps"][2]["conversion_from_start"] == pytest.approx(1 / 3)
    assert data["still_converting"] == 2  # b and c: 7-day windows still open 3 days later
    assert data["friction_step"] is None  # nobody settled yet: every window is still open
    settled = json.loads(
        run(
            "activation",
            *("--since", "2026-03-02", "--until", "2026-03-03", "--format", "json"),
            days=9,
        )
    )
    assert list(settled) == list(data)
    assert settled["still_converting"] == 0
    assert settled["friction_step"] == 3  # of the settled a, b, c: 2 of 3 reach 2, 1 of 2 reach 3


def test_defaults_to_the_last_30_days_ending_today(timeline):
    data = json.loads(run("activation", "--format", "json"))
    today = (T0 + timedelta(days=3)).date()
    assert data["until"] == today.isoformat()
    assert data["since"] == (today - timedelta(days=29)).isoformat()
    assert data["steps"][0]["count"] == 3  # d signed up 40 days ago


def test_segment_and_breakdown(timeline):
    Segment.objects.create(
        slug="pro",
        name="Pro",
        definition={"match": "all", "conditions": [{"trait": "plan", "op": "eq", "value": "pro"}]},
    )
    data = json.loads(
        run("activation", "--segment", "pro", "--breakdown", "source", "--format", "json")
    )
    assert data["segment"] == "pro"
    assert [s["count"] for s in data["steps"]] == [1, 1, 1]
    assert list(data["breakdown"]) == ["ads"]
    everyone = json.loads(run("activation", "--breakdown", "source", "--format", "json"))
    assert {k: v[0]["count"] for k, v in everyone["breakdown"].items()} == {"ads": 2, "(none)": 1}


def test_table_marks_the_friction_step(timeline):
    text = run("activation", "--since", "2026-03-02", "--until", "2026-03-03", days=9)
    assert "Funnel activation: entries 2026-03-02 to 2026-03-03" in text
    lines = text.splitlines()
    friction = [line for line in lines if "<- friction" in line]
    assert len(friction) == 1 and "3. Step 3" in friction[0]
    assert any("1. Step 1" in line and " 3 " in line for line in lines)
    early = run("activation", "--since", "2026-03-02", "--until", "2026-03-03")
    assert "<- friction" not in early
    assert "Still converting (window open, not finished): 2" in early


def test_table_with_breakdown_lists_each_value(timeline):
    text = run("activation", "--breakdown", "source")
    assert "\nads\n" in text and "\n(none)\n" in text


def test_csv_one_row_per_step(timeline):
    rows = list(csv.reader(io.StringIO(run("activation", "--format", "csv"))))
    assert rows[0] == [
        "index",
        "name",
        "event",
        "count",
        "conversion_from_start",
        "conversion_from_previous",
        "median_seconds_from_previous",
    ]
    assert [row[3] for row in rows[1:]] == ["3", "2", "1"]
    assert rows[1][6] == "" and rows[2][6] == "180"
    with_breakdown = list(
        csv.reader(io.StringIO(run("activation", "--format", "csv", "--breakdown", "source")))
    )
    assert with_breakdown[0][0] == "breakdown"
    assert [row[0] for row in with_breakdown[1:]] == ["(all)"] * 3 + ["ads"] * 3 + ["(none)"] * 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope"], "unknown flow 'nope'"),
        (["activation", "--segment", "ghosts"], "unknown segment 'ghosts'"),
        (["activation", "--since", "2026-02-30"], "--since: '2026-02-30' is not a date"),
        (["activation", "--until", "yesterday"], "--until: 'yesterday' is not a date"),
        (
            ["activation", "--since", "2026-03-05", "--until", "2026-03-01"],
            "since must be on or before until",
        ),
    ],
)
def test_errors_name_the_problem(flow, args, message):
    with pytest.raises(CommandError, match=message):
        run(*args)


def test_bad_format_is_refused(flow):
    with pytest.raises(CommandError):
        run("activation", "--format", "xml")


def test_flow_without_steps(db):
    OnboardingFlow.objects.create(slug="empty", name="Empty")
    with pytest.raises(CommandError, match="has no steps"):
        run("empty")


def test_utc_dates_from_the_clock(flow):
    late = datetime(2026, 3, 2, 23, 30, tzinfo=UTC)
    out = io.StringIO()
    with time_machine.travel(late, tick=False):
        call_command("funnel", "activation", "--format", "json", stdout=out)
    assert json.loads(out.getvalue())["until"] == "2026-03-02"
