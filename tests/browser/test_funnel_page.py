"""A growth marketer opens a funnel in a real browser and narrows it to a segment.

People arrive through the tracking API (the ingestion service), so progress rows are built as in
production. The filter bar swaps the results over htmx and pushes the filters into the URL.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from onboarding.services.flows import StepInput, flow_save
from onboarding.services.segments import segment_save
from tests.browser.conftest import login
from tests.browser.helpers import wait as wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PEOPLE = 36
FROM_ADS = 12


@pytest.fixture
def funnel_data(api):
    flow_save(
        slug="activation",
        name="Activation",
        window_seconds=7 * 86400,
        steps=[
            StepInput("Signed up", "Signed Up"),
            StepInput("Email verified", "Email Verified"),
            StepInput("Profile completed", "Profile Completed"),
        ],
    )
    start = datetime.now(UTC) - timedelta(days=3)
    batch = []
    for i in range(PEOPLE):
        user, at = f"user-{i}", start + timedelta(minutes=7 * i)
        batch.append(
            {
                "type": "identify",
                "userId": user,
                "traits": {
                    "email": f"{user}@example.com",
                    "source": "ads" if i < FROM_ADS else "seo",
                },
                "timestamp": at.isoformat(),
            }
        )
        batch.append(
            {"type": "track", "userId": user, "event": "Signed Up", "timestamp": at.isoformat()}
        )
        if i % 3:
            later = (at + timedelta(minutes=5)).isoformat()
            batch.append(
                {"type": "track", "userId": user, "event": "Email Verified", "timestamp": later}
            )
        if i % 4 == 1:
            later = (at + timedelta(hours=2)).isoformat()
            batch.append(
                {"type": "track", "userId": user, "event": "Profile Completed", "timestamp": later}
            )
    batch = [{"messageId": f"b-{n}", **message} for n, message in enumerate(batch)]
    response = api.post("/v1/batch", json.dumps({"batch": batch}), content_type="application/json")
    assert response.status_code == 200, response.content
    segment_save(
        slug="from-ads",
        name="Acquired through ads",
        definition={
            "match": "all",
            "conditions": [{"trait": "source", "op": "eq", "value": "ads"}],
        },
    )


def test_segment_filter_redraws_the_funnel(browser, live_server, alice, funnel_data):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select

    wait = wait_for(browser)
    login(browser, live_server, "alice", "pw-alice")
    browser.get(f"{live_server.url}/flows/activation/funnel/")

    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#funnel-chart .js-plotly-plot")))
    entrants = browser.find_element(By.CSS_SELECTOR, "[data-testid=entrants]")
    assert entrants.text == str(PEOPLE)
    assert browser.find_elements(By.CSS_SELECTOR, "#funnel-chart .js-plotly-plot svg.main-svg")
    first_table = browser.find_element(By.ID, "funnel-steps").text

    Select(browser.find_element(By.NAME, "segment")).select_by_value("from-ads")
    wait.until(
        lambda driver: (
            driver.find_element(By.CSS_SELECTOR, "[data-testid=entrants]").text == str(FROM_ADS)
        )
    )
    assert "segment=from-ads" in browser.current_url
    assert "since=" in browser.current_url  # the whole filter state is in the URL
    # The swapped-in results were drawn again, and the table shows the segment's counts.
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#funnel-chart .js-plotly-plot")))
    assert browser.find_element(By.ID, "funnel-steps").text != first_table
    assert "Acquired through ads" in browser.find_element(By.ID, "funnel-chart").text
    # htmx swapped a fragment: the filter bar kept its state and the page did not reload.
    assert Select(browser.find_element(By.NAME, "segment")).first_selected_option.text == (
        "Acquired through ads"
    )

    # The URL is shareable: loading it directly shows the same view.
    browser.get(browser.current_url)
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#funnel-chart .js-plotly-plot")))
    assert browser.find_element(By.CSS_SELECTOR, "[data-testid=entrants]").text == str(FROM_ADS)


def test_time_to_convert_step_picker_works_from_the_keyboard(
    browser, live_server, alice, funnel_data
):
    """Issue 15 item 9: Tab reaches the step picker, the arrow keys change the step, htmx redraws
    the chart beside it, and the focus stays on the picker. No mouse anywhere."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec

    wait = wait_for(browser)
    login(browser, live_server, "alice", "pw-alice")
    browser.get(f"{live_server.url}/flows/activation/funnel/")
    wait.until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "#funnel-time-chart .js-plotly-plot"))
    )

    def focused_id() -> str:
        return browser.execute_script("return document.activeElement && document.activeElement.id")

    def axis_title() -> str:
        return browser.execute_script(
            "return document.querySelector('#funnel-time-chart .js-plotly-plot')"
            ".layout.xaxis.title.text"
        )

    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.TAB)
    for _ in range(60):  # the nav, the filter bar, the step table's links… then the picker
        if focused_id() == "ttc-step":
            break
        browser.switch_to.active_element.send_keys(Keys.TAB)
    assert focused_id() == "ttc-step", "Tab never reaches the step picker"
    assert "from step 1 to step 2" in axis_title()
    caption = browser.find_element(By.CSS_SELECTOR, "[data-testid=ttc-caption]").text
    assert caption == "24 people went from step 1 to step 2."

    browser.switch_to.active_element.send_keys(Keys.ARROW_DOWN)
    wait.until(lambda driver: "from step 2 to step 3" in (axis_title() or ""))
    assert browser.find_element(By.CSS_SELECTOR, "[data-testid=ttc-caption]").text == (
        "6 people went from step 2 to step 3."
    )
    assert focused_id() == "ttc-step"  # the swap left the picker (and the focus) alone

    browser.switch_to.active_element.send_keys(Keys.ARROW_UP)
    wait.until(lambda driver: "from step 1 to step 2" in (axis_title() or ""))
    assert focused_id() == "ttc-step"
