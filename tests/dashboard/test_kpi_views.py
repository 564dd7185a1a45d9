"""The KPI overview: access, the htmx partial, what it shows, and a bounded number of queries."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext

from dashboard.kpis import rollup_kpis
from onboarding.models import Person
from tests.triggers import conftest as trigger_fixtures
from tests.triggers.conftest import T0, make_rule
from triggers.delivery.pipeline import deliver_due
from triggers.models import Message
from triggers.services.outcomes import message_record_outcome

flow, templates, timeline = (
    trigger_fixtures.flow,
    trigger_fixtures.templates,
    trigger_fixtures.timeline,
)
pytestmark = pytest.mark.usefixtures("flow", "templates")

M = timedelta(minutes=1)
NOW = T0 + 2 * timedelta(hours=1)
URL = "/kpis/"


def _idle_rule():
    return make_rule(
        "idle",
        {
            "trigger": {"kind": "inactive_in_flow", "flow": "activation", "minutes": 5},
            "follow_ups": [{"channel": "in_app", "template": "nudge", "delay": "0s"}],
        },
    )


def _people(timeline, first: int, count: int) -> None:
    for n in range(first, first + count):
        timeline.send(T0, f"u{n}", "Signed Up")
    timeline.tick(T0 + 5 * M)
    deliver_due(now=T0 + 5 * M)


def _rollup() -> None:
    rollup_kpis(first=T0.date() - timedelta(days=6), last=T0.date(), now=NOW)


@pytest.fixture
def rolled_up(timeline):
    _idle_rule()
    _people(timeline, 0, 4)
    message_record_outcome(
        message_id=Message.objects.get(person__external_id="u0").pk, outcome="seen"
    )
    timeline.send(T0 + 30 * M, "u0", "Email Verified")
    _rollup()


@pytest.fixture
def at_now():
    with time_machine.travel(NOW, tick=False):
        yield


def test_anonymous_visitors_log_in(client, db):
    response = client.get(URL)
    assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_people_without_the_growth_permission_are_refused(client, charlie):
    client.force_login(charlie)
    assert client.get(URL).status_code == 403
    assert client.get(URL, HTTP_HX_REQUEST="true", HTTP_HX_TARGET="kpi-results").status_code == 403


def test_growth_marketers_see_tiles_with_their_basis(client, alice, rolled_up, at_now):
    client.force_login(alice)
    response = client.get(URL)
    assert response.status_code == 200
    html = response.content.decode()
    assert '<div id="kpi-results"' in html
    assert "25.0 %" in html and "1 of 4 sent" in html  # response: u0 saw the nudge
    assert "0 of 4 entrants" in html  # nobody completed yet
    assert 'data-plotly-figure="kpi-completion-figure"' in html
    assert 'href="/rules/idle/"' in html
    assert 'aria-current="page"' in html and ">KPIs" in html
    # u1–u3 made no progress for two hours; u0 progressed 90 minutes ago: all four are stalled.
    for user in ("u1", "u2", "u3"):
        person = Person.objects.get(external_id=user)
        assert f'href="/people/{person.pk}/"' in html
    assert "4 people" in html


def test_range_selector_swaps_the_results_partial(client, alice, rolled_up, at_now):
    client.force_login(alice)
    response = client.get(URL + "?range=7d", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="kpi-results")
    assert response.status_code == 200
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="kpi-results"')
    assert "<html" not in html and "Stalled right now" not in html
    assert 'href="?range=7d"' in html and 'aria-current="true">7 d<' in html
    unknown = client.get(URL + "?range=nope").content.decode()
    assert 'aria-current="true">30 d<' in unknown


def test_the_stalled_partial_refreshes_on_its_own(client, alice, rolled_up, at_now):
    client.force_login(alice)
    response = client.get(URL, HTTP_HX_REQUEST="true", HTTP_HX_TARGET="kpi-stalled")
    html = response.content.decode()
    assert html.lstrip().startswith('<section class="card" id="kpi-stalled"')
    assert "kpi-results" not in html


def test_an_empty_store_renders(client, alice, at_now):
    client.force_login(alice)
    html = client.get(URL).content.decode()
    assert "not rolled up yet" in html and "Nobody is stalled" in html


def _count_queries(client) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert client.get(URL).status_code == 200
    return len(queries)


def test_query_count_does_not_grow_with_the_number_of_events(client, alice, timeline, at_now):
    client.force_login(alice)
    _idle_rule()
    _people(timeline, 0, 10)
    _rollup()
    with time_machine.travel(NOW, tick=False):
        small = _count_queries(client)
    _people(timeline, 10, 90)
    _rollup()
    with time_machine.travel(NOW, tick=False):
        assert _count_queries(client) == small
    assert small <= 12


def _entrants_of(response) -> int:
    return sum(day.entrants for day in response.context["result"].flows[0].days.values())


def _entrants(client) -> int:
    return _entrants_of(client.get(URL + "?range=7d"))


def test_the_page_shows_the_age_of_its_numbers_and_refreshes_on_demand(
    client, alice, vera, timeline
):
    """Events after the last roll-up do not show until the next one; "Refresh now" runs it."""
    _idle_rule()
    _people(timeline, 0, 4)
    _rollup()  # at NOW
    client.force_login(vera)  # a viewer may refresh: it recomputes, it changes nothing
    with time_machine.travel(NOW + 25 * M, tick=False):
        html = client.get(URL + "?range=7d").content.decode()
        assert "rolled up 25\xa0minutes ago" in html
        entrants = _entrants(client)
        _people(timeline, 10, 3)  # three more sign-ups on the same day
        assert _entrants(client) == entrants

        response = client.post("/kpis/refresh/", {"range": "7d"})
        assert response.status_code == 302 and response["Location"] == "/kpis/?range=7d"
        page = client.get(response["Location"])
    assert _entrants_of(page) == entrants + 3
    html = page.content.decode()
    assert "rolled up 0\xa0minutes ago" in html and "KPIs rolled up for" in html


def test_refresh_is_a_post_for_dashboard_users_only(client, charlie, alice):
    assert client.post("/kpis/refresh/").status_code == 302  # anonymous: to the login page
    client.force_login(charlie)
    assert client.post("/kpis/refresh/").status_code == 403
    client.force_login(alice)
    assert client.get("/kpis/refresh/").status_code == 405
