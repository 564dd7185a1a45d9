"""Cross-cutting request and response guards: the Content-Security-Policy header (Django 5.2 has
none built in), from settings, and the refusal of NUL characters in parameters."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    JsonResponse,
    UnreadablePostError,
)
from django.http.multipartparser import MultiPartParserError

API_PREFIX = "/v1/"


def content_security_policy() -> str:
    policy: dict[str, list[str]] = settings.ONRAMP_CONTENT_SECURITY_POLICY
    return "; ".join(f"{directive} {' '.join(sources)}" for directive, sources in policy.items())


class ContentSecurityPolicyMiddleware:
    """Adds the policy to every response that does not set its own."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.header = content_security_policy()

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", self.header)
        return response


NUL = "\x00"


def _nul_parameter(request: HttpRequest) -> tuple[str, str] | None:
    """(where, name) of the first parameter holding a NUL character, if any."""
    api = request.path.startswith(API_PREFIX)
    if NUL in request.path and not api:
        return "path", "the URL path"
    sources = [("query", request.GET)]
    form_body = (request.content_type or "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    )
    if request.method == "POST" and form_body and not api:
        # An unreadable body is left to the view's own handling (and Django's 400s).
        with suppress(
            MultiPartParserError, UnreadablePostError, RequestDataTooBig, TooManyFieldsSent
        ):
            sources.append(("form", request.POST))
    for where, data in sources:
        for name, values in data.lists():
            if NUL in name or any(NUL in value for value in values):
                return where, name.replace(NUL, "\\x00")
    return None


class RejectNulMiddleware:
    """Answers 400, naming the parameter, to a NUL character in the URL or a form parameter.

    PostgreSQL text cannot hold NUL (psycopg raises ``DataError``), and no Onramp value needs one,
    so one check here spares every filter, search box and choice field a 500. Under ``/v1/`` the
    API checks its own bodies and path parameters (an unknown write key in the settings URL is the
    same 404 whatever it holds); a NUL in its query parameters gets the API's JSON error shape.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        found = _nul_parameter(request)
        if found is None:
            return self.get_response(request)
        where, name = found
        label = name if where == "path" else f"the {where} parameter “{name}”"
        message = f"{label} contains a NUL character (%00), which is not accepted"
        if request.path.startswith(API_PREFIX):
            error = {"code": "invalid_value", "path": name, "message": message}
            return JsonResponse({"success": False, "error": error}, status=400)
        return HttpResponseBadRequest(
            f"Bad request: {message}.\n", content_type="text/plain; charset=utf-8"
        )
