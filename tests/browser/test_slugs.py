"""Slugs are filled in from names as a marketer types (static/js/slugs.js), until the slug is
edited by hand; an existing object's slug (disabled) never changes."""

from __future__ import annotations

import pytest

from tests.browser.conftest import login

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_the_slug_follows_the_name_until_it_is_edited(browser, live_server, alice):
    from selenium.webdriver.common.by import By

    login(browser, live_server, "alice", "pw-alice")
    browser.get(f"{live_server.url}/flows/new/")
    name = browser.find_element(By.NAME, "name")
    slug = browser.find_element(By.NAME, "slug")
    name.send_keys("Trial Activation — Été 2027!")
    assert slug.get_attribute("value") == "trial-activation-ete-2027"

    slug.clear()
    slug.send_keys("trial")
    name.send_keys(" again")
    assert slug.get_attribute("value") == "trial"  # edited by hand: left alone

    browser.get(f"{live_server.url}/segments/new/")
    browser.find_element(By.NAME, "name").send_keys("Pro plan, EU")
    assert browser.find_element(By.NAME, "slug").get_attribute("value") == "pro-plan-eu"
