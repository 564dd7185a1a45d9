"""A growth marketer builds a rule in the editor with a real browser (htmx on)."""

from __future__ import annotations

import pytest

from onboarding.models import OnboardingFlow, Step
from tests.browser.conftest import login
from tests.browser.helpers import wait as wait_for
from triggers.models import Rule
from triggers.services.templates import template_save

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def catalog(db) -> None:
    flow = OnboardingFlow.objects.create(slug="activation", name="Activation")
    for position, (name, event) in enumerate(
        [("Signed up", "Signed Up"), ("Verified", "Email Verified"), ("Profile", "Profile Done")],
        start=1,
    ):
        Step.objects.create(flow=flow, position=position, name=name, event_name=event)
    template_save(slug="nudge", channel="in_app", subject="", body="Need a hand?")
    template_save(slug="reminder", channel="email", subject="Finish", body="Hi")


def test_create_a_rule_fix_an_error_and_activate(browser, live_server, alice, catalog):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select

    wait = wait_for(browser)
    login(browser, live_server, "alice", "pw-alice")
    browser.get(f"{live_server.url}/rules/new/")
    browser.find_element(By.NAME, "name").send_keys("Stalled at profile")
    assert (
        browser.find_element(By.NAME, "slug").get_attribute("value") == "stalled-at-profile"
    )  # from the name

    # Choosing the kind swaps in that kind's fields (htmx), then the flow fills the steps.
    Select(browser.find_element(By.NAME, "kind")).select_by_value("repeated_event")
    wait.until(ec.presence_of_element_located((By.NAME, "times")))
    Select(browser.find_element(By.NAME, "kind")).select_by_value("inactive_in_flow")
    wait.until(ec.presence_of_element_located((By.NAME, "minutes")))
    Select(browser.find_element(By.NAME, "flow")).select_by_value("activation")
    wait.until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "select[name=step] option[value='3']"))
    )
    Select(browser.find_element(By.NAME, "step")).select_by_value("3")
    minutes = browser.find_element(By.NAME, "minutes")
    minutes.clear()
    minutes.send_keys("5")

    # The first follow-up: in-app; the channel change re-filters its templates.
    Select(browser.find_element(By.NAME, "follow_ups-0-channel")).select_by_value("in_app")
    wait.until(
        ec.presence_of_element_located(
            (By.CSS_SELECTOR, "select[name='follow_ups-0-template'] option[value='nudge']")
        )
    )
    Select(browser.find_element(By.NAME, "follow_ups-0-template")).select_by_value("nudge")

    # A second follow-up, added through an htmx swap of the rows.
    browser.find_element(By.CSS_SELECTOR, "#follow-ups button[value=add]").click()
    wait.until(ec.presence_of_element_located((By.NAME, "follow_ups-1-delay")))
    Select(browser.find_element(By.NAME, "follow_ups-1-channel")).select_by_value("email")
    wait.until(
        ec.presence_of_element_located(
            (By.CSS_SELECTOR, "select[name='follow_ups-1-template'] option[value='reminder']")
        )
    )
    Select(browser.find_element(By.NAME, "follow_ups-1-template")).select_by_value("reminder")
    browser.find_element(By.NAME, "follow_ups-1-delay").send_keys("3 days")

    # The live preview follows the form.
    wait.until(ec.text_to_be_present_in_element((By.ID, "rule-preview"), "Detected within 30 s"))

    browser.find_element(By.CSS_SELECTOR, ".form-actions button[value=activate]").click()
    error = wait.until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "#field-follow_ups-1-delay .field-error"))
    )
    assert "Must be a duration" in error.text
    assert not Rule.objects.exists()

    delay = browser.find_element(By.NAME, "follow_ups-1-delay")
    delay.clear()
    delay.send_keys("3d")
    browser.find_element(By.CSS_SELECTOR, ".form-actions button[value=activate]").click()
    wait.until(ec.url_to_be(f"{live_server.url}/rules/stalled-at-profile/"))

    browser.get(f"{live_server.url}/rules/")
    row = browser.find_element(By.CSS_SELECTOR, "tr[data-rule=stalled-at-profile]")
    assert "Active" in row.text
    assert "Idle 5 min at step 3 of Activation" in row.text
    rule = Rule.objects.get(slug="stalled-at-profile")
    assert rule.status == "active"
    assert [f["delay"] for f in rule.current_version.definition["follow_ups"]] == ["0s", "3d"]
