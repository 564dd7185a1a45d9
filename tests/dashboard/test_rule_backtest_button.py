"""The rule editor's "test against the last 30 days" queues a backtest and shows its progress."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from tests.triggers.conftest import make_rule
from triggers.models import BacktestRun

pytestmark = pytest.mark.usefixtures("flow", "templates")


def test_button_queues_a_backtest_of_the_saved_rule(alice, django_capture_on_commit_callbacks):
    rule = make_rule(
        "idle",
        {
            "trigger": {"kind": "inactive_in_flow", "flow": "activation", "minutes": 5},
            "follow_ups": [{"channel": "in_app", "template": "nudge", "delay": "0s"}],
        },
    )
    client = Client()
    client.force_login(alice)
    page = client.get(reverse("triggers:rule_edit", args=[rule.slug]))
    assert b"Test against the last 30 days" in page.content
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("triggers:rule_backtest", args=[rule.slug]), headers={"HX-Request": "true"}
        )
    assert response.status_code == 200
    run = BacktestRun.objects.get()
    assert run.rule == rule and (run.until - run.since).days == 30
    assert f'id="backtest-{run.pk}"'.encode() in response.content
    status = client.get(reverse("backtests:status", args=[run.pk]))
    assert status.json()["status"] in ("queued", "running", "done")


def test_charlie_cannot_start_a_backtest(charlie):
    client = Client()
    client.force_login(charlie)
    assert client.post(reverse("triggers:rule_backtest", args=["whatever"])).status_code == 403
