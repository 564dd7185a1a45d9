"""In-app message API (DESIGN §3.2): the widget lists a person's messages and reports outcomes.

- ``GET /v1/in-app/messages?userId=…`` (or ``anonymousId``): sent, not dismissed, newest first.
- ``POST /v1/in-app/messages/<id>/seen|clicked|dismissed``: the first report of each wins.

Auth is the source's write key as the HTTP Basic user name, never a cookie, and never the URL: a
``writeKey`` query parameter is refused (400), because URLs are kept in access logs and browser
history. Write keys are semi-public (they sit in web pages), so a user hash can prove who is
asking: ``X-Onramp-User-Hash`` = hex HMAC-SHA256(ONRAMP_IN_APP_SECRET, id), computed by the app's
backend. It is checked whenever it is sent (a server without a secret cannot check it, so it
refuses it), and required when ONRAMP_IN_APP_REQUIRE_HASH is on.
Errors are JSON naming the field, like the tracking API; a message of someone else is a 404.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.http.multipartparser import MultiPartParserError
from django.views.decorators.csrf import csrf_exempt

from onboarding.models import IdentityKind, Source
from onboarding.services.sources import source_for_write_key
from onboarding.tracking.ratelimit import retry_after_if_limited
from triggers.services.outcomes import message_record_outcome

from .inbox import inbox_message, inbox_messages, person_for_identity, present

logger = logging.getLogger(__name__)

HASH_HEADER = "X-Onramp-User-Hash"
OUTCOMES = ("seen", "clicked", "dismissed")
MAX_ID_LENGTH = 255
MAX_BODY_BYTES = 8 * 1024
MAX_MESSAGE_ID = 2**63 - 1


class ApiError(Exception):
    def __init__(self, status: int, code: str, path: str, message: str, **headers: str) -> None:
        super().__init__(message)
        self.status, self.code, self.path, self.headers = status, code, path, headers

    def response(self) -> JsonResponse:
        body = {"code": self.code, "path": self.path, "message": str(self)}
        response = JsonResponse({"success": False, "error": body}, status=self.status)
        for header, value in self.headers.items():
            response[header] = value
        return response


def _write_key(request: HttpRequest) -> str:
    if "writeKey" in request.GET:
        raise ApiError(
            400,
            "write_key_in_url",
            "writeKey",
            "send the write key as the HTTP Basic auth user name (an Authorization header), "
            "never in the URL: URLs are kept in access logs",
        )
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "basic" and credentials:
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            decoded = ""
        return decoded.partition(":")[0]
    return ""


def _authenticate(request: HttpRequest) -> Source:
    source = source_for_write_key(_write_key(request))
    if source is None:
        raise ApiError(
            401,
            "unauthorized",
            "writeKey",
            "missing or unknown write key: send it as the HTTP Basic auth user name",
            **{"WWW-Authenticate": 'Basic realm="onramp"'},
        )
    retry_after = retry_after_if_limited(source.pk)
    if retry_after is not None:
        raise ApiError(
            429,
            "rate_limited",
            "",
            "too many requests for this write key",
            **{"Retry-After": str(retry_after)},
        )
    return source


def _parameters(request: HttpRequest) -> dict:
    """Query parameters, overlaid by the body of a POST (a JSON object, or a form)."""
    values: dict = {key: request.GET.get(key) for key in ("userId", "anonymousId")}
    if request.method != "POST":
        return values
    content_type = request.content_type or ""
    if content_type.startswith(("multipart/", "application/x-www-form-urlencoded")):
        try:
            form = request.POST
        except MultiPartParserError:
            raise ApiError(400, "invalid_body", "body", "the form body cannot be read") from None
        for key in ("userId", "anonymousId"):
            if form.get(key):
                values[key] = form[key]
        return values
    raw = request.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise ApiError(413, "payload_too_large", "body", f"the body is over {MAX_BODY_BYTES} bytes")
    if not raw.strip():
        return values
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise ApiError(400, "invalid_json", "body", "the body is not valid JSON") from None
    if not isinstance(document, dict):
        raise ApiError(400, "invalid_type", "body", "the body must be a JSON object")
    for key in ("userId", "anonymousId"):
        if document.get(key) is not None:
            values[key] = document[key]
    return values


def _identity(values: dict) -> tuple[str, str]:
    """(identity kind, id) for the userId, else the anonymousId."""
    for key, kind in (("userId", IdentityKind.USER), ("anonymousId", IdentityKind.ANONYMOUS)):
        value = values.get(key)
        if value is None or value == "":
            continue
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)  # Segment ids may be numbers
        if not isinstance(value, str):
            raise ApiError(400, "invalid_type", key, f"{key} must be a string")
        if len(value) > MAX_ID_LENGTH or "\x00" in value:
            raise ApiError(
                400, "invalid_value", key, f"{key} must be at most {MAX_ID_LENGTH} characters"
            )
        return kind, value
    raise ApiError(400, "missing_field", "userId", "userId or anonymousId is required")


def user_hash(value: str, secret: str | None = None) -> str:
    """The hex HMAC-SHA256 of a user's id that the app's backend hands to the widget."""
    key = (settings.ONRAMP_IN_APP_SECRET if secret is None else secret).encode()
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()


def _check_hash(request: HttpRequest, value: str) -> None:
    sent = request.headers.get(HASH_HEADER, "").strip().lower()
    required = settings.ONRAMP_IN_APP_REQUIRE_HASH
    if not sent and not required:
        return
    if not sent:
        raise ApiError(401, "user_hash_required", HASH_HEADER, f"{HASH_HEADER} is required")
    if not settings.ONRAMP_IN_APP_SECRET:
        # A hash that is sent is always checked; without a secret it cannot be, so it is refused
        # rather than ignored (the app believes it is proving who asks: it must learn it is not).
        logger.error("an in-app request sent %s but ONRAMP_IN_APP_SECRET is empty", HASH_HEADER)
        raise ApiError(
            401,
            "invalid_user_hash",
            HASH_HEADER,
            f"{HASH_HEADER} cannot be verified: this server has no user-hash secret",
        )
    expected = user_hash(value).encode()
    if not hmac.compare_digest(expected, sent.encode("utf-8", "replace")):
        raise ApiError(
            401, "invalid_user_hash", HASH_HEADER, f"{HASH_HEADER} does not match the user id"
        )


def _method(request: HttpRequest, allowed: str) -> None:
    if request.method != allowed:
        raise ApiError(
            405,
            "method_not_allowed",
            "",
            f"use {allowed} for this endpoint",
            Allow=f"{allowed}, OPTIONS",
        )


@csrf_exempt
def messages(request: HttpRequest) -> JsonResponse:
    try:
        _method(request, "GET")
        _authenticate(request)
        kind, value = _identity(_parameters(request))
        _check_hash(request, value)
    except ApiError as error:
        return error.response()
    person_id = person_for_identity(kind, value)
    inbox = inbox_messages(person_id) if person_id is not None else []
    response = JsonResponse({"success": True, "messages": [present(m) for m in inbox]})
    response["Cache-Control"] = "no-store"
    return response


@csrf_exempt
def outcome(request: HttpRequest, message_id: str, outcome: str) -> JsonResponse:
    try:
        _method(request, "POST")
        _authenticate(request)
        if outcome not in OUTCOMES:
            raise ApiError(404, "not_found", "outcome", f"the outcome must be one of {OUTCOMES}")
        kind, value = _identity(_parameters(request))
        _check_hash(request, value)
        pk = (
            int(message_id)
            if message_id.isascii() and message_id.isdigit() and len(message_id) <= 19
            else 0
        )
        person_id = person_for_identity(kind, value)
        message = (
            inbox_message(person_id, pk)
            if person_id is not None and 0 < pk <= MAX_MESSAGE_ID
            else None
        )
        if message is None:
            raise ApiError(404, "not_found", "id", "no such message for this user")
    except ApiError as error:
        return error.response()
    recorded = message_record_outcome(message_id=message.pk, outcome=outcome)
    return JsonResponse({"success": True, "recorded": recorded})
