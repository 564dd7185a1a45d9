"""Access control for dashboard views.

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


def dashboard_permission_required(permission: str) -> Callable[[View], View]:
    """Require login and ``permission``: anonymous → login page, logged in without it → 403.

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
            return view(request, *args, **kwargs)

        return wrapped

    return decorator


view_dashboard_required = dashboard_permission_required("dashboard.view_dashboard")
