"""Two processes ticking at once on PostgreSQL never enroll anyone twice."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection

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
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def tick() -> None:
        from triggers.engine.evaluate import evaluate_rules

        try:
            barrier.wait(timeout=10)
            evaluate_rules(now=T0 + timedelta(minutes=6))
        except BaseException as error:
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=tick) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert Enrollment.objects.count() == 30
    assert Message.objects.count() == 30
    assert Enrollment.objects.values("person").distinct().count() == 30
