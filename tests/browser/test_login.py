"""A growth marketer logs in with a real browser and lands on the overview."""

import pytest

from tests.browser.conftest import login

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_login_lands_on_overview(browser, live_server, alice):
    login(browser, live_server, "alice", "pw-alice")
    assert browser.current_url.rstrip("/") == live_server.url
    assert "Onramp" in browser.title
    assert "Please enter a correct username" not in browser.page_source


def test_wrong_password_stays_on_login(browser, live_server, alice):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{live_server.url}/login/")
    browser.find_element(By.NAME, "username").send_keys("alice")
    browser.find_element(By.NAME, "password").send_keys("wrong")
    browser.find_element(By.CSS_SELECTOR, "form [type=submit]").click()
    # Wait for the answer to the POST (the page is replaced), not the form that was just sent.
    alert = WebDriverWait(browser, 15).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "[role=alert]"))
    )
    assert "/login/" in browser.current_url
    assert "correct username and password" in alert.text
