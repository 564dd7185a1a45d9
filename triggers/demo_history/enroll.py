"""Who enrolled in the demo rules, and when: each rule's backtest through the engine's own
enrollment at the tick that would have found them, and the demo's running experiment."""

from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from onboarding.models import OFFSET_FIELDS, FlowProgress, offsets_of
from triggers.engine.evaluate import enroll_occurrences
from triggers.engine.occurrences import Occurrence
from triggers.models import Experiment, ExperimentStatus, Rule
from triggers.services.experiments import experiment_save, experiment_set_status
from triggers.simulation.backtest import run_backtest

HISTORY = timedelta(days=30)
TICK = timedelta(seconds=30)  # the beat's evaluation interval, as the backtest replays it

DEMO_EXPERIMENT = "demo-pause-nudge-holdout"
DEMO_EXPERIMENT_RULE = "pause-2m-nudge"


def tick_after(moment: datetime, since: datetime) -> datetime:
    """The first evaluation tick (every 30 s from ``since``) at or after ``moment``."""
    steps = -((since - moment) // TICK)  # ceil((moment - since) / TICK)
    return since + max(0, steps) * TICK


# --- the experiment ------------------------------------------------------------------------------


def demo_experiment(rule: Rule, since: datetime, seed: int) -> Experiment:
    """A running 80/20 test of the pause nudge against a holdout, started with the history.

    The assignment seed is fixed (not random as for a new experiment), so the same demo data puts
    the same people in the holdout."""
    experiment, _ = experiment_save(
        slug=DEMO_EXPERIMENT,
        rule_slug=rule.slug,
        variants=[
            {"name": "reminders", "weight": 80},
            {"name": "holdout", "weight": 20, "holdout": True},
        ],
        metric={"flow": "activation", "completed_within": "7d"},
        planned_users_per_arm=400,
    )
    if experiment.status == ExperimentStatus.DRAFT and not experiment.assignments.exists():
        Experiment.objects.filter(pk=experiment.pk).update(seed=f"demo-{seed}")
        experiment = experiment_set_status(experiment=experiment, status=ExperimentStatus.RUNNING)
        Experiment.objects.filter(pk=experiment.pk).update(started_at=since)
    return experiment


# --- enrollment ----------------------------------------------------------------------------------


def _occurrence(entry, steps: dict[int, list[datetime]]) -> Occurrence:
    """A backtest entry as the engine's occurrence; the context the exit check needs (the step
    the person had reached then) comes from their flow progress at that moment."""
    context: dict[str, Any] = {"history": "demo backtest"}
    times = steps.get(entry.person_id)
    if times is not None and entry.occurrence.split(":", 1)[0] in ("idle", "abandon"):
        context["furthest_step"] = bisect_right(times, entry.at)
    return Occurrence(entry.person_id, entry.occurrence, entry.at, context)


def step_times(flow_slug: str) -> dict[int, list[datetime]]:
    """Per person, when they first reached each step of the flow (entry + per-step offsets)."""
    out: dict[int, list[datetime]] = {}
    for row in FlowProgress.objects.filter(flow__slug=flow_slug).values(
        "person_id", "entered_at", *OFFSET_FIELDS
    ):
        entered = row["entered_at"]
        out[row["person_id"]] = [entered + timedelta(microseconds=o) for o in offsets_of(row)]
    return out


def enroll(rules: list[Rule], since: datetime, until: datetime, now: datetime) -> int:
    steps = step_times("activation")
    batches: dict[tuple[datetime, int], list[Occurrence]] = defaultdict(list)
    by_pk = {rule.pk: rule for rule in rules}
    for rule in rules:
        result = run_backtest(rule=rule, since=since, until=until, now=now)
        for entry in result.entries:
            batches[(tick_after(entry.at, since), rule.pk)].append(_occurrence(entry, steps))
    enrolled = 0
    for (tick, rule_pk), occurrences in sorted(
        batches.items(), key=lambda item: (item[0][0], -by_pk[item[0][1]].priority, item[0][1])
    ):
        enrolled += enroll_occurrences(by_pk[rule_pk], occurrences, now=tick).enrolled
    return enrolled
