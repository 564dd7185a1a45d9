"""Why people stop at a step (issue 20, part 1): the funnel page's explanation panel, loaded over
htmx after the funnel, and the one-click segment from one of its rows."""

from __future__ import annotations

from urllib.parse import urlencode

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from dashboard.decorators import dashboard_write_required, view_dashboard_required
from dashboard.funnels import FunnelQueryError, step_median_seconds
from dashboard.funnels.explain import Feature, act_on_step, explain_step, segment_from_feature
from onboarding.models import OnboardingFlow, Step

from .views_funnels import _filter_form, _filter_params, _query


def _steps(flow: OnboardingFlow) -> list[Step]:
    return list(Step.objects.filter(flow=flow).order_by("position"))


@view_dashboard_required
@require_GET
def funnel_explain(request: HttpRequest, slug: str) -> HttpResponse:
    flow = get_object_or_404(OnboardingFlow, slug=slug)
    steps = _steps(flow)
    form = _filter_form(request)
    context: dict = {"flow": flow, "steps": steps[1:], "explanation": None, "error": None}
    if not form.is_valid():
        context["error"] = "Fix the filters above to see why people stop."
        return render(request, "dashboard/funnels/_explain.html", context, status=400)
    try:
        step = int(request.GET.get("step") or 2)
    except ValueError:
        step = 0
    context.update(step=step, params=_filter_params(form.cleaned_data, request))
    query = _query(flow, form.cleaned_data)
    try:
        explanation = explain_step(query, step)
        gap = step_median_seconds(query, step)
    except FunnelQueryError as error:
        context["error"] = f"step: {error}"
        return render(request, "dashboard/funnels/_explain.html", context, status=400)
    action = act_on_step(
        flow.slug,
        query.step_defs(),
        step,
        median_gap_seconds=gap,
        passed=explanation.passed,
        window_seconds=int(query.window.total_seconds()),
    )
    context.update(
        explanation=explanation,
        action=action,
        act_url=f"{reverse('triggers:rule_new')}?{urlencode(action.params)}",
    )
    return render(request, "dashboard/funnels/_explain.html", context)


class FeatureForm(forms.Form):
    kind = forms.ChoiceField(choices=[("event", "event"), ("entry", "entry"), ("trait", "trait")])
    key = forms.CharField(max_length=255)
    value = forms.CharField(max_length=255, required=False)

    def clean(self):
        data = super().clean()
        if data.get("kind") in ("entry", "trait") and not data.get("value"):
            self.add_error("value", "A property or trait needs its value.")
        return data


@dashboard_write_required("onboarding.add_segment")
@require_POST
def funnel_explain_segment(request: HttpRequest, slug: str) -> HttpResponse:
    flow = get_object_or_404(OnboardingFlow, slug=slug)
    form = FeatureForm(request.POST)
    if not form.is_valid():
        problems = "; ".join(
            f"{field}: {' '.join(errors)}" for field, errors in form.errors.items()
        )
        return HttpResponse(problems, status=400, content_type="text/plain; charset=utf-8")
    data = form.cleaned_data
    feature = Feature(data["kind"], data["key"], data["value"] if data["kind"] != "event" else None)
    steps = _steps(flow)
    if not steps:
        return HttpResponse("flow: it has no steps", status=400, content_type="text/plain")
    segment = segment_from_feature(flow.name, steps[0].event_name, feature)
    messages.success(
        request,
        f"Segment “{segment.name}”: the people with {feature.label}. Use it to filter the funnel "
        "or to target a rule.",
    )
    return redirect(reverse("dashboard:segment_edit", args=[segment.slug]))
