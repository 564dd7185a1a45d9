"""The Celery tasks are thin, but what they chain is behaviour: a tick that enrolls people hands
their due follow-ups to delivery at once instead of waiting for the next delivery pass."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.core import mail

from config.celery import app
from triggers.models import Message
from triggers.tasks import evaluate_rules_task

from .conftest import T0
from .test_delivery import event_rule, identify

pytestmark = pytest.mark.usefixtures("flow", "templates")
M = timedelta(minutes=1)


@pytest.fixture
def eager():
    """Tasks run in this process when queued (``.delay()``), so the chain is observable here."""
    app.conf.task_always_eager = True
    try:
        yield
    finally:
        app.conf.task_always_eager = False


def test_a_tick_that_enrolls_someone_delivers_their_due_follow_up_right_away(api, timeline, eager):
    identify(api, "u1", email="ada@example.com", first_name="Ada")
    event_rule()
    timeline.send(T0, "u1", "Trial Ending")
    with time_machine.travel(T0 + M, tick=False):
        assert evaluate_rules_task() == 1
    assert [m.to for m in mail.outbox] == [["ada@example.com"]]
    assert Message.objects.get().status == "sent"
