"""Logging in, throttled: repeated failures for one user name from one address are locked out.

Failures are counted in the cache per (user name, client address) in a fixed window that starts at
the first failure. At ``ONRAMP_LOGIN_MAX_FAILURES`` the form answers 429 without checking the
password until the window ends; a successful login clears the count. The address is
``REMOTE_ADDR``: behind a proxy, the proxy must set it (gunicorn's ``--forwarded-allow-ips``), or
every client shares the proxy's counter.
"""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.contrib.auth.views import LoginView
from django.core.cache import cache
from django.core.exceptions import NON_FIELD_ERRORS
from django.forms import Form
from django.forms.utils import ErrorDict
from django.http import HttpRequest, HttpResponse

LOCKED_MESSAGE = "Too many failed attempts for this account. Try again in {minutes} minutes."


def _counter_key(request: HttpRequest) -> str:
    username = request.POST.get("username", "").strip().lower()[:150]
    address = request.META.get("REMOTE_ADDR", "")
    digest = hashlib.sha256(f"{username}\x00{address}".encode()).hexdigest()
    return f"onramp:login-failures:{digest}"


def login_failures(request: HttpRequest) -> int:
    return int(cache.get(_counter_key(request), 0))


class ThrottledLoginView(LoginView):
    def post(self, request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        if login_failures(request) >= settings.ONRAMP_LOGIN_MAX_FAILURES:
            return self._locked_out()
        return super().post(request, *args, **kwargs)

    def form_valid(self, form: Form) -> HttpResponse:
        cache.delete(_counter_key(self.request))
        return super().form_valid(form)

    def form_invalid(self, form: Form) -> HttpResponse:
        key = _counter_key(self.request)
        cache.add(key, 0, timeout=settings.ONRAMP_LOGIN_LOCKOUT_SECONDS)
        try:
            cache.incr(key)
        except ValueError:  # expired between add and incr: count this failure in a new window
            cache.set(key, 1, timeout=settings.ONRAMP_LOGIN_LOCKOUT_SECONDS)
        return super().form_invalid(form)

    def _locked_out(self) -> HttpResponse:
        minutes = max(1, settings.ONRAMP_LOGIN_LOCKOUT_SECONDS // 60)
        # Unbound, so the password is not even checked; the error is set directly.
        username = self.request.POST.get("username", "")[:150]
        form = self.get_form_class()(self.request, initial={"username": username})
        message = LOCKED_MESSAGE.format(minutes=minutes)
        form._errors = ErrorDict(
            {NON_FIELD_ERRORS: form.error_class([message], error_class="nonfield")}
        )
        response = self.render_to_response(self.get_context_data(form=form))
        response.status_code = 429
        response["Retry-After"] = str(settings.ONRAMP_LOGIN_LOCKOUT_SECONDS)
        return response
