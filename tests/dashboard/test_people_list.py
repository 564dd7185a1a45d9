"""Finding people: part of an id, email or name, any case; filters by flow state, segment and
last activity; pages. The same search in the admin."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse

from onboarding.models import Person
from onboarding.services.flows import StepInput, flow_save
from onboarding.services.segments import segment_save

from .conftest import NOW, send

PEOPLE = reverse("dashboard:people")


def track(user: str, name: str, hours_ago: float) -> dict:
    return {
        "messageId": f"{user}-{name}",
        "type": "track",
        "userId": user,
        "event": name,
        "timestamp": (NOW - timedelta(hours=hours_ago)).isoformat(),
    }


def identify(user: str, hours_ago: float, **traits) -> dict:
    return {
        "messageId": f"{user}-identify",
        "type": "identify",
        "userId": user,
        "traits": traits,
        "timestamp": (NOW - timedelta(hours=hours_ago)).isoformat(),
    }


@pytest.fixture
def crowd(api, clock):
    flow_save(
        slug="activation",
        name="Activation",
        window_seconds=7 * 86400,
        steps=[StepInput("Signed up", "Signed Up"), StepInput("Done", "Finished")],
    )
    send(
        api,
        identify("user-Ada-1", 50, email="Ada.Lovelace@Example.com", first_name="Ada"),
        track("user-Ada-1", "Signed Up", 50),
        track("user-Ada-1", "Finished", 49),
        identify("user-grace-2", 2, email="grace@navy.mil", name="Grace Hopper"),
        track("user-grace-2", "Signed Up", 2),
        identify("user-alan-3", 400, email="alan@bletchley.uk", last_name="Turing", plan="pro"),
        {
            "messageId": "anon-page",
            "type": "page",
            "anonymousId": "anon-XYZ-42",
            "name": "Pricing",
            "timestamp": (NOW - timedelta(hours=1)).isoformat(),
        },
    )
    # Last activity as the list shows and filters it (``Person.last_seen``), pinned.
    for key, hours_ago in (("user-alan-3", 400), ("user-Ada-1", 49), ("user-grace-2", 2)):
        Person.objects.filter(external_id=key).update(last_seen=NOW - timedelta(hours=hours_ago))
    Person.objects.filter(identities__value="anon-XYZ-42").update(
        last_seen=NOW - timedelta(hours=1)
    )
    segment_save(
        slug="pro",
        name="Pro",
        definition={"match": "all", "conditions": [{"trait": "plan", "op": "eq", "value": "pro"}]},
    )


@pytest.fixture
def growth(client, alice):
    alice.groups.add(Group.objects.get(name="growth"))
    client.force_login(alice)
    return client


def listed(client, **params) -> list[str]:
    response = client.get(PEOPLE, params)
    assert response.status_code == 200, response.status_code
    return [
        p.external_id or p.identities.first().value for p in response.context["page"].object_list
    ]


@pytest.mark.parametrize(
    ("term", "expected"),
    [
        ("ada", ["user-Ada-1"]),  # part of the userId, any case
        ("EXAMPLE.COM", ["user-Ada-1"]),  # part of the email
        ("hopper", ["user-grace-2"]),  # the name trait
        ("turing", ["user-alan-3"]),  # last_name
        ("xyz-4", ["anon-XYZ-42"]),  # part of an anonymous id
        ("user-", ["user-grace-2", "user-Ada-1", "user-alan-3"]),  # newest activity first
    ],
)
def test_search_by_part_of_an_id_email_or_name(growth, crowd, term, expected):
    assert listed(growth, q=term) == expected


def test_an_exact_id_or_email_opens_the_person(growth, crowd):
    ada = Person.objects.get(external_id="user-Ada-1")
    for term in ("user-Ada-1", "ada.lovelace@example.com", str(ada.pk)):
        response = growth.get(PEOPLE, {"q": term})
        assert response.status_code == 302, term
        assert response.url == reverse("dashboard:person", args=[ada.pk])


def test_filters_by_flow_state_segment_and_last_seen(growth, crowd):
    assert listed(growth, flow="activation", state="completed") == ["user-Ada-1"]
    assert listed(growth, flow="activation", state="entered") == ["user-grace-2", "user-Ada-1"]
    assert listed(growth, segment="pro") == ["user-alan-3"]
    assert listed(growth, seen="1d") == ["anon-XYZ-42", "user-grace-2"]
    assert listed(growth, q="user", seen="7d") == ["user-grace-2", "user-Ada-1"]


def test_a_state_without_a_flow_is_an_error_next_to_the_field(growth, crowd):
    response = growth.get(PEOPLE, {"state": "stalled"})
    assert response.status_code == 200
    assert "Choose the flow whose state to filter on." in response.content.decode()


def test_pages_keep_the_filters(growth, crowd, monkeypatch):
    monkeypatch.setattr("dashboard.people.PAGE_SIZE", 2)
    html = growth.get(PEOPLE, {"q": "user"}).content.decode()
    assert "Page 1 of 2" in html and "q=user&amp;page=2" in html
    second = growth.get(PEOPLE, {"q": "user", "page": 2}, HTTP_HX_REQUEST="true")
    body = second.content.decode()
    assert body.strip().startswith('<section class="card" id="people-results"')
    assert "user-alan-3" in body and "user-grace-2" not in body and "user-Ada-1" not in body


def test_nobody_matches(growth, crowd):
    html = growth.get(PEOPLE, {"q": "nobody-at-all"}).content.decode()
    assert "Nobody matches “nobody-at-all”" in html


def test_admin_search_finds_part_of_an_id_email_or_name(admin_client, crowd):
    for term, expected in (
        ("ADA", "user-Ada-1"),
        ("navy", "user-grace-2"),
        ("hopp", "user-grace-2"),
    ):
        response = admin_client.get(reverse("admin:onboarding_person_changelist"), {"q": term})
        ids = [p.external_id for p in response.context["cl"].result_list]
        assert ids == [expected], term
