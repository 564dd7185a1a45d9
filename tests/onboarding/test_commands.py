"""``manage.py sources …`` and ``manage.py seed_demo``."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import timedelta
from io import StringIO

import pytest
import time_machine
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db.models import F
from django.test import Client
from django.utils import timezone

from onboarding.models import Event, Identity, Person, Source
from tests.conftest import basic_auth

KEY = re.compile(r"Write key: (\S+)")


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def printed_key(output: str) -> str:
    keys = KEY.findall(output)
    assert len(keys) == 1, output
    return keys[0]


def track(key: str) -> int:
    client = Client(HTTP_AUTHORIZATION=basic_auth(key))
    response = client.post(
        "/v1/track",
        json.dumps({"userId": "u1", "event": "Signed Up"}),
        content_type="application/json",
    )
    return response.status_code


# --- sources -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_create_prints_the_key_once_and_stores_only_its_hash():
    output = run("sources", "create", "mobile")

    key = printed_key(output)
    assert "cannot be shown again" in output
    source = Source.objects.get(name="mobile")
    assert source.write_key_hash == hashlib.sha256(key.encode()).hexdigest()
    stored = [str(value) for value in Source.objects.values_list().get()]
    assert not any(key in value for value in stored)
    assert key.startswith(source.write_key_prefix)
    assert track(key) == 200


@pytest.mark.django_db
def test_list_shows_prefix_and_dates_but_never_the_key():
    key = printed_key(run("sources", "create", "mobile"))
    run("sources", "create", "web")

    output = run("sources", "list")

    lines = output.splitlines()
    assert lines[0].split() == ["NAME", "KEY", "PREFIX", "ACTIVE", "CREATED", "ROTATED"]
    assert [line.split()[0] for line in lines[1:]] == ["mobile", "web"]
    assert key not in output
    assert key[:10] in output
    assert " yes " in lines[1]
    assert lines[1].rstrip().endswith("-")  # never rotated


@pytest.mark.django_db
def test_list_without_sources_says_how_to_create_one():
    assert "sources create" in run("sources", "list")


@pytest.mark.django_db
def test_create_refuses_a_duplicate_name():
    run("sources", "create", "mobile")
    with pytest.raises(CommandError, match="already exists"):
        run("sources", "create", "mobile")
    assert Source.objects.count() == 1


@pytest.mark.django_db
def test_create_refuses_an_invalid_name():
    with pytest.raises(CommandError, match="name"):
        run("sources", "create", "x" * 101)


@pytest.mark.django_db
def test_rotate_unknown_source_is_a_clear_error():
    with pytest.raises(CommandError, match="no source named 'ghost'"):
        run("sources", "rotate", "ghost")


@pytest.mark.django_db
def test_rotate_without_grace_rejects_the_old_key_at_once():
    old = printed_key(run("sources", "create", "mobile"))

    output = run("sources", "rotate", "mobile")

    new = printed_key(output)
    assert new != old
    assert "no longer works" in output
    assert track(old) == 401
    assert track(new) == 200
    source = Source.objects.get()
    assert source.rotated_at is not None
    assert source.write_key_hash == hashlib.sha256(new.encode()).hexdigest()
    assert run("sources", "list").splitlines()[1].rstrip().endswith("UTC")


@pytest.mark.django_db
def test_rotate_with_grace_keeps_the_old_key_until_it_expires():
    old = printed_key(run("sources", "create", "mobile"))

    output = run("sources", "rotate", "mobile", "--grace", "24h")

    new = printed_key(output)
    assert "keeps working until" in output
    assert track(old) == 200
    assert track(new) == 200
    with time_machine.travel(timezone.now() + timedelta(hours=24, minutes=1)):
        assert track(old) == 401
        assert track(new) == 200


@pytest.mark.django_db
@pytest.mark.parametrize("grace", ["soon", "24", "-1h", "1w"])
def test_rotate_refuses_a_malformed_grace(grace):
    run("sources", "create", "mobile")
    with pytest.raises(CommandError, match="invalid duration"):
        run("sources", "rotate", "mobile", f"--grace={grace}")
    assert Source.objects.get().rotated_at is None


# --- seed_demo ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_seed_demo_loads_people_and_events_through_ingestion():
    output = run("seed_demo", "--people", "40", "--seed", "7")

    source = Source.objects.get(name="demo-app")
    events = Event.objects.filter(source=source)
    assert Person.objects.count() == 40
    assert not Person.objects.filter(external_id__isnull=True).exists()
    assert events.filter(type="identify").count() == 40
    assert events.filter(name="Signed Up").count() == 40
    assert f"Stored {events.count()} new events (0 already present, 0 rejected)" in output
    # Traits from identify landed on the people, and the mirrored columns are filled.
    person = Person.objects.exclude(email="").first()
    assert person is not None
    assert {"email", "first_name", "plan", "source", "signup_date", "timezone"} <= set(
        person.traits
    )
    assert person.timezone == person.traits["timezone"]


@pytest.mark.django_db
def test_seed_demo_is_idempotent():
    run("seed_demo", "--people", "30")
    people, events = Person.objects.count(), Event.objects.count()

    output = run("seed_demo", "--people", "30")

    assert (Person.objects.count(), Event.objects.count()) == (people, events)
    assert f"Stored 0 new events ({events} already present, 0 rejected)" in output
    assert "people: 0 new" in output


@pytest.mark.django_db
def test_seed_demo_merges_anonymous_browsing_into_the_identified_person():
    run("seed_demo", "--people", "40")

    anonymous_events = Event.objects.filter(user_id="").exclude(anonymous_id="")
    assert anonymous_events.exists()
    for event in anonymous_events.select_related("person"):
        assert event.person.external_id, "anonymous browsing was not merged"
        identity = Identity.objects.get(kind="anonymous", value=event.anonymous_id)
        assert identity.person_id == event.person_id
        assert Event.objects.filter(person=event.person, name="Signed Up").exists()


@pytest.mark.django_db
def test_seed_demo_uses_an_existing_source_and_keeps_its_key():
    key = printed_key(run("sources", "create", "demo-app"))

    run("seed_demo", "--people", "5")

    assert Source.objects.count() == 1
    assert track(key) == 200


@pytest.mark.django_db
def test_seed_demo_records_recent_activity_as_recent():
    run("seed_demo", "--people", "60")

    now = timezone.now()
    # Server-side times follow the journeys: most people were last seen days ago, a few just now.
    assert Person.objects.filter(last_seen__lt=now - timedelta(days=2)).exists()
    assert Person.objects.filter(last_seen__gt=now - timedelta(hours=7)).exists()
    assert not Event.objects.filter(received_at__lt=F("timestamp")).exists()
