"""Every URL pattern of the project, requested anonymously and as alice, bob and charlie.

The patterns come from the URL resolver, so a page added later is checked without editing this file:
if it is not in ``PUBLIC`` or ``API`` and not under the admin, it must behave as a dashboard page
(anonymous → login, charlie and bob → 403). Path parameters are filled with real objects: every
object that a slug names is created with the slug ``probe``. The roles in detail (viewer, growth,
experiment owner, support, superuser; GET and POST) are ``test_permission_matrix.py``.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client

from .routes import ROUTES, Route, url_for

# Reachable without logging in. Each must say why.
PUBLIC = {
    "healthz": "load balancer health check",
    "login": "the login form",
    "logout": "POST only; logging out needs no permission",
    "admin:login": "the admin's login form",
    "api:openapi": "the public OpenAPI document of the tracking API",
    "api:project-settings": "analytics.js's settings document; 404 for an unknown write key",
    "links:open": "open pixel in emails, signed token",
    "links:click": "click redirect in emails, signed URL",
    "links:unsubscribe": "unsubscribe link in emails, signed token",
}
# Authenticated with a write key, never with a session cookie.
API = {
    "api:track",
    "api:identify",
    "api:page",
    "api:screen",
    "api:alias",
    "api:group",
    "api:batch",
    "api:import",
    "api:t",  # analytics.js's one-letter paths: aliases of track, identify, page…
    "api:i",
    "api:p",
    "api:s",
    "api:a",
    "api:g",
    "api:b",
    "in_app_api:messages",
    "in_app_api:outcome",
}
# Dashboard pages that support staff (bob) may open too: they need only ``onboarding.view_person``.
SUPPORT_PAGES = {"dashboard:people", "dashboard:person"}
# The support home: support staff's own page (``triggers.view_reviewitem``); growth gets 403.
SUPPORT_ONLY_PAGES = {"dashboard:support"}
# Where a login lands: it sends support staff to their home instead of answering 403.
SUPPORT_LANDING = {"dashboard:overview": "/support/"}
# Growth (alice) may not post here: starting, stopping and shipping is the experiment owner's.
EXPERIMENT_OWNER_PAGES = {"triggers:experiment_status", "triggers:experiment_ship"}
PERSONAS = ["anonymous", "alice", "bob", "charlie"]


def _client(persona: str, users: dict[str, User]) -> Client:
    client = Client(raise_request_exception=False)
    if persona != "anonymous":
        client.force_login(users[persona])
    return client


def _request(client: Client, route: Route, url: str):
    if route.name.startswith(("api:", "in_app_api:")) and route.name != "api:openapi":
        if route.name == "in_app_api:messages":
            return client.get(url, {"userId": "probe"})
        return client.post(url, '{"userId": "probe"}', content_type="application/json")
    response = client.get(url)
    if response.status_code == 405:
        response = client.post(url, {})
    return response


def _problem(route: Route, persona: str, response) -> str | None:
    status = response.status_code
    location = response.get("Location", "")
    if status >= 500:
        return f"{status} (server error)"
    name = route.name
    if name in PUBLIC:
        return None
    if name in API:
        return None if status == 401 else f"{status}, expected 401 (write key only, no cookies)"
    if name.startswith("admin:"):
        if persona == "bob":
            if status == 302 and location.startswith("/admin/login/"):
                return "support staff sent to the admin login"
            return None
        if status == 302 and location.startswith("/admin/"):
            return None
        return f"{status} {location}, expected a redirect to the admin login (staff only)"
    # Everything else is a dashboard page.
    if persona == "anonymous":
        if status == 302 and location.startswith("/login/?next="):
            return None
        if response.get("HX-Redirect", "").startswith("/login/"):
            return None
        return f"{status} {location}, expected a redirect to /login/"
    if persona == "bob" and name in SUPPORT_PAGES:
        return None if status == 200 else f"{status}, expected 200 (support looks people up)"
    if name in SUPPORT_ONLY_PAGES:
        expected = 200 if persona == "bob" else 403
        return None if status == expected else f"{status}, expected {expected} (support only)"
    if persona == "bob" and name in SUPPORT_LANDING:
        if status == 302 and location == SUPPORT_LANDING[name]:
            return None
        return f"{status} {location}, expected a redirect to the support home"
    if persona in ("bob", "charlie"):
        return None if status == 403 else f"{status}, expected 403 (not in the growth group)"
    if name in EXPERIMENT_OWNER_PAGES:
        return None if status == 403 else f"{status}, expected 403 (experiment owners only)"
    if status in (302, 403) and (status == 403 or location.startswith("/login/")):
        return f"{status} {location}: growth cannot open it"
    return None


@pytest.mark.parametrize("persona", PERSONAS)
def test_every_url_enforces_its_access_rule(persona, probe, alice, bob, charlie):
    users = {"alice": alice, "bob": bob, "charlie": charlie}
    client = _client(persona, users)
    problems = []
    for route in ROUTES:
        url = url_for(route, probe)
        problem = _problem(route, persona, _request(client, route, url))
        if problem:
            problems.append(f"{route.name} {url}: {problem}")
        if persona != "anonymous" and not client.session.get("_auth_user_id"):
            client = _client(persona, users)  # a logout page logged us out: log in again
    assert not problems, f"{persona}:\n" + "\n".join(problems)


def test_the_matrix_covers_every_pattern_and_the_allow_list_is_real():
    names = {route.name for route in ROUTES}
    assert len(ROUTES) >= 150, len(ROUTES)
    assert set(PUBLIC) <= names and names >= API
    # Nothing anonymous outside the allow-list: every unlisted, non-admin route is a dashboard page.
    unlisted = [r for r in ROUTES if r.name not in PUBLIC and r.name not in API]
    assert all(r.name.startswith("admin:") or ":" in r.name for r in unlisted), unlisted
