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
