"""Shared helpers for the browser journeys: explicit waits, screenshots and the session cookie."""

from __future__ import annotations

import os
from pathlib import Path

import requests

IMG_DIR = Path(__file__).resolve().parents[2] / "docs" / "img"


def wait(browser, timeout: float = 15):
    """An explicit wait that retries while htmx replaces the element being read (stale)."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout, ignored_exceptions=(StaleElementReferenceException,))


def screenshot(browser, name: str) -> None:
    """Save docs/img/journey-<name>.png, only with ONRAMP_SAVE_SCREENSHOTS=1 (never in CI)."""
    if os.environ.get("ONRAMP_SAVE_SCREENSHOTS") != "1":
        return
    IMG_DIR.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(IMG_DIR / f"journey-{name}.png"))


def session_get(browser, url: str, **kwargs) -> requests.Response:
    """GET ``url`` outside the browser with the browser's cookies (its logged-in session)."""
    session = requests.Session()
    for cookie in browser.get_cookies():
        session.cookies.set(cookie["name"], cookie["value"])
    return session.get(url, timeout=10, allow_redirects=False, **kwargs)


def hx_settled(browser) -> bool:
    """No htmx request in flight (htmx marks elements with ``htmx-request`` while it waits)."""
    return not browser.execute_script("return document.querySelector('.htmx-request') !== null")
