"""DESIGN §3.1: the official Segment Python library works unchanged against Onramp (loopback only)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import segment.analytics as analytics

from onboarding.models import Event, Identity, Person


@pytest.fixture
def segment_client(live_server, write_key):
    errors: list[Exception] = []
    client = analytics.Client(
        write_key,
        host=live_server.url,
        sync_mode=True,
        gzip=True,
        max_retries=0,
        on_error=lambda error, batch: errors.append(error),
    )
    yield client
    # The library keeps its HTTP connection alive; close it so the live server's request thread
    # ends and closes its database connection before the test database is dropped.
    analytics.request._session.close()
    assert errors == []


@pytest.mark.django_db(transaction=True)
def test_the_segment_library_sends_every_call_type(segment_client):
    assert segment_client.host.startswith("http://localhost:")
    when = datetime.now(tz=UTC) - timedelta(minutes=5)

    segment_client.page(anonymous_id="device-1", name="Pricing", properties={"path": "/pricing"})
    segment_client.identify(
        user_id="u-42",
        anonymous_id="device-1",
        traits={"email": "ada@example.com", "name": "Ada", "timezone": "Europe/Paris"},
    )
    segment_client.track(
        user_id="u-42", event="Project Created", properties={"template": "blank"}, timestamp=when
    )
    segment_client.group(user_id="u-42", group_id="acme", traits={"plan": "team"})
    segment_client.screen(user_id="u-42", name="Dashboard")
    segment_client.alias(previous_id="legacy-7", user_id="u-42")
    segment_client.flush()

    person = Person.objects.get()
    assert person.external_id == "u-42"
    assert person.traits == {"email": "ada@example.com", "name": "Ada", "timezone": "Europe/Paris"}
    assert (person.email, person.timezone) == ("ada@example.com", "Europe/Paris")
    assert set(person.identities.values_list("kind", "value")) >= {
        ("anonymous", "device-1"),
        ("user", "u-42"),
        ("user", "legacy-7"),
    }
    events = {e.type: e for e in Event.objects.all()}
    assert set(events) == {"page", "identify", "track", "group", "screen", "alias"}
    assert all(e.person_id == person.pk for e in events.values())
    assert (events["page"].name, events["page"].properties) == ("Pricing", {"path": "/pricing"})
    assert events["track"].name == "Project Created"
    assert events["track"].properties == {"template": "blank"}
    # The library stamps sentAt, so the timestamp went through clock-skew correction.
    assert abs(events["track"].timestamp - when) < timedelta(seconds=30)
    assert events["track"].context["library"]["name"] == "analytics-python"
    assert events["group"].properties == {"plan": "team", "groupId": "acme"}
    assert events["screen"].name == "Dashboard"
    # The library's messageIds are kept, so its retries are idempotent.
    assert all(len(e.message_id) >= 32 for e in events.values())


@pytest.mark.django_db(transaction=True)
def test_the_segment_library_merges_an_anonymous_visitor(segment_client):
    segment_client.track(anonymous_id="visitor", event="Visited")
    segment_client.track(anonymous_id="visitor", event="Viewed Pricing")
    segment_client.identify(user_id="u-1", anonymous_id="visitor", traits={"name": "Grace"})
    segment_client.flush()

    person = Identity.objects.get(kind="user", value="u-1").person
    assert Person.objects.count() == 1
    assert person.traits == {"name": "Grace"}
    assert sorted(person.events.values_list("name", flat=True)) == ["", "Viewed Pricing", "Visited"]


@pytest.mark.django_db(transaction=True)
def test_a_wrong_key_reaches_the_library_as_an_error(live_server, write_key):
    errors: list[Exception] = []
    client = analytics.Client(
        write_key + "-wrong",
        host=live_server.url,
        sync_mode=True,
        max_retries=0,
        on_error=lambda error, batch: errors.append(error),
    )
    with pytest.raises(analytics.request.APIError) as raised:
        client.track(user_id="u", event="E")
    analytics.request._session.close()
    assert raised.value.status == 401
    assert Event.objects.count() == 0
