"""A growth marketer sets up an experiment from a rule in a real browser (htmx on), fixes an error,
starts it and finds it running in the list."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group

from onboarding.models import OnboardingFlow, Step
from tests.browser.conftest import login
from tests.browser.helpers import screenshot
from tests.browser.helpers import wait as wait_for
from triggers.models import AuditLog, Experiment
from triggers.services.rules import rule_save
from triggers.services.templates import template_save

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def rule(db) -> None:
    flow = OnboardingFlow.objects.create(slug="activation", name="Activation")
    for position, (name, event) in enumerate(
        [("Signed up", "Signed Up"), ("Verified", "Email Verified"), ("Profile", "Profile Done")],
        start=1,
    ):
        Step.objects.create(flow=flow, position=position, name=name, event_name=event)
    template_save(slug="nudge", channel="in_app", subject="", body="Need a hand?")
    template_save(slug="reminder", channel="email", subject="Finish", body="Hi")
    rule_save(
        slug="profile-stalled",
        name="Profile stalled",
        definition={
            "trigger": {"kind": "inactive_in_flow", "flow": "activation", "step": 3, "minutes": 5},
            "follow_ups": [{"channel": "in_app", "template": "nudge", "delay": "0m"}],
        },
        status="active",
    )


def test_set_up_start_and_see_it_running(browser, live_server, alice, rule):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select

    alice.groups.add(Group.objects.get(name="experiment owner"))  # growth defines, owner starts
    wait = wait_for(browser)
    login(browser, live_server, "alice", "pw-alice")
    browser.get(f"{live_server.url}/rules/profile-stalled/")
    browser.find_element(By.LINK_TEXT, "Test its follow-ups").click()
    wait.until(ec.presence_of_element_located((By.ID, "experiment-form")))

    slug = browser.find_element(By.NAME, "slug")
    slug.clear()
    slug.send_keys("reminder-vs-holdout")
    # The flow comes from the rule's trigger; the calculator answers with a typed baseline.
    browser.find_element(By.NAME, "baseline").send_keys("20")
    effect = browser.find_element(By.NAME, "minimum_effect")
    effect.clear()
    effect.send_keys("5")
    browser.find_element(By.NAME, "planned_users_per_arm").click()  # change fires on blur
    wait.until(ec.text_to_be_present_in_element((By.ID, "experiment-plan"), "Users needed"))
    assert "No recent traffic" in browser.find_element(By.ID, "experiment-plan").text

    # A third arm through an htmx swap of the rows (it goes before the holdout).
    browser.find_element(By.CSS_SELECTOR, "#arms button[value=add]").click()
    wait.until(ec.presence_of_element_located((By.NAME, "arms-2-name")))
    assert browser.find_element(By.NAME, "arms-1-name").get_attribute("value") == "variant-3"
    # Its own follow-up, as a row like the rule editor's: channel, template (of that channel), after.
    browser.find_element(By.CSS_SELECTOR, "#arms button[value='arms-1-follow_ups:add']").click()
    wait.until(ec.presence_of_element_located((By.NAME, "arms-1-follow_ups-0-channel")))
    Select(browser.find_element(By.NAME, "arms-1-follow_ups-0-channel")).select_by_value("in_app")
    wait.until(
        lambda d: (
            [
                o.get_attribute("value")
                for o in Select(d.find_element(By.NAME, "arms-1-follow_ups-0-template")).options
            ]
            == ["", "nudge"]
        )
    )
    Select(browser.find_element(By.NAME, "arms-1-follow_ups-0-channel")).select_by_value("email")
    wait.until(
        ec.presence_of_element_located(
            (By.CSS_SELECTOR, "select[name='arms-1-follow_ups-0-template'] option[value=reminder]")
        )
    )
    Select(browser.find_element(By.NAME, "arms-1-follow_ups-0-template")).select_by_value(
        "reminder"
    )
    browser.find_element(By.NAME, "arms-1-follow_ups-0-delay").send_keys("three days")
    weight = browser.find_element(By.NAME, "arms-2-weight")
    weight.clear()
    weight.send_keys("0")

    browser.find_element(By.CSS_SELECTOR, ".form-actions button[value=start]").click()
    weight_error = wait.until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "#field-arms-2-weight .field-error"))
    )
    assert "positive integer" in weight_error.text
    delay_error = browser.find_element(
        By.CSS_SELECTOR, "#field-arms-1-follow_ups-0-delay .field-error"
    )
    assert delay_error.text  # next to the offending row's field
    assert not browser.find_elements(
        By.CSS_SELECTOR, "#field-arms-1-follow_ups-0-template .field-error"
    )
    assert not Experiment.objects.exists()
    screenshot(browser, "experiment-form")

    delay = browser.find_element(By.NAME, "arms-1-follow_ups-0-delay")
    delay.clear()
    delay.send_keys("3d")
    weight = browser.find_element(By.NAME, "arms-2-weight")
    weight.clear()
    weight.send_keys("20")
    browser.find_element(By.CSS_SELECTOR, ".form-actions button[value=start]").click()
    wait.until(ec.presence_of_element_located((By.ID, "verdict")))
    assert "No verdict" in browser.find_element(By.ID, "verdict").text

    browser.find_element(By.CSS_SELECTOR, "nav a[href='/rules/experiments/']").click()
    row = wait.until(
        ec.presence_of_element_located(
            (By.CSS_SELECTOR, "tr[data-experiment='reminder-vs-holdout']")
        )
    )
    assert "Running" in row.text
    experiment = Experiment.objects.get(slug="reminder-vs-holdout")
    assert experiment.status == "running"
    assert [(v.name, v.weight, v.holdout) for v in experiment.variants.all()] == [
        ("treatment", 50, False),
        ("variant-3", 50, False),
        ("holdout", 20, True),
    ]
    assert experiment.variants.get(name="variant-3").follow_ups == [
        {"channel": "email", "template": "reminder", "delay": "3d"}
    ]
    assert AuditLog.objects.filter(object_type="triggers.experiment", actor=alice).count() == 2
