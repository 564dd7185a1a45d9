"""The KPI overview (DESIGN §4.8): tiles, per-flow and per-rule trends, flags, stalled people.

Everything range-dependent comes from the daily roll-ups (:mod:`dashboard.kpis`); the range
selector swaps only ``#kpi-results`` with htmx. The stalled list is live and range-independent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST
from django.views.decorators.vary import vary_on_headers

from dashboard import figures_kpis as figures
from dashboard.decorators import view_dashboard_required
from dashboard.formatting import duration_label
from dashboard.kpis import (
    DEFAULT_RANGE,
    RANGES,
    KpiQuery,
    rollup_recent,
    run_kpis,
    stalled_people,
)
from dashboard.kpis.engagement import NONE, engagement_by, opens_tracked, total
from dashboard.kpis.queries import RuleKpis
from dashboard.partials import htmx_target

STALLED_LIMIT = 20


@dataclass(frozen=True)
class RuleRow:
    kpis: RuleKpis
    figure: dict[str, Any]
    figure_id: str


def _results_context(request: HttpRequest) -> dict[str, Any]:
    key = request.GET.get("range", DEFAULT_RANGE)
    if key not in RANGES:
        key = DEFAULT_RANGE
    query = KpiQuery(days=RANGES[key], today=timezone.now().date())
    result = run_kpis(query)
    days = query.dates
    start = datetime(query.first.year, query.first.month, query.first.day, tzinfo=UTC)
    engagement = engagement_by(
        "rule_id", since=start, until=start + timedelta(days=query.days)
    )  # the range's UTC days, like the roll-ups; one aggregate for every rule
    has_flows = any(flow.days for flow in result.flows)
    return {
        "range": key,
        "ranges": [(name, f"{days_} d") for name, days_ in RANGES.items()],
        "result": result,
        "engagement": total(engagement.values()),
        "opens_tracked": opens_tracked(),
        "rule_engagement": [(k, engagement.get(k.rule.pk, NONE)) for k in result.rules],
        "ttv_label": duration_label(result.median_ttv_seconds),
        "flow_rows": [(flow, duration_label(flow.median_ttv_seconds)) for flow in result.flows],
        "has_flows": has_flows,
        "completion_figure": figures.completion_rate_figure(result.flows, days)
        if has_flows
        else None,
        "ttv_figure": figures.time_to_value_figure(result.flows, days) if has_flows else None,
        "rule_charts": [
            RuleRow(rule, figures.rule_sends_figure(rule, days), f"rule-sends-{rule.rule.pk}")
            for rule in result.rules
            if rule.days
        ],
    }


def _stalled_context(request: HttpRequest) -> dict[str, Any]:
    return {"stalled": stalled_people(now=timezone.now(), limit=STALLED_LIMIT)}


_PARTIALS = {"kpi-results": _results_context, "kpi-stalled": _stalled_context}


@view_dashboard_required
@require_GET
@vary_on_headers("HX-Request", "HX-Target")
def kpis_overview(request: HttpRequest) -> HttpResponse:
    target = htmx_target(request)
    if target in _PARTIALS:
        return render(request, f"dashboard/kpis/overview.html#{target}", _PARTIALS[target](request))
    context = {"section": "kpis", **_results_context(request), **_stalled_context(request)}
    return render(request, "dashboard/kpis/overview.html", context)


@view_dashboard_required
@require_POST
def kpis_refresh(request: HttpRequest) -> HttpResponse:
    """Roll up the recent days now instead of waiting for the beat's pass (same work)."""
    report = rollup_recent(now=timezone.now())
    messages.success(
        request,
        f"KPIs rolled up for {report.first:%b} {report.first.day} – {report.last:%b} "
        f"{report.last.day} in {report.seconds:.1f} s.",
    )
    key = request.POST.get("range", DEFAULT_RANGE)
    return redirect(f"{reverse('dashboard:kpis')}?range={key if key in RANGES else DEFAULT_RANGE}")
