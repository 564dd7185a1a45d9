"""Segments compile to one query with the semantics of DESIGN §4.3, on SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.db.models import JSONField, Value
from django.db.models.functions import Cast
from django.test.utils import CaptureQueriesContext
from hypothesis import given, settings
from hypothesis import strategies as st

from onboarding.configfile.errors import ProblemsError
from onboarding.models import Event, FlowProgress, OnboardingFlow, Person, Source, Step
from onboarding.segments import (
    compile_segment,
    members_queryset,
    normalize_definition,
    parse_definition,
    segment_count_and_sample,
    to_definition,
)
from onboarding.segments.jsonsql import JSONEquals

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
_ids = itertools.count(1)


@pytest.fixture
def source(db) -> Source:
    return Source.objects.create(name="app", write_key_hash="h" * 64, write_key_prefix="onr_x")


def person(name: str, traits: dict | None = None, **fields) -> Person:
    fields.setdefault("first_seen", NOW - timedelta(days=10))
    fields.setdefault("last_seen", NOW - timedelta(hours=1))
    return Person.objects.create(external_id=name, traits=traits or {}, **fields)


def event(who: Person, source: Source, name: str, at: datetime, context=None, **properties):
    return Event.objects.create(
        source=source,
        person=who,
        type="track",
        name=name,
        timestamp=at,
        received_at=at,
        message_id=f"m{next(_ids)}",
        properties=properties,
        context=context or {},
    )


def names(definition, now=NOW) -> set[str]:
    return set(members_queryset(definition, now).values_list("external_id", flat=True))


def where(*conditions, match="all") -> dict:
    return {"match": match, "conditions": list(conditions)}


@pytest.fixture
def people(db) -> dict[str, Person]:
    return {
        "ann": person(
            "ann",
            {
                "plan": "pro",
                "age": 34,
                "score": 7.5,
                "source": "ads",
                "beta": True,
                "signup_date": "2026-11-10T08:00:00.000Z",
                "company": "Acme Corp",
                "tags": ["a", "b"],
            },
            email="ann@example.com",
        ),
        "ben": person(
            "ben",
            {
                "plan": "free",
                "age": "34",  # a string, not a number
                "score": 12,
                "source": "organic",
                "beta": False,
                "signup_date": "2026-09-01",
                "company": "Globex",
            },
            email="ben@corp.test",
        ),
        "cat": person(
            "cat",
            {
                "plan": None,
                "age": 19,
                "score": "n/a",
                "signup_date": "not a date",
                "company": "",
            },
        ),
        "dan": person("dan", {}),
    }


EVERYONE = {"ann", "ben", "cat", "dan"}


# -- trait operators -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ({"trait": "plan", "op": "eq", "value": "pro"}, {"ann"}),
        ({"trait": "plan", "op": "neq", "value": "pro"}, {"ben", "cat", "dan"}),
        # Numbers compare numerically and never match strings.
        ({"trait": "age", "op": "eq", "value": 34}, {"ann"}),
        ({"trait": "age", "op": "eq", "value": 34.0}, {"ann"}),
        ({"trait": "age", "op": "eq", "value": "34"}, {"ben"}),
        ({"trait": "beta", "op": "eq", "value": True}, {"ann"}),
        ({"trait": "beta", "op": "eq", "value": False}, {"ben"}),
        ({"trait": "beta", "op": "neq", "value": True}, {"ben", "cat", "dan"}),
        ({"trait": "company", "op": "contains", "value": "corp"}, {"ann"}),
        ({"trait": "company", "op": "contains", "value": "100%"}, set()),
        ({"trait": "plan", "op": "in", "value": ["pro", "free"]}, {"ann", "ben"}),
        ({"trait": "plan", "op": "not_in", "value": ["pro", "free"]}, {"cat", "dan"}),
        ({"trait": "age", "op": "in", "value": [19, "34"]}, {"ben", "cat"}),
        ({"trait": "score", "op": "gt", "value": 7.5}, {"ben"}),
        ({"trait": "score", "op": "gte", "value": 7.5}, {"ann", "ben"}),
        ({"trait": "score", "op": "lt", "value": 12}, {"ann"}),
        ({"trait": "score", "op": "lte", "value": 12}, {"ann", "ben"}),
        ({"trait": "age", "op": "gt", "value": 20}, {"ann"}),
        ({"trait": "plan", "op": "is_set"}, {"ann", "ben"}),  # null counts as not set
        ({"trait": "plan", "op": "is_not_set"}, {"cat", "dan"}),
        ({"trait": "tags", "op": "is_set"}, {"ann"}),
        ({"trait": "signup_date", "op": "within_last", "value": "30d"}, {"ann"}),
        ({"trait": "signup_date", "op": "within_last", "value": "5d"}, set()),
        ({"trait": "signup_date", "op": "before", "value": "2026-10-01"}, {"ben"}),
        ({"trait": "signup_date", "op": "after", "value": "2026-10-01T00:00:00Z"}, {"ann"}),
        ({"trait": "signup_date", "op": "before", "value": "30d"}, {"ben"}),
        ({"trait": "signup_date", "op": "gte", "value": "2026-11-10T08:00:00+00:00"}, {"ann"}),
        ({"trait": "signup_date", "op": "lt", "value": "2026-11-10T08:00:00+00:00"}, {"ben"}),
    ],
)
def test_trait_operators(people, condition, expected):
    assert names(where(condition)) == expected


def test_trait_keys_that_look_like_lookups_or_paths(db):
    person("eve", {"contains": "x", "a__b": 1, "a.b": 2})
    person("fay", {"a": {"b": 1}})
    assert names(where({"trait": "contains", "op": "eq", "value": "x"})) == {"eve"}
    assert names(where({"trait": "a__b", "op": "eq", "value": 1})) == {"eve"}
    assert names(where({"trait": "a.b", "op": "eq", "value": 2})) == {"eve"}


def test_eq_matches_the_value_itself_never_a_container_holding_it(db):
    # PostgreSQL compiles string and boolean equality to JSON containment; containment would match
    # an array holding the value at the top level, so the shapes around the value are pinned here.
    person("eve", {"plan": "pro", "beta": True})
    person("fay", {"plan": ["pro"], "beta": [True]})
    person("gus", {"plan": {"pro": "pro"}, "beta": {"beta": True}})
    person("hal", {"nested": {"plan": "pro", "beta": True}})
    person("ida", {"plan": "Pro", "beta": "true"})
    person("jo", {"plan": 'pro"', "beta": 1})
    assert names(where({"trait": "plan", "op": "eq", "value": "pro"})) == {"eve"}
    assert names(where({"trait": "beta", "op": "eq", "value": True})) == {"eve"}
    assert names(where({"trait": "plan", "op": "eq", "value": 'pro"'})) == {"jo"}
    assert names(where({"trait": "plan", "op": "neq", "value": "pro"})) == {
        "fay",
        "gus",
        "hal",
        "ida",
        "jo",
    }
    assert names(where({"trait": "plan", "op": "in", "value": ["Pro", "x"]})) == {"ida"}


def test_odd_trait_values_never_raise(db):
    values = ["", "abc", "1e400", "2026-02-30", "2025-02-29", "2024-02-29T10:00:00Z", "9999-99-99",
              "2026-13-01", "2026-01-01T01:00:00+05:00", [1], {"x": 1}, None, True, 3, -0.5, "2026-01-01T25:00:00"]  # fmt: skip
    for index, value in enumerate(values):
        person(f"p{index}", {"v": value})
    for op, value in [("gt", 1), ("lt", "2026-01-01"), ("within_last", "3650d"), ("eq", 3)]:
        list(members_queryset(where({"trait": "v", "op": op, "value": value}), NOW))
    assert names(where({"trait": "v", "op": "after", "value": "2024-01-01"})) == {"p5", "p8"}
    # 01:00 at UTC+5 is 20:00 UTC the day before.
    assert names(where({"trait": "v", "op": "before", "value": "2025-12-31T20:00:01Z"})) == {
        "p5",
        "p8",
    }


# -- person fields ---------------------------------------------------------------------------


def test_person_fields(people, source):
    ann, ben = people["ann"], people["ben"]
    event(ann, source, "Page Viewed", NOW - timedelta(days=9), {"device": {"type": "web"}})
    event(ann, source, "Signed Up", NOW - timedelta(days=8), {"device": {"type": "ios"}})
    event(ben, source, "Signed Up", NOW - timedelta(days=8), {"campaign": {"source": "ads"}})
    Person.objects.filter(pk=ben.pk).update(first_seen=NOW - timedelta(days=40))
    assert names(where({"person": "email", "op": "contains", "value": "EXAMPLE"})) == {"ann"}
    assert names(where({"person": "email", "op": "is_set"})) == {"ann", "ben"}
    assert names(where({"person": "external_id", "op": "in", "value": ["cat", "x"]})) == {"cat"}
    assert names(where({"person": "first_seen", "op": "within_last", "value": "30d"})) == {
        "ann",
        "cat",
        "dan",
    }
    assert names(where({"person": "first_seen", "op": "before", "value": "2026-11-01"})) == {"ben"}
    assert names(where({"person": "first_touch_device", "op": "eq", "value": "web"})) == {"ann"}
    assert names(where({"person": "first_touch_device", "op": "neq", "value": "web"})) == {
        "ben",
        "cat",
        "dan",
    }
    assert names(where({"person": "first_touch_source", "op": "eq", "value": "ads"})) == {"ben"}
    assert names(where({"person": "first_touch_source", "op": "is_not_set"})) == {
        "ann",
        "cat",
        "dan",
    }


# -- nesting ---------------------------------------------------------------------------------


def test_nested_any_all_not(people):
    definition = where(
        {"trait": "age", "op": "is_set"},
        {
            "any": [
                {"trait": "plan", "op": "eq", "value": "pro"},
                {"not": {"trait": "plan", "op": "is_set"}},
            ]
        },
    )
    assert names(definition) == {"ann", "cat"}
    assert names(where({"not": {"all": [{"trait": "age", "op": "is_set"}]}})) == {"dan"}
    assert names(
        where(
            {"trait": "plan", "op": "eq", "value": "pro"},
            {"trait": "plan", "op": "eq", "value": "free"},
            match="any",
        )
    ) == {"ann", "ben"}
    assert names(where()) == EVERYONE
    assert names(where(match="any")) == set()


# -- behaviour -------------------------------------------------------------------------------


@pytest.fixture
def activity(people, source):
    ann, ben, cat = people["ann"], people["ben"], people["cat"]
    for days in (1, 2, 3):
        event(ann, source, "Task Failed", NOW - timedelta(days=days), task="import")
    event(ann, source, "Signed Up", NOW - timedelta(days=40), device="ios")
    event(ben, source, "Task Failed", NOW - timedelta(days=20), task="sync")
    event(ben, source, "Signed Up", NOW - timedelta(days=5), device="android")
    event(cat, source, "Signed Up", NOW - timedelta(days=5), device="web", completion=100)
    event(cat, source, "Task Failed", NOW + timedelta(days=1))  # after "now": ignored
    return people


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ({"event": "Task Failed"}, {"ann", "ben"}),
        ({"event": "Task Failed", "within": "7d"}, {"ann"}),
        ({"event": "Task Failed", "within": "36h"}, {"ann"}),
        ({"event": "Task Failed", "count": {"op": "gte", "value": 3}}, {"ann"}),
        ({"event": "Task Failed", "count": {"op": "gte", "value": 3}, "within": "2d"}, set()),
        ({"event": "Task Failed", "count": {"op": "eq", "value": 1}}, {"ben"}),
        ({"event": "Task Failed", "count": {"op": "lte", "value": 1}}, {"ben", "cat", "dan"}),
        ({"event": "Task Failed", "count": {"op": "lt", "value": 3}}, {"ben", "cat", "dan"}),
        ({"event": "Task Failed", "count": {"op": "neq", "value": 3}}, {"ben", "cat", "dan"}),
        ({"event": "Task Failed", "count": {"op": "gt", "value": 1}}, {"ann"}),
        ({"event": "Task Failed", "count": {"op": "eq", "value": 0}}, {"cat", "dan"}),
        ({"event": "Task Failed", "count": {"op": "lte", "value": 0}}, {"cat", "dan"}),
        ({"event": "Task Failed", "count": {"op": "lt", "value": 0}}, set()),
        ({"event": "Task Failed", "where": {"task": "sync"}}, {"ben"}),
        ({"event": "Signed Up", "where": {"device": "ios"}}, {"ann"}),
        ({"event": "Signed Up", "where": {"device": "ios"}, "within": "30d"}, set()),
        (
            {"event": "Signed Up", "where": {"device": {"op": "in", "value": ["ios", "android"]}}},
            {"ann", "ben"},
        ),
        ({"event": "Signed Up", "where": {"completion": {"op": "gte", "value": 100}}}, {"cat"}),
        ({"event": "Signed Up", "where": {"completion": 100}}, {"cat"}),
        ({"not": {"event": "Signed Up", "where": {"device": "web"}}}, {"ann", "ben", "dan"}),
    ],
)
def test_behaviour_conditions(activity, condition, expected):
    assert names(where(condition)) == expected


def test_behaviour_window_moves_with_the_clock(activity):
    import time_machine

    definition = where({"event": "Task Failed", "within": "7d"})
    assert names(definition, now=NOW) == {"ann"}
    assert names(definition, now=NOW + timedelta(days=7, hours=12)) == {"cat"}
    with time_machine.travel(NOW - timedelta(days=19, hours=12), tick=False):
        # "now" defaults to the (pinned) clock.
        assert set(members_queryset(definition).values_list("external_id", flat=True)) == {"ben"}


# -- flows -----------------------------------------------------------------------------------


@pytest.fixture
def flow(db) -> OnboardingFlow:
    flow = OnboardingFlow.objects.create(slug="activation", name="Activation")
    for position, name in enumerate(["Signed Up", "Email Verified", "Profile Completed"], 1):
        Step.objects.create(flow=flow, position=position, name=name, event_name=name)
    return flow


def progress(flow, who, step, reached_ago, *, completed=False):
    reached = NOW - reached_ago
    FlowProgress.objects.create(
        flow=flow,
        person=who,
        entered_at=reached - timedelta(hours=step),
        entry_event_id=1,
        latest_entry_at=reached - timedelta(hours=step),
        furthest_step=step,
        reached_at=reached,
        completed_at=reached if completed else None,
        window_ends_at=reached + timedelta(days=7),
    )


@pytest.fixture
def flow_people(people, flow):
    progress(flow, people["ann"], 3, timedelta(hours=5), completed=True)
    progress(flow, people["ben"], 2, timedelta(hours=3))
    progress(flow, people["cat"], 2, timedelta(minutes=20))
    return people


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ({"flow": "activation", "state": "entered"}, {"ann", "ben", "cat"}),
        ({"flow": "activation", "state": "entered", "step": 3}, {"ben", "cat"}),
        ({"flow": "activation", "state": "completed"}, {"ann"}),
        ({"flow": "activation", "state": "not_entered"}, {"dan"}),
        ({"flow": "activation", "state": "stalled"}, {"ben"}),
        ({"flow": "activation", "state": "stalled", "for": "10m"}, {"ben", "cat"}),
        ({"flow": "activation", "state": "stalled", "for": "4h"}, set()),
        ({"flow": "activation", "state": "stalled", "step": 3, "for": "10m"}, {"ben", "cat"}),
        ({"flow": "activation", "state": "stalled", "step": 2, "for": "10m"}, set()),
        ({"not": {"flow": "activation", "state": "completed"}}, {"ben", "cat", "dan"}),
    ],
)
def test_flow_conditions(flow_people, condition, expected):
    assert names(where(condition)) == expected


# -- one query, API --------------------------------------------------------------------------


def test_a_whole_segment_is_one_query(flow_people, source):
    definition = where(
        {"trait": "age", "op": "gt", "value": 1},
        {"event": "Task Failed", "count": {"op": "gte", "value": 2}, "within": "7d"},
        {"any": [{"flow": "activation", "state": "stalled"}, {"person": "email", "op": "is_set"}]},
        {"person": "first_touch_device", "op": "eq", "value": "ios"},
    )
    q = compile_segment(definition, NOW)  # parsing reads the flows: not counted below
    with CaptureQueriesContext(connection) as queries:
        list(Person.objects.filter(q))
    assert len(queries) == 1


@pytest.mark.postgres
def test_trait_equality_is_read_from_the_traits_index(people):
    # Containment stays bare (no COALESCE around it), so the GIN index on the traits
    # (person_traits_path, migration 0011) finds the members instead of a scan of everyone.
    members = members_queryset(where({"trait": "plan", "op": "eq", "value": "pro"}), NOW)
    sql, params = members.query.sql_with_params()
    assert "COALESCE" not in sql.upper()
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("EXPLAIN " + sql, params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "person_traits_path" in plan
    assert list(members) == [people["ann"]]


def test_json_equality_is_false_on_a_null_column(people):
    # Two-valued without a COALESCE: NOT (equality on a NULL column) is true, never unknown.
    null_json = Cast(Value(None), JSONField())
    others = Person.objects.exclude(JSONEquals(null_json, "plan", "pro"))
    assert set(others.values_list("external_id", flat=True)) == EVERYONE
    assert not Person.objects.filter(JSONEquals(null_json, "plan", "pro")).exists()


def test_count_and_sample(people):
    preview = segment_count_and_sample(where({"trait": "age", "op": "is_set"}), sample=2, now=NOW)
    assert preview.count == 3
    assert len(preview.sample) == 2


def test_members_of_a_saved_segment(people):
    from onboarding.models import Segment

    segment = Segment.objects.create(
        slug="pro", name="Pro", definition=where({"trait": "plan", "op": "eq", "value": "pro"})
    )
    assert list(members_queryset(segment, NOW)) == [people["ann"]]


def test_normalized_form_leaves_out_defaults(flow):
    definition = where(
        {"event": "Signed Up", "count": {"op": "gte", "value": 1}, "within": "24h", "where": {}},
        {"flow": "activation", "state": "stalled", "for": "60m"},
        {"trait": "d", "op": "before", "value": "720h"},
    )
    assert normalize_definition(definition) == where(
        {"event": "Signed Up", "within": "1d"},
        {"flow": "activation", "state": "stalled"},
        {"trait": "d", "op": "before", "value": "30d"},
    )


# -- the parser never crashes ----------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5)
    | st.sampled_from(["eq", "in", "gt", "30d", "2026-01-01", "stalled", "activation", "all"]),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(
        st.sampled_from(["match", "conditions", "trait", "op", "value", "event", "where", "count",
                         "within", "flow", "state", "step", "for", "any", "all", "not", "person"]),
        children,
        max_size=4,
    ),
    max_leaves=12,
)  # fmt: skip


@given(_json)
@settings(max_examples=300, deadline=None)
def test_parser_reports_problems_and_never_crashes(definition):
    try:
        root = parse_definition(definition, flows={"activation": 3})
    except ProblemsError as error:
        assert error.problems
    else:
        assert parse_definition(to_definition(root), flows={"activation": 3}) == root
