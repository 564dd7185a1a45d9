"""Security headers on every page, the CSP that the templates can live with, and HSTS in production."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse

TEMPLATES = Path(settings.BASE_DIR) / "templates"
STATIC_JS = Path(settings.BASE_DIR) / "static" / "js"
INLINE_HANDLER = re.compile(r"\son[a-z]+\s*=", re.IGNORECASE)
SCRIPT_TAG = re.compile(r"<script\b([^>]*)>(.*?)</script>", re.IGNORECASE | re.DOTALL)


@pytest.mark.parametrize("persona", ["anonymous", "alice"])
def test_dashboard_pages_send_the_security_headers(persona, alice):
    client = Client()
    if persona == "alice":
        client.force_login(alice)
    for url in (reverse("login"), reverse("dashboard:overview"), reverse("dashboard:flows")):
        response = client.get(url)
        csp = response["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-eval" not in csp
        assert "'unsafe-inline'" not in csp.split("script-src")[1].split(";")[0]
        assert "frame-ancestors 'none'" in csp and "object-src 'none'" in csp
        assert response["X-Content-Type-Options"] == "nosniff"
        assert response["Referrer-Policy"] == "same-origin"
        assert response["X-Frame-Options"] == "DENY"
        assert response["Cross-Origin-Opener-Policy"] == "same-origin"


def test_admin_and_api_send_them_too(bob, write_key):
    client = Client()
    client.force_login(bob)
    for response in (
        client.get(reverse("admin:index")),
        Client().get(reverse("api:openapi")),
        Client().get(reverse("healthz")),
    ):
        assert "Content-Security-Policy" in response
        assert response["X-Content-Type-Options"] == "nosniff"


def _template_files() -> list[Path]:
    return sorted(TEMPLATES.rglob("*.html"))


def test_templates_have_no_inline_script_or_event_handlers():
    """What script-src 'self' forbids: inline code and on*= handlers (json_script data is fine)."""
    offenders = []
    for path in _template_files():
        text = path.read_text()
        if INLINE_HANDLER.search(text) or "javascript:" in text:
            offenders.append(f"{path}: inline event handler or javascript: URL")
        for attributes, body in SCRIPT_TAG.findall(text):
            is_data = "application/json" in attributes or "ld+json" in attributes
            if body.strip() and not is_data:
                offenders.append(f"{path}: inline <script> with code")
    for path in sorted(STATIC_JS.rglob("*.js")):
        if re.search(r"\beval\(|new Function\(", path.read_text()):
            offenders.append(f"{path}: eval")
    assert not offenders, "\n".join(offenders)


def test_htmx_carries_the_csrf_token_on_body():
    base = (TEMPLATES / "base.html").read_text()
    assert re.search(r"<body[^>]*hx-headers='\{\"X-CSRFToken\": \"\{\{ csrf_token \}\}\"\}'", base)


def test_production_settings_turn_on_hsts_and_secure_cookies():
    script = (
        "from django.conf import settings as s;"
        "print(s.SECURE_HSTS_SECONDS, s.SECURE_HSTS_INCLUDE_SUBDOMAINS, s.SECURE_SSL_REDIRECT,"
        " s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.X_FRAME_OPTIONS)"
    )
    result = subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {script}"],
        cwd=settings.BASE_DIR,
        env={
            "PATH": "/usr/bin:/bin",
            "DJANGO_SETTINGS_MODULE": "config.settings.production",
            "DJANGO_SECRET_KEY": "x" * 60,
            "DJANGO_ALLOWED_HOSTS": "onramp.example.com",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["31536000", "True", "True", "True", "True", "DENY"]
