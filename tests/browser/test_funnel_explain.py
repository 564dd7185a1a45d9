"""A growth marketer asks why people stop at the friction step, and turns the first signal into a
segment in one click (issue 20, part 1), in headless Chromium."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from onboarding.models import Segment
from tests.browser.conftest import login
from tests.browser.helpers import screenshot, wait
from tests.dashboard.test_funnel_explain import SETTLED, plant

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_the_friction_step_is_explained_and_a_signal_becomes_a_segment(
    browser, live_server, alice, api
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select

    plant(api, datetime.now(UTC))
    login(browser, live_server, "alice", "pw-alice")
    browser.get(f"{live_server.url}/flows/activation/funnel/")
    # The panel loads after the funnel, for the friction step (step 3: android users stop there).
    table = wait(browser, 60).until(ec.presence_of_element_located((By.ID, "explain-table")))
    assert Select(browser.find_element(By.ID, "explain-step")).first_selected_option.text == (
        "3. Profile completed"
    )
    basis = browser.find_element(By.CSS_SELECTOR, "[data-testid=explain-basis]").text
    assert f"Judged on the {SETTLED:,} settled entrants" in basis
    first = table.find_elements(By.CSS_SELECTOR, "tbody tr")[0]
    assert first.get_attribute("data-feature") == "entry:device=android"
    assert "more among stopped" in first.text
    browser.execute_script(
        "arguments[0].scrollIntoView()", browser.find_element(By.ID, "funnel-explain")
    )
    screenshot(browser, "funnel-explain")

    # Another step through the picker: the panel swaps over htmx.
    Select(browser.find_element(By.ID, "explain-step")).select_by_value("4")
    wait(browser, 60).until(
        ec.text_to_be_present_in_element(
            (By.CSS_SELECTOR, "#funnel-explain h2"), "Why people stop before 4. Teammate invited"
        )
    )

    Select(browser.find_element(By.ID, "explain-step")).select_by_value("3")
    row = wait(browser, 60).until(
        ec.presence_of_element_located(
            (By.CSS_SELECTOR, "#explain-table tr[data-feature='entry:device=android']")
        )
    )
    row.find_element(By.XPATH, ".//button[normalize-space()='Make segment']").click()
    wait(browser).until(ec.url_contains("/segments/"))
    segment = Segment.objects.get()
    assert browser.current_url.endswith(f"/segments/{segment.slug}/edit/")
    assert "the people with device = android" in browser.find_element(By.TAG_NAME, "main").text
    assert segment.definition["conditions"] == [
        {"event": "Signed Up", "where": {"device": "android"}}
    ]
