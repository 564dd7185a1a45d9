"""KPI roll-ups on hand-built timelines: exact numbers, idempotent re-runs, experiments' lift."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import call_command

from dashboard.kpis import rollup_kpis
from dashboard.models import FlowDailyKpi, RuleDailyKpi
from onboarding.models import Person
from tests.triggers import conftest as trigger_fixtures
from tests.triggers.conftest import T0, make_rule
from triggers.delivery.pipeline import deliver_due
from triggers.models import Enrollment, Message
from triggers.services.experiments import experiment_save, experiment_set_status
from triggers.services.outcomes import message_record_outcome

# The trigger tests' fixtures: the activation flow, message templates, the Timeline helper.
flow, templates, timeline = (
    trigger_fixtures.flow,
    trigger_fixtures.templates,
    trigger_fixtures.timeline,
)
pytestmark = pytest.mark.usefixtures("flow", "templates")

M = timedelta(minutes=1)
H = timedelta(hours=1)
D = timedelta(days=1)
DAY1, DAY2 = T0.date(), (T0 + D).date()
LATER = T0 + 10 * D  # every window of the scenario has closed


def _message(user: str, rule: str = "idle") -> Message:
    return Message.objects.get(person__external_id=user, rule__slug=rule)


@pytest.fixture
def scenario(timeline):
    """Day 1: u1–u4 sign up and go idle; the idle rule nudges them in-app. u1 sees the nudge and
    completes within hours; u2 progresses after three days; u3 comes back after two days without
    progress; u4 does nothing. u6 triggers a three-message rule and hits the global cap; u7 gets
    an email without an address (review). Day 2: u5 signs up and stalls."""
    make_rule(
        "idle",
        {
            "trigger": {"kind": "inactive_in_flow", "flow": "activation", "minutes": 5},
            "follow_ups": [{"channel": "in_app", "template": "nudge", "delay": "0s"}],
        },
    )
    make_rule(
        "triple",
        {
            "trigger": {"kind": "event", "event": "Trial Ending"},
            "follow_ups": [
                {"channel": "in_app", "template": "nudge", "delay": "0s"},
                {"channel": "in_app", "template": "nudge", "delay": "1m"},
                {"channel": "in_app", "template": "nudge", "delay": "2m"},
            ],
        },
    )
    make_rule(
        "mail",
        {
            "trigger": {"kind": "event", "event": "Asked For Help"},
            "follow_ups": [{"channel": "email", "template": "reminder", "delay": "0s"}],
        },
    )
    for user in ("u1", "u2", "u3", "u4"):
        timeline.send(T0, user, "Signed Up")
    timeline.send(T0, "u6", "Trial Ending")
    timeline.send(T0, "u7", "Asked For Help")
    timeline.tick(T0 + 5 * M)
    deliver_due(now=T0 + 5 * M)
    deliver_due(now=T0 + 10 * M)
    message_record_outcome(message_id=_message("u1").pk, outcome="seen", now=T0 + 6 * M)
    timeline.send(T0 + H, "u1", "Email Verified")
    timeline.send(T0 + 2 * H, "u1", "Profile Completed")
    timeline.send(T0 + 2 * D, "u3", "Opened Settings")
    timeline.send(T0 + 3 * D, "u2", "Email Verified")
    timeline.send(T0 + 3 * D, "u2", "Profile Completed")
    timeline.send(T0 + D, "u5", "Signed Up")


def _rule_row(slug: str, day=DAY1) -> RuleDailyKpi:
    return RuleDailyKpi.objects.get(rule__slug=slug, day=day)


def test_flow_and_rule_rollups_have_exact_numbers(scenario):
    report = rollup_kpis(first=DAY1, last=DAY2, now=LATER)
    assert (report.flow_rows, report.deleted) == (2, 0)

    day1 = FlowDailyKpi.objects.get(day=DAY1)
    assert (day1.entrants, day1.completions, day1.still_open) == (4, 2, 0)
    assert day1.median_ttv_seconds == pytest.approx((2 * 3600 + 72 * 3600) / 2)
    day2 = FlowDailyKpi.objects.get(day=DAY2)
    assert (day2.entrants, day2.completions, day2.median_ttv_seconds) == (1, 0, None)

    idle = _rule_row("idle")
    assert (idle.fired, idle.sent, idle.suppressed, idle.skipped) == (4, 4, 0, 0)
    assert idle.responded == 1  # u1 saw the in-app nudge
    assert idle.reengaged == 1  # u1 was active within 24 h; u3 came back after two days
    assert idle.converted == 2  # u1 (1 h later) and u2 (3 days later) reached a further step
    assert (idle.sent_7d, idle.people_sent_7d) == (4, 4)

    triple = _rule_row("triple")
    assert (triple.fired, triple.sent, triple.suppressed) == (1, 2, 1)
    assert triple.suppressed_by_reason == {"cap:global": 1}
    assert (triple.converted, triple.sent_7d, triple.people_sent_7d) == (0, 2, 1)

    mail = _rule_row("mail")
    assert (mail.fired, mail.sent, mail.review, mail.failed, mail.unknown) == (1, 0, 1, 0, 0)

    # The trailing week keeps a row for each day after the sends, for the frequency flags.
    assert (_rule_row("idle", DAY2).sent, _rule_row("idle", DAY2).sent_7d) == (0, 4)


def test_recomputing_replaces_and_is_idempotent(scenario):
    rollup_kpis(first=DAY1, last=DAY2, now=LATER)
    before = sorted(
        RuleDailyKpi.objects.values_list("day", "rule__slug", "fired", "sent", "converted")
    )
    report = rollup_kpis(first=DAY1, last=DAY2, now=LATER + H)
    assert report.deleted == 0
    after = sorted(
        RuleDailyKpi.objects.values_list("day", "rule__slug", "fired", "sent", "converted")
    )
    assert after == before
    assert FlowDailyKpi.objects.count() == 2

    # A day that lost its activity is removed when recomputed; other days are left alone.
    Person.objects.filter(external_id="u5").delete()
    report = rollup_kpis(first=DAY2, last=DAY2, now=LATER + 2 * H)
    assert not FlowDailyKpi.objects.filter(day=DAY2).exists()
    assert FlowDailyKpi.objects.filter(day=DAY1).count() == 1
    assert report.deleted == 1


def test_still_converting_depends_on_the_clock(scenario):
    rollup_kpis(first=DAY1, last=DAY1, now=T0 + 12 * H)
    early = FlowDailyKpi.objects.get(day=DAY1)
    assert (early.completions, early.still_open) == (2, 2)  # u3 and u4 may still complete
    rollup_kpis(first=DAY1, last=DAY1, now=LATER)
    assert FlowDailyKpi.objects.get(day=DAY1).still_open == 0


def test_backfill_command(scenario, capsys):
    import time_machine

    with time_machine.travel(LATER, tick=False):
        call_command("rollup_kpis", "--days", "11")
    out = capsys.readouterr().out
    assert "2 flow-days" in out
    assert RuleDailyKpi.objects.filter(rule__slug="idle", day=DAY1).get().sent == 4


def test_lift_against_holdout_from_closed_windows(timeline):
    make_rule(
        "trial",
        {
            "trigger": {"kind": "event", "event": "Trial Ending"},
            "follow_ups": [{"channel": "in_app", "template": "nudge", "delay": "0s"}],
        },
    )
    experiment, _ = experiment_save(
        slug="trial-nudge",
        rule_slug="trial",
        variants=[
            {"name": "nudge", "weight": 50},
            {"name": "holdout", "weight": 50, "holdout": True},
        ],
        metric={"flow": "activation", "completed_within": "1d"},
    )
    experiment_set_status(experiment=experiment, status="running")
    for n in range(40):
        timeline.send(T0, f"p{n}", "Trial Ending")
    timeline.tick(T0 + M)
    deliver_due(now=T0 + M)
    converters = [f"p{n}" for n in range(0, 40, 4)]
    for user in converters:
        for step, event in enumerate(["Signed Up", "Email Verified", "Profile Completed"]):
            timeline.send(T0 + (step + 2) * M, user, event)
    arms = dict(Enrollment.objects.values_list("person__external_id", "variant__name"))

    rollup_kpis(first=DAY1, last=DAY1, now=T0 + 12 * H)  # windows still open: no ITT users yet
    row = _rule_row("trial")
    assert (row.treated_users, row.holdout_users) == (0, 0)

    rollup_kpis(first=DAY1, last=DAY1, now=T0 + 2 * D)
    row = _rule_row("trial")
    held = [u for u, arm in arms.items() if arm == "holdout"]
    assert (row.treated_users, row.holdout_users) == (40 - len(held), len(held))
    assert row.holdout_conversions == sum(1 for u in converters if arms[u] == "holdout")
    assert row.treated_conversions == sum(1 for u in converters if arms[u] == "nudge")
    assert row.holdout == len(held)
    assert row.sent == 40 - len(held)
