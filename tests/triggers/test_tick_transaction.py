"""A tick evaluates all its rules in one transaction (DESIGN §5: per rule and tick, only the
detection and the writes): one statement claims every rule, one moves every watermark. A rule
that fails rolls the whole transaction back and the tick runs again one transaction per rule,
so the rules before it still go ahead and its error surfaces, as when each rule had its own."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from triggers.engine import evaluate
from triggers.models import DecisionLog, Enrollment, Message, RuleState

from .conftest import T0, make_rule

pytestmark = pytest.mark.usefixtures("flow", "templates")

M = timedelta(minutes=1)
STATE = re.compile(r'"triggers_rulestate"')


def _idle_rules(*minutes: int) -> list:
    return [
        make_rule(
            f"idle-{m}m",
            {
                "trigger": {"kind": "inactive_in_flow", "flow": "activation", "minutes": m},
                "follow_ups": [{"channel": "in_app", "template": "nudge", "delay": "0s"}],
            },
            priority=-m,
        )
        for m in minutes
    ]


def _people(timeline, count: int) -> None:
    for n in range(count):
        timeline.send(T0, f"u{n}", "Signed Up")


@pytest.mark.parametrize("rules", [2, 6])
def test_a_tick_claims_its_rules_in_one_statement_and_moves_them_in_one(timeline, rules):
    _idle_rules(*range(2, 2 + rules))
    _people(timeline, 3)
    with CaptureQueriesContext(connection) as queries:
        report = timeline.tick(T0 + 10 * M)
    touching = [q["sql"] for q in queries.captured_queries if STATE.search(q["sql"])]
    # The claim (SELECT … FOR UPDATE) and the watermarks (one UPDATE), whatever the rules.
    assert len(touching) == 2, touching
    assert touching[0].startswith("SELECT")
    if connection.vendor == "postgresql":
        assert touching[0].endswith("FOR UPDATE SKIP LOCKED")
    assert touching[1].startswith("UPDATE")
    assert [r.enrolled for r in report.rules] == [3] * rules
    states = RuleState.objects.all()
    assert {(s.checked_until, s.last_tick_at) for s in states} == {(T0 + 10 * M, T0 + 10 * M)}
    assert all(s.last_tick_seconds is not None for s in states)


def test_a_rule_without_a_state_row_gets_one_and_is_evaluated(timeline):
    _, second = _idle_rules(2, 3)
    RuleState.objects.filter(rule=second).delete()
    _people(timeline, 2)
    report = timeline.tick(T0 + 10 * M)
    # Its first evaluation looks forward from now, like any rule's (history is the backtest's).
    assert [(r.rule, r.enrolled) for r in report.rules] == [("idle-2m", 2), ("idle-3m", 0)]
    assert RuleState.objects.get(rule=second).checked_until == T0 + 10 * M


def test_a_failing_rule_leaves_the_rules_before_it_committed_once(timeline, monkeypatch):
    rules = _idle_rules(2, 3, 4)
    _people(timeline, 4)
    enroll = evaluate._enroll
    calls = []

    def failing_for_the_second(rule, *args, **kwargs):
        calls.append(rule.slug)
        if rule.slug == "idle-3m":
            raise RuntimeError("boom")
        return enroll(rule, *args, **kwargs)

    monkeypatch.setattr(evaluate, "_enroll", failing_for_the_second)
    with pytest.raises(RuntimeError, match="boom"):
        timeline.tick(T0 + 10 * M)
    # Together first (rolled back at the second rule), then rule by rule.
    assert calls == ["idle-2m", "idle-3m", "idle-2m", "idle-3m"]
    assert Enrollment.objects.filter(rule=rules[0]).count() == 4
    assert Message.objects.filter(rule=rules[0]).count() == 4
    assert DecisionLog.objects.filter(rule=rules[0], outcome="enrolled").count() == 4
    assert not Enrollment.objects.exclude(rule=rules[0]).exists()
    assert not DecisionLog.objects.exclude(rule=rules[0]).exists()
    watermarks = dict(RuleState.objects.values_list("rule__slug", "checked_until"))
    assert watermarks["idle-2m"] == T0 + 10 * M
    assert watermarks["idle-3m"] == watermarks["idle-4m"] == T0 - M

    # Mended, the next tick goes on from each rule's own watermark: nobody twice.
    monkeypatch.setattr(evaluate, "_enroll", enroll)
    report = timeline.tick(T0 + 11 * M)
    assert [(r.rule, r.enrolled) for r in report.rules] == [
        ("idle-2m", 0),
        ("idle-3m", 4),
        ("idle-4m", 4),
    ]
    assert Enrollment.objects.count() == 12


def test_a_dry_run_writes_nothing(timeline):
    _idle_rules(2, 3)
    _people(timeline, 2)
    report = timeline.tick(T0 + 10 * M, dry_run=True)
    assert [r.enrolled for r in report.rules] == [2, 2]
    assert not Enrollment.objects.exists() and not DecisionLog.objects.exists()
    assert set(RuleState.objects.values_list("checked_until", flat=True)) == {T0 - M}
