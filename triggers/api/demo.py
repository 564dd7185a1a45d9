"""A page where a marketer sees the in-app widget as a given user would (login required).

The write key is typed in (only its hash is stored, so Onramp cannot fill it in) and posted with
the form, never put in the URL, where access logs and browser history would keep it (a
``writeKey`` in the query string is ignored). The widget then sends it to the API as HTTP Basic
auth, like a client app's would. The user hash is computed here when ONRAMP_IN_APP_SECRET is set,
as an app's backend would do.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_required, permission_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_http_methods

from onboarding.models import IdentityKind

from .inbox import inbox_messages, person_for_identity, present
from .views import user_hash


@require_http_methods(["GET", "POST"])
@login_required
@permission_required("dashboard.view_dashboard", raise_exception=True)
def widget_demo(request: HttpRequest) -> HttpResponse:
    form = request.POST if request.method == "POST" else request.GET
    user_id = form.get("userId", "").strip()[:255].replace("\x00", "")
    write_key = request.POST.get("writeKey", "").strip()[:200]
    widget = None
    inbox: list[dict] = []
    if user_id:
        person_id = person_for_identity(IdentityKind.USER, user_id)
        inbox = [present(m) for m in inbox_messages(person_id)] if person_id else []
        if write_key:
            widget = {
                "host": request.build_absolute_uri("/").rstrip("/"),
                "writeKey": write_key,
                "userId": user_id,
                "userHash": user_hash(user_id) if settings.ONRAMP_IN_APP_SECRET else None,
                "pollSeconds": 5,
            }
    return render(
        request,
        "triggers/widget_demo.html",
        {"user_id": user_id, "widget": widget, "inbox": inbox},
    )
