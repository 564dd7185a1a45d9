"""Every dashboard page: anonymous → login, logged in without the permission → 403, growth → 200."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

# Every dashboard URL, with the query strings and htmx targets its partials are fetched with.
DASHBOARD_URLS = [
    reverse("dashboard:overview"),
    reverse("dashboard:overview") + "?range=7d",
]
HTMX_TARGETS = ["latest-events", "events-chart"]


@pytest.mark.parametrize("url", DASHBOARD_URLS)
def test_anonymous_is_sent_to_login(client, url, db):
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login") + "?next=")


@pytest.mark.parametrize("target", HTMX_TARGETS)
def test_anonymous_htmx_request_navigates_the_whole_page_to_login(client, target, db):
    response = client.get(
        reverse("dashboard:overview"),
        headers={"HX-Request": "true", "HX-Target": target, "HX-Current-URL": "http://testserver/"},
    )
    assert response["HX-Redirect"] == reverse("login") + "?next=/"
    assert b"<tr" not in response.content


@pytest.mark.parametrize("url", DASHBOARD_URLS)
def test_user_without_group_gets_403(client, charlie, url):
    client.force_login(charlie)
    response = client.get(url)
    assert response.status_code == 403
    assert b"growth" in response.content  # says which group opens the page


@pytest.mark.parametrize("target", HTMX_TARGETS)
def test_partials_check_the_permission_too(client, charlie, target):
    client.force_login(charlie)
    response = client.get(
        reverse("dashboard:overview"), headers={"HX-Request": "true", "HX-Target": target}
    )
    assert response.status_code == 403


@pytest.mark.parametrize("url", DASHBOARD_URLS)
def test_support_staff_are_not_growth_and_go_to_their_home(client, bob, url):
    client.force_login(bob)
    response = client.get(url)
    assert (response.status_code, response["Location"]) == (302, reverse("dashboard:support"))
    assert client.post(url).status_code == 403


@pytest.mark.parametrize("target", HTMX_TARGETS)
def test_support_staff_asking_for_a_partial_get_403(client, bob, target):
    client.force_login(bob)
    response = client.get(
        reverse("dashboard:overview"), headers={"HX-Request": "true", "HX-Target": target}
    )
    assert response.status_code == 403


@pytest.mark.parametrize("url", DASHBOARD_URLS)
def test_growth_marketer_sees_the_page(client, alice, url):
    client.force_login(alice)
    assert client.get(url).status_code == 200


def test_superuser_passes(client, db):
    admin = User.objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(admin)
    assert client.get(reverse("dashboard:overview")).status_code == 200


def test_overview_is_get_only(client, alice):
    client.force_login(alice)
    assert client.post(reverse("dashboard:overview")).status_code == 405


def test_healthz_stays_public(client, db):
    assert client.get(reverse("healthz")).status_code in (200, 503)
