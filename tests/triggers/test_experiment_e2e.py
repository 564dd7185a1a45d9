"""An experiment end to end, on generated people with a known true effect.

2,000 people hit a rule's trigger through the real ingestion and the real engine on a pinned
clock; the running experiment splits them between the rule's follow-up and a holdout. Each person
then completes the flow (sends its steps' events) or not: a seeded draw picks exactly 30 % of the
treated arm and 20 % of the holdout — and the clock moves past the window. The analysis must find
the effect; an A/A run (25 % of both arms) must not. The arms come from the experiment's random
seed and the database's person ids, so they differ from run to run; drawing an exact share of each
arm (instead of flipping a coin per person) makes the outcome the same whatever the split, so the
test cannot fail by chance (an A/A coin-flip run lands outside its 95 % interval one run in 20).
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import pytest
import time_machine
from django.conf import settings

from onboarding.models import FlowProgress
from onboarding.services.sources import source_create
from onboarding.tracking.envelope import read_envelope
from onboarding.tracking.ingest import ingest_events
from triggers.engine.evaluate import evaluate_rules
from triggers.experiments.results import experiment_results
from triggers.models import Assignment, Message
from triggers.services.experiments import experiment_save, experiment_set_status

from .conftest import T0, make_rule

PEOPLE = 2_000
BATCH = 500
STEPS = ("Signed Up", "Email Verified", "Profile Completed")


class Ingest:
    """Sends many events per call through the ingestion service, at pinned server times."""

    def __init__(self) -> None:
        self.source = source_create(name="e2e").source
        self.counter = 0

    def send(self, at: datetime, events: list[tuple[str, str]]) -> None:
        for start in range(0, len(events), BATCH):
            batch = []
            for user, name in events[start : start + BATCH]:
                self.counter += 1
                batch.append(
                    {
                        "type": "track",
                        "userId": user,
                        "event": name,
                        "timestamp": at.isoformat(),
                        "messageId": f"e2e-{self.counter}",
                    }
                )
            with time_machine.travel(at, tick=False):
                envelope = read_envelope(
                    {"batch": batch},
                    event_type=None,
                    received_at=at,
                    max_event_bytes=settings.ONRAMP_MAX_EVENT_BYTES,
                    max_future=timedelta(seconds=settings.ONRAMP_MAX_FUTURE_SECONDS),
                )
                assert not envelope.rejections
                ingest_events(
                    source=self.source, events=envelope.events, received_at=at, endpoint="batch"
                )


def run_experiment(*, treated_rate: float, holdout_rate: float, seed: int):
    make_rule(
        "trial-ending",
        {
            "trigger": {"kind": "event", "event": "Trial Ending"},
            "follow_ups": [{"channel": "in_app", "template": "nudge", "delay": "0s"}],
            "exit_when": "never",
        },
    )
    with time_machine.travel(T0 - timedelta(minutes=1), tick=False):
        experiment, _ = experiment_save(
            slug="nudge-vs-nothing",
            rule_slug="trial-ending",
            variants=[
                {"name": "nudge", "weight": 50},
                {"name": "holdout", "weight": 50, "holdout": True},
            ],
            metric={"flow": "activation", "completed_within": "3d"},
            planned_users_per_arm=900,
        )
        experiment_set_status(experiment=experiment, status="running")

    ingest = Ingest()
    users = [f"user-{n:04d}" for n in range(PEOPLE)]
    # Everyone has signed up; then their trial ends, and the rule picks them up.
    ingest.send(T0, [(user, "Signed Up") for user in users])
    ingest.send(T0 + timedelta(minutes=1), [(user, "Trial Ending") for user in users])
    evaluate_rules(now=T0 + timedelta(minutes=2))

    arms = dict(
        Assignment.objects.filter(experiment=experiment).values_list(
            "person__external_id", "variant__name"
        )
    )
    assert len(arms) == PEOPLE, "every enrollment is assigned once"

    rng = random.Random(seed)
    converters = []
    for arm, rate in (("holdout", holdout_rate), ("nudge", treated_rate)):
        members = [user for user in users if arms[user] == arm]
        converters += rng.sample(members, round(rate * len(members)))
    day_one = T0 + timedelta(days=1)
    for step, name in enumerate(STEPS[1:], start=1):
        ingest.send(day_one + timedelta(minutes=step), [(user, name) for user in converters])
    # Late converters (after the 3-day window) do not count.
    late = users[:50]
    ingest.send(T0 + timedelta(days=5), [(user, STEPS[1]) for user in late])
    ingest.send(T0 + timedelta(days=5, minutes=1), [(user, STEPS[2]) for user in late])

    assert FlowProgress.objects.filter(completed_at__lt=T0 + timedelta(days=2)).count() == len(
        converters
    )
    held = [user for user, arm in arms.items() if arm == "holdout"]
    assert not Message.objects.filter(person__external_id__in=held).exists()
    assert Message.objects.filter(enrollment__variant__name="nudge").count() == PEOPLE - len(held)

    early = experiment_results(experiment, now=T0 + timedelta(days=2))
    assert early.users == 0 and early.assigned == PEOPLE  # windows still open
    return experiment_results(experiment, now=T0 + timedelta(days=4))


@pytest.mark.django_db
def test_a_known_effect_is_found(flow, templates):
    result = run_experiment(treated_rate=0.30, holdout_rate=0.20, seed=7)
    assert result.users == PEOPLE
    assert not result.srm_mismatch
    (comparison,) = result.analysis.comparisons
    assert (comparison.arm, comparison.control) == ("nudge", "holdout")
    assert comparison.p_value < 0.01
    assert comparison.chance_to_beat_control > 0.99
    low, high = comparison.difference_ci
    assert low < 0.10 < high, "the interval covers the true difference of 10 points"
    assert result.verdict_allowed
    assert result.verdict.startswith("Verdict: nudge beats holdout")


@pytest.mark.django_db
def test_an_a_a_run_finds_nothing(flow, templates):
    result = run_experiment(treated_rate=0.25, holdout_rate=0.25, seed=11)
    assert result.users == PEOPLE
    (comparison,) = result.analysis.comparisons
    assert comparison.p_value > 0.9, "equal shares converted in both arms"
    low, high = comparison.difference_ci
    assert low < 0 < high
    assert "no significant difference" in result.verdict
