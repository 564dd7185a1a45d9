"""Issue 15 item 2 end to end in headless Chromium, on the demo data: a growth marketer builds a
new idle rule, reads which caps apply and what they would have suppressed in the last 14 days,
reads what activation will do, and activates it with "also enroll people who are idle right now".

The estimate is a queued backtest: the test runs the queued run as the worker would
(``backtest_execute``), and the panel, polling, shows the answer. With
``ONRAMP_SAVE_SCREENSHOTS=1`` it saves docs/img/journey-caps.png for the rules guide.
"""

from __future__ import annotations

import io
import re

import pytest
from django.core.management import call_command

from tests.browser.conftest import login, wait_for
from tests.browser.helpers import hx_settled, screenshot, wait
from triggers.models import BacktestRun, DecisionLog, Enrollment, Rule
from triggers.services.backtests import backtest_execute

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_new_idle_rule_shows_caps_estimate_and_enrolls_idle_people(browser, live_server, alice):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select

    call_command("seed_demo", people=200, seed=42, stdout=io.StringIO())

    login(browser, live_server, "alice", "pw-alice")
    browser.get(f"{live_server.url}/rules/new/")
    browser.find_element(By.NAME, "name").send_keys("Idle 5 minutes, second nudge")
    Select(browser.find_element(By.NAME, "flow")).select_by_value("activation")
    wait(browser).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "select[name=step] option[value='3']"))
    )
    Select(browser.find_element(By.NAME, "follow_ups-0-channel")).select_by_value("in_app")
    wait(browser).until(
        ec.presence_of_element_located(
            (By.CSS_SELECTOR, "select[name='follow_ups-0-template'] option[value='pause-nudge']")
        )
    )
    Select(browser.find_element(By.NAME, "follow_ups-0-template")).select_by_value("pause-nudge")
    # Every change refreshes the panel after a 500 ms pause (dropping an estimate made before it):
    # the last change shows in the panel, so once it does, no refresh is pending.
    delay = browser.find_element(By.NAME, "follow_ups-0-delay")
    delay.clear()
    delay.send_keys("1m", Keys.TAB)
    wait(browser).until(
        ec.text_to_be_present_in_element(
            (By.ID, "rule-preview"), "the first one is due 1m after detection"
        )
    )
    wait(browser).until(hx_settled)

    # Which caps apply, and what activation does, in the live panel.
    caps = browser.find_element(By.ID, "rule-caps").text
    assert "at most 2 follow-ups per 7 days per person, across rules and channels" in caps
    assert "This rule's cap: none." in caps
    on_activation = browser.find_element(By.CSS_SELECTOR, "[data-testid=on-activation]").text
    assert "Nobody counted here is enrolled for what already happened" in on_activation
    assert "only people whose idle mark passes after you activate it" in on_activation

    # The estimate: a backtest of the form over the last 14 days, queued and polled.
    browser.find_element(By.XPATH, "//button[starts-with(normalize-space(), 'Estimate')]").click()
    run = wait_for(lambda: BacktestRun.objects.filter(rule=None).first())
    assert BacktestRun.objects.filter(rule=None).count() == 1
    assert (run.until - run.since).days == 14
    backtest_execute(run.pk)
    estimate = wait(browser).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "[data-testid=caps-estimate]"))
    )
    match = re.search(r"Caps would have suppressed (\d+) of (\d+) follow-ups", estimate.text)
    assert match, estimate.text
    suppressed, scheduled = int(match.group(1)), int(match.group(2))
    report = BacktestRun.objects.get(pk=run.pk).result
    assert scheduled == report["scheduled"] > 0
    assert suppressed == report["outcomes"].get("capped:global", 0) > 0
    # The demo's two pause rules already message these people.
    assert "Paused 2 minutes in onboarding" in estimate.text
    assert "Paused 3 minutes in onboarding" in estimate.text
    assert "already message these people" in estimate.text

    # Off by default; ticked, the count of people idle now for at most 24 h is shown.
    backfill = browser.find_element(By.ID, "id_backfill")
    assert not backfill.is_selected()
    backfill.click()
    hours = browser.find_element(By.ID, "id_backfill_hours")
    hours.clear()
    hours.send_keys("48", Keys.TAB)  # leaving the field fires "change"
    wait(browser).until(
        ec.text_to_be_present_in_element(
            (By.CSS_SELECTOR, "[data-testid=backfill-count]"), "idle now for at most 48 h"
        )
    )
    wait(browser).until(hx_settled)
    assert browser.find_element(By.ID, "id_backfill").is_selected()
    count_text = browser.find_element(By.CSS_SELECTOR, "[data-testid=backfill-count]").text
    shown = int(re.match(r"(\d+) (?:person is|people are) idle now", count_text)[1])
    assert shown > 0
    # The option recounts on its own: the estimate above is still there.
    assert browser.find_elements(By.CSS_SELECTOR, "[data-testid=caps-estimate]")
    browser.set_window_size(1400, 1300)
    browser.execute_script(
        "document.querySelector('[data-testid=on-activation]').scrollIntoView({block: 'start'})"
    )
    screenshot(browser, "caps")

    browser.find_element(By.CSS_SELECTOR, ".form-actions button[value=activate]").click()
    wait(browser).until(ec.url_to_be(f"{live_server.url}/rules/idle-5-minutes-second-nudge/"))
    flash = browser.find_element(By.CSS_SELECTOR, ".messages").text
    enrolled = int(
        re.search(
            r"Also enrolled (\d+) (?:person|people) idle right now \(idle at most 48 h\)", flash
        )[1]
    )
    rule = Rule.objects.get(slug="idle-5-minutes-second-nudge")
    assert rule.status == "active"
    assert enrolled == shown == Enrollment.objects.filter(rule=rule).count()
    assert (
        DecisionLog.objects.filter(
            rule=rule, outcome="enrolled", reason="activation_backfill"
        ).count()
        == enrolled
    )
