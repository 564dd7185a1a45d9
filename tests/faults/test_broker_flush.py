"""The broker is a doorbell (DESIGN §1): FLUSHDB of the Redis broker database while follow-ups
are due loses nothing and sends nothing twice; beat and the worker go on (research P6).

Only the broker's own database number is flushed, never the server (colleagues share it)."""

from __future__ import annotations

import time

import pytest
import redis
from django.conf import settings
from django.utils import timezone

from tests.requirements import missing
from triggers.engine.evaluate import evaluate_rules
from triggers.models import Message

from .harness import (
    beat_sends,
    check_delivery,
    fast_schedules,
    open_messages,
    seed_people,
    seed_rule,
    worker_ready,
)

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PEOPLE = 150  # before the flush: 300 messages
LATER = 50  # enrolled after the flush: 100 more, delivered only if ticks flow again


@pytest.fixture
def broker() -> redis.Redis:
    url = settings.CELERY_BROKER_URL
    if not url.startswith("redis"):
        missing("The Redis broker", "set CELERY_BROKER_URL=redis://…/<your db number>")
    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as error:
        missing("The Redis broker", f"cannot reach {url}: {error}")
    return client


def test_flushing_the_broker_loses_and_duplicates_nothing(api, smtp, broker, cluster):
    seed_rule()
    seed_people(api, PEOPLE)
    evaluate_rules(now=timezone.now())
    fast_schedules(evaluate=False)

    worker, beat = cluster.worker(), cluster.beat()
    live = [worker, beat]
    cluster.wait_for(lambda: Message.objects.filter(status="sent").count() >= 40, "sends", 90, live)
    in_flight = open_messages()
    keys_before = broker.dbsize()
    broker.flushdb()
    flushed_at = time.monotonic()
    ticks_before = len(beat_sends(beat))

    seed_people(api, LATER, prefix="late")
    evaluate_rules(now=timezone.now())
    assert Message.objects.count() == 2 * (PEOPLE + LATER)

    def a_tick_after_the_flush_ran() -> bool:
        return any(
            f"[{task_id}] succeeded" in worker.output()
            for task_id in beat_sends(beat)[ticks_before:]
        )

    recovered = cluster.wait_for(a_tick_after_the_flush_ran, "tick after the flush", 90, live)
    cluster.wait_for(lambda: open_messages() == 0, "drain after the flush", 120, live)
    drained = time.monotonic() - flushed_at
    outcome = check_delivery(smtp)
    assert outcome.unknown == 0, outcome.summary()  # nobody crashed: nothing may be unknown
    assert worker_ready(worker) and worker.alive() and beat.alive()
    print(
        f"\nbroker flush: FLUSHDB of {keys_before} keys with {in_flight} messages open; first "
        f"tick after it ran in {recovered:.1f}s, drained in {drained:.1f}s; {outcome.summary()}"
    )
