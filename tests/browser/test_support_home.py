"""Support staff in headless Chromium: a login lands on the support home, whose search finds people;
and the beat's schedule in the admin works under the Content-Security-Policy."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from tests.browser.conftest import login, wait_for
from tests.browser.helpers import screenshot, wait
from tests.conftest import basic_auth
from tests.triggers.conftest import Timeline, make_rule
from triggers.delivery.pipeline import deliver_due
from triggers.models import ReviewItem
from triggers.services.templates import template_save

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
M = timedelta(minutes=1)


def by():
    from selenium.webdriver.common.by import By

    return By


def ec():
    from selenium.webdriver.support import expected_conditions

    return expected_conditions


@pytest.fixture
def trouble(write_key) -> None:
    """In the last hours: three follow-ups that could not render (three review items) and two
    payloads the tracking API rejected."""
    api = Client(HTTP_AUTHORIZATION=basic_auth(write_key))
    template_save(slug="strict", channel="in_app", subject="", body="Hello {{ company }}")
    make_rule(
        "trial",
        {
            "trigger": {"kind": "event", "event": "Trial Ending"},
            "follow_ups": [{"channel": "in_app", "template": "strict", "delay": "0s"}],
        },
        active_from=timezone.now() - timedelta(hours=6),
    )
    timeline = Timeline(api)
    start = timezone.now() - timedelta(hours=3)
    for index, user in enumerate(["ada@example.com", "grace-42", "linus-7"]):
        at = start + index * 20 * M
        timeline.send(at, user, "Trial Ending")
        timeline.tick(at + M)
        deliver_due(now=at + M)
    bad = [
        {"type": "track", "userId": "u9", "messageId": "bad-1"},
        {"type": "track", "userId": "u9", "event": "Paid", "timestamp": "yesterday"},
    ]
    api.post("/v1/batch", json.dumps({"batch": bad}), content_type="application/json")
    assert ReviewItem.objects.count() == 3


def test_support_logs_in_to_the_support_home_and_finds_a_person(browser, live_server, bob, trouble):
    By, EC = by(), ec()
    login(browser, live_server, "bob", "pw-bob")
    wait(browser).until(EC.url_to_be(f"{live_server.url}/support/"))
    assert "You don't have access" not in browser.page_source
    queue = browser.find_element(By.ID, "review-queue")
    assert queue.find_element(By.CSS_SELECTOR, ".stat-value").text == "3"
    failed = browser.find_element(By.ID, "failed-messages")
    assert failed.find_element(By.CSS_SELECTOR, ".stat-value").text == "3"
    rejected = browser.find_element(By.ID, "rejected-events")
    assert rejected.find_element(By.CSS_SELECTOR, ".stat-value").text == "2"
    rows = browser.find_elements(By.CSS_SELECTOR, "#recent-failures tbody tr")
    assert [row.find_element(By.CSS_SELECTOR, "td:nth-child(2)").text for row in rows] == [
        "linus-7",
        "grace-42",
        "ada@example.com",
    ]
    screenshot(browser, "support-home")

    search = browser.find_element(By.ID, "support-search")
    assert search == browser.switch_to.active_element  # focused, ready to type
    search.send_keys("GRACE")
    browser.find_element(By.CSS_SELECTOR, "form[role=search] button[type=submit]").click()
    wait(browser).until(EC.url_contains("/people/?q=GRACE"))
    found = wait(browser).until(
        EC.presence_of_element_located((By.CSS_SELECTOR, "#people-results tbody tr"))
    )
    assert "grace-42" in found.text
    assert len(browser.find_elements(By.CSS_SELECTOR, "#people-results tbody tr")) == 1


def test_the_periodic_task_form_works_under_the_csp(browser, live_server, root):
    By, EC = by(), ec()
    from selenium.webdriver.support.ui import Select

    hourly = CrontabSchedule.objects.create(minute="0", hour="*")
    nightly = CrontabSchedule.objects.create(minute="30", hour="2")
    task = PeriodicTask.objects.create(name="probe", task="probe", crontab=hourly)

    browser.get(f"{live_server.url}/admin/login/")
    browser.find_element(By.NAME, "username").send_keys("root")
    browser.find_element(By.NAME, "password").send_keys("pw-root")
    browser.find_element(By.CSS_SELECTOR, "form [type=submit]").click()
    wait(browser).until(EC.url_to_be(f"{live_server.url}/admin/"))
    browser.get_log("browser")  # start from a clean console
    browser.get(f"{live_server.url}/admin/django_celery_beat/periodictask/{task.pk}/change/")
    words = wait(browser).until(
        EC.presence_of_element_located((By.CSS_SELECTOR, ".crontab-in-words"))
    )
    assert words.text == f"Translation: {hourly.human_readable}"
    # The read-only duplicate of that sentence is hidden, as the package intends.
    assert not browser.find_element(By.CSS_SELECTOR, ".field-crontab_translation").is_displayed()
    Select(browser.find_element(By.ID, "id_crontab")).select_by_value(str(nightly.pk))
    wait_for(lambda: words.text == f"Translation: {nightly.human_readable}")
    refused = [
        entry["message"]
        for entry in browser.get_log("browser")
        if "Content Security Policy" in entry["message"] or entry["level"] == "SEVERE"
    ]
    assert refused == []
