"""The person page: one chronological timeline of events, enrollments, messages and decisions."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse

from onboarding.models import Person
from tests.triggers.conftest import T0, flow, make_rule, templates, timeline  # noqa: F401  (fixtures)
from triggers.delivery.pipeline import deliver_due

pytestmark = pytest.mark.usefixtures("flow", "templates")
M = timedelta(minutes=1)


@pytest.fixture
def person(timeline) -> Person:  # noqa: F811  (the imported fixture)
    make_rule(
        "trial",
        {
            "trigger": {"kind": "event", "event": "Trial Ending"},
            "follow_ups": [{"channel": "in_app", "template": "nudge", "delay": "0s"}],
        },
    )
    timeline.send(T0, "u1", "Signed Up")
    timeline.send(T0 + M, "u1", "Trial Ending")
    timeline.tick(T0 + 2 * M)
    deliver_due(now=T0 + 2 * M)
    return Person.objects.get(external_id="u1")


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_timeline_lists_everything_in_order(alice, person):
    response = _client(alice).get(reverse("dashboard:person", args=[person.pk]))
    assert response.status_code == 200
    kinds = [entry.kind for entry in response.context["timeline"]]
    assert {"event", "enrollment", "message", "decision"} <= set(kinds)
    times = [entry.at for entry in response.context["timeline"]]
    assert times == sorted(times, reverse=True)
    assert b"Entered rule" in response.content and b"Activation" in response.content


def test_search_finds_by_user_id_and_email(alice, person):
    client = _client(alice)
    response = client.get(reverse("dashboard:people"), {"q": "u1"})
    assert response.status_code == 302 and response.url == reverse(
        "dashboard:person", args=[person.pk]
    )
    missing = client.get(reverse("dashboard:people"), {"q": "nobody"})
    assert missing.status_code == 200 and b"Nobody matches" in missing.content


def test_support_may_look_people_up_but_not_anonymous_or_groupless(bob, charlie, person):
    assert _client(bob).get(reverse("dashboard:person", args=[person.pk])).status_code == 200
    assert _client(charlie).get(reverse("dashboard:person", args=[person.pk])).status_code == 403
    anonymous = Client().get(reverse("dashboard:person", args=[person.pk]))
    assert anonymous.status_code == 302 and "/login/" in anonymous.url


def test_page_queries_are_bounded(alice, person, django_assert_max_num_queries):
    client = _client(alice)
    with django_assert_max_num_queries(15):
        client.get(reverse("dashboard:person", args=[person.pk]))
