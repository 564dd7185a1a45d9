"""From friction to an activated rule (issue 20, part 2), in headless Chromium: the funnel names the
friction step, "Act on this step" opens the rule editor with the matching trigger, the estimate
says whom it reaches per week, what caps let through and how many progressed anyway, and the rule
is activated."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.db.models import F

from onboarding.models import Event
from tests.browser.conftest import login, wait_for
from tests.browser.helpers import hx_settled, screenshot, wait
from tests.dashboard.test_funnel_explain import plant
from triggers.models import BacktestRun, Rule
from triggers.services.backtests import backtest_execute
from triggers.services.templates import template_save

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_from_the_friction_step_to_an_activated_rule(browser, live_server, alice, api):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select

    # Entrants 9–12 days ago: inside the estimate's 14 days, and their 7 days to progress are over.
    plant(api, datetime.now(UTC) - timedelta(days=6))
    # As if each event had reached us as it happened (the batch sent them all now): otherwise the
    # backtest rightly skips every occurrence as late data (DESIGN §4.1).
    Event.objects.update(received_at=F("timestamp"))
    template_save(
        slug="finish-profile",
        channel="email",
        subject="Finish your profile",
        body="Hi {{ first_name | default: 'there' }}",
    )
    login(browser, live_server, "alice", "pw-alice")
    browser.get(f"{live_server.url}/flows/activation/funnel/")
    act = wait(browser, 60).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "[data-testid=act-on-step]"))
    )
    # Those who pass take 25 min (median) from Email verified to Profile completed.
    assert "did Email verified and not Profile completed within 50 min, twice that" in act.text
    act.find_element(By.LINK_TEXT, "Act on this step").click()

    wait(browser).until(ec.url_contains("/rules/new/"))
    assert Select(browser.find_element(By.NAME, "kind")).first_selected_option.get_attribute(
        "value"
    ) == ("step_abandoned")
    assert browser.find_element(By.NAME, "within").get_attribute("value") == "50m"
    assert Select(browser.find_element(By.NAME, "did")).first_selected_option.get_attribute(
        "value"
    ) == ("2")
    assert browser.find_element(By.NAME, "slug").get_attribute("value") == (
        "stalled-before-profile-completed"
    )
    panel = browser.find_element(By.ID, "rule-preview")
    Select(browser.find_element(By.NAME, "follow_ups-0-template")).select_by_value("finish-profile")
    # The live panel refreshes 0.5 s after a change (and would drop an estimate asked before).
    wait(browser).until(ec.staleness_of(panel))
    wait(browser).until(hx_settled)

    browser.find_element(By.XPATH, "//button[starts-with(normalize-space(), 'Estimate')]").click()
    run = wait_for(lambda: BacktestRun.objects.filter(rule=None).first())
    backtest_execute(run.pk)  # what the worker does with the queued task
    wait(browser, 30).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "[data-testid=caps-estimate]"))
    )
    report = BacktestRun.objects.get(pk=run.pk).result
    reach = browser.find_element(By.CSS_SELECTOR, "[data-testid=estimate-reach]").text
    people = report["people"]
    assert people > 300  # the settled people who stopped before the profile step
    assert f"about {round(people * 7 / 14)} people a week ({people} in the last 14 days)" in reach
    assert f"let {report['scheduled']} of {report['scheduled']} follow-ups through" in reach
    anyway = browser.find_element(By.CSS_SELECTOR, "[data-testid=estimate-anyway]").text
    # Nobody who stopped in the planted data ever completes the profile: 0 of those whose 7 days
    # are over, with an interval from 0; the 200 who entered 6 days ago are too recent to tell.
    anyway_report = report["progressed_anyway"]
    assert anyway_report["window_open"] == 200
    judged = report["entered"] - 200
    assert re.search(rf"0 of {judged} \(0%, 95 % interval 0%–[\d.]+%\)", anyway), anyway
    assert "200 more are too recent to tell" in anyway
    browser.execute_script(
        "document.querySelector('[data-testid=caps-estimate]').scrollIntoView({block: 'center'})"
    )
    screenshot(browser, "act-on-step")

    browser.find_element(By.CSS_SELECTOR, ".form-actions button[value=activate]").click()
    wait(browser).until(ec.url_to_be(f"{live_server.url}/rules/stalled-before-profile-completed/"))
    rule = Rule.objects.get(slug="stalled-before-profile-completed")
    assert rule.status == "active"
    assert rule.current_version.definition["trigger"] == {
        "kind": "step_abandoned",
        "flow": "activation",
        "did": 2,
        "missing": 3,
        "within": "50m",
    }
