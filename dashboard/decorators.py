"""Access control for dashboard views: the roles of ``dashboard/permissions.py``, enforced.

Every dashboard view names the permission to read it and, when it writes, the permission to write
(``write=``, checked on every method but GET, HEAD and OPTIONS): an editor page can be read by a
viewer, and only saved by someone allowed to change what it edits.

Django's ``permission_required`` either redirects everyone to the login page (a logged-in user
without the permission loops there) or answers 403 to everyone (an anonymous visitor is never asked
to log in). Dashboard pages want both: anonymous visitors log in, logged-in users without the
permission get 403.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django_htmx.http import HttpResponseClientRedirect

View = Callable[..., HttpResponse]


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def dashboard_permission_required(
    permission: str, *, write: str | None = None
) -> Callable[[View], View]:
    """Require login and ``permission``: anonymous → login page, logged in without it → 403.

    With ``write``, an unsafe request (POST…) also needs that permission, or gets 403.

    An htmx request from an expired session (a polling partial, say) gets an ``HX-Redirect`` to the
    login page, so the whole page navigates instead of the login form being swapped into a fragment.
    """

    def decorator(view: View) -> View:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
            user = request.user
            if not user.is_authenticated:
                if getattr(request, "htmx", False):
                    page = request.htmx.current_url_abs_path or "/"
                    return HttpResponseClientRedirect(redirect_to_login(page).url)
                return redirect_to_login(request.get_full_path())
            if not user.has_perm(permission):
                raise PermissionDenied
            if write and request.method not in SAFE_METHODS and not user.has_perm(write):
                raise PermissionDenied
            return view(request, *args, **kwargs)

        return wrapped

    return decorator


VIEW_DASHBOARD = "dashboard.view_dashboard"
view_dashboard_required = dashboard_permission_required(VIEW_DASHBOARD)
# The operator's page (delivery backlog, workers): granted to on-call staff, in no role by default.
VIEW_OPERATIONS = "dashboard.view_operations"
view_operations_required = dashboard_permission_required(VIEW_OPERATIONS)


def dashboard_write_required(write: str) -> Callable[[View], View]:
    """A dashboard page that anyone who reads the dashboard may open, and only ``write`` may post."""
    return dashboard_permission_required(VIEW_DASHBOARD, write=write)
