"""Issue 20 part 3 end to end in headless Chromium: "email; if not clicked within 24 h, in-app".

The person clicks the email's link in a real browser (the signed click redirect on the live
server); the in-app follow-up is then skipped, and the marketer sees why on the person's timeline
and the condition on the rule's follow-up row."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from html import unescape

import pytest
from django.utils import timezone

from onboarding.models import Person
from tests.browser.conftest import login
from tests.browser.helpers import screenshot, wait
from tests.triggers.conftest import Timeline, make_rule
from triggers.delivery.pipeline import deliver_due
from triggers.models import DecisionLog, Message
from triggers.services.templates import template_save

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_a_click_skips_the_next_follow_up_and_the_timeline_says_why(
    browser, live_server, alice, api, smtp, settings
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC

    settings.ONRAMP_BASE_URL = live_server.url
    target = f"{live_server.url}/login/"  # a page of this server: the test stays on loopback
    template_save(slug="nudge", channel="in_app", subject="", body="Need a hand?")
    template_save(
        slug="setup-link", channel="email", subject="Finish setting up", body=f"Go on: {target}"
    )
    make_rule(
        "trial",
        {
            "trigger": {"kind": "event", "event": "Trial Ending"},
            "follow_ups": [
                {"channel": "email", "template": "setup-link", "delay": "0s"},
                {
                    "channel": "in_app",
                    "template": "nudge",
                    "delay": "1h",
                    "unless_clicked_within": "24h",
                },
            ],
        },
    )
    start = timezone.now()  # real time: the click below is recorded at the live server's now
    identify = {
        "type": "identify",
        "userId": "u1",
        "traits": {"email": "ada@example.com"},
        "timestamp": (start - timedelta(minutes=1)).isoformat(),
        "messageId": "id-u1",
    }
    assert api.post("/v1/identify", json.dumps(identify), content_type="application/json")
    timeline = Timeline(api)
    timeline.send(start, "u1", "Trial Ending")
    timeline.tick(start + timedelta(seconds=1))
    assert deliver_due(now=start + timedelta(seconds=1)).sent == 1
    [email] = smtp.messages
    html = email.get_body(preferencelist=("html",)).get_content()
    link = unescape(re.search(r'<a href="([^"]+)"', html).group(1))
    assert link.startswith(f"{live_server.url}/t/c?")

    browser.get(link)  # the person clicks
    wait(browser).until(EC.url_to_be(target))
    assert Message.objects.get(step=0).clicked_at is not None

    report = deliver_due(now=start + timedelta(hours=1, minutes=1))
    assert report.sent == 0
    skipped = DecisionLog.objects.get(outcome="skipped")
    assert (skipped.reason, skipped.message.step) == ("previous_clicked", 1)

    login(browser, live_server, "alice", "pw-alice")
    person = Person.objects.get(external_id="u1")
    browser.get(f"{live_server.url}/people/{person.pk}/")
    text = browser.find_element(By.CSS_SELECTOR, "ol.timeline").text
    assert "cancelled · previous_clicked" in text and "Skipped · " in text
    screenshot(browser, "click-branch")

    browser.get(f"{live_server.url}/rules/trial/")
    field = browser.find_element(By.NAME, "follow_ups-1-unless_clicked_within")
    assert field.get_attribute("value") == "1d"
    assert not browser.find_elements(By.NAME, "follow_ups-0-unless_clicked_within")
