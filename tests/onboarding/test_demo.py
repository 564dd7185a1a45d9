"""The demo journey generator: deterministic, Segment-shaped, realistic enough to exercise Onramp."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest

from onboarding.demo import FLOW_EVENTS, NOISE_EVENTS, demo_payloads, iter_journeys
from onboarding.tracking.parsing import parse_event

NOW = datetime(2026, 3, 14, 15, 9, 26, tzinfo=UTC)


@pytest.fixture(scope="module")
def payloads() -> list[dict]:
    return demo_payloads(people=300, seed=42, now=NOW)


@pytest.fixture(scope="module")
def journeys() -> list:
    return list(iter_journeys(people=300, seed=42, now=NOW))


def parsed(payload: dict):
    return parse_event(
        payload,
        "",
        event_type=None,
        received_at=NOW,
        max_event_bytes=32 * 1024,
        max_future=timedelta(hours=24),
    )


def test_same_seed_same_payloads(payloads):
    again = demo_payloads(people=300, seed=42, now=NOW)
    assert json.dumps(again) == json.dumps(payloads)


def test_other_seed_other_payloads(payloads):
    other = demo_payloads(people=300, seed=43, now=NOW)
    assert {p["messageId"] for p in other}.isdisjoint({p["messageId"] for p in payloads})


def test_only_times_depend_on_now(payloads):
    shift = timedelta(days=3, minutes=7)
    later = demo_payloads(people=300, seed=42, now=NOW + shift)

    assert [p["messageId"] for p in later] == [p["messageId"] for p in payloads]
    for before, after in zip(payloads, later, strict=True):
        moved = datetime.fromisoformat(after["timestamp"]) - datetime.fromisoformat(
            before["timestamp"]
        )
        assert abs(moved - shift) < timedelta(milliseconds=2)
        assert _timeless(after) == _timeless(before)


def test_person_i_does_not_depend_on_how_many_people(journeys):
    fewer = list(iter_journeys(people=50, seed=42, now=NOW))
    assert fewer == journeys[:50]


def test_message_ids_are_unique(payloads):
    ids = [p["messageId"] for p in payloads]
    assert len(ids) == len(set(ids))


def test_every_payload_is_a_valid_segment_message(payloads):
    for payload in payloads:
        event = parsed(payload)
        assert event.timestamp <= NOW
        assert event.message_id == payload["messageId"]


def test_payloads_are_in_time_order_and_not_in_the_future(payloads):
    times = [datetime.fromisoformat(p["timestamp"]) for p in payloads]
    assert times == sorted(times)
    assert max(times) <= NOW
    assert min(times) >= NOW - timedelta(days=31)


def test_payload_shape(payloads):
    for payload in payloads:
        assert payload["type"] in ("track", "identify")
        assert payload["anonymousId"]
        context = payload["context"]
        assert context["device"]["type"] in ("ios", "android", "web")
        assert context["os"]["name"]
        assert context["timezone"]
        assert context["library"]["name"]
        if payload["type"] == "track":
            assert payload["event"] in FLOW_EVENTS + NOISE_EVENTS
            assert isinstance(payload["properties"], dict)
        else:
            traits = payload["traits"]
            assert set(traits) == {
                "email",
                "first_name",
                "plan",
                "source",
                "signup_date",
                "timezone",
            }
            assert traits["plan"] in ("free", "pro", "team")
            assert traits["source"] in ("ads", "organic", "referral")
            assert traits["timezone"] == context["timezone"]


def test_every_event_kind_and_device_appears(payloads):
    names = Counter(p.get("event") for p in payloads)
    assert set(FLOW_EVENTS + NOISE_EVENTS) <= set(names)
    devices = Counter(p["context"]["device"]["type"] for p in payloads if p["type"] == "identify")
    assert set(devices) == {"ios", "android", "web"}


def test_funnel_drops_off_at_every_step(payloads):
    people_at_step = [
        len({p["userId"] for p in payloads if p.get("event") == step and _finished(step, p)})
        for step in FLOW_EVENTS
    ]
    assert people_at_step[0] == 300
    for previous, current in pairwise(people_at_step):
        assert 0 < current < previous
    assert people_at_step[-1] / people_at_step[0] > 0.05


def test_some_profiles_are_left_partial(payloads):
    percentages = [
        p["properties"]["completionPercentage"]
        for p in payloads
        if p.get("event") == "Profile Completed"
    ]
    assert 100 in percentages
    assert any(value < 100 for value in percentages)


def test_anonymous_browsing_comes_before_the_identify_that_links_it(journeys):
    browsed = [(person, items) for person, items in journeys if person.browsed_anonymously]
    assert len(browsed) > 100
    for person, items in browsed:
        assert "userId" not in items[0]
        assert items[0]["anonymousId"] == person.anonymous_id
        identify = next(i for i, p in enumerate(items) if p["type"] == "identify")
        assert all("userId" not in p for p in items[:identify])
        assert all(p["userId"] == person.user_id for p in items[identify:])
        assert items[identify]["anonymousId"] == person.anonymous_id


def test_some_people_are_stalled_mid_onboarding_right_now(journeys):
    stalled = [(person, items) for person, items in journeys if person.stalled_now]
    assert len(stalled) >= 10
    for person, items in stalled:
        last_seen = NOW - datetime.fromisoformat(items[-1]["timestamp"])
        assert timedelta(minutes=3) <= last_seen <= timedelta(hours=6, seconds=1)
        assert person.furthest_step < len(FLOW_EVENTS)
        assert not any(p.get("event") == "Teammate Invited" for p in items)


def test_furthest_step_is_what_the_payloads_show(journeys):
    for person, items in journeys:
        done = [
            p["event"] for p in items if p.get("event") in FLOW_EVENTS and _finished(p["event"], p)
        ]
        assert done == list(FLOW_EVENTS[: person.furthest_step])
    assert {person.furthest_step for person, _ in journeys} == {1, 2, 3, 4, 5}


def test_repeated_failures_come_in_bursts(journeys):
    bursts = 0
    for _, items in journeys:
        failures = [
            datetime.fromisoformat(p["timestamp"]) for p in items if p.get("event") == "Task Failed"
        ]
        if len(failures) >= 3 and failures[2] - failures[0] <= timedelta(minutes=10):
            bursts += 1
    assert bursts >= 5


def _finished(step: str, payload: dict) -> bool:
    if step == "Profile Completed":
        return payload["properties"]["completionPercentage"] == 100
    return True


def _timeless(payload: dict) -> dict:
    copy = {key: value for key, value in payload.items() if key != "timestamp"}
    if "traits" in copy:
        copy["traits"] = {k: v for k, v in copy["traits"].items() if k != "signup_date"}
    return copy
