"""DESIGN §4.1: traits (later timestamp wins), anonymous ids merged on identify, alias, timezones."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.test import Client

from onboarding.models import Identity, Person
from onboarding.signals import people_merged

from ..conftest import basic_auth, run_at_once

T0 = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)


def at(minutes: int) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat()


def person(user_id: str) -> Person:
    return Identity.objects.get(kind="user", value=user_id).person


def anonymous_person(anonymous_id: str) -> Person:
    return Identity.objects.get(kind="anonymous", value=anonymous_id).person


def identities(p: Person) -> set[tuple[str, str]]:
    return set(p.identities.values_list("kind", "value"))


@pytest.fixture(autouse=True)
def clock():
    with time_machine.travel(T0 + timedelta(days=1), tick=False):
        yield


@pytest.fixture
def send(tracking):
    def send(*events: dict) -> None:
        response = tracking.post("/v1/batch", {"batch": list(events)})
        assert response.json() == {"success": True}, response.content

    return send


def track(name: str, minutes: int = 0, **ids) -> dict:
    return {"type": "track", "event": name, "timestamp": at(minutes), **ids}


def identify(traits: dict, minutes: int = 0, **ids) -> dict:
    return {"type": "identify", "traits": traits, "timestamp": at(minutes), **ids}


# --- traits -----------------------------------------------------------------------------------


def test_identify_sets_traits(send):
    send(identify({"name": "Ada", "plan": "free"}, userId="u1"))
    send(identify({"plan": "pro"}, 5, userId="u1"))

    assert person("u1").traits == {"name": "Ada", "plan": "pro"}


def test_identify_falls_back_to_context_traits(send):
    send({"type": "identify", "userId": "u1", "context": {"traits": {"name": "Ada"}}})
    assert person("u1").traits == {"name": "Ada"}


def test_a_later_identify_wins_per_trait_even_when_it_arrives_first(send):
    send(identify({"plan": "pro", "email": "new@example.com"}, 10, userId="u1"))
    send(identify({"plan": "free", "email": "old@example.com", "name": "Ada"}, 1, userId="u1"))

    p = person("u1")
    assert p.traits == {"plan": "pro", "email": "new@example.com", "name": "Ada"}
    assert p.email == "new@example.com"


def test_out_of_order_identifies_inside_one_batch(send):
    send(
        identify({"plan": "pro"}, 10, userId="u1"),
        identify({"plan": "free", "seats": 1}, 1, userId="u1"),
    )
    assert person("u1").traits == {"plan": "pro", "seats": 1}


def test_track_context_traits_do_not_change_the_person(send):
    send(track("Clicked", userId="u1", context={"traits": {"plan": "hacked"}}))
    assert person("u1").traits == {}


def test_email_phone_and_timezone_columns_mirror_traits(send):
    send(
        identify(
            {"email": "ada@example.com", "phone": "+4915112345678", "timezone": "Europe/Berlin"},
            userId="u1",
        )
    )
    p = person("u1")
    assert (p.email, p.phone, p.timezone) == (
        "ada@example.com",
        "+4915112345678",
        "Europe/Berlin",
    )


def test_context_timezone_is_the_fallback(send):
    send(track("Opened", userId="u1", context={"timezone": "America/New_York"}))
    assert person("u1").timezone == "America/New_York"

    send(identify({"timezone": "Asia/Tokyo"}, 5, userId="u1"))
    send(track("Opened", 6, userId="u1", context={"timezone": "America/New_York"}))
    assert person("u1").timezone == "Asia/Tokyo"  # the trait wins over the device


# --- anonymous ids and identify ---------------------------------------------------------------


def test_anonymous_events_then_identify_make_one_person(send):
    send(track("Visited", 0, anonymousId="a1"), track("Viewed Pricing", 1, anonymousId="a1"))
    anonymous = anonymous_person("a1")
    assert anonymous.external_id is None

    send(identify({"name": "Ada"}, 2, userId="u1", anonymousId="a1"))
    send(track("Signed Up", 3, userId="u1"))

    p = person("u1")
    assert p.pk == anonymous.pk
    assert p.external_id == "u1"
    assert identities(p) == {("anonymous", "a1"), ("user", "u1")}
    assert list(p.events.order_by("timestamp").values_list("name", flat=True)) == [
        "Visited",
        "Viewed Pricing",
        "",
        "Signed Up",
    ]
    assert p.first_seen == T0
    assert Person.objects.count() == 1


def test_an_anonymous_id_seen_after_identify_resolves_to_the_user(send):
    send(identify({}, 0, userId="u1", anonymousId="a1"))
    send(track("Later", 1, anonymousId="a1"))
    assert person("u1").events.count() == 2
    assert Person.objects.count() == 1


def test_two_anonymous_ids_are_merged_into_one_user(send):
    send(track("Phone visit", 0, anonymousId="phone"))
    send(track("Laptop visit", 1, anonymousId="laptop"))
    send(track("Signed Up", 2, userId="u1", anonymousId="phone"))
    send(track("Logged In", 3, userId="u1", anonymousId="laptop"))

    p = person("u1")
    assert identities(p) == {("anonymous", "phone"), ("anonymous", "laptop"), ("user", "u1")}
    assert p.events.count() == 4
    assert Person.objects.count() == 1


def test_a_known_user_absorbs_a_new_anonymous_person(send):
    send(identify({"name": "Ada"}, 0, userId="u1"))
    user = person("u1")
    send(track("Visited", 1, anonymousId="a1"))
    send(track("Logged In", 2, userId="u1", anonymousId="a1"))

    assert anonymous_person("a1").pk == user.pk
    assert person("u1").events.count() == 3
    assert Person.objects.count() == 1


def test_a_shared_device_is_not_merged_into_a_second_user(send):
    send(track("Signed Up", 0, userId="alice", anonymousId="family-ipad"))
    send(track("Signed Up", 1, userId="bob", anonymousId="family-ipad"))

    alice, bob = person("alice"), person("bob")
    assert alice.pk != bob.pk
    assert anonymous_person("family-ipad").pk == alice.pk
    assert identities(bob) == {("user", "bob")}
    assert alice.events.count() == bob.events.count() == 1


def test_merges_inside_one_batch(send):
    send(
        track("Visited", 0, anonymousId="a1"),
        track("Visited again", 1, anonymousId="a2"),
        identify({"plan": "free"}, 2, userId="u1", anonymousId="a1"),
        track("Logged In", 3, userId="u1", anonymousId="a2"),
        track("Still anonymous", 4, anonymousId="a3"),
    )
    p = person("u1")
    assert identities(p) == {("anonymous", "a1"), ("anonymous", "a2"), ("user", "u1")}
    assert p.events.count() == 4
    assert p.traits == {"plan": "free"}
    assert Person.objects.count() == 2


# --- alias ------------------------------------------------------------------------------------


def test_alias_merges_people_with_events_identities_and_traits(send):
    send(identify({"name": "Ada", "plan": "free"}, 0, userId="old-id", anonymousId="a1"))
    send(track("Old", 1, userId="old-id"))
    send(identify({"plan": "pro"}, 5, userId="new-id"))
    send(track("New", 6, userId="new-id"))

    send({"type": "alias", "previousId": "old-id", "userId": "new-id", "timestamp": at(7)})

    p = person("new-id")
    assert person("old-id").pk == p.pk
    assert anonymous_person("a1").pk == p.pk
    assert identities(p) >= {("user", "old-id"), ("user", "new-id"), ("anonymous", "a1")}
    assert p.traits == {"name": "Ada", "plan": "pro"}
    assert sorted(p.events.values_list("type", "name")) == [
        ("alias", ""),
        ("identify", ""),
        ("identify", ""),
        ("track", "New"),
        ("track", "Old"),
    ]
    assert Person.objects.count() == 1


def test_alias_of_an_anonymous_id(send):
    send(track("Visited", 0, anonymousId="a1"))
    send({"type": "alias", "previousId": "a1", "userId": "u1", "timestamp": at(1)})
    assert person("u1").pk == anonymous_person("a1").pk
    assert person("u1").events.count() == 2


def test_alias_inside_one_batch(send):
    send(
        track("Old", 0, userId="old-id"),
        track("New", 1, userId="new-id"),
        {"type": "alias", "previousId": "old-id", "userId": "new-id", "timestamp": at(2)},
        track("After", 3, userId="old-id"),
    )
    assert person("old-id").pk == person("new-id").pk
    assert person("new-id").events.count() == 4
    assert Person.objects.count() == 1


def test_alias_before_the_previous_id_is_seen_links_it(send):
    send({"type": "alias", "previousId": "a1", "userId": "u1", "timestamp": at(0)})
    send(track("Visited", 1, anonymousId="a1"))
    assert anonymous_person("a1").pk == person("u1").pk
    assert Person.objects.count() == 1


def test_a_merge_sends_people_merged(send):
    received = []

    def listener(sender, into, merged, **kwargs):
        received.append((into, sorted(merged)))

    send(track("Old", 0, userId="old-id"))
    send(track("New", 1, userId="new-id"))
    old, new = person("old-id").pk, person("new-id").pk
    people_merged.connect(listener)
    try:
        send({"type": "alias", "previousId": "old-id", "userId": "new-id"})
    finally:
        people_merged.disconnect(listener)
    assert received == [(new, [old])]


# --- state that survives a merge --------------------------------------------------------------


def test_a_merged_persons_withdrawn_consent_survives(send):
    send(track("Visited", 0, anonymousId="a1"))
    Person.objects.filter(pk=anonymous_person("a1").pk).update(
        consent={"email": False, "sms": True}
    )
    send(identify({}, 1, userId="u1"))
    Person.objects.filter(pk=person("u1").pk).update(consent={"sms": False, "push": True})

    send(track("Logged In", 2, userId="u1", anonymousId="a1"))

    assert person("u1").consent == {"email": False, "sms": False, "push": True}


def test_after_a_merge_the_columns_still_mirror_the_winning_traits(send):
    send(identify({"email": "old@example.com", "phone": "+111"}, 0, userId="u1"))
    send(identify({"email": "new@example.com", "timezone": "Asia/Tokyo"}, 9, anonymousId="a1"))

    send(track("Logged In", 10, userId="u1", anonymousId="a1"))

    p = person("u1")
    assert p.traits["email"] == "new@example.com"  # the later identify wins
    assert (p.email, p.phone, p.timezone) == ("new@example.com", "+111", "Asia/Tokyo")


def test_first_and_last_seen_span_the_merged_people(send):
    send(track("Early", -60, anonymousId="a1"))
    send(track("Later", 0, userId="u1"))
    send(track("Logged In", 1, userId="u1", anonymousId="a1"))
    assert person("u1").first_seen == T0 - timedelta(hours=1)


# --- concurrency (PostgreSQL) -----------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_batches_for_the_same_new_users_make_one_person_each(write_key):
    users = [f"user-{i}" for i in range(30)]
    workers = 4
    statuses: list[int] = []

    def post_batch(worker: int) -> None:
        client = Client(HTTP_AUTHORIZATION=basic_auth(write_key))
        batch = [
            {
                "type": "identify",
                "userId": user,
                "anonymousId": f"{user}-device-{worker}",
                "traits": {f"seen_by_{worker}": True},
                "messageId": f"{user}-{worker}",
            }
            for user in (users if worker % 2 else list(reversed(users)))
        ]
        body = json.dumps({"batch": batch})
        response = client.post("/v1/batch", body, content_type="application/json")
        statuses.append(response.status_code)

    errors = run_at_once(post_batch, workers)

    assert errors == []
    assert statuses == [200] * workers
    assert Person.objects.count() == len(users)
    for user in users:
        p = person(user)
        assert p.external_id == user
        assert p.events.count() == workers
        assert len(identities(p)) == 1 + workers
        assert p.traits == {f"seen_by_{w}": True for w in range(workers)}


def test_new_and_known_people_in_one_batch_follow_the_same_trait_rules(send):
    send(identify({"plan": "pro", "email": "known@example.com"}, 10, userId="known"))
    send(
        identify({"plan": "free", "name": "Old"}, 1, userId="known"),
        identify({"plan": "free", "name": "Bea"}, 1, userId="new"),
        identify({"plan": "team", "phone": 4915112345678}, 20, userId="new"),
        track("Opened", 0, userId="new", context={"timezone": "Europe/Paris"}),
    )
    known, new = person("known"), person("new")
    assert known.traits == {"plan": "pro", "email": "known@example.com", "name": "Old"}
    assert known.email == "known@example.com"
    assert new.traits == {"plan": "team", "name": "Bea", "phone": 4915112345678}
    assert new.trait_timestamps == {"plan": at(20), "name": at(1), "phone": at(20)}
    assert (new.phone, new.timezone) == ("4915112345678", "Europe/Paris")
    assert (new.first_seen, new.last_seen) == (T0, T0 + timedelta(days=1))


def test_context_timezone_fills_known_people_without_a_timezone_trait(send):
    send(
        identify({"timezone": ""}, userId="blank"),
        identify({"timezone": "Asia/Tokyo"}, userId="set"),
        track("Opened", userId="bare"),
    )
    send(
        track("Opened", 1, userId="blank", context={"timezone": "America/Chicago"}),
        track("Opened", 1, userId="set", context={"timezone": "America/Chicago"}),
        track("Opened", 1, userId="bare", context={"timezone": "Europe/Rome"}),
        track("Opened", 2, userId="bare", context={"timezone": "Europe/Oslo"}),
    )
    assert person("blank").timezone == "America/Chicago"
    assert person("set").timezone == "Asia/Tokyo"
    assert person("bare").timezone == "Europe/Oslo"  # the batch's last one


def test_first_seen_moves_back_for_a_late_event_of_a_known_person(send):
    send(track("Opened", 30, userId="u1"))
    send(track("Opened", -30, userId="u1"))
    p = person("u1")
    assert (p.first_seen, p.last_seen) == (T0 - timedelta(minutes=30), T0 + timedelta(days=1))
