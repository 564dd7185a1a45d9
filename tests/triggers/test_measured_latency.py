"""The latency a rule really had, read from its ledger (triggers/services/latency.py), and the
rule editor's sentence that shows it (DESIGN §5: "the editor shows the figure")."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import time_machine

from tests.triggers.conftest import T0, make_rule
from triggers.delivery.pipeline import deliver_due
from triggers.models import DecisionLog, Message
from triggers.services.activation import BACKFILL_REASON
from triggers.services.latency import Spread, measured_latency

pytestmark = pytest.mark.django_db

IDLE = {
    "trigger": {"kind": "inactive_in_flow", "flow": "activation", "minutes": 5},
    "follow_ups": [
        {"channel": "in_app", "template": "nudge", "delay": "0m"},
        {"channel": "in_app", "template": "nudge", "delay": "10m"},
    ],
    "exit_when": "never",
}


def tick(timeline, at):
    with time_machine.travel(at, tick=False):
        return timeline.tick(at)


def deliver(at):
    with time_machine.travel(at, tick=False):
        return deliver_due(now=at)


@pytest.fixture
def rule(flow, templates, timeline):
    """ann's idle mark at T0+5m is seen 20 s late, ben's at T0+6m 40 s late; ann's "0m"
    follow-up goes out 10 s after the tick wrote it, her "10m" one 3 s after its due time."""
    rule = make_rule("idle", IDLE)
    timeline.send(T0, "ann", "Signed Up")
    timeline.send(T0 + timedelta(minutes=1), "ben", "Signed Up")
    assert tick(timeline, T0 + timedelta(minutes=5, seconds=20)).enrolled == 1
    deliver(T0 + timedelta(minutes=5, seconds=30))
    assert tick(timeline, T0 + timedelta(minutes=6, seconds=40)).enrolled == 1
    deliver(T0 + timedelta(minutes=15, seconds=3))
    return rule


def test_detection_is_the_enrolling_tick_minus_the_moment(rule):
    measured = measured_latency(rule, now=T0 + timedelta(hours=1))
    assert measured.detection == Spread(n=2, p50=20.0, p95=40.0)


def test_delivery_counts_from_due_or_from_creation_when_written_late(rule):
    """ann's "0m" was due at T0+5m but written at +5m20s: 10 s, not 30 s. ben's "0m" (due at his
    mark, written at +6m40s) went out at +15m03s: 503 s. ann's "10m" was due at +15m: 3 s."""
    measured = measured_latency(rule, now=T0 + timedelta(hours=1))
    assert measured.delivery == Spread(n=3, p50=10.0, p95=503.0)


def test_backfills_retries_and_old_rows_are_left_out(rule):
    DecisionLog.objects.filter(rule=rule, outcome="enrolled", person__external_id="ben").update(
        reason=BACKFILL_REASON
    )
    Message.objects.filter(rule=rule, person__external_id="ben").update(attempts=2)
    measured = measured_latency(rule, now=T0 + timedelta(hours=1))
    assert measured.detection == Spread(n=1, p50=20.0, p95=20.0)
    assert measured.delivery == Spread(n=2, p50=3.0, p95=10.0)
    later = measured_latency(rule, now=T0 + timedelta(days=8))
    assert later.detection.n == later.delivery.n == 0


def test_percentiles_are_nearest_rank():
    assert Spread.of([]) == Spread(0, None, None)
    assert Spread.of([5.0]) == Spread(1, 5.0, 5.0)
    values = [float(v) for v in range(1, 101)]
    assert Spread.of(values[::-1]) == Spread(100, 50.0, 95.0)


def test_the_editor_shows_the_measured_figure(client, alice, rule):
    client.force_login(alice)
    with time_machine.travel(T0 + timedelta(hours=1), tick=False):
        html = client.post(
            "/rules/preview/",
            {"kind": "inactive_in_flow", "flow": "activation", "minutes": "5", "rule": rule.slug},
            headers={"HX-Request": "true"},
        ).content.decode()
    found = re.search(r'data-testid="measured-latency">([^<]*)<', html)
    assert found, html
    assert found.group(1) == (
        "Measured over the last 7 days: detected 20 s after the moment at the median, 40 s at p95"
        " (2 enrollments); sent 10 s after due at the median, 8 min at p95 (3 follow-ups, first"
        " attempts)."
    )
