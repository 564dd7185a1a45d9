"""Logging in, throttled: repeated failures for one user name from one address are locked out.

One lockout for every login form — the dashboard's ``/login/`` and the admin's ``/admin/login/``.
Failures are counted in the cache per (user name, client address) in a fixed window that starts at
the first failure, by a receiver of Django's ``user_login_failed`` signal (so every form that calls
``authenticate()`` with the request counts); ``user_logged_in`` clears the count. At
``ONRAMP_LOGIN_MAX_FAILURES`` the forms refuse without checking the password until the window ends
(:class:`ThrottledAuthenticationMixin`) and the views answer 429 with ``Retry-After``
(:func:`mark_locked_out`). The address is ``REMOTE_ADDR``: behind a proxy, the proxy must set it
(gunicorn's ``--forwarded-allow-ips``), or every client shares the proxy's counter.
"""

from __future__ import annotations

import hashlib
from typing import Any

from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.contrib.auth.views import LoginView
from django.core.cache import cache
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.dispatch import receiver
from django.forms import Form
from django.http import HttpRequest, HttpResponse

from .admin_guard import GuardedAdminSite

LOCKED_MESSAGE = "Too many failed attempts for this account. Try again in {minutes} minutes."


def _counter_key(username: str, request: HttpRequest) -> str:
    name = username.strip().lower()[:150]
    address = request.META.get("REMOTE_ADDR", "")
    digest = hashlib.sha256(f"{name}\x00{address}".encode()).hexdigest()
    return f"onramp:login-failures:{digest}"


def _typed_username(request: HttpRequest) -> str:
    return str(request.POST.get("username", ""))


def login_failures(request: HttpRequest) -> int:
    """Failures counted for the user name in the request's form from the request's address."""
    return int(cache.get(_counter_key(_typed_username(request), request), 0))


def is_locked_out(request: HttpRequest) -> bool:
    return login_failures(request) >= settings.ONRAMP_LOGIN_MAX_FAILURES


@receiver(user_login_failed, dispatch_uid="onramp-count-login-failure")
def count_login_failure(
    sender: object, credentials: dict[str, Any], request: HttpRequest | None = None, **kwargs: Any
) -> None:
    if request is None:  # authenticate() called outside a login form: nobody to throttle
        return
    key = _counter_key(_typed_username(request) or str(credentials.get("username", "")), request)
    cache.add(key, 0, timeout=settings.ONRAMP_LOGIN_LOCKOUT_SECONDS)
    try:
        cache.incr(key)
    except ValueError:  # expired between add and incr: count this failure in a new window
        cache.set(key, 1, timeout=settings.ONRAMP_LOGIN_LOCKOUT_SECONDS)


@receiver(user_logged_in, dispatch_uid="onramp-clear-login-failures")
def clear_login_failures(
    sender: object, request: HttpRequest | None, user: Any, **kwargs: Any
) -> None:
    if request is not None and request.method == "POST":
        cache.delete(_counter_key(_typed_username(request) or user.get_username(), request))


class ThrottledAuthenticationMixin:
    """Refuse a locked-out user name and address before ``authenticate()`` sees the password."""

    request: HttpRequest | None

    def clean(self) -> dict[str, Any]:
        if self.request is not None and is_locked_out(self.request):
            minutes = max(1, settings.ONRAMP_LOGIN_LOCKOUT_SECONDS // 60)
            raise ValidationError(LOCKED_MESSAGE.format(minutes=minutes), code="locked")
        return super().clean()  # type: ignore[misc]


class ThrottledAuthenticationForm(ThrottledAuthenticationMixin, AuthenticationForm):
    pass


class ThrottledAdminAuthenticationForm(ThrottledAuthenticationMixin, AdminAuthenticationForm):
    pass


def mark_locked_out(response: HttpResponse) -> HttpResponse:
    """Turn a login page that refused a locked-out attempt into 429 with ``Retry-After``."""
    form = (getattr(response, "context_data", None) or {}).get("form")
    if isinstance(form, Form) and form.has_error(NON_FIELD_ERRORS, code="locked"):
        response.status_code = 429
        response["Retry-After"] = str(settings.ONRAMP_LOGIN_LOCKOUT_SECONDS)
    return response


class ThrottledLoginView(LoginView):
    authentication_form = ThrottledAuthenticationForm

    def form_invalid(self, form: Form) -> HttpResponse:
        return mark_locked_out(super().form_invalid(form))


class ThrottledAdminSite(GuardedAdminSite):
    """The admin site, with the dashboard's login lockout (``config.admin.AdminConfig``), whose
    changelists refuse out-of-range date-hierarchy parameters (``dashboard/admin_guard.py``)."""

    login_form = ThrottledAdminAuthenticationForm

    def login(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        return mark_locked_out(super().login(request, extra_context))
