"""The flow editor: name, slug, window and ordered steps; saved through ``flow_save``.

Steps are a server-side formset. Adding, removing and moving a step are submit buttons
(``action=add``, ``remove:2``, ``up:2``, ``down:2``) that re-render the form from what was typed,
without saving, so the editor works without JavaScript; with htmx the same buttons post the form
and swap only the ``#flow-steps`` partial.
"""

from __future__ import annotations

import re
from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import get_object_or_404, redirect
from django.views.decorators.http import require_http_methods
from django.views.decorators.vary import vary_on_headers

from dashboard.decorators import dashboard_write_required
from dashboard.forms import STEP_FIELDS, FlowForm, StepFormSet
from dashboard.partials import render_page
from dashboard.rows import apply_row_action
from dashboard.views_lifecycle import FLOW, lifecycle_panel
from onboarding.configfile.durations import format_duration
from onboarding.models import OnboardingFlow
from onboarding.services.flows import StepInput, flow_problems, flow_save
from onboarding.where_text import format_where

PREFIX = "steps"
_STEP_PATH = re.compile(r"^steps\[(\d+)\](?:\.(\w+))?")
_EMPTY_ROW = {"name": "", "event": "", "where": "", "optional": False, "critical": False}


def _rows_from_post(data: QueryDict) -> list[dict[str, Any]]:
    """The step rows as typed, in order (raw text: nothing is validated here)."""
    try:
        total = min(int(data.get(f"{PREFIX}-TOTAL_FORMS", 0)), 100)
    except ValueError:
        total = 0
    rows = []
    for index in range(total):
        key = f"{PREFIX}-{index}-"
        rows.append(
            {
                "name": data.get(key + "name", ""),
                "event": data.get(key + "event", ""),
                "where": data.get(key + "where", ""),
                "optional": bool(data.get(key + "optional")),
                "critical": bool(data.get(key + "critical")),
            }
        )
    return rows


def _rows_from_flow(flow: OnboardingFlow) -> list[dict[str, Any]]:
    return [
        {
            "name": step.name,
            "event": step.event_name,
            "where": format_where(step.where),
            "optional": step.optional,
            "critical": step.critical,
        }
        for step in flow.steps.order_by("position")
    ]


def _apply_row_action(rows: list[dict[str, Any]], action: str) -> list[dict[str, Any]]:
    return apply_row_action(rows, action, lambda _: dict(_EMPTY_ROW))


def _unbound_steps(rows: list[dict[str, Any]]) -> Any:
    formset = StepFormSet(prefix=PREFIX, initial=rows)
    formset.extra = 0
    return formset


def _bound_steps(data: QueryDict) -> Any:
    data = data.copy()
    # Every row is "extra": a row left completely empty is skipped rather than an error.
    data[f"{PREFIX}-INITIAL_FORMS"] = "0"
    return StepFormSet(data, prefix=PREFIX)


def _save(
    request: HttpRequest, form: FlowForm, formset: Any, flow: OnboardingFlow | None
) -> OnboardingFlow | None:
    """Validate the form, put the service's problems next to their fields, save if all is well."""
    if not (form.is_valid() & formset.is_valid()):
        return None
    filled = [(i, f.cleaned_data) for i, f in enumerate(formset.forms) if f.cleaned_data]
    steps = [
        StepInput(
            name=data["name"],
            event=data["event"],
            where=data["where"],
            optional=data["optional"],
            critical=data["critical"],
        )
        for _, data in filled
    ]
    slug = flow.slug if flow is not None else form.cleaned_data["slug"]
    values = {
        "slug": slug,
        "name": form.cleaned_data["name"],
        "window_seconds": form.cleaned_data["window"],
        "steps": steps,
    }
    if flow is None and OnboardingFlow.objects.filter(slug=slug).exists():
        form.add_error("slug", "A flow with this slug already exists.")
    for problem in flow_problems(**values):
        step = _STEP_PATH.match(problem.path)
        if step is not None:
            row = formset.forms[filled[int(step.group(1))][0]]
            field = step.group(2) if step.group(2) in STEP_FIELDS else None
            row.add_error(field, problem.message)
        elif problem.path == "steps":
            form.add_error(None, f"Add at least one step ({problem.message}).")
        elif problem.path in form.fields:
            form.add_error(problem.path, problem.message)
        else:
            form.add_error(None, str(problem))
    if form.errors or any(f.errors for f in formset.forms):
        return None
    saved = flow_save(**values)
    verb = {"created": "Created", "updated": "Saved", "unchanged": "No changes to"}[saved.status]
    messages.success(request, f"{verb} {saved.object.name}.")
    return saved.object


def _editor(request: HttpRequest, flow: OnboardingFlow | None) -> HttpResponse:
    editing = flow is not None
    action = request.POST.get("action", "save") if request.method == "POST" else ""
    if request.method == "POST" and action == "save":
        form = FlowForm(
            request.POST, editing=editing, initial={"slug": flow.slug} if flow else None
        )
        formset = _bound_steps(request.POST)
        saved = _save(request, form, formset, flow)
        if saved is not None:
            return redirect("dashboard:funnel", saved.slug)
    elif request.method == "POST":
        rows = _apply_row_action(_rows_from_post(request.POST), action)
        formset = _unbound_steps(rows)
        form = FlowForm(
            initial={
                "name": request.POST.get("name", ""),
                "slug": flow.slug if flow else request.POST.get("slug", ""),
                "window": request.POST.get("window", ""),
            },
            editing=editing,
        )
    elif flow is not None:
        form = FlowForm(
            initial={
                "name": flow.name,
                "slug": flow.slug,
                "window": format_duration(flow.window_seconds),
            },
            editing=True,
        )
        formset = _unbound_steps(_rows_from_flow(flow))
    else:
        form = FlowForm(initial={"window": "7d"})
        formset = _unbound_steps([dict(_EMPTY_ROW), dict(_EMPTY_ROW)])
    context = {"section": "funnels", "flow": flow, "form": form, "formset": formset}
    if flow is not None:
        context["lifecycle"] = lifecycle_panel(request, FLOW, flow)
    return render_page(request, "dashboard/flows/editor.html", context, partials=["flow-steps"])


@dashboard_write_required("onboarding.add_onboardingflow")
@require_http_methods(["GET", "POST"])
@vary_on_headers("HX-Request", "HX-Target")
def flow_new(request: HttpRequest) -> HttpResponse:
    return _editor(request, None)


@dashboard_write_required("onboarding.change_onboardingflow")
@require_http_methods(["GET", "POST"])
@vary_on_headers("HX-Request", "HX-Target")
def flow_edit(request: HttpRequest, slug: str) -> HttpResponse:
    return _editor(request, get_object_or_404(OnboardingFlow, slug=slug))
