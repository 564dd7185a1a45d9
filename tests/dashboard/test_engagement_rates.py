"""Click and open rates per rule, per template and on the KPI page (issue 20 part 3): over the
messages sent, clicks over email and in-app sends, opens over emails and only with
``ONRAMP_TRACK_OPENS``; each page reads them in one aggregate query."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.urls import reverse

from dashboard.kpis.engagement import engagement_by
from tests.triggers import conftest as trigger_fixtures
from tests.triggers.conftest import T0, make_rule
from tests.triggers.test_delivery import identify
from triggers.delivery.pipeline import deliver_due
from triggers.models import Message, MessageTemplate, Rule
from triggers.services.outcomes import message_record_outcome

flow, templates, timeline = (
    trigger_fixtures.flow,
    trigger_fixtures.templates,
    trigger_fixtures.timeline,
)
pytestmark = pytest.mark.usefixtures("flow", "templates")
M = timedelta(minutes=1)
NOW = T0 + timedelta(hours=2)


@pytest.fixture
def engaged(api, timeline):
    """Four people, each sent an email and an in-app message; u0 clicks the email (a click is
    also an open), u2 opens theirs, u1 and u3 click the in-app message."""
    make_rule(
        "trial",
        {
            "trigger": {"kind": "event", "event": "Trial Ending"},
            "follow_ups": [
                {"channel": "email", "template": "reminder", "delay": "0s"},
                {"channel": "in_app", "template": "nudge", "delay": "0s"},
            ],
        },
    )
    for n in range(4):
        identify(api, f"u{n}", email=f"u{n}@example.com")
        timeline.send(T0, f"u{n}", "Trial Ending")
    timeline.tick(T0 + M)
    assert deliver_due(now=T0 + M).sent == 8

    def record(user: str, channel: str, outcome: str) -> None:
        message = Message.objects.get(person__external_id=user, channel=channel)
        message_record_outcome(message_id=message.pk, outcome=outcome, now=T0 + 10 * M)

    record("u0", "email", "clicked")
    record("u2", "email", "opened")
    record("u1", "in_app", "clicked")
    record("u3", "in_app", "clicked")


@pytest.fixture
def at_now():
    with time_machine.travel(NOW, tick=False):
        yield


def test_rates_per_rule_and_template_count_the_channels_that_have_them(engaged):
    by_rule = engagement_by("rule_id", since=T0, until=NOW)
    [trial] = by_rule.values()
    assert (trial.clicks.part, trial.clicks.whole) == (3, 8)
    assert (trial.opens.part, trial.opens.whole) == (2, 4)  # u0's click counts as an open
    by_template = engagement_by("template_id", since=T0, until=NOW)
    reminder = by_template[MessageTemplate.objects.get(slug="reminder").pk]
    nudge = by_template[MessageTemplate.objects.get(slug="nudge").pk]
    assert (reminder.clicks.part, reminder.clicks.whole) == (1, 4)
    assert (nudge.clicks.part, nudge.clicks.whole, nudge.opens.whole) == (2, 4, 0)
    assert engagement_by("rule_id", since=NOW, until=NOW + M) == {}  # sent before the range


def test_the_kpi_page_shows_click_rate_and_says_opens_are_off(client, alice, engaged, at_now):
    client.force_login(alice)
    response = client.get("/kpis/")
    html = response.content.decode()
    assert response.context["engagement"].clicks.rate == 3 / 8
    assert "37.5 %" in html and "3 of 8 email and in-app sent" in html
    assert "opens not tracked (ONRAMP_TRACK_OPENS is off)" in html
    [(kpis, row)] = response.context["rule_engagement"]
    assert kpis.rule.slug == "trial" and row.clicks.percent == "37.5 %"
    assert 'class="num engagement-opens"' not in html


def test_with_opens_tracked_every_page_shows_open_rates(client, alice, engaged, at_now, settings):
    settings.ONRAMP_TRACK_OPENS = True
    client.force_login(alice)
    kpis = client.get("/kpis/").content.decode()
    assert "2 of 4 emails sent" in kpis and "50.0 %" in kpis
    rules = client.get(reverse("triggers:rules")).content.decode()
    assert '<td class="num engagement-clicks">37.5 %<span class="step-event">3 of 8</span>' in rules
    assert '<td class="num engagement-opens">50.0 %<span class="step-event">2 of 4</span>' in rules
    page = client.get(reverse("triggers:templates")).content.decode()
    assert '<td class="num engagement-clicks">25.0 %<span class="step-event">1 of 4</span>' in page
    assert '<td class="num engagement-clicks">50.0 %<span class="step-event">2 of 4</span>' in page
    assert "Clicks (30 d)" in page and "Opens (30 d)" in page


def test_the_rules_page_counts_the_last_7_days(client, alice, engaged):
    client.force_login(alice)
    with time_machine.travel(T0 + timedelta(days=8), tick=False):
        rules = client.get(reverse("triggers:rules")).content.decode()
    assert '<td class="num engagement-clicks">–<span class="step-event">0 of 0</span>' in rules
    assert Rule.objects.count() == 1


def test_one_aggregate_query_whatever_the_number_of_rules(engaged, django_assert_num_queries):
    with django_assert_num_queries(1):
        engagement_by("rule_id", since=T0, until=NOW)
