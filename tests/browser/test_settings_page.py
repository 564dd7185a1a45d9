"""A growth marketer changes the delivery policy on the Settings page in headless Chromium: a
mistake is shown next to its field, the fix is saved, audited and listed under Changes."""

from __future__ import annotations

import pytest

from tests.browser.conftest import login
from tests.browser.helpers import screenshot, wait
from triggers import workspace
from triggers.models import AuditLog

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_growth_fixes_a_quiet_hours_mistake_and_saves_the_policy(browser, live_server, alice):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    login(browser, live_server, "alice", "pw-alice")
    browser.find_element(By.LINK_TEXT, "Settings").click()
    wait(browser).until(ec.presence_of_element_located((By.ID, "id_quiet_hours")))

    cap = browser.find_element(By.ID, "id_global_cap_max")
    cap.clear()
    cap.send_keys("3")
    quiet = browser.find_element(By.ID, "id_quiet_hours")
    quiet.send_keys("after dinner")
    browser.find_element(By.XPATH, "//button[normalize-space()='Save settings']").click()

    error = wait(browser).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "#field-quiet_hours .field-error"))
    )
    assert "such as 21:00-08:00" in error.text
    assert not workspace.policy().stored  # nothing saved

    quiet = browser.find_element(By.ID, "id_quiet_hours")
    quiet.clear()
    quiet.send_keys("21:00-08:00")
    browser.find_element(By.XPATH, "//button[normalize-space()='Save settings']").click()
    history = wait(browser).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "[data-testid=settings-history]"))
    )
    assert "alice" in history.text and "Global cap: 2 → 3" in history.text
    screenshot(browser, "settings")

    workspace.clear_cache()
    policy = workspace.policy()
    assert (policy.global_cap_max, policy.quiet_hours, policy.stored) == (3, "21:00-08:00", True)
    assert AuditLog.objects.filter(object_type="workspace_settings").count() == 1
