"""The trait index (``onboarding_persontrait``): segments of trait equalities find their members
without the people's rows (PostgreSQL), and the index follows every write of the traits."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onboarding.models import Person, PersonTrait
from onboarding.segments import member_ids, members_queryset
from onboarding.segments.index import indexed_member_ids
from onboarding.segments.parse import parse_definition

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
ODD = 'say "hi"\\ \n\té ✓'  # quotes, backslash, control characters, non-ASCII


def where(*conditions, match="all") -> dict:
    return {"match": match, "conditions": list(conditions)}


def person(name: str, traits) -> Person:
    at = NOW - timedelta(days=1)
    return Person.objects.create(external_id=name, traits=traits, first_seen=at, last_seen=at)


@pytest.fixture
def people(db) -> dict[str, Person]:
    return {
        "ann": person("ann", {"plan": "pro", "beta": True, "note": ODD, "tags": ["pro"]}),
        "ben": person("ben", {"plan": "free", "beta": False, "nested": {"plan": "pro"}}),
        "cat": person("cat", {"plan": "team", "beta": "true", "age": 3}),
        "dan": person("dan", {"plan": ["pro"], "age": 3.0, "note": "x" * 2000}),
        "eve": person("eve", {}),
    }


DEFINITIONS = [
    where({"trait": "plan", "op": "eq", "value": "pro"}),
    where({"trait": "beta", "op": "eq", "value": True}),
    where({"trait": "beta", "op": "eq", "value": "true"}),
    where({"trait": "note", "op": "eq", "value": ODD}),
    where({"trait": "plan", "op": "in", "value": ["pro", "team"]}),
    where(
        {"trait": "plan", "op": "in", "value": ["pro", "free", "team"]},
        {"any": [{"trait": "beta", "op": "eq", "value": False}, {"trait": "note", "op": "eq", "value": ODD}]},
    ),
    where(
        {"trait": "plan", "op": "eq", "value": "team"},
        {"trait": "beta", "op": "eq", "value": True},
        match="any",
    ),
    # Not answered by the index: compiled over the people, the same way as before.
    where({"trait": "age", "op": "eq", "value": 3}),
    where({"trait": "note", "op": "eq", "value": "x" * 2000}),
    where({"trait": "plan", "op": "neq", "value": "pro"}),
    where({"not": {"trait": "plan", "op": "eq", "value": "pro"}}),
    where({"trait": "plan", "op": "eq", "value": "pro"}, {"trait": "age", "op": "gt", "value": 1}),
    where(),
]  # fmt: skip


def ids_of(definition) -> set[int]:
    sql, params = member_ids(definition, NOW)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {row[0] for row in cursor.fetchall()}


@pytest.mark.parametrize("definition", DEFINITIONS)
def test_member_ids_are_the_members(people, definition):
    expected = set(members_queryset(definition, NOW).values_list("pk", flat=True))
    assert ids_of(definition) == expected


@pytest.mark.postgres
def test_trait_equalities_are_answered_by_the_index_alone(people):
    # Index-only: the people's table is not read for the members of plan = pro.
    sql, _ = member_ids(where({"trait": "plan", "op": "eq", "value": "pro"}), NOW)
    assert "onboarding_persontrait" in sql and "onboarding_person " not in sql + " "
    assert ids_of(where({"trait": "plan", "op": "eq", "value": "pro"})) == {people["ann"].pk}
    assert ids_of(where({"trait": "note", "op": "eq", "value": ODD})) == {people["ann"].pk}
    for definition in DEFINITIONS[:7]:
        assert indexed_member_ids(parse_definition(definition)) is not None
    for definition in DEFINITIONS[7:]:
        assert indexed_member_ids(parse_definition(definition)) is None


def indexed(traits) -> set[tuple[str, str]]:
    """What the index holds for these traits: top-level string and boolean values."""
    if not isinstance(traits, dict):
        return set()
    return {
        (key, json.dumps(value, ensure_ascii=False))
        for key, value in traits.items()
        if isinstance(value, str | bool)
        and len(key.encode()) <= 256
        and len(json.dumps(value, ensure_ascii=False).encode()) <= 1024
    }


def index_rows() -> dict[int, set[tuple[str, str]]]:
    rows: dict[int, set[tuple[str, str]]] = {}
    for key, value, pk in PersonTrait.objects.values_list("key", "value", "person_id"):
        rows.setdefault(pk, set()).add((key, json.dumps(json.loads(value), ensure_ascii=False)))
    return rows


@pytest.mark.postgres
def test_the_index_follows_every_write(people):
    expected = {p.pk: indexed(p.traits) for p in people.values() if indexed(p.traits)}
    assert index_rows() == expected
    # An update that changes one trait, through the ORM's save (every column written).
    ann = people["ann"]
    ann.traits = {**ann.traits, "plan": "team", "beta": "yes"}
    ann.save()
    # A bulk update of the traits (ingestion writes them with one UPDATE … FROM unnest).
    Person.objects.filter(pk=people["ben"].pk).update(traits={"plan": "pro"})
    # Writes that leave the traits alone.
    Person.objects.update(last_seen=NOW)
    Person.objects.filter(pk=people["cat"].pk).update(traits=people["cat"].traits)
    # Not an object: nothing indexed.
    Person.objects.filter(pk=people["eve"].pk).update(traits=["plan", "pro"])
    # Deleted: gone from the index.
    people["dan"].delete()
    expected = {
        ann.pk: indexed(ann.traits),
        people["ben"].pk: {("plan", '"pro"')},
        people["cat"].pk: indexed(people["cat"].traits),
    }
    assert index_rows() == expected
    assert ids_of(where({"trait": "plan", "op": "eq", "value": "pro"})) == {people["ben"].pk}


_scalar = st.one_of(st.booleans(), st.sampled_from(["pro", "free", "", "é", ODD]), st.integers())
_traits = st.dictionaries(st.sampled_from(["plan", "beta", "x", "ü"]), _scalar, max_size=3)


@pytest.mark.postgres
@given(st.lists(st.tuples(st.integers(0, 2), _traits | st.none()), min_size=1, max_size=8))
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_the_index_equals_the_traits_after_any_writes(db, writes):
    # Each write creates, updates or (None) deletes one of three people; every example ends by
    # deleting everyone it created (the database is not reset between examples).
    at = NOW - timedelta(days=1)
    slots: dict[int, Person] = {}
    try:
        for slot, traits in writes:
            if traits is None:
                if slot in slots:
                    slots.pop(slot).delete()
            elif slot in slots:
                Person.objects.filter(pk=slots[slot].pk).update(traits=traits)
            else:
                slots[slot] = Person.objects.create(traits=traits, first_seen=at, last_seen=at)
        expected = {p.pk: indexed(p.traits) for p in Person.objects.all() if indexed(p.traits)}
        assert index_rows() == expected
        for value in ("pro", True, ODD):
            definition = where({"trait": "plan", "op": "eq", "value": value})
            assert ids_of(definition) == set(
                members_queryset(definition, NOW).values_list("pk", flat=True)
            )
    finally:
        Person.objects.all().delete()


@pytest.mark.postgres
def test_the_index_follows_ingestion_merges_and_erasure(tracking):
    from onboarding.models import Identity
    from onboarding.services.gdpr import person_erase

    def send(*events):
        response = tracking.post("/v1/batch", {"batch": list(events)})
        assert response.json() == {"success": True}, response.content

    def at(minutes: int) -> str:
        return (NOW - timedelta(hours=2) + timedelta(minutes=minutes)).isoformat()

    def consistent() -> None:
        expected = {p.pk: indexed(p.traits) for p in Person.objects.all() if indexed(p.traits)}
        assert index_rows() == expected

    pro = where({"trait": "plan", "op": "eq", "value": "pro"})
    # New people from a batch (one insert for the batch), then their traits changed by identify.
    send(
        {"type": "identify", "userId": "old-id", "traits": {"plan": "free"}, "timestamp": at(0)},
        {"type": "identify", "userId": "new-id", "traits": {"plan": "pro"}, "timestamp": at(0)},
        {"type": "track", "anonymousId": "a1", "event": "Visited", "timestamp": at(0)},
    )
    consistent()
    send({"type": "identify", "userId": "old-id", "traits": {"beta": True}, "timestamp": at(1)})
    consistent()
    new = Identity.objects.get(kind="user", value="new-id").person
    assert ids_of(pro) == {new.pk}
    # A merge: the merged person's rows go with it.
    send({"type": "alias", "previousId": "old-id", "userId": "new-id", "timestamp": at(2)})
    consistent()
    assert Person.objects.filter(pk=new.pk).exists()
    # Erasure.
    person_erase(Person.objects.get(pk=new.pk))
    consistent()
    assert ids_of(pro) == set()
