"""The Settings page's policy (triggers/workspace.py) is what delivery and the backtest apply:
the environment gives the first values, a saved row wins from then on."""

from __future__ import annotations

from datetime import timedelta

import pytest

from triggers import workspace
from triggers.delivery.pipeline import deliver_due
from triggers.models import AuditLog, Message

from .conftest import T0, make_rule

pytestmark = pytest.mark.usefixtures("flow", "templates")
M = timedelta(minutes=1)


def rule(slug, priority=0):
    return make_rule(
        slug,
        {
            "trigger": {"kind": "event", "event": "Trial Ending"},
            "follow_ups": [{"channel": "in_app", "template": "nudge", "delay": "0s"}],
        },
        priority=priority,
    )


def save(actor=None, **changes):
    values = workspace.policy().values() | changes
    return workspace.save_policy(**values, actor=actor)


def test_without_a_saved_row_the_environment_decides(settings, db):
    settings.ONRAMP_GLOBAL_CAP_MAX = 3
    settings.ONRAMP_QUIET_HOURS = "22:00-07:00"
    policy = workspace.policy()
    assert (policy.global_cap_max, policy.quiet_hours, policy.stored) == (3, "22:00-07:00", False)


def test_a_saved_global_cap_wins_over_the_environment(api, timeline, settings, alice):
    settings.ONRAMP_GLOBAL_CAP_MAX = 5  # would let both through
    save(actor=alice, global_cap_max=1)
    rule("first", priority=2)
    rule("second", priority=1)
    timeline.send(T0, "u1", "Trial Ending")
    timeline.tick(T0 + M)

    report = deliver_due(now=T0 + M)

    assert report.outcomes == {"sent": 1, "suppressed": 1}
    assert Message.objects.get(rule__slug="second").reason == "cap:global"
    entry = AuditLog.objects.get(object_type="workspace_settings")
    assert (entry.actor, entry.changes) == (alice, {"global_cap_max": [5, 1]})


def test_saved_default_quiet_hours_defer_a_follow_up(api, timeline):
    save(quiet_hours="08:30-10:00", default_timezone="UTC")  # T0 + 1 min is 09:01 UTC
    rule("only")
    timeline.send(T0, "u1", "Trial Ending")
    timeline.tick(T0 + M)

    report = deliver_due(now=T0 + M)

    assert report.outcomes == {"deferred": 1}
    message = Message.objects.get()
    assert message.due_at == T0.replace(hour=10, minute=0)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("global_cap_max", 0),
        ("global_cap_period_seconds", 10),
        ("quiet_hours", "late"),
        ("quiet_hours", "09:00-09:00"),
        ("default_timezone", "Mars/Olympus"),
    ],
)
def test_a_policy_the_engine_could_not_apply_is_refused_naming_the_field(db, field, value):
    with pytest.raises(workspace.PolicyError) as refused:
        save(**{field: value})
    assert refused.value.field == field
    assert not workspace.policy().stored
