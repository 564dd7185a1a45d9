"""Two processes ticking at once on PostgreSQL never enroll anyone twice."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.conftest import run_at_once
from triggers.models import Enrollment, Message

from .conftest import T0, make_rule

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.mark.usefixtures("flow", "templates")
def test_concurrent_ticks_enroll_each_person_once(timeline):
    make_rule(
        "idle",
        {
            "trigger": {"kind": "inactive_in_flow", "flow": "activation", "minutes": 5},
            "follow_ups": [{"channel": "in_app", "template": "nudge", "delay": "0s"}],
        },
    )
    for n in range(30):
        timeline.send(T0, f"u{n}", "Signed Up")
    from triggers.engine.evaluate import evaluate_rules

    errors = run_at_once(lambda _: evaluate_rules(now=T0 + timedelta(minutes=6)), 4)
    assert errors == []
    assert Enrollment.objects.count() == 30
    assert Message.objects.count() == 30
    assert Enrollment.objects.values("person").distinct().count() == 30


@pytest.mark.usefixtures("flow", "templates")
def test_a_rule_another_tick_holds_is_skipped_and_the_others_go_ahead(timeline):
    """One tick claims all its rules in one statement (SKIP LOCKED): a rule whose state row is
    held elsewhere (another tick, an activation backfill) is left to it, the others are
    evaluated, and the next tick takes the held one up from its own watermark."""
    import threading

    from django.db import connection, transaction

    from triggers.engine.evaluate import evaluate_rules
    from triggers.models import RuleState

    for minutes in (2, 3, 4):
        make_rule(
            f"idle-{minutes}m",
            {
                "trigger": {"kind": "inactive_in_flow", "flow": "activation", "minutes": minutes},
                "follow_ups": [{"channel": "in_app", "template": "nudge", "delay": "0s"}],
            },
        )
    for n in range(5):
        timeline.send(T0, f"u{n}", "Signed Up")
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        try:
            with transaction.atomic():
                RuleState.objects.select_for_update().get(rule__slug="idle-3m")
                held.set()
                release.wait(30)
        finally:
            connection.close()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(10)
        report = evaluate_rules(now=T0 + timedelta(minutes=10))
    finally:
        release.set()
        holder.join()
    assert report.skipped_locked == ["idle-3m"]
    assert sorted((r.rule, r.enrolled) for r in report.rules) == [("idle-2m", 5), ("idle-4m", 5)]
    report = evaluate_rules(now=T0 + timedelta(minutes=10, seconds=30))
    assert sorted((r.rule, r.enrolled) for r in report.rules) == [
        ("idle-2m", 0),
        ("idle-3m", 5),
        ("idle-4m", 0),
    ]
    assert Enrollment.objects.count() == 15
    assert Message.objects.count() == 15
