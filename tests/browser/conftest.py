"""Headless Chromium (Debian's ``chromium`` and ``chromedriver``) driven by Selenium.

No browser is ever downloaded: the driver and browser are the system's. Without them the browser
tests skip on a laptop and fail in CI. Pages are served by pytest-django's ``live_server`` on
loopback.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from django.test import Client

from tests.conftest import basic_auth
from tests.requirements import missing
from tests.triggers.conftest import T0, Timeline, make_rule
from triggers.delivery.pipeline import deliver_due
from triggers.models import Message
from triggers.services.templates import template_save

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--window-size=1400,1000",
    # Loopback only: a page that reaches for any other host (a CDN, a metrics endpoint) fails.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
]


@pytest.fixture
def browser() -> Iterator[object]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        missing(
            "Headless Chromium",
            f"no {CHROMIUM} or {CHROMEDRIVER}; apt-get install -y chromium chromium-driver",
            "install them in .ci/run",
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="onramp-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def login(browser, live_server, username: str, password: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{live_server.url}/login/")
    browser.find_element(By.NAME, "username").send_keys(username)
    browser.find_element(By.NAME, "password").send_keys(password)
    browser.find_element(By.CSS_SELECTOR, "form [type=submit]").click()
    WebDriverWait(browser, 15).until(ec.url_changes(f"{live_server.url}/login/"))


def wait_for(condition, timeout: float = 15.0):
    """Poll ``condition`` until it returns something truthy, for at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("timed out waiting")


@pytest.fixture
def sent_message(write_key) -> Message:
    """An in-app message sent to the person with userId ``u1`` (a rule, its event, delivery)."""
    template_save(
        slug="tip",
        channel="in_app",
        subject="Need a hand?",
        body="<b>Set up</b> your profile: [Open profile](https://app.example.com/profile)",
    )
    make_rule(
        "tip",
        {
            "trigger": {"kind": "event", "event": "Trial Ending"},
            "follow_ups": [{"channel": "in_app", "template": "tip", "delay": "0s"}],
        },
    )
    timeline = Timeline(Client(HTTP_AUTHORIZATION=basic_auth(write_key)))
    timeline.send(T0, "u1", "Trial Ending")
    timeline.tick(T0 + timedelta(minutes=1))
    deliver_due(now=T0 + timedelta(minutes=1))
    return Message.objects.get(status="sent")
