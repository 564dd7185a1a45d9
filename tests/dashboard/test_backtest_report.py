"""The backtest report page (DESIGN §4.6, issue 15 item 10): the summary, follow-ups per day by
channel and outcome (a Plotly figure), and the people who would have entered, paginated and as
CSV through the CSV-safe writer."""

from __future__ import annotations

import csv
import io
import re
from datetime import timedelta

import plotly.graph_objects as go
import pytest
from django.urls import reverse

from dashboard.backtests import figures
from onboarding.models import Person
from tests.dashboard.test_pages_funnels import figure
from tests.triggers.conftest import T0
from triggers.models import BacktestRun
from triggers.services.backtests import backtest_execute, backtest_start

pytestmark = pytest.mark.usefixtures("flow", "templates")

M = timedelta(minutes=1)
IDLE = {
    "trigger": {"kind": "inactive_in_flow", "flow": "activation", "minutes": 5},
    "follow_ups": [
        {"channel": "in_app", "template": "nudge", "delay": "0s"},
        {"channel": "email", "template": "reminder", "delay": "1h"},
    ],
    "quiet_hours": {"start": "09:30", "end": "12:00"},
}


@pytest.fixture
def growth(client, alice):
    client.force_login(alice)
    return client


@pytest.fixture
def run(timeline) -> BacktestRun:
    """Three people idle at step 1: a gets both follow-ups, b progresses (the email is cancelled),
    c refused email; c's external id is a spreadsheet formula."""
    for user in ("a", "b", "=HYPERLINK(evil)"):
        timeline.send(T0, user, "Signed Up")
    timeline.send(T0 + 30 * M, "b", "Email Verified")
    Person.objects.filter(external_id__in=("a", "b")).update(email="x@example.com")
    Person.objects.filter(external_id="=HYPERLINK(evil)").update(
        email="c@example.com", consent={"email": False}
    )
    started = backtest_start(None, T0, T0 + 3 * 60 * M, None, definition=IDLE)
    return backtest_execute(started.pk)


def report_url(run: BacktestRun) -> str:
    return reverse("backtests:report", args=[run.pk])


def test_the_report_shows_sends_per_day_by_channel_and_outcome(growth, run):
    html = growth.get(report_url(run)).content.decode()
    assert "Follow-ups per day by channel and outcome" in html
    fig = figure(html, "backtest-per-day-figure")
    go.Figure(fig)  # valid against plotly's schema (as tests/dashboard/test_figure_schema.py)
    bars = {(t["yaxis"], t["name"]): t["y"] for t in fig["data"]}
    # One panel per channel (email on top, y; in_app below, y2), stacked by outcome.
    assert bars == {
        ("y", "sent"): [1],
        ("y", "no consent"): [1],
        ("y", "cancelled: progressed"): [1],
        ("y2", "sent"): [3],
    }
    assert fig["layout"]["barmode"] == "stack"
    assert [t["showlegend"] for t in fig["data"]] == [True, True, True, False]  # one legend each
    assert {t["marker"]["color"] for t in fig["data"] if t["name"] == "sent"} == {
        figures.SENT_COLOR
    }


def test_the_report_lists_each_person_s_follow_ups_and_progress(growth, run):
    html = growth.get(report_url(run)).content.decode()
    table = re.search(
        r'<section class="card card-table" id="backtest-people">.*?</section>', html, re.S
    )
    rows = re.findall(r"<tr>(.*?)</tr>", table.group(0), re.S)[1:]
    text = [re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", row)).strip() for row in rows]
    assert len(text) == 3
    by_person = {row.split(" ")[0]: row for row in text}
    assert "in_app: sent" in by_person["a"] and "email: sent" in by_person["a"]
    assert by_person["b"].endswith("yes")  # verified 25 minutes after entering
    assert "email: cancelled: progressed" in by_person["b"]
    assert "email: no consent" in by_person["=HYPERLINK(evil)"]
    assert "1–3 of 3 occurrences" in html
    person = Person.objects.get(external_id="a")
    assert f'href="{reverse("dashboard:person", args=[person.pk])}"' in html


def test_the_people_are_paginated(growth, run, monkeypatch):
    monkeypatch.setattr("dashboard.backtests.report.PAGE_SIZE", 2)
    first = growth.get(report_url(run)).content.decode()
    assert "1–2 of 3 occurrences" in first and "Page 1 of 2" in first and 'rel="next"' in first
    second = growth.get(
        report_url(run) + "?page=2", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="backtest-people"
    ).content.decode()
    assert second.lstrip().startswith('<section class="card card-table" id="backtest-people">')
    assert "3–3 of 3 occurrences" in second and 'rel="prev"' in second
    assert "Page 2 of 2" in growth.get(report_url(run) + "?page=99").content.decode()


def test_the_people_export_as_csv_with_formulas_neutralised(growth, run):
    response = growth.get(reverse("backtests:people_csv", args=[run.pk]))
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert f"backtest-{run.pk}-unsaved-rule.csv" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert len(rows) == 6  # one line per follow-up: three people, two follow-ups each
    hostile = [r for r in rows if "HYPERLINK" in r["external_id"]]
    assert {r["external_id"] for r in hostile} == {"'=HYPERLINK(evil)"}
    assert [(r["step"], r["channel"], r["outcome"]) for r in hostile] == [
        ("1", "in_app", "sent"),
        ("2", "email", "suppressed:consent"),
    ]
    assert {r["progressed_anyway"] for r in rows if r["external_id"] == "b"} == {"yes"}


def test_the_rule_editor_s_result_links_to_the_report(growth, run):
    html = growth.get(
        reverse("backtests:status", args=[run.pk]) + "?format=html", HTTP_HX_REQUEST="true"
    ).content.decode()
    assert f'href="{report_url(run)}"' in html


def test_a_running_backtest_s_report_polls_then_reloads(growth, run):
    BacktestRun.objects.filter(pk=run.pk).update(status="running", progress=40)
    html = growth.get(report_url(run)).content.decode()
    assert 'hx-trigger="every 2s"' in html and "on=report" in html
    assert "backtest-per-day-figure" not in html
    BacktestRun.objects.filter(pk=run.pk).update(status="done", progress=100)
    poll = growth.get(
        reverse("backtests:status", args=[run.pk]) + "?format=html&on=report",
        HTTP_HX_REQUEST="true",
    )
    assert poll.status_code == 204 and poll["HX-Refresh"] == "true"


def test_a_report_stored_before_outcomes_were_kept_says_so(growth, run):
    old = {k: v for k, v in run.result.items() if k != "outcomes_per_day"}
    BacktestRun.objects.filter(pk=run.pk).update(result=old)
    html = growth.get(report_url(run)).content.decode()
    assert "run the backtest again" in html
    assert "backtest-per-day-figure" not in html


def test_no_report_no_csv(growth, run):
    BacktestRun.objects.filter(pk=run.pk).update(status="running", result=None)
    assert growth.get(reverse("backtests:people_csv", args=[run.pk])).status_code == 404


def test_charlie_sees_neither(client, charlie, run):
    client.force_login(charlie)
    assert client.get(report_url(run)).status_code == 403
    assert client.get(reverse("backtests:people_csv", args=[run.pk])).status_code == 403
