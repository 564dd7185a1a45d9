"""The rule editor's follow-up rows show a template's whole name in its <select> (issue 15 item 9:
"template dropdowns that are not cut off"), at the journeys' window size and on a phone."""

from __future__ import annotations

import pytest

from onboarding.models import OnboardingFlow, Step
from tests.browser.conftest import login
from triggers.services.templates import template_save

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# The demo's longest template name (143 px in the editor's font: the select showed 107 px of it at
# 1400 px), and a 40-character one.
DEMO_LONGEST = "profile-last-reminder"
LONG = "reminder-for-people-stalled-at-profile-2"

# How much of the selected option's text the select can show: the text's width in the select's
# own font against the select's inner width minus its padding and the arrow (Chromium's is 20 px).
CLIPPED = """
const select = arguments[0];
const style = getComputedStyle(select);
const canvas = document.createElement("canvas").getContext("2d");
canvas.font = style.font;
const text = canvas.measureText(select.selectedOptions[0].text).width;
const room = select.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight) - 20;
return [text, room];
"""


@pytest.fixture
def rule_with_long_templates(db) -> None:
    flow = OnboardingFlow.objects.create(slug="activation", name="Activation")
    Step.objects.create(flow=flow, position=1, name="Signed up", event_name="Signed Up")
    Step.objects.create(flow=flow, position=2, name="Profile", event_name="Profile Done")
    for slug in (DEMO_LONGEST, LONG):
        template_save(slug=slug, channel="email", subject="Finish", body="Hi")


@pytest.mark.parametrize(("width", "names"), [(1400, (DEMO_LONGEST, LONG)), (390, (DEMO_LONGEST,))])
def test_the_selected_template_s_name_fits_its_select(
    browser, live_server, alice, rule_with_long_templates, width, names
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.set_window_size(width, 1000)
    login(browser, live_server, "alice", "pw-alice")
    browser.get(f"{live_server.url}/rules/new/")
    select = browser.find_element(By.NAME, "follow_ups-0-template")
    for slug in names:
        Select(select).select_by_value(slug)
        text, room = browser.execute_script(CLIPPED, select)
        assert text <= room, f"{slug!r} needs {text:.0f} px, the select shows {room:.0f} px"
    # And the row does not push the page sideways to make room.
    assert browser.execute_script(
        "return document.documentElement.scrollWidth <= document.documentElement.clientWidth"
    )
