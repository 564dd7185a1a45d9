"""Flows list, funnel page, people list and CSV export (the growth team's funnel pages)."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from onboarding.services.flows import StepInput, flow_save
from onboarding.services.segments import segment_save
from tests.dashboard.conftest import NOW, send

HTMX = {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "funnel-results"}
FUNNEL = reverse("dashboard:funnel", args=["activation"])
PEOPLE = reverse("dashboard:funnel_people", args=["activation"])
CSV = reverse("dashboard:funnel_people_csv", args=["activation"])


def track(user: str, name: str, hours_ago: float, **properties) -> dict:
    return {
        "type": "track",
        "userId": user,
        "event": name,
        "timestamp": (NOW - timedelta(hours=hours_ago)).isoformat(),
        "properties": properties,
    }


@pytest.fixture
def activation(db):
    return flow_save(
        slug="activation",
        name="Activation",
        window_seconds=7 * 86400,
        steps=[
            StepInput("Signed up", "Signed Up"),
            StepInput("Email verified", "Email Verified"),
            StepInput(
                "Profile completed", "Profile Completed", where={"completionPercentage": 100}
            ),
        ],
    ).object


@pytest.fixture
def people(api, clock, activation):
    """Ten sign-ups 100 h ago: 8 verify their email, 3 complete their profile; 4 came from ads."""
    messages = []
    for i in range(10):
        user = f"u{i}"
        messages.append(
            {
                "type": "identify",
                "userId": user,
                "traits": {"email": f"{user}@example.com", "source": "ads" if i < 4 else "seo"},
                "timestamp": (NOW - timedelta(hours=101)).isoformat(),
            }
        )
        messages.append(track(user, "Signed Up", 100, device="ios" if i % 2 else "web"))
        if i < 8:
            messages.append(track(user, "Email Verified", 99))
        if i < 3:
            messages.append(track(user, "Profile Completed", 98, completionPercentage=100))
        if i == 3:
            messages.append(track(user, "Profile Completed", 98, completionPercentage=50))
    send(api, *messages)
    segment_save(
        slug="from-ads",
        name="From ads",
        definition={
            "match": "all",
            "conditions": [{"trait": "source", "op": "eq", "value": "ads"}],
        },
    )


@pytest.fixture
def growth(client, alice):
    client.force_login(alice)
    return client


def figure(html: str, element_id: str) -> dict:
    match = re.search(
        rf'<script id="{element_id}" type="application/json">(.*?)</script>', html, re.S
    )
    assert match, f"no {element_id} in the page"
    return json.loads(match.group(1))


# --- access -------------------------------------------------------------------------------------

PAGES = [
    reverse("dashboard:flows"),
    FUNNEL,
    PEOPLE + "?step=2",
    CSV + "?step=2",
]


@pytest.mark.parametrize("url", PAGES)
def test_anonymous_is_sent_to_login(client, activation, url):
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/login/?next=")


@pytest.mark.parametrize("url", PAGES)
def test_without_growth_permission_is_forbidden(client, charlie, activation, url):
    client.force_login(charlie)
    assert client.get(url).status_code == 403
    # A partial is no back door.
    assert client.get(url, **HTMX).status_code == 403


@pytest.mark.parametrize("url", PAGES)
def test_growth_marketer_sees_the_page(growth, activation, clock, url):
    assert growth.get(url).status_code == 200


def test_htmx_expired_session_redirects_the_whole_page(client, activation):
    response = client.get(FUNNEL, **HTMX, HTTP_HX_CURRENT_URL="http://testserver" + FUNNEL)
    assert response.status_code == 200
    assert response["HX-Redirect"].startswith("/login/?next=")


# --- flows list ---------------------------------------------------------------------------------


def test_flows_list(growth, people):
    html = growth.get(reverse("dashboard:flows")).content.decode()
    assert "Activation" in html
    assert f'href="{FUNNEL}"' in html
    assert reverse("dashboard:flow_edit", args=["activation"]) in html
    assert reverse("dashboard:flow_new") in html
    assert 'class="sparkline"' in html
    assert ">10<" in html  # entrants in the last 30 days
    assert "30&thinsp;%" in html  # 3 of 10 completed


def test_flows_list_empty_state(growth):
    html = growth.get(reverse("dashboard:flows")).content.decode()
    assert "No flows yet" in html


# --- funnel page --------------------------------------------------------------------------------


def test_funnel_whole_page(growth, people):
    response = growth.get(FUNNEL)
    html = response.content.decode()
    assert html.startswith("<!doctype html>")
    assert 'id="funnel-results"' in html
    # The filter bar is a GET form that works without JavaScript, enhanced with hx-get.
    assert f'method="get" action="{FUNNEL}"' in html
    assert 'hx-push-url="true"' in html
    assert "/static/vendor/plotly.min.js" in html
    funnel = figure(html, "funnel-figure")
    reached = funnel["data"][0]
    assert reached["x"] == [10, 8, 3]
    # Every entrant entered within the 7-day window: nobody is settled, so no step is the friction
    # step yet (DESIGN §4.2) and no bar is drawn in the friction colour.
    assert len(set(reached["marker"]["color"])) == 1
    assert funnel["data"][1]["x"] == [7]  # still converting, a separate trace
    assert figure(html, "trend-figure")["data"]
    assert figure(html, "ttc-figure")["data"]
    assert "breakdown-figure" not in html


def test_time_to_convert_step_picker_is_a_form_control(growth, people, clock):
    """Issue 15 item 9: the step is chosen with a labelled <select> (keyboard, no JavaScript
    needed), not with a menu drawn inside the chart; htmx swaps only the chart below it."""
    html = growth.get(FUNNEL).content.decode()
    assert '<label class="field-label" for="ttc-step">Step</label>' in html
    picker = re.search(r'<select name="ttc_step" id="ttc-step".*?</select>', html, re.S).group(0)
    assert re.findall(r'<option value="(\d+)"', picker) == ["2", "3"]
    assert "updatemenus" not in figure(html, "ttc-figure")["layout"]
    assert "from step 1 to step 2" in figure(html, "ttc-figure")["layout"]["xaxis"]["title"]["text"]
    # The picker's form keeps the page's filters.
    form = re.search(r'<form class="ttc-picker".*?</form>', html, re.S).group(0)
    assert 'type="hidden" name="since"' in form and 'hx-target="#funnel-time-chart"' in form

    # Without JavaScript: the whole page, with step 3 chosen.
    html = growth.get(FUNNEL, {"ttc_step": "3"}).content.decode()
    assert re.search(r'<option value="3" selected>', html)
    assert "to step 3" in figure(html, "ttc-figure")["layout"]["xaxis"]["title"]["text"]
    assert "3 people went from step 2 to step 3." in html

    # With htmx: only the chart and its caption; the select (and its focus) stays on the page.
    part = growth.get(
        FUNNEL, {"ttc_step": "3"}, HTTP_HX_REQUEST="true", HTTP_HX_TARGET="funnel-time-chart"
    ).content.decode()
    assert "<select" not in part and "<html" not in part.lower()
    assert "to step 3" in figure(part, "ttc-figure")["layout"]["xaxis"]["title"]["text"]

    # A step nobody reached, or nonsense: the first step reached.
    for wanted in ("9", "x"):
        html = growth.get(FUNNEL, {"ttc_step": wanted}).content.decode()
        assert "to step 2" in figure(html, "ttc-figure")["layout"]["xaxis"]["title"]["text"]


def test_friction_sentence(growth, people, clock):
    html = growth.get(FUNNEL).content.decode()
    assert "No friction step yet: it is judged on settled entrants" in html
    assert "7 people are still inside their conversion window" in html
    clock.move_to(NOW + timedelta(days=8))  # every entrant's 7-day window has closed
    html = growth.get(FUNNEL).content.decode()
    assert (
        "Judged on the 10 settled entrants (conversion window closed): Profile completed loses"
        " 62\u202f% of those who reached Email verified (5 of 8 people) — the largest drop." in html
    )
    reached = figure(html, "funnel-figure")["data"][0]
    assert reached["marker"]["color"][2] != reached["marker"]["color"][1]  # friction in its colour


def test_htmx_request_gets_only_the_results_partial(growth, people):
    response = growth.get(FUNNEL + "?segment=from-ads", **HTMX)
    html = response.content.decode()
    assert "<html" not in html and "filter-bar" not in html
    assert html.strip().startswith('<div id="funnel-results"')
    assert figure(html, "funnel-figure")["data"][0]["x"] == [4, 4, 3]
    assert response["Vary"].count("HX-Request")


def test_filters_are_in_every_count_link(growth, people):
    html = growth.get(
        FUNNEL + "?segment=from-ads&since=2025-03-01&until=2025-03-14"
    ).content.decode()
    links = re.findall(r'href="(/flows/activation/funnel/people/\?[^"]+)"', html)
    assert len(links) == 5  # reached 1..3, dropped at 2..3
    for link in links:
        assert "segment=from-ads" in link and "since=2025-03-01" in link
    assert any("step=3&amp;outcome=dropped" in link for link in links)


def test_breakdown_chart(growth, people):
    html = growth.get(FUNNEL + "?breakdown=device").content.decode()
    bars = figure(html, "breakdown-figure")["data"]
    assert {trace["name"] for trace in bars} == {"ios (5)", "web (5)"}
    assert "value=ios" in html


def test_invalid_filters_show_errors(growth, people):
    html = growth.get(FUNNEL + "?since=2025-03-10&until=2025-03-01").content.decode()
    assert "Must be on or before the end date." in html
    assert "funnel-figure" not in html


def test_no_entrants_empty_state(growth, people):
    html = growth.get(FUNNEL + "?since=2024-01-01&until=2024-01-31").content.decode()
    assert "Nobody entered Activation" in html


def test_funnel_page_query_count_is_bounded(growth, people, django_assert_max_num_queries):
    with django_assert_max_num_queries(40):
        assert growth.get(FUNNEL + "?segment=from-ads&breakdown=device").status_code == 200


def test_funnel_page_queries_do_not_grow_with_people(growth, people, api):
    url = FUNNEL + "?segment=from-ads&breakdown=device"
    with CaptureQueriesContext(connection) as before:
        growth.get(url)
    send(api, *[track(f"more{i}", "Signed Up", 50, device="android") for i in range(15)])
    with CaptureQueriesContext(connection) as after:
        growth.get(url)
    assert len(after.captured_queries) == len(before.captured_queries)


def test_unknown_flow_is_404(growth, db):
    assert growth.get(reverse("dashboard:funnel", args=["nope"])).status_code == 404


# --- people and CSV -----------------------------------------------------------------------------


def test_people_dropped_at_a_step(growth, people):
    html = growth.get(PEOPLE + "?step=3&outcome=dropped").content.decode()
    assert "Dropped at step 3: reached Email verified, not Profile completed" in html
    assert "5 people" in html
    for i in range(3, 8):
        assert f"u{i}@example.com" in html
    assert "u0@example.com" not in html
    assert "/admin/" not in html.split('id="people-table"')[1]  # alice is not staff
    assert html.count("Still converting</span>") == 5  # all five are inside their 7-day window
    assert f'href="{CSV}?' in html


def test_people_staff_link_to_the_admin(client, bob, people):
    bob.groups.add(Group.objects.get(name="growth"))
    client.force_login(bob)
    html = client.get(PEOPLE + "?step=1").content.decode()
    assert "/admin/onboarding/person/" in html


def test_people_htmx_partial_and_pagination(growth, people, monkeypatch):
    monkeypatch.setattr("dashboard.views_funnels.PEOPLE_PAGE_SIZE", 4)
    response = growth.get(
        PEOPLE + "?step=1&page=2", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="people-table"
    )
    html = response.content.decode()
    assert "<html" not in html and html.strip().startswith(
        '<section class="card" id="people-table"'
    )
    assert "Page 2 of 3" in html
    assert "page=1" in html and "page=3" in html


def test_people_query_count_is_bounded(growth, people, django_assert_max_num_queries):
    with django_assert_max_num_queries(22):
        assert growth.get(PEOPLE + "?step=2&segment=from-ads").status_code == 200


@pytest.mark.parametrize("query", ["?step=9", "?step=1&outcome=dropped", "?step=2&outcome=left"])
def test_people_bad_selection_is_404(growth, people, query):
    assert growth.get(PEOPLE + query).status_code == 404


def test_csv_export_streams_everyone(growth, people):
    response = growth.get(CSV + "?step=2&outcome=reached&segment=from-ads")
    assert response.streaming
    assert response["Content-Type"].startswith("text/csv")
    assert "activation-step2-reached.csv" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert sorted(row["email"] for row in rows) == [f"u{i}@example.com" for i in range(4)]
    assert {row["furthest_step"] for row in rows} == {"2", "3"}
    assert set(rows[0]) == {
        "person_id",
        "external_id",
        "email",
        "entered_at",
        "furthest_step",
        "reached_at",
        "still_converting",
    }
    # Sign-ups 100 h ago, 7-day window: whoever has not finished is still converting.
    assert {row["email"]: row["still_converting"] for row in rows} == {
        "u0@example.com": "false",
        "u1@example.com": "false",
        "u2@example.com": "false",
        "u3@example.com": "true",
    }


# --- funnel comforts: relative ranges, a window per query, unknown breakdowns --------------------


def test_relative_ranges_move_with_today(growth, people, clock):
    clock.move_to(NOW + timedelta(days=5))  # the sign-ups are now 9 days old
    week = growth.get(FUNNEL + "?range=7d")
    assert week.context["result"].entrants == 0
    assert week.context["result"].until == (NOW + timedelta(days=5)).date()
    month = growth.get(FUNNEL + "?range=30d&since=2020-01-01&until=2020-01-02")
    assert month.context["result"].entrants == 10  # the relative range wins over stale dates
    assert month.context["result"].since == (NOW + timedelta(days=5) - timedelta(days=29)).date()


def test_a_conversion_window_for_one_query(growth, people):
    """Verified 1 h after sign-up, profile completed 2 h after: a 90-minute window keeps the
    first and drops the second, for this query only (the flow keeps its 7 days)."""
    response = growth.get(FUNNEL + "?window=90m")
    result = response.context["result"]
    assert [s.count for s in result.steps] == [10, 8, 0]
    assert result.window_seconds == 90 * 60
    html = response.content.decode()
    assert "window 90m (this query)" in html
    people_link = re.search(r'href="(/flows/activation/funnel/people/\?[^"]+)"', html)[1]
    assert "window=90m" in people_link
    assert [s.count for s in growth.get(FUNNEL).context["result"].steps] == [10, 8, 3]


def test_a_bad_window_is_an_error_next_to_the_field(growth, people):
    html = growth.get(FUNNEL + "?window=soon").content.decode()
    assert "Write a duration such as 90s, 5m, 24h or 7d" in html
    assert "Fix the filters above to see the funnel." in html


def test_an_unknown_breakdown_property_is_named_instead_of_one_silent_none_group(growth, people):
    html = growth.get(FUNNEL + "?breakdown=devise").content.decode()
    assert 'data-testid="breakdown-warning"' in html
    assert "traits has a property named “devise”, so everyone falls in “(none)”" in html
    known = growth.get(FUNNEL + "?breakdown=device").content.decode()
    assert 'data-testid="breakdown-warning"' not in known
