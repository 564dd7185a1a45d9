"""CSRF: every POST form of the dashboard and the admin refuses a POST without the token."""

from __future__ import annotations

import re

from django.test import Client

from .routes import ROUTES, url_for

FORM = re.compile(r"<form\b([^>]*)>", re.IGNORECASE)
HX_POST = re.compile(r"hx-post=\"([^\"]+)\"", re.IGNORECASE)


def _post_targets(page_url: str, html: str) -> set[str]:
    targets = set()
    for attributes in FORM.findall(html):
        if not re.search(r"method=[\"']?post", attributes, re.IGNORECASE):
            continue
        action = re.search(r"action=\"([^\"]*)\"", attributes)
        targets.add(action[1] if action and action[1] else page_url)
    targets.update(HX_POST.findall(html))
    return {t.replace("&amp;", "&") for t in targets if t.startswith("/") or not t}


def test_every_post_form_refuses_a_post_without_the_token(probe, alice, bob):
    targets: set[str] = set()
    pages = 0
    for persona, prefix_ok in (
        (alice, lambda n: not n.startswith("admin:")),
        (bob, lambda n: n.startswith("admin:")),
    ):
        browser = Client()
        browser.force_login(persona)
        for route in ROUTES:
            if (
                not prefix_ok(route.name)
                or ":" not in route.name
                or route.name.startswith(("api:", "in_app_api:", "links:"))
            ):
                continue
            url = url_for(route, probe)
            response = browser.get(url)
            if response.status_code != 200 or "text/html" not in response.get("Content-Type", ""):
                continue
            pages += 1
            html = response.content.decode()
            assert "csrfmiddlewaretoken" in html or 'method="post"' not in html.lower(), url
            targets |= {(persona.username, t) for t in _post_targets(url, html)}
    assert pages > 30 and len(targets) > 10, (pages, targets)

    refused = []
    for username, target in sorted(targets):
        attacker = Client(enforce_csrf_checks=True)
        attacker.force_login(alice if username == "alice" else bob)
        response = attacker.post(target, {"name": "x"}, headers={"HX-Request": "true"})
        if response.status_code != 403 or b"CSRF" not in response.content:
            refused.append(f"{username} {target}: {response.status_code}")
    assert not refused, "POST without a CSRF token was not refused:\n" + "\n".join(refused)


def test_htmx_requests_carry_the_token(alice):
    client = Client()
    client.force_login(alice)
    html = client.get("/").content.decode()
    token = re.search(r"<body[^>]*hx-headers='\{\"X-CSRFToken\": \"([^\"]+)\"\}'", html)
    assert token and len(token[1]) >= 32
    csrf = Client(enforce_csrf_checks=True)
    csrf.force_login(alice)
    page = csrf.get("/segments/new/")
    token = re.search(r"hx-headers='\{\"X-CSRFToken\": \"([^\"]+)\"\}'", page.content.decode())[1]
    with_token = csrf.post("/segments/preview/", {}, headers={"X-CSRFToken": token})
    without = csrf.post("/segments/preview/", {})
    assert with_token.status_code != 403 and without.status_code == 403
