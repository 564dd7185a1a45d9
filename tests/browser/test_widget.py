"""A marketer opens the widget demo: the sent in-app message shows as a banner, closing it is
recorded as dismissed (through the real widget, API and database)."""

from __future__ import annotations

import pytest

from tests.browser.conftest import login, wait_for
from triggers.models import Message

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def open_demo(browser, live_server, write_key: str) -> None:
    """Fill in the demo's form: the key is posted, and the page's URL never holds it."""
    from selenium.webdriver.common.by import By

    browser.get(f"{live_server.url}/demo/widget/?userId=u1")
    browser.find_element(By.ID, "demo-key").send_keys(write_key)
    browser.find_element(By.CSS_SELECTOR, "form[aria-label='Choose a user'] button").click()
    wait_for(lambda: browser.find_elements(By.ID, "onramp-demo-config"))
    assert write_key not in browser.current_url


def test_demo_shows_the_banner_and_close_records_dismissed(
    browser, live_server, alice, write_key, sent_message
):
    from selenium.webdriver.common.by import By

    login(browser, live_server, "alice", "pw-alice")
    open_demo(browser, live_server, write_key)
    banner = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "[data-onramp-message]"))[0]
    assert banner.get_attribute("role") == "status"
    assert banner.get_attribute("data-onramp-message") == str(sent_message.pk)
    assert "Need a hand?" in banner.text
    # Message text is text, never markup: the <b> arrives as characters.
    assert "<b>Set up</b> your profile: Open profile" in banner.text
    assert banner.find_elements(By.TAG_NAME, "b") == []
    link = banner.find_element(By.CSS_SELECTOR, "a")
    assert (link.text, link.get_attribute("href")) == (
        "Open profile",
        "https://app.example.com/profile",
    )
    wait_for(lambda: Message.objects.get(pk=sent_message.pk).seen_at)

    close = banner.find_element(By.CSS_SELECTOR, "button[aria-label=Close]")
    close.click()
    wait_for(lambda: Message.objects.get(pk=sent_message.pk).dismissed_at)
    assert browser.find_elements(By.CSS_SELECTOR, "[data-onramp-message]") == []
    message = Message.objects.get(pk=sent_message.pk)
    assert message.clicked_at is None


def test_modal_is_a_focused_dialog_and_escape_dismisses(
    browser, live_server, alice, write_key, sent_message
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    Message.objects.filter(pk=sent_message.pk).update(subject="[modal] Welcome back")
    login(browser, live_server, "alice", "pw-alice")
    open_demo(browser, live_server, write_key)
    dialog = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "[role=dialog]"))[0]
    assert dialog.get_attribute("aria-modal") == "true"
    assert "Welcome back" in dialog.text and "[modal]" not in dialog.text
    assert browser.switch_to.active_element.get_attribute("aria-label") == "Close"
    browser.switch_to.active_element.send_keys(Keys.ESCAPE)
    wait_for(lambda: Message.objects.get(pk=sent_message.pk).dismissed_at)
