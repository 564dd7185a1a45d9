"""Logging in: five failures per user name and address lock the form for 15 minutes, then it recovers."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
import time_machine
from django.test import Client
from django.urls import reverse
from django.utils import timezone

ADDRESS = "203.0.113.7"


@pytest.fixture(autouse=True)
def _own_cache(settings):
    """The production limits, on a cache of this test's own whose expiry follows time-machine."""
    settings.ONRAMP_LOGIN_MAX_FAILURES = 5
    settings.ONRAMP_LOGIN_LOCKOUT_SECONDS = 15 * 60
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": f"login-throttle-{uuid.uuid4()}",
        }
    }


def _attempt(client: Client, username: str, password: str, address: str = ADDRESS):
    return client.post(
        reverse("login"), {"username": username, "password": password}, REMOTE_ADDR=address
    )


def test_five_failures_lock_the_form_even_for_the_right_password(alice):
    client = Client()
    for _ in range(5):
        response = _attempt(client, "alice", "wrong")
        assert response.status_code == 200
        assert b"correct username and password" in response.content
    locked = _attempt(client, "alice", "pw-alice")
    assert locked.status_code == 429
    assert b"Too many failed attempts" in locked.content
    assert locked["Retry-After"] == "900"
    assert "_auth_user_id" not in client.session


def test_the_lock_is_per_user_name_and_address(alice, bob):
    for _ in range(5):
        _attempt(Client(), "alice", "wrong")
    assert _attempt(Client(), "alice", "pw-alice").status_code == 429
    assert _attempt(Client(), "ALICE ", "pw-alice").status_code == 429  # same name, normalised
    assert _attempt(Client(), "alice", "pw-alice", address="198.51.100.1").status_code == 302
    assert _attempt(Client(), "bob", "pw-bob").status_code == 302


def test_the_lock_lifts_after_fifteen_minutes(alice):
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        for _ in range(5):
            _attempt(Client(), "alice", "wrong")
        assert _attempt(Client(), "alice", "pw-alice").status_code == 429
    with time_machine.travel(start + timedelta(minutes=14), tick=False):
        assert _attempt(Client(), "alice", "pw-alice").status_code == 429
    with time_machine.travel(start + timedelta(minutes=15, seconds=1), tick=False):
        assert _attempt(Client(), "alice", "pw-alice").status_code == 302


def test_a_successful_login_clears_earlier_failures(alice):
    for _ in range(4):
        _attempt(Client(), "alice", "wrong")
    assert _attempt(Client(), "alice", "pw-alice").status_code == 302
    for _ in range(4):
        assert _attempt(Client(), "alice", "wrong").status_code == 200
    assert _attempt(Client(), "alice", "pw-alice").status_code == 302


def _admin_attempt(client: Client, username: str, password: str, address: str = ADDRESS):
    return client.post(
        reverse("admin:login"),
        {"username": username, "password": password, "next": "/admin/"},
        REMOTE_ADDR=address,
    )


def test_a_lockout_on_the_dashboard_login_locks_the_admin_login(bob, alice):
    for _ in range(5):
        assert _attempt(Client(), "bob", "wrong").status_code == 200
    assert _attempt(Client(), "bob", "pw-bob").status_code == 429
    client = Client()
    for _ in range(3):  # more guesses on the other form: refused unread, not counted anew
        assert _admin_attempt(client, "bob", "wrong").status_code == 429
    locked = _admin_attempt(client, "bob", "pw-bob")
    assert locked.status_code == 429
    assert locked["Retry-After"] == "900"
    assert b"Too many failed attempts" in locked.content
    assert "_auth_user_id" not in client.session
    # Counted per user name and address: another address, or another name, is not locked.
    assert _admin_attempt(Client(), "bob", "pw-bob", address="198.51.100.1").status_code == 302
    assert _attempt(Client(), "alice", "pw-alice").status_code == 302


def test_a_lockout_on_the_admin_login_locks_the_dashboard_login(bob, alice):
    for _ in range(5):
        assert _admin_attempt(Client(), "bob", "wrong").status_code == 200
    assert _admin_attempt(Client(), "BOB", "pw-bob").status_code == 429  # name normalised
    client = Client()
    locked = _attempt(client, "bob", "pw-bob")
    assert locked.status_code == 429
    assert "_auth_user_id" not in client.session
    assert _attempt(Client(), "bob", "pw-bob", address="198.51.100.1").status_code == 302
    assert _admin_attempt(Client(), "alice", "wrong").status_code == 200  # alice: one failure


def test_failures_on_both_forms_add_up_to_one_lockout(bob):
    for _ in range(3):
        _attempt(Client(), "bob", "wrong")
    for _ in range(2):
        _admin_attempt(Client(), "bob", "wrong")
    assert _admin_attempt(Client(), "bob", "pw-bob").status_code == 429
    assert _attempt(Client(), "bob", "pw-bob").status_code == 429


def test_a_successful_admin_login_clears_the_count(bob):
    for _ in range(4):
        _attempt(Client(), "bob", "wrong")
    assert _admin_attempt(Client(), "bob", "pw-bob").status_code == 302
    for _ in range(4):
        assert _attempt(Client(), "bob", "wrong").status_code == 200
    assert _attempt(Client(), "bob", "pw-bob").status_code == 302
