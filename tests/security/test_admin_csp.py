"""The admin under the Content-Security-Policy: no admin page carries code the policy refuses.

``script-src 'self'`` runs only script files from Onramp's own origin; an inline ``<script>`` with
code is blocked by the browser, so the feature it drives silently stops working (django-celery-beat's
periodic-task form did, until ``GuardedPeriodicTaskAdmin`` loaded a static file instead). This walks
every registered model's list, add and change page as a superuser.
"""

from __future__ import annotations

import re

import pytest
from django.contrib import admin
from django.test import Client, RequestFactory
from django.urls import reverse

SCRIPT_TAG = re.compile(r"<script\b([^>]*)>(.*?)</script>", re.IGNORECASE | re.DOTALL)
INLINE_HANDLER = re.compile(r"<[^>]+\son[a-z]+\s*=", re.IGNORECASE)


def _refused_by_the_policy(html: str) -> list[str]:
    found = [
        body.strip()[:60]
        for attributes, body in SCRIPT_TAG.findall(html)
        if body.strip() and "application/json" not in attributes
    ]
    return found + [match[:60] for match in INLINE_HANDLER.findall(html)]


@pytest.mark.django_db
def test_no_admin_page_has_inline_script(root):
    client = Client()
    client.force_login(root)
    request = RequestFactory().get("/admin/")
    request.user = root
    offenders, pages = [], 0
    for model, model_admin in admin.site._registry.items():
        prefix = f"admin:{model._meta.app_label}_{model._meta.model_name}"
        urls = [reverse(f"{prefix}_changelist")]
        if model_admin.has_add_permission(request):
            urls.append(reverse(f"{prefix}_add"))
        first = model._default_manager.order_by("pk").first()
        if first is not None:
            urls.append(reverse(f"{prefix}_change", args=[first.pk]))
        for url in urls:
            response = client.get(url)
            assert response.status_code == 200, url
            pages += 1
            found = _refused_by_the_policy(response.content.decode())
            if found:
                offenders.append(f"{url}: {found}")
    assert pages > 30
    assert not offenders, "\n".join(offenders)
