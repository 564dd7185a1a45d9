"""Experiments: deterministic, persisted assignment; the holdout receives nothing; ITT counts."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from datetime import timedelta

import pytest
import time_machine
from django.core.exceptions import ValidationError

from onboarding.models import Person
from triggers.delivery.pipeline import deliver_due
from triggers.experiments.assign import assign, pick, position
from triggers.experiments.metrics import arm_counts
from triggers.models import Assignment, DecisionLog, Enrollment, Message, Variant
from triggers.services.experiments import experiment_save, experiment_set_status, experiment_ship

from .conftest import T0, make_rule

M = timedelta(minutes=1)
ARMS = [
    {
        "name": "three-days",
        "weight": 45,
        "follow_ups": [{"channel": "in_app", "template": "nudge", "delay": "0s"}],
    },
    {
        "name": "one-week",
        "weight": 45,
        "follow_ups": [{"channel": "email", "template": "reminder", "delay": "0s"}],
    },
    {"name": "holdout", "weight": 10, "holdout": True},
]


def test_position_is_uniform_and_stable_across_processes():
    ids = range(100_000)
    arms = [
        Variant(name=n, weight=w, position=i)
        for i, (n, w) in enumerate([("a", 45), ("b", 45), ("c", 10)])
    ]
    counts = Counter(pick(arms, position("seed-1", i)).name for i in ids)
    assert abs(counts["a"] / 100_000 - 0.45) < 0.01
    assert abs(counts["b"] / 100_000 - 0.45) < 0.01
    assert abs(counts["c"] / 100_000 - 0.10) < 0.005
    script = "from triggers.experiments.hashing import position; print([round(position('seed-1', i), 12) for i in (1, 42, 99999)])"
    other = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert other.stdout.strip() == str([round(position("seed-1", i), 12) for i in (1, 42, 99999)])
    assert position("seed-2", 42) != position("seed-1", 42)


@pytest.fixture
def experiment(flow, templates):
    make_rule(
        "stalled",
        {
            "trigger": {"kind": "event", "event": "Trial Ending"},
            "follow_ups": [{"channel": "in_app", "template": "nudge", "delay": "0s"}],
        },
    )
    experiment, _ = experiment_save(
        slug="reminder-timing",
        rule_slug="stalled",
        variants=ARMS,
        metric={"flow": "activation", "completed_within": "1d"},
    )
    experiment_set_status(experiment=experiment, status="running")
    return experiment


def test_assignment_is_persisted_and_weights_changes_move_nobody(experiment, db):
    people = [
        Person.objects.create(external_id=f"p{n}", first_seen=T0, last_seen=T0) for n in range(200)
    ]
    first = assign(experiment, [p.pk for p in people], T0)
    assert first == assign(experiment, [p.pk for p in people], T0 + M)
    changed = [{**arm, "weight": 80 if arm["name"] == "holdout" else 10} for arm in ARMS]
    experiment, _ = experiment_save(
        slug="reminder-timing", rule_slug="stalled", variants=changed, metric=experiment.metric
    )
    assert experiment.phase == 2
    again = assign(experiment, [p.pk for p in people], T0 + 2 * M)
    assert {k: v.name for k, v in again.items()} == {k: v.name for k, v in first.items()}
    newcomers = [
        Person.objects.create(external_id=f"n{n}", first_seen=T0, last_seen=T0) for n in range(300)
    ]
    fresh = assign(experiment, [p.pk for p in newcomers], T0)
    assert (
        Counter(v.name for v in fresh.values())["holdout"] > 180
    )  # the new weights apply to new people
    assert set(Assignment.objects.filter(person__in=newcomers).values_list("phase", flat=True)) == {
        2
    }


def test_holdout_receives_nothing_but_is_recorded(experiment, timeline):
    for n in range(150):
        timeline.send(T0, f"u{n}", "Trial Ending")
    timeline.tick(T0 + M)
    deliver_due(now=T0 + M)
    arms = dict(Enrollment.objects.values_list("person_id", "variant__name"))
    assert len(arms) == 150 and set(arms.values()) <= {"three-days", "one-week", "holdout"}
    held = [p for p, name in arms.items() if name == "holdout"]
    # The split is random (the experiment's seed); with 150 people a 10 % holdout is empty
    # with probability 0.9 ** 150 ≈ 1e-7.
    assert held, "a 10 % holdout of 150 people holds somebody"
    assert not Message.objects.filter(person_id__in=held).exists()
    assert DecisionLog.objects.filter(outcome="holdout", person_id__in=held).count() == len(held)
    channels = {
        name: set(
            Message.objects.filter(enrollment__variant__name=name).values_list("channel", flat=True)
        )
        for name in ("three-days", "one-week")
    }
    assert channels == {"three-days": {"in_app"}, "one-week": {"email"}}


def test_counts_are_intention_to_treat_over_closed_windows(experiment, timeline):
    for n in range(30):
        timeline.send(T0, f"u{n}", "Trial Ending")
    timeline.tick(T0 + M)
    converters = [f"u{n}" for n in range(0, 30, 3)]
    for user in converters:
        for step, event in enumerate(["Signed Up", "Email Verified", "Profile Completed"]):
            timeline.send(T0 + (step + 2) * M, user, event)
    assert (
        sum(a.users for a in arm_counts(experiment, now=T0 + timedelta(hours=12))) == 0
    )  # windows open
    counts = arm_counts(experiment, now=T0 + timedelta(days=2))
    assert sum(a.users for a in counts) == 30
    assert sum(a.conversions for a in counts) == len(converters)
    by_arm = dict(Enrollment.objects.values_list("person__external_id", "variant__name"))
    for arm in counts:
        assert arm.conversions == sum(1 for u in converters if by_arm[u] == arm.name)


def test_one_running_experiment_per_rule_and_validation_paths(experiment):
    with pytest.raises(ValidationError) as error:
        experiment_save(
            slug="bad",
            rule_slug="stalled",
            variants=[
                {"name": "a", "weight": 0},
                {"name": "a", "weight": 5, "holdout": True, "follow_ups": [{"channel": "x"}]},
            ],
            metric={"flow": "nope", "completed_within": "soon"},
        )
    paths = set(error.value.message_dict)
    assert {
        "variants[0].weight",
        "variants[1].name",
        "variants[1].follow_ups",
        "metric.flow",
        "metric.completed_within",
    } <= paths
    other, _ = experiment_save(
        slug="second", rule_slug="stalled", variants=ARMS, metric=experiment.metric
    )
    with pytest.raises(ValidationError):
        experiment_set_status(experiment=other, status="running")


def test_ship_winner_makes_the_rule_use_it_for_everyone(experiment, timeline):
    experiment_ship(experiment=experiment, variant_name="one-week")
    experiment.refresh_from_db()
    assert experiment.status == "stopped" and experiment.shipped_variant.name == "one-week"
    rule = experiment.rule
    rule.refresh_from_db()
    assert rule.current_version.number == 2
    assert rule.current_version.definition["follow_ups"][0]["channel"] == "email"
    with time_machine.travel(T0, tick=False):
        pass
    timeline.send(T0 + timedelta(hours=1), "late", "Trial Ending")
    timeline.tick(T0 + timedelta(hours=1, minutes=1))
    enrollment = Enrollment.objects.get(person__external_id="late")
    assert enrollment.variant is None
    assert list(
        Message.objects.filter(enrollment=enrollment).values_list("channel", flat=True)
    ) == ["email"]
