"""Frequency caps hold with three dispatchers racing on PostgreSQL."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection

from triggers.models import Message

from .conftest import T0, make_rule

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.mark.usefixtures("flow", "templates")
def test_three_dispatchers_never_exceed_the_global_cap(timeline, settings):
    settings.ONRAMP_GLOBAL_CAP_MAX = 2
    for n in range(6):  # six rules all want the same people at the same moment
        make_rule(
            f"rule-{n}",
            {
                "trigger": {"kind": "event", "event": "Trial Ending"},
                "follow_ups": [{"channel": "in_app", "template": "nudge", "delay": "0s"}],
            },
            priority=n,
        )
    people = [f"u{n}" for n in range(8)]
    for user in people:
        timeline.send(T0, user, "Trial Ending")
    timeline.tick(T0 + timedelta(minutes=1))
    assert Message.objects.count() == 6 * len(people)

    barrier = threading.Barrier(3)
    errors: list[BaseException] = []

    def dispatch() -> None:
        from triggers.delivery.pipeline import deliver_due

        try:
            barrier.wait(timeout=10)
            deliver_due(now=T0 + timedelta(minutes=1))
        except BaseException as error:
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=dispatch) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    for user in people:
        sent = Message.objects.filter(person__external_id=user, status="sent")
        assert sent.count() == 2, user
        # Arbitration: the highest-priority rules won the two places.
        assert set(sent.values_list("rule__slug", flat=True)) == {"rule-5", "rule-4"}
    assert Message.objects.filter(status="suppressed", reason="cap:global").count() == 4 * len(
        people
    )
