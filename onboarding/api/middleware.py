"""Cross-cutting behaviour of the public API under ``/v1/``.

- CORS: any origin may call the tracking endpoints (write keys are semi-public and only append);
  preflights are answered here. No credentials: the API never reads cookies.
- A database that is down is a 503 with ``Retry-After``, telling clients to retry the same request,
  never a 500. So is one that refuses writes (SQLSTATE 25006: a standby not yet promoted after a
  failover, or ``default_transaction_read_only`` during maintenance), which psycopg reports as an
  ``InternalError``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.conf import settings
from django.db import InterfaceError, InternalError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse

from config import metrics

logger = logging.getLogger(__name__)

API_PREFIX = "/v1/"
IN_APP_PREFIX = "/v1/in-app/"
_READ_ONLY_SQLSTATE = "25006"
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
    # X-Retry-Count: analytics.js numbers its retries (without it, every retry fails preflight).
    "Access-Control-Allow-Headers": (
        "Authorization, Content-Type, Content-Encoding, X-Onramp-User-Hash, X-Retry-Count"
    ),
    "Access-Control-Max-Age": "86400",
}


def database_unavailable_response() -> JsonResponse:
    response = JsonResponse(
        {
            "success": False,
            "error": {
                "code": "database_unavailable",
                "path": "",
                "message": "the event store is unavailable; retry the same request later",
            },
        },
        status=503,
    )
    response["Retry-After"] = str(settings.ONRAMP_DB_UNAVAILABLE_RETRY_AFTER)
    return response


class TrackingApiMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not request.path.startswith(API_PREFIX):
            return self.get_response(request)
        if request.method == "OPTIONS":
            response = HttpResponse(status=204)
        else:
            response = self.get_response(request)
        for header, value in CORS_HEADERS.items():
            response.headers.setdefault(header, value)
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if request.path.startswith(API_PREFIX) and _database_unavailable(exception):
            # The driver's first line says why (refused, recovering, read-only); a DETAIL line
            # can quote a row's values, so it stays out.
            logger.error(
                "database unavailable during %s: %s",
                request.path,
                (str(exception).strip().splitlines() or [exception.__class__.__name__])[0],
                extra={
                    "error": exception.__class__.__name__,
                    "sqlstate": getattr(exception.__cause__, "sqlstate", None),
                },
            )
            if not request.path.startswith(IN_APP_PREFIX):
                metrics.request_rejected("database_unavailable")
            return database_unavailable_response()
        return None


def _database_unavailable(exception: Exception) -> bool:
    if isinstance(exception, OperationalError | InterfaceError):
        return True
    return (
        isinstance(exception, InternalError)
        and getattr(exception.__cause__, "sqlstate", None) == _READ_ONLY_SQLSTATE
    )
