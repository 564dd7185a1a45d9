"""The demo configuration matches what the demo generator sends (names, properties, traits)."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest
import time_machine
from django.core.management import call_command

from onboarding.demo import iter_journeys
from onboarding.demo_config import install_demo_config
from onboarding.models import FlowProgress, Segment
from onboarding.segments import members_queryset

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
PEOPLE, SEED = 120, 5


@pytest.fixture
def demo(db):
    with time_machine.travel(NOW, tick=False):
        call_command("seed_demo", people=PEOPLE, seed=SEED, stdout=io.StringIO())
    return [person for person, _ in iter_journeys(people=PEOPLE, seed=SEED, now=NOW)]


def members(slug: str) -> set[str]:
    segment = Segment.objects.get(slug=slug)
    return set(members_queryset(segment, NOW).values_list("external_id", flat=True))


def test_demo_config_after_seeding(demo):
    # seed_demo installed the configuration before the events: progress followed them in.
    assert FlowProgress.objects.filter(flow__slug="activation").count() == len(demo)

    assert members("from-ads") == {p.user_id for p in demo if p.source == "ads"}
    assert members("mobile") == {p.user_id for p in demo if p.device in ("ios", "android")}
    stalled = members("stalled-at-profile")
    assert stalled
    # "At step 3" is the step to do next: they verified their email (step 2) and stopped.
    assert stalled <= {p.user_id for p in demo if p.furthest_step == 2}

    assert {change.status for change in install_demo_config().changes} == {"unchanged"}
