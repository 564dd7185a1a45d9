"""A growth marketer tries to delete a message template that past sends used, in headless
Chromium: the page refuses, lists where it is used with links, and archiving it instead hides it
from the list until "Show archived"."""

from __future__ import annotations

import pytest
from django.utils import timezone

from onboarding.models import Person
from tests.browser.conftest import login
from tests.browser.helpers import screenshot, wait
from tests.triggers.conftest import flow, templates  # noqa: F401
from triggers.models import AuditLog, Enrollment, Message, MessageTemplate
from triggers.services.rules import rule_save

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def sent_reminder(flow, templates) -> MessageTemplate:  # noqa: F811
    """The reminder template, sent once by a rule that has since been archived."""
    rule, _ = rule_save(
        slug="profile-stalled",
        name="Nudge stalled profile",
        definition={
            "trigger": {"kind": "inactive_in_flow", "flow": "activation", "step": 2, "minutes": 30},
            "follow_ups": [{"channel": "email", "template": "reminder", "delay": "0s"}],
        },
        status="archived",
    )
    reminder = MessageTemplate.objects.get(slug="reminder")
    now = timezone.now()
    person = Person.objects.create(external_id="ada", first_seen=now, last_seen=now)
    enrollment = Enrollment.objects.create(
        rule=rule,
        rule_version=rule.current_version,
        person=person,
        occurrence_key="o",
        enrolled_at=now,
    )
    Message.objects.create(
        idempotency_key="k",
        enrollment=enrollment,
        rule=rule,
        rule_version=rule.current_version,
        person=person,
        step=0,
        channel="email",
        template=reminder,
        due_at=now,
        status="sent",
    )
    return reminder


def test_delete_is_refused_with_the_places_and_archiving_hides_the_template(
    browser, live_server, alice, sent_reminder
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    login(browser, live_server, "alice", "pw-alice")
    browser.get(f"{live_server.url}/rules/templates/")
    browser.find_element(By.LINK_TEXT, "reminder").click()
    delete = wait(browser).until(
        ec.element_to_be_clickable((By.XPATH, "//button[normalize-space()='Delete…']"))
    )
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", delete)
    delete.click()

    refusal = wait(browser).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "[data-testid=refusal]"))
    )
    assert "reminder cannot be deleted" in browser.find_element(By.TAG_NAME, "h1").text
    assert "would break the records below" in refusal.text
    places = browser.find_element(By.CSS_SELECTOR, "[data-testid=usage-places]").text
    assert "Nudge stalled profile" in places and "follow-up 1 (archived)" in places
    assert "1 message in the delivery ledger" in places
    link = browser.find_element(By.LINK_TEXT, "Nudge stalled profile")
    assert link.get_attribute("href").endswith("/rules/profile-stalled/")
    screenshot(browser, "lifecycle-refused")
    assert MessageTemplate.objects.filter(slug="reminder").exists()

    browser.find_element(By.XPATH, "//button[normalize-space()='Archive instead']").click()
    banner = wait(browser).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "#lifecycle .callout"))
    )
    assert "hidden from lists and pickers" in banner.text
    assert browser.find_elements(By.XPATH, "//button[normalize-space()='Unarchive']")
    sent_reminder.refresh_from_db()
    assert sent_reminder.archived_at is not None
    assert AuditLog.objects.get(action="archive", object_id=str(sent_reminder.pk)).actor == alice

    browser.get(f"{live_server.url}/rules/templates/")
    table = browser.find_element(By.CSS_SELECTOR, "table").text
    assert "reminder" not in table and "nudge" in table
    browser.find_element(By.PARTIAL_LINK_TEXT, "Show archived (1)").click()
    wait(browser).until(ec.presence_of_element_located((By.LINK_TEXT, "reminder")))
    assert Message.objects.get().template == sent_reminder
