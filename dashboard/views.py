"""Dashboard pages. Every page requires login; ``/healthz`` is public and says only up or down.

Pages render whole, or, for an htmx request, only the named partial the request targets
(``HX-Target`` is the partial's DOM id). Permission checks run before either, because a client can
ask for any partial directly.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET
from django.views.decorators.vary import vary_on_headers

from dashboard import selectors
from dashboard.decorators import view_dashboard_required
from dashboard.figures import events_per_hour_figure
from dashboard.partials import htmx_target
from dashboard.selectors import service_health
from dashboard.views_support import support_lands_home

# The chart's time ranges: GET ?range=… value → (label, length).
CHART_RANGES: dict[str, tuple[str, timedelta]] = {
    "24h": ("24 h", timedelta(hours=24)),
    "48h": ("48 h", timedelta(hours=48)),
    "7d": ("7 d", timedelta(days=7)),
}
DEFAULT_CHART_RANGE = "48h"
LATEST_EVENTS_LIMIT = 15


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    health = service_health()
    return JsonResponse(health, status=200 if health["ok"] else 503)


def _chart_context(request: HttpRequest) -> dict[str, Any]:
    chart_range = request.GET.get("range", DEFAULT_CHART_RANGE)
    if chart_range not in CHART_RANGES:
        chart_range = DEFAULT_CHART_RANGE
    label, length = CHART_RANGES[chart_range]
    end = timezone.now().replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    start = end - length
    rows = selectors.events_per_hour(start=start, end=end)
    return {
        "chart_range": chart_range,
        "chart_range_label": label,
        "chart_ranges": [(key, value[0]) for key, value in CHART_RANGES.items()],
        "chart_has_data": bool(rows),
        "chart_figure": events_per_hour_figure(rows, start=start, end=end) if rows else None,
    }


def _latest_events_context() -> dict[str, Any]:
    events = selectors.latest_events(limit=LATEST_EVENTS_LIMIT)
    return {
        "latest_events": [
            {"event": event, "properties": json.dumps(event.properties, ensure_ascii=False)}
            for event in events
        ],
        "latest_events_refreshed_at": timezone.now(),
    }


# Partials of overview.html an htmx request may target, and the context each one needs.
_OVERVIEW_PARTIALS = {
    "events-chart": _chart_context,
    "latest-events": lambda request: _latest_events_context(),
}


@support_lands_home
@view_dashboard_required
@require_GET
@vary_on_headers("HX-Request", "HX-Target")
def overview(request: HttpRequest) -> HttpResponse:
    target = htmx_target(request)
    if target in _OVERVIEW_PARTIALS:
        context = _OVERVIEW_PARTIALS[target](request)
        return render(request, f"dashboard/overview.html#{target}", context)
    context = {
        "section": "overview",
        "totals": selectors.overview_totals(now=timezone.now()),
        **_chart_context(request),
        **_latest_events_context(),
    }
    return render(request, "dashboard/overview.html", context)
