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

    browser.get(f"{live_server.url}/login/")
    browser.find_element(By.NAME, "username").send_keys("alice")
    browser.find_element(By.NAME, "password").send_keys("wrong")
    browser.find_element(By.CSS_SELECTOR, "form [type=submit]").click()
    assert "/login/" in browser.current_url
    alert = browser.find_element(By.CSS_SELECTOR, "[role=alert]")
    assert "correct username and password" in alert.text
