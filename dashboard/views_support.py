"""The support home: where support staff land after logging in (the review queue, what failed in
the last 24 hours, and the people search)."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET

from .decorators import SAFE_METHODS, VIEW_DASHBOARD, dashboard_permission_required
from .forms_people import PeopleFilterForm
from .support import support_summary

# The support group's own permission (dashboard/permissions.py): working the review queue.
VIEW_SUPPORT_HOME = "triggers.view_reviewitem"
view_support_required = dashboard_permission_required(VIEW_SUPPORT_HOME)


def support_lands_home(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Send someone who may work the review queue but not read the growth dashboard to the support
    home (instead of a 403): the overview is where every login lands."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        user = request.user
        if (
            request.method in SAFE_METHODS
            and not getattr(request, "htmx", False)  # a partial of the overview: 403 as before
            and user.is_authenticated
            and not user.has_perm(VIEW_DASHBOARD)
            and user.has_perm(VIEW_SUPPORT_HOME)
        ):
            return redirect("dashboard:support")
        return view(request, *args, **kwargs)

    return wrapped


@view_support_required
@require_GET
def support_home(request: HttpRequest) -> HttpResponse:
    context = {
        "summary": support_summary(now=timezone.now()),
        "form": PeopleFilterForm(),
        "section": "support",
    }
    return render(request, "dashboard/support/home.html", context)
