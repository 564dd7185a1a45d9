"""Odd input to pages is a 4xx naming the parameter, never a 500 (issue 13, item 7).

Each case here was a 500 on PostgreSQL before; ``test_hostile_input_crawl.py`` looks for more
across every URL and role. These run on SQLite too (the NUL check happens before any query).
"""

from __future__ import annotations

import html

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from onboarding.models import FailedEvent
from triggers.services.templates import template_save

pytestmark = pytest.mark.django_db

HUGE = "99999999999999999999"


@pytest.fixture
def growth(alice) -> Client:
    client = Client()
    client.force_login(alice)
    return client


@pytest.fixture
def support(bob) -> Client:
    client = Client()
    client.force_login(bob)
    return client


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("/people/?q=a%00b", "q"),
        ("/rules/experiments/?rule=a%00b", "rule"),
        ("/rules/templates/chat-prompt/?person=a%00b", "person"),
        ("/rules/templates/new/?person=a%00b", "person"),
        ("/flows/?a%00b=1", "a\\x00b"),
    ],
)
def test_nul_in_a_query_parameter_is_a_400_naming_it(growth, url, name):
    template_save(slug="chat-prompt", channel="in_app", subject="Chat?", body="Need help?")
    response = growth.get(url)
    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/plain")
    assert f"the query parameter “{name}” contains a NUL character" in response.content.decode()


def test_nul_in_a_posted_form_field_is_a_400_naming_it(growth):
    response = growth.post("/segments/preview/", {"definition": "{}", "name": "a\x00b"})
    assert response.status_code == 400
    assert "the form parameter “name” contains a NUL" in response.content.decode()


def test_nul_in_the_path_is_a_400(support):
    response = support.get("/admin/onboarding/person/a%00b/change/")
    assert response.status_code == 400
    assert "the URL path contains a NUL character" in response.content.decode()


def test_nul_in_an_api_query_parameter_is_the_apis_json_error(write_key):
    from tests.conftest import basic_auth

    client = Client(HTTP_AUTHORIZATION=basic_auth(write_key))
    response = client.get("/v1/in-app/messages?userId=a%00b")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_value"
    assert response.json()["error"]["path"] == "userId"
    assert response["Access-Control-Allow-Origin"] == "*"


@pytest.mark.parametrize(
    "query",
    [
        f"timestamp__year={HUGE}",
        f"timestamp__year=2026&timestamp__month={HUGE}",
        "timestamp__year=2026&timestamp__month=12&timestamp__day=0",
        "timestamp__year=0",
        "timestamp__year=x",
        "timestamp__year=" + "9" * 5000,
    ],
)
def test_an_out_of_range_date_hierarchy_is_djangos_incorrect_lookup_redirect(support, query):
    response = support.get(f"/admin/onboarding/event/?{query}")
    assert response.status_code == 302
    assert response["Location"].endswith("?e=1")


def test_a_valid_date_hierarchy_still_filters(support):
    response = support.get("/admin/onboarding/event/?timestamp__year=2026&timestamp__month=2")
    assert response.status_code == 200


def test_third_party_admins_are_guarded_too(root):
    client = Client()
    client.force_login(root)
    response = client.get(f"/admin/django_celery_beat/periodictask/?start_time__year={HUGE}")
    assert response.status_code == 302
    assert response["Location"].endswith("?e=1")


def test_a_rejected_event_with_a_lone_surrogate_shows_its_escape(support):
    event = FailedEvent.objects.create(
        received_at=timezone.now(),
        endpoint="track",
        code="invalid_value",
        path="properties.name",
        message="bad name",
        payload='{"type": "track", "userId": "u1", "properties": {"name": "x\\ud800y"}}',
    )
    response = support.get(reverse("admin:onboarding_failedevent_change", args=[event.pk]))
    assert response.status_code == 200
    assert '"name": "x\\ud800y"' in html.unescape(response.content.decode())


def test_a_20_digit_funnel_people_page_is_a_404(growth, flow):
    response = growth.get(f"/flows/{flow.slug}/funnel/people/?page={HUGE}")
    assert response.status_code == 404
