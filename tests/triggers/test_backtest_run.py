"""Backtest entry points: the report's contents, ``simulate_rule``, the queued run and its view."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from onboarding.models import Person
from triggers.models import BacktestRun, Enrollment, Message
from triggers.services.backtests import backtest_execute, backtest_start
from triggers.simulation.backtest import BacktestError, run_backtest
from triggers.tasks import run_backtest_task

from .conftest import T0, make_rule

pytestmark = pytest.mark.usefixtures("flow", "templates")

M = timedelta(minutes=1)
IDLE = {
    "trigger": {"kind": "inactive_in_flow", "flow": "activation", "minutes": 5},
    "follow_ups": [
        {"channel": "in_app", "template": "nudge", "delay": "0s"},
        {"channel": "email", "template": "reminder", "delay": "1h"},
    ],
    "quiet_hours": {"start": "09:30", "end": "12:00"},
}


@pytest.fixture
def history(timeline):
    for user in ("a", "b", "c"):
        timeline.send(T0, user, "Signed Up")
    timeline.send(T0 + 30 * M, "b", "Email Verified")  # progressed: the 1 h email is cancelled
    for user in ("a", "b"):
        Person.objects.filter(external_id=user).update(email=f"{user}@example.com")
    Person.objects.filter(external_id="c").update(email="c@example.com", consent={"email": False})


def test_report_counts_each_outcome_and_writes_nothing(history):
    before = (Enrollment.objects.count(), Message.objects.count())
    result = run_backtest(definition=IDLE, since=T0, until=T0 + 3 * 60 * M, now=T0 + 3 * 60 * M)
    assert (Enrollment.objects.count(), Message.objects.count()) == before
    assert result.entered == 3 and result.scheduled == 6
    assert {e.at for e in result.entries} == {T0 + 5 * M}
    # Three in-app at 09:05. Emails at 10:05: a's falls in quiet hours (09:30-12:00) and goes
    # out at 12:00; b progressed at 09:30; c refused email.
    assert result.outcomes == {
        "sent": 4,
        "cancelled:progressed": 1,
        "suppressed:consent": 1,
    }
    assert result.deferred == 1
    assert result.sent_per_day == {"2026-11-02": {"in_app": 3, "email": 1}}
    assert result.progressed_anyway == 1
    data = result.as_dict()
    assert data["scheduled_per_day"] == {"2026-11-02": {"email": 3, "in_app": 3}}
    assert json.dumps(data)


def test_report_keeps_outcomes_per_day_by_channel_and_per_person(history):
    """DESIGN §4.6 on the report page: follow-ups per day by channel and outcome, and for each
    occurrence its follow-ups' outcomes and whether the person progressed anyway."""
    result = run_backtest(definition=IDLE, since=T0, until=T0 + 3 * 60 * M, now=T0 + 3 * 60 * M)
    data = result.as_dict()
    assert data["outcomes_per_day"] == {
        "2026-11-02": {
            "email": {"cancelled:progressed": 1, "sent": 1, "suppressed:consent": 1},
            "in_app": {"sent": 3},
        }
    }
    # The per-day outcomes add up to the outcome totals.
    totals: dict[str, int] = {}
    for per_channel in data["outcomes_per_day"].values():
        for outcomes in per_channel.values():
            for outcome, n in outcomes.items():
                totals[outcome] = totals.get(outcome, 0) + n
    assert totals == data["outcomes"]
    people = {e["external_id"]: e for e in data["entries"]}
    assert people["a"]["follow_ups"] == [
        {"step": 1, "channel": "in_app", "outcome": "sent", "at": (T0 + 5 * M).isoformat()},
        # due 10:05 inside quiet hours (09:30-12:00): decided when they end
        {"step": 2, "channel": "email", "outcome": "sent", "at": (T0 + 180 * M).isoformat()},
    ]
    assert [f["outcome"] for f in people["b"]["follow_ups"]] == ["sent", "cancelled:progressed"]
    assert [f["outcome"] for f in people["c"]["follow_ups"]] == ["sent", "suppressed:consent"]
    # b verified the email at 09:30; the 7-day windows of a and c are still open.
    assert {u: e["progressed"] for u, e in people.items()} == {"a": "open", "b": "yes", "c": "open"}
    # Seven days on, the windows have closed: no longer "open", "no".
    later = run_backtest(
        definition=IDLE, since=T0, until=T0 + 3 * 60 * M, now=T0 + timedelta(days=8)
    )
    assert {e.external_id: e.progressed for e in later.entries} == {
        "a": "no",
        "b": "yes",
        "c": "no",
    }


def test_the_stored_report_keeps_the_first_entries_and_every_count(history, monkeypatch):
    """A stored report lists at most ``STORED_ENTRIES`` (10 000) occurrences, in time order."""
    from triggers.services import backtests

    monkeypatch.setattr(backtests, "STORED_ENTRIES", 2)
    run = backtest_start(None, T0, T0 + 3 * 60 * M, None, definition=IDLE)
    run = backtest_execute(run.pk)
    assert run.result["entered"] == 3
    assert len(run.result["entries"]) == 2 and run.result["entries_truncated"] is True


def test_global_cap_counts_the_rules_own_sends(history, settings):
    settings.ONRAMP_GLOBAL_CAP_MAX = 1
    result = run_backtest(definition=IDLE, since=T0, until=T0 + 4 * 60 * M, now=T0 + 4 * 60 * M)
    assert result.outcomes["capped:global"] == 1  # a: the in-app went out, the email is capped
    assert result.deferred == 0  # capped before the quiet-hours check


def test_render_abort_uses_current_traits(history):
    from triggers.services.templates import template_save

    template_save(slug="strict", channel="in_app", subject="", body="Hi {{ first_name }}")
    definition = {
        "trigger": {"kind": "inactive_in_flow", "flow": "activation", "minutes": 5},
        "follow_ups": [{"channel": "in_app", "template": "strict", "delay": "0s"}],
    }
    Person.objects.filter(external_id="a").update(traits={"first_name": "Ada"})
    result = run_backtest(definition=definition, since=T0, until=T0 + 60 * M, now=T0 + 60 * M)
    assert result.outcomes == {"sent": 1, "aborted:render": 2}


def test_overlap_with_live_rules(history, timeline):
    make_rule("live-idle", {**IDLE, "quiet_hours": None} | {"reentry": "once"})
    timeline.tick(T0 + timedelta(seconds=30))
    timeline.tick(T0 + 6 * M)
    result = run_backtest(definition=IDLE, since=T0, until=T0 + 60 * M, now=T0 + 60 * M)
    # Live, b's later event had already arrived when the rule ticked: only a and c enrolled.
    assert result.overlap_people == 2 and result.overlap_rules == {"live-idle": 2}


def test_invalid_definitions_and_periods_are_refused():
    with pytest.raises(BacktestError) as error:
        run_backtest(definition={"trigger": {"kind": "nope"}}, since=T0, until=T0 + M)
    assert error.value.code == "invalid_rule"
    with pytest.raises(BacktestError):
        run_backtest(definition=IDLE, since=T0, until=T0)


def test_simulate_rule_command(history):
    make_rule("idle", IDLE)
    out = StringIO()
    call_command(
        "simulate_rule",
        "idle",
        "--since",
        "2026-11-02",
        "--until",
        "2026-11-02",
        "--format",
        "json",
        stdout=out,
    )
    data = json.loads(out.getvalue())
    assert data["rule"] == "idle" and data["entered"] == 3
    assert data["since"] == "2026-11-02T00:00:00+00:00"
    out = StringIO()
    call_command(
        "simulate_rule", "idle", "--since", "2026-11-02", "--until", "2026-11-02", stdout=out
    )
    assert "entered  3 occurrences, 3 people" in out.getvalue()
    with pytest.raises(CommandError, match="no_rule"):
        call_command("simulate_rule", "missing", "--since", "2026-11-02")


def test_backtest_run_queued_executed_and_shown(
    history, alice, client, django_capture_on_commit_callbacks, monkeypatch
):
    rule = make_rule("idle", IDLE)
    queued = []
    monkeypatch.setattr(
        "celery.current_app.send_task", lambda name, args: queued.append((name, args))
    )
    with django_capture_on_commit_callbacks(execute=True):
        run = backtest_start(rule, T0, T0 + 60 * M, alice)
    assert queued == [(run_backtest_task.name, [run.pk])] and run.status == "queued"

    client.force_login(alice)
    data = client.get(f"/rules/backtests/{run.pk}/").json()
    assert (data["status"], data["progress"], data["report"]) == ("queued", 0, None)

    backtest_execute(run.pk)
    run.refresh_from_db()
    assert (run.status, run.progress) == ("done", 100)
    data = client.get(f"/rules/backtests/{run.pk}/").json()
    assert data["report"]["entered"] == 3
    html = client.get(f"/rules/backtests/{run.pk}/?format=html", HTTP_HX_REQUEST="true")
    assert b"would have entered" in html.content
    assert backtest_execute(run.pk).status == "done"  # a second delivery of the task: no-op


def test_backtest_status_needs_the_growth_permission(bob, client, alice):
    run = BacktestRun.objects.create(definition=IDLE, since=T0, until=T0 + M)
    assert client.get(f"/rules/backtests/{run.pk}/").status_code == 302
    client.force_login(bob)
    assert client.get(f"/rules/backtests/{run.pk}/").status_code == 403
