"""Support staff land on a support home: the review queue, what failed in the last 24 hours, and
the people search. A refused request is one log line, not a traceback."""

from __future__ import annotations

import json
import logging
import re
from datetime import timedelta

import pytest
import time_machine
from django.test import Client
from django.urls import reverse

from config.log_filters import ClientErrorWithoutTraceback
from onboarding.models import FailedEvent
from tests.triggers.conftest import T0, flow, make_rule, templates, timeline  # noqa: F401
from triggers.delivery.pipeline import deliver_due
from triggers.models import ReviewItem
from triggers.services.templates import template_save

M = timedelta(minutes=1)
NOW = T0 + timedelta(hours=26)


def _reject_one(api, at) -> None:
    """A track call without an event name: the API refuses it and keeps it as a failed event."""
    with time_machine.travel(at, tick=False):
        response = api.post(
            "/v1/batch",
            json.dumps({"batch": [{"type": "track", "userId": "u9", "messageId": f"bad-{at}"}]}),
            content_type="application/json",
        )
    assert response.status_code in (200, 400), response.content


@pytest.fixture
def trouble(api, timeline, flow, templates):  # noqa: F811
    """Two follow-ups that could not render (one 26 h ago, one 1 h ago), and two rejected events
    at the same times: the queue holds both items, the last 24 hours one of each."""
    template_save(slug="strict", channel="in_app", subject="", body="Hello {{ company }}")
    make_rule(
        "trial",
        {
            "trigger": {"kind": "event", "event": "Trial Ending"},
            "follow_ups": [{"channel": "in_app", "template": "strict", "delay": "0s"}],
        },
    )
    for user, at in (("u1", T0), ("u2", NOW - timedelta(hours=1))):
        timeline.send(at, user, "Trial Ending")
        timeline.tick(at + M)
        with time_machine.travel(at + M, tick=False):
            deliver_due(now=at + M)
        _reject_one(api, at)
    assert ReviewItem.objects.count() == 2 and FailedEvent.objects.count() == 2


@pytest.fixture
def at_now():
    with time_machine.travel(NOW, tick=False):
        yield


def test_support_staff_land_on_the_support_home_after_login(bob, db):
    client = Client()
    response = client.post(reverse("login"), {"username": "bob", "password": "pw-bob"}, follow=True)
    assert response.redirect_chain[-1][0] == reverse("dashboard:support")
    assert response.status_code == 200
    assert b"Review queue" in response.content and b"Find a person" in response.content


def test_the_overview_sends_support_staff_home_and_growth_stays(bob, alice, vera):
    client = Client()
    client.force_login(bob)
    response = client.get(reverse("dashboard:overview"))
    assert (response.status_code, response["Location"]) == (302, reverse("dashboard:support"))
    for persona in (alice, vera):
        client.force_login(persona)
        assert client.get(reverse("dashboard:overview")).status_code == 200


def test_the_support_home_shows_the_queue_and_the_last_24_hours(bob, trouble, at_now):
    client = Client()
    client.force_login(bob)
    response = client.get(reverse("dashboard:support"))
    assert response.status_code == 200
    summary = response.context["summary"]
    assert summary.open_reviews == 2  # the queue is everything still open
    assert summary.oldest_open_review_at == T0 + M
    assert summary.failures_24h == 1 and summary.failures_by_outcome == {"review": 1}
    assert [d.person.external_id for d in summary.latest_failures] == ["u2"]
    assert summary.rejected_events_24h == 1
    assert summary.rejected_by_code == [("missing_field", 1)]
    html = response.content.decode()
    queue = re.search(r'id="review-queue".*?class="stat-value">(\d+)<', html, re.S)
    assert queue and queue.group(1) == "2"
    assert reverse("admin:triggers_reviewitem_changelist") + "?status__exact=open" in html
    failed = re.search(r'id="failed-messages".*?class="stat-value">(\d+)<', html, re.S)
    rejected = re.search(r'id="rejected-events".*?class="stat-value">(\d+)<', html, re.S)
    assert failed and rejected and (failed.group(1), rejected.group(1)) == ("1", "1")
    table = html.split('id="recent-failures"')[1].split("</section>")[0]
    assert ">u2</a>" in table and ">u1</a>" not in table and "step 1" in table
    rejected_table = html.split('id="recent-rejected"')[1]
    failed_event = FailedEvent.objects.get(received_at__gt=NOW - timedelta(hours=24))
    change = reverse("admin:onboarding_failedevent_change", args=[failed_event.pk])
    assert f'<a href="{change}"><code>missing_field</code></a>' in rejected_table


def test_the_search_box_uses_the_people_search(bob, trouble, at_now):
    client = Client()
    client.force_login(bob)
    html = client.get(reverse("dashboard:support")).content.decode()
    form = re.search(r'<form[^>]*action="([^"]+)"[^>]*role="search"', html)
    assert form and form.group(1) == reverse("dashboard:people")
    assert re.search(r'<input type="search" name="q"', html)
    # What the box submits: part of an id lists the matches, an exact id opens the person.
    listing = client.get(reverse("dashboard:people"), {"q": "U"})
    assert listing.status_code == 200 and listing.context["page"].paginator.count == 2
    exact = client.get(reverse("dashboard:people"), {"q": "u2"})
    assert exact.status_code == 302 and exact["Location"].startswith("/people/")


def test_only_support_staff_and_superusers_open_the_support_home(client, alice, vera, root, db):
    url = reverse("dashboard:support")
    assert client.get(url)["Location"].startswith(reverse("login"))
    for persona, status in ((alice, 403), (vera, 403), (root, 200)):
        client.force_login(persona)
        assert client.get(url).status_code == status, persona


def test_the_sidebar_shows_support_staff_their_pages(bob, alice):
    client = Client()
    client.force_login(bob)
    nav = client.get(reverse("dashboard:support")).content.decode().split("</nav>")[0]
    assert 'href="/support/"' in nav and 'href="/people/"' in nav and 'href="/admin/"' in nav
    assert ">Funnels" not in nav and ">KPIs" not in nav
    client.force_login(alice)
    nav = client.get(reverse("dashboard:overview")).content.decode().split("</nav>")[0]
    assert 'href="/support/"' not in nav and "Funnels" in nav


def test_a_growth_page_refuses_support_staff_with_a_way_home(bob):
    client = Client()
    client.force_login(bob)
    response = client.get(reverse("dashboard:flows"))
    assert response.status_code == 403
    assert b'href="/support/">Go to the support home</a>' in response.content


# --- A 403 is one line in the log -------------------------------------------------------------


def test_a_403_logs_one_warning_line_and_no_traceback(client, charlie, caplog):
    client.force_login(charlie)
    with caplog.at_level(logging.INFO, logger="django.request"):
        response = client.get(reverse("dashboard:flows"))
    assert response.status_code == 403
    records = [r for r in caplog.records if r.name == "django.request"]
    assert [(r.levelname, r.getMessage()) for r in records] == [
        ("WARNING", "Forbidden (Permission denied): /flows/")
    ]
    assert records[0].exc_info is None
    assert "Traceback" not in caplog.text


def test_a_server_error_keeps_its_traceback():
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        import sys

        error = logging.LogRecord("django.request", logging.ERROR, "", 0, "x", (), sys.exc_info())
    error.status_code = 500
    refused = logging.LogRecord("django.request", logging.WARNING, "", 0, "x", (), error.exc_info)
    refused.status_code = 403
    keep = ClientErrorWithoutTraceback()
    assert keep.filter(error) and error.exc_info is not None
    assert keep.filter(refused) and refused.exc_info is None
