"""Two beats at once (research P7): every tick is sent twice, rule evaluation and delivery run
concurrently in the worker's two processes, and still every enrollment is unique and no message
is sent twice. The ticks' duplication is read from the two beats' logs."""

from __future__ import annotations

import re
import time

import pytest

from triggers.models import Enrollment, Message

from .harness import (
    DELIVER_TASK,
    EVALUATE_TASK,
    beat_sends,
    check_delivery,
    fast_schedules,
    open_messages,
    seed_people,
    seed_rule,
)

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PEOPLE = 100
RUN_SECONDS = 20
_SENT_AT = re.compile(r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d+: .*Sending due task .*\((\S+)\)")


def _tick_seconds(output: str, task: str) -> set[str]:
    return {second for second, name in _SENT_AT.findall(output) if name == task}


def test_two_beats_duplicate_ticks_but_not_sends(api, smtp, cluster):
    seed_rule()
    seed_people(api, PEOPLE)  # enrolled by the beats' evaluation ticks, not by the test
    fast_schedules(evaluate=True)

    worker = cluster.worker()
    beats = [cluster.beat(), cluster.beat()]
    live = [worker, *beats]
    started = time.monotonic()
    while time.monotonic() - started < RUN_SECONDS:
        cluster.wait_for(lambda: True, "", 1, live)  # fails early if a process died
        time.sleep(1)

    both = [
        _tick_seconds(beats[0].output(), task) & _tick_seconds(beats[1].output(), task)
        for task in (DELIVER_TASK, EVALUATE_TASK)
    ]
    assert len(both[0]) >= 5 and len(both[1]) >= 5, cluster.report()

    cluster.wait_for(
        lambda: Message.objects.count() == 2 * PEOPLE and open_messages() == 0,
        "enrolment and delivery",
        120,
        live,
    )
    outcome = check_delivery(smtp)
    assert Enrollment.objects.count() == PEOPLE
    assert outcome.unknown == 0 and outcome.statuses == {"sent": 2 * PEOPLE}, outcome.summary()
    ticks = [
        len(beat_sends(beat, task)) for beat in beats for task in (DELIVER_TASK, EVALUATE_TASK)
    ]
    print(
        f"\ntwo beats: {RUN_SECONDS}s, ticks sent (deliver, evaluate) per beat {ticks}, "
        f"{len(both[0])}/{len(both[1])} seconds with both beats ticking; "
        f"{Enrollment.objects.count()} enrollments; {outcome.summary()}"
    )
