"""The overview page: totals, the chart and its range selector, the polled latest-events table."""

from __future__ import annotations

import json
import re

import pytest
from django.urls import reverse

from onboarding.models import Event
from tests.dashboard.conftest import send

URL = reverse("dashboard:overview")


def htmx(target: str) -> dict[str, str]:
    return {"HX-Request": "true", "HX-Target": target}


@pytest.fixture
def growth_client(client, alice):
    client.force_login(alice)
    return client


def chart_figure(response) -> dict:
    html = response.content.decode()
    start = html.index('<script id="events-chart-figure" type="application/json">')
    start = html.index(">", start) + 1
    return json.loads(html[start : html.index("</script>", start)])


def test_empty_states(growth_client, clock):
    response = growth_client.get(URL)
    html = response.content.decode()
    assert "No events in the last 48 h" in html
    assert "No events yet" in html
    assert "nobody yet" in html
    assert "data-plotly-figure" not in html


def test_whole_page(growth_client, journeys):
    response = growth_client.get(URL)
    html = response.content.decode()
    assert html.startswith("<!doctype html>")
    assert 'id="events-chart"' in html
    assert 'id="latest-events"' in html
    totals = response.context["totals"]
    # u2's three events and the anonymous page view are inside 24 h; u1's are older.
    assert totals.events_24h == 4
    assert (totals.people, totals.identified_people) == (3, 2)
    assert totals.failed_events_24h == 1
    assert "67&thinsp;%" in html
    # Plotly is vendored, never from a CDN; CSRF for htmx is set once on <body>.
    assert "/static/vendor/plotly.min.js" in html
    assert "/static/vendor/htmx.min.js" in html
    assert "cdn" not in html.lower()
    assert 'hx-headers=\'{"X-CSRFToken": "' in html
    # Logging out is a POST form.
    assert f'<form method="post" action="{reverse("logout")}">' in html


def test_every_section_is_a_link(growth_client, clock):
    html = growth_client.get(URL).content.decode()
    disabled = re.findall(
        r'<span class="nav-item is-disabled" aria-disabled="true"[^>]*>\s*<svg.*?</svg>(\w+)<', html
    )
    assert disabled == []
    assert '<a class="nav-item" href="/rules/experiments/">' in html
    assert 'aria-current="page">' in html  # Overview is the active section


def test_latest_events_partial_for_htmx(growth_client, journeys):
    response = growth_client.get(URL, headers=htmx("latest-events"))
    html = response.content.decode()
    assert response.status_code == 200
    assert html.lstrip().startswith('<section class="card" id="latest-events"')
    assert "<html" not in html and "<body" not in html
    assert 'id="events-chart"' not in html
    assert 'hx-trigger="every 10s"' in html
    assert "Invited Teammate" in html and "Pricing" in html
    assert response.headers["Vary"].count("HX-Request") == 1


def test_latest_events_are_newest_first(growth_client, journeys, api, clock):
    clock.shift(60)
    send(api, {"type": "track", "userId": "u9", "event": "Arrived Later", "messageId": "late"})
    html = growth_client.get(URL, headers=htmx("latest-events")).content.decode()
    rows = html.split("<tr>")[2:]  # after the header row
    assert "Arrived Later" in rows[0]
    assert len(rows) == Event.objects.count()


def test_person_links_only_for_staff(growth_client, journeys):
    html = growth_client.get(URL).content.decode()
    assert "/admin/" not in html  # alice is not staff: no links into the admin


def test_chart_is_built_from_the_selected_range(growth_client, journeys):
    figure = chart_figure(growth_client.get(URL))
    totals = {trace["name"]: sum(trace["y"]) for trace in figure["data"]}
    assert totals == {
        "Signed Up": 2,
        "Created Project": 1,
        "Invited Teammate": 1,
        "identify": 1,
        "page: Pricing": 1,
    }
    assert len(figure["data"][0]["x"]) == 48

    day = chart_figure(growth_client.get(URL + "?range=24h"))
    assert {trace["name"]: sum(trace["y"]) for trace in day["data"]} == {
        "Signed Up": 1,
        "Invited Teammate": 1,
        "identify": 1,
        "page: Pricing": 1,
    }


def test_range_selector_works_without_javascript(growth_client, journeys):
    html = growth_client.get(URL + "?range=7d").content.decode()
    assert 'href="?range=24h"' in html
    assert 'class="segmented-item is-active" href="?range=7d"' in html
    assert len(chart_figure(growth_client.get(URL + "?range=7d"))["data"][0]["x"]) == 7 * 24


def test_range_selector_swaps_the_chart_partial(growth_client, journeys):
    response = growth_client.get(URL + "?range=24h", headers=htmx("events-chart"))
    html = response.content.decode()
    assert html.lstrip().startswith('<section class="card" id="events-chart"')
    assert "<html" not in html
    assert 'id="latest-events"' not in html
    assert 'hx-get="?range=7d" hx-target="#events-chart"' in html
    assert 'class="segmented-item is-active" href="?range=24h"' in html


def test_unknown_range_falls_back_to_48_hours(growth_client, journeys):
    response = growth_client.get(URL + "?range=forever")
    assert response.context["chart_range"] == "48h"


def test_query_count_is_bounded(growth_client, journeys, django_assert_max_num_queries):
    # session, user, permissions (2), totals (3), chart (1), latest events with people (1);
    # none of them grows with the number of events or names.
    with django_assert_max_num_queries(9):
        growth_client.get(URL)
    with django_assert_max_num_queries(5):
        growth_client.get(URL, headers=htmx("latest-events"))
