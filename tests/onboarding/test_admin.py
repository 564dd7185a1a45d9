"""The admin as support staff use it (bob), and write-key handling (superusers only)."""

from __future__ import annotations

import json
import re

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

from onboarding.models import Event, FailedEvent, Person, Source
from onboarding.services.sources import hash_write_key, source_for_write_key


@pytest.fixture
def journey(api) -> Person:
    """A person who signed up anonymously, identified, and had one payload rejected."""
    batch = [
        {"type": "page", "anonymousId": "anon-7", "name": "Pricing", "messageId": "p1"},
        {
            "type": "identify",
            "anonymousId": "anon-7",
            "userId": "u7",
            "messageId": "i1",
            "traits": {"email": "seven@example.com", "plan": "pro"},
        },
        {
            "type": "track",
            "userId": "u7",
            "event": "Signed Up",
            "messageId": "t1",
            "properties": {"referrer": "<script>alert(1)</script>"},
        },
        {"type": "track", "userId": "u7", "messageId": "bad"},
    ]
    response = api.post("/v1/batch", json.dumps({"batch": batch}), content_type="application/json")
    assert response.status_code == 200, response.content
    return Person.objects.get(external_id="u7")


@pytest.fixture
def support(client, bob):
    client.force_login(bob)
    return client


@pytest.fixture
def superuser_client(client, db):
    client.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
    return client


def test_site_header(support):
    assert b"Onramp admin" in support.get(reverse("admin:index")).content


@pytest.mark.parametrize("model", ["person", "event", "failedevent", "source"])
def test_changelists_open_for_support(support, journey, model):
    response = support.get(reverse(f"admin:onboarding_{model}_changelist"))
    assert response.status_code == 200


def test_person_page_shows_identities_traits_and_timeline(
    support, journey, django_assert_max_num_queries
):
    url = reverse("admin:onboarding_person_change", args=[journey.pk])
    with django_assert_max_num_queries(20):
        response = support.get(url)
    html = response.content.decode()
    assert response.status_code == 200
    assert "anon-7" in html  # identity inline
    assert "&quot;plan&quot;: &quot;pro&quot;" in html  # traits, pretty and escaped
    names = re.findall(r'class="onramp-timeline-name" href="([^"]+)">([^<]+)<', html)
    assert [name for _, name in names] == ["Signed Up", "Identify", "Pricing"]  # newest first
    signed_up = Event.objects.get(name="Signed Up")
    assert names[0][0] == reverse("admin:onboarding_event_change", args=[signed_up.pk])
    assert "<script>alert(1)</script>" not in html


def test_timeline_links_to_all_events_of_the_person(support, journey):
    url = reverse("admin:onboarding_event_changelist") + f"?person__id__exact={journey.pk}"
    response = support.get(url)
    assert response.status_code == 200
    assert response.context["cl"].queryset.count() == 3


def test_person_search_by_identity_email_and_user_id(support, journey):
    changelist = reverse("admin:onboarding_person_changelist")
    for query in ("anon-7", "u7", "SEVEN@example.com"):
        response = support.get(changelist, {"q": query})
        assert list(response.context["cl"].result_list) == [journey], query


def test_support_cannot_change_events(support, journey):
    event = Event.objects.get(name="Signed Up")
    change = reverse("admin:onboarding_event_change", args=[event.pk])
    response = support.get(change)
    assert response.status_code == 200
    assert b'name="_save"' not in response.content  # a read-only view
    assert support.post(change, {"name": "Tampered"}).status_code == 403
    assert support.get(reverse("admin:onboarding_event_add")).status_code == 403
    delete = reverse("admin:onboarding_event_delete", args=[event.pk])
    assert support.post(delete, {"post": "yes"}).status_code == 403
    event.refresh_from_db()
    assert event.name == "Signed Up"


def test_support_cannot_change_failed_events_or_sources(support, journey):
    failed = FailedEvent.objects.get()
    change = reverse("admin:onboarding_failedevent_change", args=[failed.pk])
    response = support.get(change)
    assert response.status_code == 200
    assert b"onramp-json" in response.content  # the payload, pretty-printed
    assert support.post(change, {}).status_code == 403
    assert support.get(reverse("admin:onboarding_source_add")).status_code == 403


def test_event_name_filter_lists_names_and_filters(support, journey):
    changelist = reverse("admin:onboarding_event_changelist")
    response = support.get(changelist)
    html = response.content.decode()
    assert "?name=Signed+Up" in html and "?name=Pricing" in html
    filtered = support.get(changelist, {"name": "Signed Up"})
    assert [e.name for e in filtered.context["cl"].result_list] == ["Signed Up"]


def test_failed_events_filter_by_code(support, journey):
    failed = FailedEvent.objects.get()
    response = support.get(
        reverse("admin:onboarding_failedevent_changelist"), {"code": failed.code}
    )
    assert list(response.context["cl"].result_list) == [failed]


def test_creating_a_source_shows_the_key_once_and_stores_only_its_hash(superuser_client):
    response = superuser_client.post(
        reverse("admin:onboarding_source_add"), {"name": "android"}, follow=True
    )
    assert response.status_code == 200
    keys = re.findall(r'<code class="onramp-key">([^<]+)</code>', response.content.decode())
    assert len(keys) == 1
    key = keys[0]
    source = Source.objects.get(name="android")
    assert source.write_key_hash == hash_write_key(key)
    assert key not in {source.write_key_hash, source.write_key_prefix, source.previous_key_hash}
    assert source_for_write_key(key) == source

    again = superuser_client.get(reverse("admin:onboarding_source_change", args=[source.pk]))
    assert key not in again.content.decode()
    assert source.write_key_hash not in again.content.decode()
    assert b"write_key_hash" not in again.content


def test_rotating_a_key_asks_for_the_grace_period_then_shows_the_new_key_once(
    superuser_client, issued_key
):
    changelist = reverse("admin:onboarding_source_changelist")
    selection = {"action": "rotate_write_key", "_selected_action": [issued_key.source.pk]}
    confirm = superuser_client.post(changelist, {**selection, "index": 0})
    assert confirm.status_code == 200
    assert b"The old key stops working" in confirm.content

    done = superuser_client.post(
        changelist, {**selection, "confirm": "yes", "grace": "0"}, follow=True
    )
    keys = re.findall(r'<code class="onramp-key">([^<]+)</code>', done.content.decode())
    assert len(keys) == 1
    assert source_for_write_key(keys[0]) == issued_key.source
    assert source_for_write_key(issued_key.write_key) is None


def test_support_cannot_rotate_keys(support, issued_key):
    response = support.get(reverse("admin:onboarding_source_changelist"))
    assert b"rotate_write_key" not in response.content
