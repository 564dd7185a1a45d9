"""The operator's page in Chromium: an on-call member of staff (viewer role plus the operator
permission) follows the nav link and reads the backlog and its age, outcomes per channel over 24 h,
rules by tick time, the unknown send waiting for review and the worker's state, and the backlog
is the number ``/metrics`` reports."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from tests.browser.conftest import login
from tests.conftest import _user
from tests.triggers.conftest import Timeline, flow, make_rule, templates  # noqa: F401
from triggers.delivery.pipeline import deliver_message
from triggers.models import DecisionLog, Heartbeat, Message, ReviewItem

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("flow", "templates"),
]
M = timedelta(minutes=1)


@pytest.fixture
def olga(db):
    user = _user("olga", "viewer")
    user.user_permissions.add(Permission.objects.get(codename="view_operations"))
    return user


def metric(name: str) -> float:
    text = Client(REMOTE_ADDR="127.0.0.1").get("/metrics").content.decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    raise AssertionError(f"{name} missing")


def test_an_operator_reads_the_backlog_outcomes_ticks_and_review_items(
    browser, live_server, olga, api
) -> None:
    from selenium.webdriver.common.by import By

    now = timezone.now()
    make_rule(
        "trial",
        {
            "trigger": {"kind": "event", "event": "Trial Ending"},
            "follow_ups": [{"channel": "email", "template": "reminder", "delay": "0s"}],
        },
        active_from=now - 30 * M,
    )
    timeline = Timeline(api)
    for user in ("u1", "u2", "u3"):
        identify = {"type": "identify", "userId": user, "traits": {"email": f"{user}@example.com"}}
        response = api.post("/v1/identify", json.dumps(identify), content_type="application/json")
        assert response.status_code == 200
        timeline.send(now - 20 * M, user, "Trial Ending")
    timeline.tick(now - 10 * M)
    first, second, third = Message.objects.order_by("person__external_id")
    assert deliver_message(first.pk, now=now - 9 * M).sent == 1  # email: sent
    # A worker died mid-send: the third is unknown and waits for review; the second stays due.
    Message.objects.filter(pk=third.pk).update(status="unknown", reason="unknown_outcome")
    ReviewItem.objects.create(message=third, reason="unknown_outcome")
    DecisionLog.objects.create(
        at=now - 5 * M,
        person_id=third.person_id,
        rule_id=third.rule_id,
        message=third,
        outcome="unknown",
        reason="lease_expired",
    )
    Heartbeat.objects.create(name="worker", beat_at=timezone.now())
    assert Message.objects.get(pk=second.pk).status == "scheduled"

    login(browser, live_server, "olga", "pw-olga")
    browser.find_element(By.LINK_TEXT, "Operations").click()
    assert browser.current_url == f"{live_server.url}/operations/"
    assert "Please enter a correct username" not in browser.page_source

    def text(selector: str) -> str:
        return browser.find_element(By.CSS_SELECTOR, selector).text.strip()

    assert text('[data-metric="onramp_delivery_due"]') == "1"
    assert metric("onramp_delivery_due") == 1  # the page and /metrics agree
    oldest = int(re.match(r"(\d+)", text('[data-metric="onramp_delivery_oldest_due_seconds"]'))[1])
    assert 1200 <= oldest < 1500  # due when the event happened, twenty minutes ago
    assert abs(metric("onramp_delivery_oldest_due_seconds") - oldest) < 60
    assert text('[data-metric="unknown_24h"]') == "1"
    assert text('[data-metric="onramp_review_queue"]') == "1"
    assert metric("onramp_review_queue") == 1

    email = '#channels tr[data-channel="email"]'
    assert text(f'{email} td[data-outcome="sent"]') == "1"
    assert text(f'{email} td[data-outcome="unknown"]') == "1"
    assert text(f'{email} td[data-outcome="failed"]') == ""
    assert re.fullmatch(r"\d+\s?ms", text('#rule-ticks tr[data-rule="trial"] td.num'))
    row = text(f'#attention tr[data-message="{third.pk}"]')
    assert "unknown" in row and "trial" in row and "unknown_outcome" in row
    assert text('[data-state="worker"]').startswith("ok")
    assert text('[data-state="database"]') == "ok"
    assert text('[data-state="broker"]') == "ok"
    assert "u3@example.com" not in browser.page_source  # ids, never addresses


def test_the_page_needs_the_operator_permission(browser, live_server, vera) -> None:
    from selenium.webdriver.common.by import By

    login(browser, live_server, "vera", "pw-vera")
    assert not browser.find_elements(By.LINK_TEXT, "Operations")
    browser.get(f"{live_server.url}/operations/")
    assert "Operations" not in browser.title
    assert Client().get("/operations/").status_code == 302  # anonymous: to the login page
