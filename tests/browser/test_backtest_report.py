"""The backtest report page in Chromium (DESIGN §4.6): the per-day chart is drawn by Plotly, the
people table pages over htmx. With ``ONRAMP_SAVE_SCREENSHOTS=1`` it saves
docs/img/journey-backtest-report.png for docs/guide-testing-rules.md."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from tests.browser.conftest import login
from tests.browser.helpers import screenshot, wait
from tests.browser.test_journeys import activation_flow, onboarding_batch, post_batch
from triggers.services.backtests import backtest_execute, backtest_start
from triggers.services.rules import rule_save
from triggers.services.templates import template_save

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_report_draws_the_chart_and_pages_the_people(browser, live_server, alice, api):
    from selenium.webdriver.common.by import By

    activation_flow()
    # Twelve sign-ups a day for six days, each event received when it happened (a backtest
    # replays events at their arrival).
    start = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
    for day in range(6):
        for n, message in enumerate(onboarding_batch(12, start + timedelta(days=day))):
            message["userId"] = f"{message['userId']}-d{day}"
            message["messageId"] = f"d{day}-{n}"
            with time_machine.travel(datetime.fromisoformat(message["timestamp"]), tick=False):
                post_batch(api, [message])
    template_save(slug="pause-nudge", channel="in_app", subject="", body="Need a hand?")
    template_save(
        slug="profile-reminder", channel="email", subject="Finish", body="Hi {{ first_name }}"
    )
    rule, _ = rule_save(
        slug="stalled-after-sign-up",
        name="Stalled after sign-up",
        definition={
            "trigger": {"kind": "inactive_in_flow", "flow": "activation", "minutes": 30},
            "follow_ups": [
                {"channel": "in_app", "template": "pause-nudge", "delay": "0s"},
                {"channel": "email", "template": "profile-reminder", "delay": "1d"},
            ],
        },
    )
    run = backtest_start(rule, start - timedelta(days=1), start + timedelta(days=7), alice)
    run = backtest_execute(run.pk)  # the worker's side
    assert run.result["entered"] > 50  # more than one page

    login(browser, live_server, "alice", "pw-alice")
    browser.get(f"{live_server.url}/rules/backtests/{run.pk}/report/")
    wait(browser).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#backtest-per-day .js-plotly-plot svg")
    )
    panels = browser.execute_script(
        "return document.querySelectorAll('#backtest-per-day .js-plotly-plot .cartesianlayer"
        " .subplot').length"
    )
    assert panels == 2  # email and in_app
    legend = browser.find_element(By.CSS_SELECTOR, "#backtest-per-day .legend").text
    assert "sent" in legend
    people = browser.find_element(By.ID, "backtest-people")
    assert "Page 1 of 2" in people.text and "pause-nudge" not in people.text
    assert "in_app: sent" in people.text
    browser.set_window_size(1400, 2000)  # the whole report in the guide's screenshot
    screenshot(browser, "backtest-report")

    browser.find_element(By.CSS_SELECTOR, "#backtest-people a[rel=next]").click()
    wait(browser).until(lambda d: "Page 2 of 2" in d.find_element(By.ID, "backtest-people").text)
    assert browser.current_url.endswith("?page=2")  # pushed: the page is shareable
