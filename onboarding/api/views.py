"""The Segment-compatible tracking API (DESIGN §3.1). Thin: read, validate, call the service."""

from __future__ import annotations

import base64
import binascii
import hashlib
from datetime import timedelta

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.utils.cache import get_conditional_response, patch_cache_control
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST, require_safe

from config import metrics
from onboarding.models import Source
from onboarding.services.sources import source_for_write_key
from onboarding.tracking.envelope import body_write_key, decode_body, read_envelope
from onboarding.tracking.errors import EnvelopeError, Problem
from onboarding.tracking.ingest import ingest_events
from onboarding.tracking.ratelimit import retry_after_if_limited

from .browser_settings import settings_document, tracking_host
from .openapi import openapi_document

# analytics.js loads its settings on every page view: let browsers and CDNs keep them a while.
SETTINGS_MAX_AGE = 300


def _error(status: int, problem: Problem, **headers: str) -> JsonResponse:
    response = JsonResponse({"success": False, "error": problem.as_dict()}, status=status)
    for header, value in headers.items():
        response[header] = value
    return response


def _basic_auth_key(request: HttpRequest) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() != "basic" or not credentials:
        return ""
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return ""
    return decoded.partition(":")[0]


def _read_raw_body(request: HttpRequest) -> bytes:
    limit = settings.ONRAMP_MAX_REQUEST_BYTES
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        raise EnvelopeError(
            413, "payload_too_large", "body", f"the body is larger than {limit} bytes"
        )
    raw = request.read(limit + 1)
    if len(raw) > limit:
        raise EnvelopeError(
            413, "payload_too_large", "body", f"the body is larger than {limit} bytes"
        )
    return raw


def _authenticate(request: HttpRequest, document: object) -> Source | None:
    return source_for_write_key(_basic_auth_key(request) or body_write_key(document))


def _handle(request: HttpRequest, event_type: str | None, endpoint: str) -> JsonResponse:
    received_at = timezone.now()
    try:
        raw = _read_raw_body(request)
        document = decode_body(
            raw,
            content_encoding=request.headers.get("Content-Encoding", ""),
            max_bytes=settings.ONRAMP_MAX_REQUEST_BYTES,
        )
    except EnvelopeError as error:
        # Authenticate before answering, so an unknown key is a 401 whatever the body holds.
        if source_for_write_key(_basic_auth_key(request)) is None:
            return _unauthorized()
        return _refuse(error.status, error.problem)

    source = _authenticate(request, document)
    if source is None:
        return _unauthorized()
    retry_after = retry_after_if_limited(source.pk)
    if retry_after is not None:
        return _refuse(
            429,
            Problem("rate_limited", "", "too many requests for this write key"),
            **{"Retry-After": str(retry_after)},
        )
    try:
        envelope = read_envelope(
            document,
            event_type=event_type,
            received_at=received_at,
            max_event_bytes=settings.ONRAMP_MAX_EVENT_BYTES,
            max_future=timedelta(seconds=settings.ONRAMP_MAX_FUTURE_SECONDS),
        )
    except EnvelopeError as error:
        return _refuse(error.status, error.problem)

    result = ingest_events(
        source=source,
        events=envelope.events,
        rejections=envelope.rejections,
        received_at=received_at,
        endpoint=endpoint,
        # /v1/import is for history: stored and counted everywhere, never starting a rule.
        live=endpoint != "import",
    )
    metrics.events_ingested(
        accepted=result.accepted_types, rejected=[r.problem.code for r in result.rejections]
    )
    if not result.rejections:
        return JsonResponse({"success": True})
    rejected = [
        {"index": r.index, **r.problem.as_dict()} if r.index is not None else r.problem.as_dict()
        for r in result.rejections
    ]
    if event_type is not None:
        return JsonResponse(
            {"success": False, "error": result.rejections[0].problem.as_dict()}, status=400
        )
    body = {"success": False, "accepted": result.accepted, "rejected": rejected}
    if not result.accepted:
        # Nothing was stored: a 400 like any other, whose ``error`` names the first problem.
        body["error"] = rejected[0]
    return JsonResponse(body, status=200 if result.accepted else 400)


def _refuse(status: int, problem: Problem, **headers: str) -> JsonResponse:
    """A request refused as a whole: counted under its code, then answered."""
    metrics.request_rejected(problem.code)
    return _error(status, problem, **headers)


def _unauthorized() -> JsonResponse:
    response = _refuse(
        401,
        Problem(
            "unauthorized",
            "writeKey",
            "missing or unknown write key: send it as the Basic auth user name or as writeKey",
        ),
    )
    response["WWW-Authenticate"] = 'Basic realm="onramp"'
    return response


def _endpoint(event_type: str | None, endpoint: str):
    @csrf_exempt
    @require_POST
    def view(request: HttpRequest) -> JsonResponse:
        with metrics.ingest_timer(endpoint):
            return _handle(request, event_type, endpoint)

    view.__name__ = f"{endpoint}_view"
    return view


track = _endpoint("track", "track")
identify = _endpoint("identify", "identify")
page = _endpoint("page", "page")
screen = _endpoint("screen", "screen")
alias = _endpoint("alias", "alias")
group = _endpoint("group", "group")
batch = _endpoint(None, "batch")
history_import = _endpoint(None, "import")


@require_GET
def openapi(request: HttpRequest) -> JsonResponse:
    return JsonResponse(openapi_document(request.build_absolute_uri("/")))


@csrf_exempt  # read-only; lets an unknown method reach require_safe's 405 instead of CSRF's 403
@require_safe
def project_settings(request: HttpRequest, write_key: str) -> HttpResponse:
    """What analytics.js loads before sending anything: where to send (this Onramp)."""
    if source_for_write_key(write_key) is None:
        # The same answer for a key that never existed, was rotated out or whose source is
        # inactive; not kept by browsers, so a key created a moment later works within seconds.
        response = _error(
            404, Problem("not_found", "writeKey", "no active source has this write key")
        )
        patch_cache_control(response, no_store=True)
        return response
    response = JsonResponse(settings_document(write_key=write_key, host=tracking_host(request)))
    response["ETag"] = f'"{hashlib.sha256(response.content).hexdigest()[:32]}"'
    patch_cache_control(response, public=True, max_age=SETTINGS_MAX_AGE)
    return get_conditional_response(request, etag=response["ETag"], response=response)
