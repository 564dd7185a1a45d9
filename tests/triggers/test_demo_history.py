"""The demo's trigger history (triggers.demo_history): made by the backtest, the engine and the
pipeline's rules, consistent with the events, idempotent and deterministic (pinned clock)."""

from __future__ import annotations

import io
from bisect import bisect_right
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.conf import settings
from django.core.management import call_command
from django.db import transaction

from dashboard.kpis.flags import MOSTLY_CAPPED, NO_LIFT
from dashboard.kpis.queries import KpiQuery, run_kpis
from dashboard.models import RuleDailyKpi
from onboarding.models import Event, FlowProgress
from triggers.demo_history import DEMO_EXPERIMENT, DEMO_EXPERIMENT_RULE
from triggers.models import (
    Assignment,
    DecisionLog,
    Enrollment,
    Experiment,
    Message,
    Rule,
    RuleState,
)
from triggers.simulation.backtest import run_backtest

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
SINCE = NOW - timedelta(days=30)
SLUGS = [
    "pause-2m-nudge",
    "pause-3m-chat",
    "profile-form-abandoned",
    "sessions-without-progress",
    "repeated-failures",
    "reports-milestone",
]


def seed(people: int, *, at: datetime = NOW, seed: int = 42) -> str:
    out = io.StringIO()
    with time_machine.travel(at, tick=False):
        call_command("seed_demo", people=people, seed=seed, stdout=out)
    return out.getvalue()


def snapshot() -> dict:
    """The history, keyed by what does not depend on database ids."""
    return {
        "enrollments": sorted(
            Enrollment.objects.values_list(
                "rule__slug",
                "person__external_id",
                "occurrence_key",
                "enrolled_at",
                "status",
                "exit_reason",
                "variant__name",
            )
        ),
        "messages": sorted(
            Message.objects.values_list(
                "rule__slug",
                "person__external_id",
                "enrollment__occurrence_key",
                "step",
                "status",
                "reason",
                "due_at",
                "sent_at",
                "subject",
                "opened_at",
                "clicked_at",
                "seen_at",
                "dismissed_at",
            )
        ),
        "decisions": Counter(
            DecisionLog.objects.values_list(
                "rule__slug", "person__external_id", "outcome", "reason", "at"
            )
        ),
        "assignments": sorted(
            Assignment.objects.values_list("person__external_id", "variant__name", "assigned_at")
        ),
    }


def step_times() -> dict[int, list[datetime]]:
    out = {}
    for row in FlowProgress.objects.all():
        out[row.person_id] = [row.entered_at + timedelta(microseconds=o) for o in row.step_offsets]
    return out


@pytest.fixture(scope="module")
def seeded(django_db_setup, django_db_blocker):
    """The full demo (500 people), seeded once for the read-only tests of this module, in a
    transaction rolled back at the end (each test runs in a savepoint inside it)."""
    with django_db_blocker.unblock(), transaction.atomic():
        yield seed(500)
        transaction.set_rollback(True)


@pytest.fixture
def demo(seeded, db):
    return seeded


def test_the_demo_history_fills_the_kpi_overview_consistently(demo):
    assert "Demo trigger history" in demo
    kpis = run_kpis(KpiQuery(days=30, today=NOW.date()))
    by_slug = {k.rule.slug: k for k in kpis.rules}
    assert set(by_slug) == set(SLUGS)
    for slug, rule in by_slug.items():
        follow_ups = len(Rule.objects.get(slug=slug).current_version.definition["follow_ups"])
        assert rule.fired > 0, slug
        assert 0 < rule.sent <= rule.fired * follow_ups, slug
        assert rule.response.part <= rule.sent and rule.reengagement.part <= rule.sent
    # The overview's headline numbers are there.
    for ratio in (kpis.response, kpis.reengagement, kpis.conversion):
        assert ratio.whole > 0 and ratio.rate is not None
    assert kpis.lift is not None and kpis.lift.holdout_users > 0
    # Every day of the history is rolled up.
    assert RuleDailyKpi.objects.filter(day__lt=(NOW - timedelta(days=20)).date()).exists()

    # The 2- and 3-minute pause rules fire first in every idle spell and use up the global cap
    # (2 per 7 days), so the later reminders are mostly suppressed, and flagged as such.
    capped = {f.slug for f in kpis.flags if f.kind == MOSTLY_CAPPED}
    assert "profile-form-abandoned" in capped
    assert not capped & {"pause-2m-nudge", "pause-3m-chat"}
    flag = next(f for f in kpis.flags if f.slug == "profile-form-abandoned")
    assert flag.numbers["capped_7d"] > flag.numbers["due_7d"] / 2
    # A no-lift flag exactly when the experiment's numbers say so, on its rule only.
    lift = by_slug[DEMO_EXPERIMENT_RULE].lift
    no_lift = {f.slug for f in kpis.flags if f.kind == NO_LIFT}
    assert no_lift == ({DEMO_EXPERIMENT_RULE} if lift.difference <= 0 else set())
    assert {f.kind for f in kpis.flags} <= {MOSTLY_CAPPED, NO_LIFT}


def test_every_enrollment_is_a_backtest_entry_and_no_more(demo):
    for slug in SLUGS:
        with time_machine.travel(NOW, tick=False):
            result = run_backtest(rule=slug, since=SINCE, until=NOW, now=NOW)
        entries = {(e.person_id, e.occurrence, e.at) for e in result.entries}
        enrolled = set(
            Enrollment.objects.filter(rule__slug=slug).values_list(
                "person_id", "occurrence_key", "enrolled_at"
            )
        )
        assert enrolled == entries, slug
    # Every message belongs to one of them, with the engine's idempotency key (unique).
    assert not Message.objects.filter(enrollment__isnull=True).exists()
    assert Message.objects.values("idempotency_key").distinct().count() == Message.objects.count()


def test_sends_follow_the_pipeline_rules_as_they_stood_then(demo):
    sent = Message.objects.filter(status="sent")
    assert sent.exists()
    # Sent at their due time (quiet hours move the due time), rendered, never in the future.
    for message in sent:
        assert message.sent_at == message.due_at <= NOW
        assert message.body and message.attempts == 1
    # The global frequency cap holds in every rolling window.
    period = timedelta(seconds=settings.ONRAMP_GLOBAL_CAP_PERIOD)
    per_person = defaultdict(list)
    for person_id, sent_at in sent.values_list("person_id", "sent_at"):
        per_person[person_id].append(sent_at)
    for times in per_person.values():
        times.sort()
        for index, moment in enumerate(times):
            window = [t for t in times[: index + 1] if t > moment - period]
            assert len(window) <= settings.ONRAMP_GLOBAL_CAP_MAX
    assert Message.objects.filter(status="suppressed", reason="cap:global").exists()
    # Nobody got a pause nudge after they had moved on (exit: progressed), judged at the send.
    steps = step_times()
    for message in sent.filter(rule__slug__in=["pause-2m-nudge", "profile-form-abandoned"]):
        before = message.enrollment.context["furthest_step"]
        assert bisect_right(steps[message.person_id], message.sent_at) == before
    assert Message.objects.filter(status="cancelled", reason="exit:progressed").exists()
    # Every exit, found by a tick or at a send, ends its enrollment and is logged once.
    exited_by = Counter(
        DecisionLog.objects.filter(outcome="exited").values_list("enrollment_id", flat=True)
    )
    assert exited_by and max(exited_by.values()) == 1
    for message in Message.objects.filter(status="cancelled", reason__startswith="exit:"):
        assert message.enrollment.status == "exited", message.pk
    # Follow-ups due after now wait for the worker; the live engine carries on from now.
    assert not Message.objects.filter(status="scheduled", due_at__lte=NOW).exists()
    assert set(RuleState.objects.values_list("checked_until", flat=True)) == {NOW}


def test_the_holdout_gets_nothing_and_everyone_enrolled_is_assigned(demo):
    experiment = Experiment.objects.get(slug=DEMO_EXPERIMENT)
    assert experiment.status == "running" and experiment.started_at == SINCE
    rule_enrollments = Enrollment.objects.filter(rule__slug=DEMO_EXPERIMENT_RULE)
    assert set(rule_enrollments.values_list("person_id", flat=True)) == set(
        experiment.assignments.values_list("person_id", flat=True)
    )
    held_out = set(
        experiment.assignments.filter(variant__holdout=True).values_list("person_id", flat=True)
    )
    assert 0 < len(held_out) < rule_enrollments.values("person").distinct().count() / 2
    assert not Message.objects.filter(
        rule__slug=DEMO_EXPERIMENT_RULE, person_id__in=held_out
    ).exists()
    assert DecisionLog.objects.filter(outcome="holdout", person_id__in=held_out).exists()
    # Assigned at first eligibility, on the tick that enrolled them (not when the demo was seeded).
    first = {}
    for person_id, at in rule_enrollments.order_by("enrolled_at").values_list(
        "person_id", "enrolled_at"
    ):
        first.setdefault(person_id, at)
    for person_id, assigned_at in experiment.assignments.values_list("person_id", "assigned_at"):
        assert timedelta(0) <= assigned_at - first[person_id] <= timedelta(seconds=30)


def test_responses_follow_the_people_who_came_back(demo):
    activity = defaultdict(list)
    for person_id, received_at in Event.objects.order_by("received_at").values_list(
        "person_id", "received_at"
    ):
        activity[person_id].append(received_at)
    responded = Message.objects.exclude(seen_at=None, clicked_at=None, opened_at=None)
    assert responded.filter(channel="in_app", seen_at__isnull=False).exists()
    assert responded.filter(channel="email", clicked_at__isnull=False).exists()
    assert not responded.exclude(status="sent").exists()
    for message in responded:
        times = activity[message.person_id]
        came_back = (
            times[bisect_right(times, message.sent_at)] if times[-1] > message.sent_at else None
        )
        if message.seen_at:
            assert message.seen_at == came_back  # seen when they next opened the app
        if message.clicked_at:
            assert message.sent_at < message.clicked_at <= NOW
            assert came_back is not None and came_back - message.sent_at <= timedelta(days=3)
            assert message.opened_at is not None
