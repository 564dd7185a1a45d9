"""``GET /metrics`` (Prometheus) and the operator's page; both read ``dashboard.operations``.

The operator's page needs the ``dashboard.view_operations`` permission (in no role by default: grant
it to on-call staff in the admin).

``/metrics`` is not a dashboard page: no login. With ``ONRAMP_METRICS_TOKEN`` set it needs
``Authorization: Bearer <token>`` (401 otherwise); with no token only loopback clients may read it
(403 otherwise). Behind a reverse proxy on the same host every client looks like loopback: set a
token there (docs/operations.md).
"""

from __future__ import annotations

import hmac
import ipaddress

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from config import metrics
from dashboard import operations
from dashboard.decorators import view_operations_required
from dashboard.operations import DatabaseStateCollector
from dashboard.selectors import service_health


def _metrics_refusal(request: HttpRequest) -> HttpResponse | None:
    token = settings.ONRAMP_METRICS_TOKEN
    if token:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), token.encode()
        ):
            return None
        response = HttpResponse(
            "a bearer token is required\n", status=401, content_type="text/plain"
        )
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
        mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1 on a dual-stack bind
        loopback = (mapped or address).is_loopback
    except ValueError:
        loopback = False
    if loopback:
        return None
    return HttpResponse(
        "metrics are served to loopback clients only; set ONRAMP_METRICS_TOKEN\n",
        status=403,
        content_type="text/plain",
    )


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    refusal = _metrics_refusal(request)
    if refusal is not None:
        return refusal
    body, content_type = metrics.exposition(DatabaseStateCollector())
    return HttpResponse(body, content_type=content_type)


@view_operations_required
@require_GET
def operations_page(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    channels = operations.outcomes_by_channel(now=now)
    context = {
        "section": "operations",
        "now": now,
        "backlog": operations.backlog(now=now),
        "channels": channels,
        "outcome_names": metrics.MESSAGE_OUTCOMES,
        "unknown_24h": sum(c.outcomes.get("unknown", 0) for c in channels),
        "rules": operations.rules_by_tick_time(),
        "attention": operations.attention_items(),
        "health": service_health(),
    }
    return render(request, "dashboard/operations.html", context)
