"""Every stored event points at an existing person and source (DESIGN §6), without foreign keys.

On PostgreSQL the events table has no foreign-key constraints (migration 0012): the ingestion
statement locks a batch's people and source once per batch and retries the batch if one is gone,
and triggers refuse to delete a person or a source that events still point at. These tests race
merges and erasures against ingestion, in both orders, and check that no event is left pointing
at nobody, that no accepted event is lost, and that each lands on the surviving person.
"""

from __future__ import annotations

import json
import threading
import time

import pytest
from django.db import IntegrityError, connection, transaction
from django.test import Client

from onboarding.models import Event, Identity, Person, Source
from onboarding.services.gdpr import person_erase
from onboarding.tracking import ingest

from ..conftest import basic_auth, run_at_once


def orphans() -> int:
    """Events whose person or source does not exist."""
    return (
        Event.objects.exclude(person_id__in=Person.objects.values("pk")).count()
        + Event.objects.exclude(source_id__in=Source.objects.values("pk")).count()
    )


def person_of(kind: str, value: str) -> Person:
    return Identity.objects.get(kind=kind, value=value).person


def post(client: Client, *events: dict) -> dict:
    response = client.post("/v1/batch", json.dumps({"batch": list(events)}), "application/json")
    assert response.status_code == 200, response.content
    return response.json()


def _two_users(client: Client) -> tuple[Person, Person]:
    """``ux`` (browsing as ``x-dev``) and ``uy``, each with an event."""
    post(
        client,
        {"type": "identify", "userId": "ux", "anonymousId": "x-dev", "messageId": "m-x"},
        {"type": "identify", "userId": "uy", "anonymousId": "y-dev", "messageId": "m-y"},
    )
    return person_of("user", "ux"), person_of("user", "uy")


ALIAS = {"type": "alias", "userId": "uy", "previousId": "ux", "messageId": "m-alias"}
# Names only x-dev: no id in common with ALIAS, so the two batches take no common advisory lock.
DEVICE_EVENT = {"type": "track", "event": "Clicked", "anonymousId": "x-dev", "messageId": "m-dev"}


def test_merges_and_erasures_leave_no_event_without_its_person(api):
    x, y = _two_users(api)
    post(api, {"type": "track", "event": "Opened", "anonymousId": "x-dev", "messageId": "m-1"})
    post(api, ALIAS)

    assert not Person.objects.filter(pk=x.pk).exists()
    assert set(Event.objects.values_list("person_id", flat=True)) == {y.pk}
    assert orphans() == 0

    person_erase(Person.objects.get(pk=y.pk))
    assert Event.objects.count() == 0
    assert orphans() == 0


@pytest.mark.postgres
def test_deleting_a_person_or_source_that_events_point_at_fails_at_commit(api):
    x, _ = _two_users(api)
    source_id = Event.objects.values_list("source_id", flat=True).first()
    for statements in (
        [
            ("DELETE FROM onboarding_identity WHERE person_id = %s", x.pk),
            ("DELETE FROM onboarding_person WHERE id = %s", x.pk),
        ],
        [("DELETE FROM onboarding_source WHERE id = %s", source_id)],
    ):
        with (
            pytest.raises(IntegrityError, match="still referenced by events"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            for statement, key in statements:
                cursor.execute(statement, [key])
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # what the commit checks
    assert Person.objects.filter(pk=x.pk).exists()
    # Without the events, the same delete goes through.
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("DELETE FROM onboarding_event WHERE person_id = %s", [x.pk])
        cursor.execute("DELETE FROM onboarding_identity WHERE person_id = %s", [x.pk])
        cursor.execute("DELETE FROM onboarding_person WHERE id = %s", [x.pk])
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    assert orphans() == 0


class _Pause:
    """Stops the ingestion of the thread marked ``paused`` after one of its steps, once."""

    def __init__(self, monkeypatch, step: str) -> None:
        self.reached = threading.Event()
        self.release = threading.Event()
        self.local = threading.local()
        real = getattr(ingest, step)

        def paused(*args, **kwargs):
            result = real(*args, **kwargs)
            if getattr(self.local, "paused", False) and not self.reached.is_set():
                self.reached.set()
                self.release.wait(10)
            return result

        monkeypatch.setattr(ingest, step, paused)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_person_merged_away_after_resolution_gets_the_events_on_retry(
    write_key, monkeypatch, caplog
):
    """The merge commits between the batch's resolution and its insert: the insert finds the
    person gone, and the retried batch stores the event on the survivor."""
    client = Client(HTTP_AUTHORIZATION=basic_auth(write_key))
    x, y = _two_users(client)
    pause = _Pause(monkeypatch, "resolve_people")

    def work(index: int) -> None:
        client = Client(HTTP_AUTHORIZATION=basic_auth(write_key))
        if index == 0:
            pause.local.paused = True
            post(client, DEVICE_EVENT)
        else:
            assert pause.reached.wait(10)
            post(client, ALIAS)
            pause.release.set()

    assert run_at_once(work, 2) == []
    assert not Person.objects.filter(pk=x.pk).exists()
    assert Event.objects.get(message_id="m-dev").person_id == y.pk
    assert Event.objects.count() == 4  # both identifies, the alias, the device's event
    assert orphans() == 0
    assert "ingest retry 1 after sqlstate people_gone" in caplog.text


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_merge_waits_for_a_batch_that_stored_events_of_the_merged_person(write_key, monkeypatch):
    """The batch has stored the event (its person locked) but not committed: the merge waits
    for the commit, then moves that event too."""
    client = Client(HTTP_AUTHORIZATION=basic_auth(write_key))
    x, y = _two_users(client)
    pause = _Pause(monkeypatch, "_refresh_flow_progress")  # runs right after the insert
    merged_at: list[float] = []
    committed_at: list[float] = []

    def work(index: int) -> None:
        client = Client(HTTP_AUTHORIZATION=basic_auth(write_key))
        if index == 0:
            pause.local.paused = True
            post(client, DEVICE_EVENT)
            committed_at.append(time.monotonic())
        else:
            assert pause.reached.wait(10)
            threading.Timer(0.5, pause.release.set).start()
            post(client, ALIAS)
            merged_at.append(time.monotonic())

    assert run_at_once(work, 2) == []
    assert merged_at[0] > committed_at[0]  # the merge waited for the batch
    assert not Person.objects.filter(pk=x.pk).exists()
    assert Event.objects.get(message_id="m-dev").person_id == y.pk
    assert orphans() == 0


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("step", ["resolve_people", "_refresh_flow_progress"])
def test_an_erasure_racing_a_batch_leaves_no_event_of_the_erased_person(
    write_key, monkeypatch, step
):
    """Erased before the insert: the retried batch refuses the event (the tombstone is
    committed). Erased while the batch holds the person: the erasure waits and deletes it too."""
    client = Client(HTTP_AUTHORIZATION=basic_auth(write_key))
    x, y = _two_users(client)
    pause = _Pause(monkeypatch, step)
    answers: list[dict] = []

    def work(index: int) -> None:
        client = Client(HTTP_AUTHORIZATION=basic_auth(write_key))
        if index == 0:
            pause.local.paused = True
            other = {**DEVICE_EVENT, "anonymousId": "y-dev", "messageId": "m-y-dev"}
            answers.append(post(client, DEVICE_EVENT, other))
        else:
            assert pause.reached.wait(10)
            if step == "resolve_people":
                person_erase(Person.objects.get(pk=x.pk))
                pause.release.set()
            else:
                threading.Timer(0.5, pause.release.set).start()
                person_erase(Person.objects.get(pk=x.pk))

    assert run_at_once(work, 2) == []
    assert not Person.objects.filter(pk=x.pk).exists()
    assert not Event.objects.filter(anonymous_id="x-dev").exists()
    assert set(Event.objects.values_list("person_id", flat=True)) == {y.pk}
    assert Event.objects.filter(message_id="m-y-dev").exists()
    assert orphans() == 0
    if step == "resolve_people":
        assert [(r["index"], r["code"]) for r in answers[0]["rejected"]] == [(0, "erased")]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_merges_and_device_events_lose_nothing_and_orphan_nothing(write_key):
    """Many users, each merged away by an alias while another client sends events from their
    device: every event is stored once, on the survivor."""
    client = Client(HTTP_AUTHORIZATION=basic_auth(write_key))
    users = range(12)
    post(
        client,
        *(
            {"type": "identify", "userId": f"x{n}", "anonymousId": f"dev{n}", "messageId": f"i{n}"}
            for n in users
        ),
        *({"type": "identify", "userId": f"y{n}", "messageId": f"j{n}"} for n in users),
    )

    def work(index: int) -> None:
        client = Client(HTTP_AUTHORIZATION=basic_auth(write_key))
        order = list(users) if index % 2 else list(reversed(users))
        for n in order:
            if index < 2:
                event = {"type": "track", "event": "Tap", "anonymousId": f"dev{n}"}
                post(client, {**event, "messageId": f"tap{n}-{index}"})
            elif index == 2:
                post(client, {"type": "alias", "userId": f"y{n}", "previousId": f"x{n}"})

    assert run_at_once(work, 3) == []
    assert orphans() == 0
    assert Person.objects.count() == len(users)
    for n in users:
        survivor = person_of("user", f"y{n}")
        taps = Event.objects.filter(anonymous_id=f"dev{n}", name="Tap")
        assert sorted(taps.values_list("message_id", flat=True)) == [f"tap{n}-0", f"tap{n}-1"]
        assert set(taps.values_list("person_id", flat=True)) == {survivor.pk}
