"""Flows list, funnel page, the people behind a funnel count and their CSV export.

The funnel's filters live in the query string (a URL is a shareable view); htmx swaps only the
``#funnel-results`` partial when the filter bar changes, and pushes the new URL. Figures come from
:mod:`dashboard.figures_funnels`; the view only runs the typed queries and passes results on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db.models import Count
from django.http import Http404, HttpRequest, HttpResponse, QueryDict, StreamingHttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET
from django.views.decorators.vary import vary_on_headers

from dashboard import figures_funnels as figures
from dashboard.decorators import view_dashboard_required
from dashboard.forms import COMMON_BREAKDOWNS, DEFAULT_RANGE_DAYS, FunnelFilterForm
from dashboard.funnels import (
    FunnelQuery,
    FunnelQueryError,
    FunnelResult,
    Gathered,
    funnel_people,
    funnel_trends,
    gather,
    people_csv_lines,
    run_funnel,
    time_to_convert,
)
from dashboard.partials import htmx_target, render_page
from dashboard.views_lifecycle import archived_filter
from onboarding.configfile.durations import format_duration
from onboarding.models import Event, OnboardingFlow, Step

PEOPLE_PAGE_SIZE = 50
BREAKDOWN_SAMPLE = 200


def _today():
    return timezone.now().date()


def _flow(slug: str) -> OnboardingFlow:
    return get_object_or_404(OnboardingFlow, slug=slug)


# --- flows list ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class FlowSummary:
    flow: OnboardingFlow
    steps: int
    result: FunnelResult | None
    completion: float | None
    sparkline: figures.Sparkline | None


def _summary(flow: OnboardingFlow, n_steps: int) -> FlowSummary:
    if not n_steps:
        return FlowSummary(flow, 0, None, None, None)
    today = _today()
    query = FunnelQuery(
        flow=flow, since=today - timedelta(days=DEFAULT_RANGE_DAYS - 1), until=today
    )
    gathered = gather(query)
    result = run_funnel(query, gathered)
    completion = result.steps[-1].count / result.entrants if result.entrants else None
    line = figures.sparkline(funnel_trends(query, "week", gathered)) if result.entrants else None
    return FlowSummary(flow, n_steps, result, completion, line)


@view_dashboard_required
@require_GET
def flows_list(request: HttpRequest) -> HttpResponse:
    archived = archived_filter(request, OnboardingFlow)
    flows = archived.apply(OnboardingFlow.objects.annotate(n_steps=Count("steps")).order_by("name"))
    summaries = [_summary(flow, flow.n_steps) for flow in flows]
    return render(
        request,
        "dashboard/funnels/flows_list.html",
        {
            "section": "funnels",
            "summaries": summaries,
            "range_days": DEFAULT_RANGE_DAYS,
            "archived": archived,
        },
    )


# --- the funnel page ----------------------------------------------------------------------------


def _filter_form(request: HttpRequest) -> FunnelFilterForm:
    return FunnelFilterForm(request.GET, today=_today())


def _filter_params(cleaned: dict[str, Any], request: HttpRequest) -> QueryDict:
    """The filters as a query string, for links that keep the page's view (people, CSV)."""
    params = QueryDict(mutable=True)
    params["since"] = cleaned["since"].isoformat()
    params["until"] = cleaned["until"].isoformat()
    if cleaned.get("window"):
        params["window"] = format_duration(cleaned["window"])
    if cleaned.get("segment") is not None:
        params["segment"] = cleaned["segment"].slug
    if cleaned.get("breakdown"):
        params["breakdown"] = cleaned["breakdown"]
    if request.GET.get("interval") in ("day", "week"):
        params["interval"] = request.GET["interval"]
    return params


def _query(flow: OnboardingFlow, cleaned: dict[str, Any]) -> FunnelQuery:
    return FunnelQuery(
        flow=flow,
        since=cleaned["since"],
        until=cleaned["until"],
        segment=cleaned.get("segment"),
        breakdown=cleaned.get("breakdown"),
        window_seconds=cleaned.get("window"),
    )


def _people_url(flow: OnboardingFlow, params: QueryDict, **extra: Any) -> str:
    query = params.copy()
    for key, value in extra.items():
        query[key] = str(value)
    return f"{reverse('dashboard:funnel_people', args=[flow.slug])}?{query.urlencode()}"


@dataclass(frozen=True)
class StepRow:
    step: Any
    is_friction: bool
    dropped: int
    reached_url: str
    dropped_url: str | None
    median: str


def _step_rows(flow: OnboardingFlow, result: FunnelResult, params: QueryDict) -> list[StepRow]:
    rows = []
    for step in result.steps:
        previous = result.steps[step.index - 2] if step.index > 1 else None
        rows.append(
            StepRow(
                step=step,
                is_friction=step.index == result.friction_step,
                dropped=previous.count - step.count if previous else 0,
                reached_url=_people_url(flow, params, step=step.index, outcome="reached"),
                dropped_url=(
                    _people_url(flow, params, step=step.index, outcome="dropped")
                    if previous
                    else None
                ),
                median=figures.duration_label(step.median_seconds_from_previous),
            )
        )
    return rows


def _breakdown_rows(
    flow: OnboardingFlow, result: FunnelResult, params: QueryDict
) -> list[dict[str, Any]]:
    rows = []
    for value, steps in (result.breakdown or {}).items():
        entrants = steps[0].count
        rows.append(
            {
                "value": value,
                "cells": [
                    {
                        "count": step.count,
                        "rate": step.conversion_from_start,
                        "url": _people_url(
                            flow, params, step=step.index, outcome="reached", value=value
                        ),
                    }
                    for step in steps
                ],
                "conversion": steps[-1].count / entrants if entrants else 0.0,
            }
        )
    return rows


def _breakdown_suggestions(flow: OnboardingFlow) -> list[str]:
    """Common breakdowns plus the property names seen on recent entry events."""
    entry = Step.objects.filter(flow=flow).order_by("position").first()
    names = set(COMMON_BREAKDOWNS)
    if entry is not None:
        recent = (
            Event.objects.filter(name=entry.event_name)
            .order_by("-timestamp")
            .values_list("properties", flat=True)[:BREAKDOWN_SAMPLE]
        )
        for properties in recent:
            if isinstance(properties, dict):
                names.update(key for key, value in properties.items() if isinstance(value, str))
    return sorted(names)


def _results_context(
    flow: OnboardingFlow, form: FunnelFilterForm, request: HttpRequest
) -> dict[str, Any]:
    context: dict[str, Any] = {
        "flow": flow,
        "form": form,
        "result": None,
        "error": None,
        "window_label": format_duration(flow.window_seconds),
        "breakdown_warning": None,
    }
    if not form.is_valid():
        context["error"] = "Fix the filters above to see the funnel."
        return context
    cleaned = form.cleaned_data
    params = _filter_params(cleaned, request)
    query = _query(flow, cleaned)
    try:
        gathered = gather(query)  # the entrants once, for the three reports
        result = run_funnel(query, gathered)
        trends = funnel_trends(query, cleaned["interval"], gathered) if result.entrants else []
        time_chart = _time_to_convert(query, gathered, result, request)
    except FunnelQueryError as error:
        context["error"] = str(error)
        return context
    if cleaned.get("window"):
        context["window_label"] = format_duration(cleaned["window"]) + " (this query)"
    if result.breakdown is not None and result.entrants and set(result.breakdown) == {"(none)"}:
        context["breakdown_warning"] = (
            f"No entrant's entry event or traits has a property named “{cleaned['breakdown']}”, "
            "so everyone falls in “(none)”. Check the name: the suggestions list the properties "
            "seen on recent entry events."
        )
    context.update(
        {
            "result": result,
            "params": params.urlencode(),
            "filter_items": list(params.items()),
            "interval": cleaned["interval"],
            "breakdown": cleaned.get("breakdown"),
            "segment": cleaned.get("segment"),
            "friction_sentence": figures.friction_sentence(result),
            "still_converting_sentence": figures.still_converting_sentence(result),
            "step_rows": _step_rows(flow, result, params),
            "completion": (result.steps[-1].count / result.entrants if result.entrants else None),
            "funnel_figure": figures.funnel_figure(result) if result.entrants else None,
            "trend_figure": figures.trend_figure(trends, cleaned["interval"]) if trends else None,
            "trend_has_incomplete": any(point.incomplete for point in trends),
            **time_chart,
            "breakdown_figure": (
                figures.breakdown_figure(result, cleaned["breakdown"]) if result.breakdown else None
            ),
            "breakdown_rows": _breakdown_rows(flow, result, params),
        }
    )
    return context


def _time_to_convert(
    query: FunnelQuery, gathered: Gathered, result: FunnelResult, request: HttpRequest
) -> dict[str, Any]:
    """The time-to-convert card: the step in ``?ttc_step`` (default: the friction step, else
    the first one reached), its figure, and the steps the picker offers (with the funnel's
    counts: only the shown step's histogram is computed)."""
    friction = result.friction_step
    try:
        wanted = int(request.GET.get("ttc_step") or friction or 0)
    except ValueError:
        wanted = None
    reached = result.steps[1:]
    step = figures.time_to_convert_step(reached, wanted)
    if step is None:
        return {"ttc_figure": None, "ttc_steps": [], "ttc_step": None}
    histograms = time_to_convert(query, gathered=gathered, step=step)
    return {
        "ttc_figure": figures.time_to_convert_figure(histograms, step=step, friction=friction),
        "ttc_steps": [
            (s.index, f"{s.index - 1} → {s.index}. {s.name}", s.count) for s in reached if s.count
        ],
        "ttc_step": step,
        "ttc_people": histograms[0].count,  # only the shown step is binned
    }


@view_dashboard_required
@require_GET
@vary_on_headers("HX-Request", "HX-Target")
def funnel(request: HttpRequest, slug: str) -> HttpResponse:
    flow = _flow(slug)
    form = _filter_form(request)
    context = _results_context(flow, form, request)
    target = htmx_target(request)
    if target in ("funnel-results", "funnel-time-chart"):
        return render(request, f"dashboard/funnels/funnel.html#{target}", context)
    context.update(
        {
            "section": "funnels",
            "breakdown_suggestions": _breakdown_suggestions(flow),
            "csv_params": context.get("params", ""),
        }
    )
    return render(request, "dashboard/funnels/funnel.html", context)


# --- the people behind a count ------------------------------------------------------------------


@dataclass(frozen=True)
class PeopleSelection:
    flow: OnboardingFlow
    query: FunnelQuery
    params: QueryDict
    step: int
    outcome: str
    value: str | None
    title: str


def _positive_int(text: str | None, default: int) -> int:
    try:
        number = int(text or default)
    except ValueError:
        return default
    return number if number >= 1 else default


def _selection(request: HttpRequest, slug: str) -> PeopleSelection:
    flow = _flow(slug)
    form = _filter_form(request)
    if not form.is_valid():
        raise Http404("invalid filters")
    steps = list(Step.objects.filter(flow=flow).order_by("position"))
    step = _positive_int(request.GET.get("step"), 1)
    outcome = request.GET.get("outcome", "reached")
    if outcome not in ("reached", "dropped") or step > len(steps):
        raise Http404("no such step or outcome")
    if outcome == "dropped" and step < 2:
        raise Http404("nobody drops at the entry step")
    value = request.GET.get("value") or None
    if value is not None and not form.cleaned_data.get("breakdown"):
        value = None
    if outcome == "reached":
        title = f"Reached step {step}: {steps[step - 1].name}"
    else:
        title = (
            f"Dropped at step {step}: reached {steps[step - 2].name}, not {steps[step - 1].name}"
        )
    params = _filter_params(form.cleaned_data, request)
    params["step"], params["outcome"] = str(step), outcome
    if value is not None:
        params["value"] = value
    return PeopleSelection(
        flow, _query(flow, form.cleaned_data), params, step, outcome, value, title
    )


@view_dashboard_required
@require_GET
@vary_on_headers("HX-Request", "HX-Target")
def funnel_people_page(request: HttpRequest, slug: str) -> HttpResponse:
    selection = _selection(request, slug)
    page_number = _positive_int(request.GET.get("page"), 1)
    try:
        page = funnel_people(
            selection.query,
            step=selection.step,
            outcome=selection.outcome,  # type: ignore[arg-type]
            breakdown_value=selection.value,
            page=page_number,
            page_size=PEOPLE_PAGE_SIZE,
        )
    except FunnelQueryError as error:
        raise Http404(str(error)) from None

    def page_url(number: int) -> str:
        params = selection.params.copy()
        params["page"] = str(number)
        return f"?{params.urlencode()}"

    funnel_params = selection.params.copy()
    for key in ("step", "outcome", "value"):
        funnel_params.pop(key, None)
    context = {
        "section": "funnels",
        "flow": selection.flow,
        "selection": selection,
        "page": page,
        "previous_url": page_url(page.page - 1) if page.page > 1 else None,
        "next_url": page_url(page.page + 1) if page.page < page.pages else None,
        "csv_url": (
            reverse("dashboard:funnel_people_csv", args=[selection.flow.slug])
            + "?"
            + selection.params.urlencode()
        ),
        "funnel_url": (
            reverse("dashboard:funnel", args=[selection.flow.slug])
            + "?"
            + funnel_params.urlencode()
        ),
        "segment": selection.query.segment,
    }
    return render_page(request, "dashboard/funnels/people.html", context, partials=["people-table"])


@view_dashboard_required
@require_GET
def funnel_people_csv(request: HttpRequest, slug: str) -> StreamingHttpResponse:
    selection = _selection(request, slug)
    lines = people_csv_lines(
        selection.query,
        step=selection.step,
        outcome=selection.outcome,  # type: ignore[arg-type]
        breakdown_value=selection.value,
    )
    response = StreamingHttpResponse(lines, content_type="text/csv; charset=utf-8")
    filename = f"{selection.flow.slug}-step{selection.step}-{selection.outcome}.csv"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
