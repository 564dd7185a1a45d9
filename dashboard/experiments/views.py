"""Experiment pages: the list, the set-up (inside a rule's context) with its live sample-size panel,
status changes and shipping, and the results.

The set-up is one form that works without JavaScript: adding and removing arms, adding, moving
and removing an arm's follow-ups and "Update" on the calculator are submit buttons (``action=add``,
``remove:1``, ``arms-0-follow_ups:add``, ``refresh``) that re-render from what was typed. With htmx, arm changes swap ``#arms`` (and the ``#experiment-plan`` panel,
out of band) and any change refreshes ``#experiment-plan``. Saving, starting, stopping and
shipping go through :mod:`triggers.services.experiments` (audited, actor = the user); their
problems (``variants[1].weight``) are shown next to their fields.
"""

from __future__ import annotations

import shlex
from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers

from dashboard.decorators import dashboard_write_required, view_dashboard_required
from dashboard.experiments import figures
from dashboard.experiments.forms import (
    DEFAULT_ARMS,
    ArmRow,
    ExperimentForm,
    apply_row_action,
    attach_problems,
    follow_up_forms,
    metric_from_form,
    rows_from_post,
    rows_from_variants,
    variants_from_rows,
)
from dashboard.partials import htmx_target
from onboarding.configfile.durations import DurationError, parse_duration
from onboarding.models import OnboardingFlow
from triggers.experiments import planning
from triggers.experiments.results import experiment_results
from triggers.models import Experiment, ExperimentStatus, MessageTemplate, Rule
from triggers.services.experiments import (
    experiment_save,
    experiment_set_status,
    experiment_ship,
    experiment_validate,
)

EDITOR = "dashboard/experiments/editor.html"
SAVE_ACTIONS = ("save", "start")


RUN_EXPERIMENT = "triggers.run_experiment"  # start, stop, ship (dashboard/permissions.py)


def _flows() -> list[tuple[str, str]]:
    """The flows a metric may choose (archived ones cannot be chosen)."""
    flows = OnboardingFlow.objects.filter(archived_at=None).order_by("name")
    return list(flows.values_list("slug", "name"))


def _templates() -> dict[str, str]:
    """Template slug → channel: an arm's follow-up offers the templates of its channel."""
    return dict(MessageTemplate.objects.order_by("slug").values_list("slug", "channel"))


@view_dashboard_required
@require_GET
def experiments_list(request: HttpRequest) -> HttpResponse:
    rule_slug = request.GET.get("rule")
    if rule_slug:
        rule = get_object_or_404(Rule, slug=rule_slug)
        return redirect("triggers:experiment_new", rule_slug=rule.slug)
    experiments = (
        Experiment.objects.select_related("rule", "shipped_variant")
        .annotate(
            assigned=Count("assignments", distinct=True), arms=Count("variants", distinct=True)
        )
        .order_by("-created_at")
    )
    rules = Rule.objects.exclude(status="archived").order_by("name").values_list("slug", "name")
    context = {"section": "experiments", "experiments": experiments, "rules": rules}
    return render(request, "dashboard/experiments/list.html", context)


# --- set-up ---------------------------------------------------------------------------------------


def _initial(experiment: Experiment | None, rule: Rule) -> tuple[dict[str, Any], list[ArmRow]]:
    if experiment is None:
        flow = (rule.current_version.definition.get("trigger") or {}).get("flow", "")
        values = {"slug": f"{rule.slug}-test"[:64], "flow": flow, "completed_within": "14d"}
        return values, [
            ArmRow(name=r.name, weight=r.weight, holdout=r.holdout) for r in DEFAULT_ARMS
        ]
    metric = experiment.metric or {}
    values = {
        "slug": experiment.slug,
        "flow": metric.get("flow", ""),
        "completed_within": metric.get("completed_within", ""),
        "reengaged_within": metric.get("reengaged_within", ""),
        "planned_users_per_arm": experiment.planned_users_per_arm,
    }
    return values, rows_from_variants(experiment.variants.order_by("position"))


def _plan_context(data: dict[str, Any], rows: list[ArmRow], rule: Rule) -> dict[str, Any]:
    """The calculator panel from what the form holds now (never raises; explains what is missing)."""
    now = timezone.now()
    out: dict[str, Any] = {"plan_rule": rule}
    try:
        within = parse_duration((data.get("completed_within") or "").strip())
    except DurationError:
        within = 0
    flow = (data.get("flow") or "").strip()
    if not flow or within <= 0:
        out["plan_missing"] = "Choose the flow and the window to see the sample size."
        return out
    baseline = planning.flow_baseline(flow, completed_within=within, now=now)
    out["baseline"] = baseline
    typed = _number(data.get("baseline"))
    rate = typed / 100 if typed is not None else baseline.rate
    out["baseline_typed"] = typed is not None
    effect = _number(data.get("minimum_effect"))
    effect = 2.0 if effect is None else effect
    out["minimum_effect"] = effect
    arms = []
    for row in rows:
        try:
            weight = int(row.weight)
        except ValueError:
            weight = 0
        arms.append((row.name or "?", weight, row.holdout))
    traffic = planning.rule_traffic(rule, now=now)
    out["traffic"] = traffic
    if rate is None:
        out["plan_missing"] = (
            "Nobody entered this flow in the 30 days before a window could close: type a baseline "
            "rate to plan."
        )
        return out
    if len(arms) < 2 or any(weight <= 0 for _, weight, _ in arms):
        out["plan_missing"] = "Give at least two arms positive weights to see the sample size."
        return out
    try:
        out["planned"] = int(str(data.get("planned_users_per_arm") or "").strip())
    except ValueError:
        out["planned"] = None
    try:
        out["plan"] = planning.plan(
            baseline=rate,
            minimum_effect=effect / 100,
            arms=arms,
            traffic=traffic,
            completed_within=within,
        )
    except ValueError:
        out["plan_missing"] = (
            f"A change of {effect:g} points from {rate:.1%} leaves the possible range; choose a "
            "smaller effect."
        )
    return out


def _number(text: Any) -> float | None:
    try:
        value = float(str(text).strip())
    except (TypeError, ValueError):
        return None
    return value if value > 0 else None


def _context(
    request: HttpRequest,
    rule: Rule,
    experiment: Experiment | None,
    form: ExperimentForm,
    rows: list[ArmRow],
    *,
    unplaced: list[str] | None = None,
    arm_errors: list[str] | None = None,
) -> dict[str, Any]:
    data = form.data if form.is_bound else {**form.initial}
    weights = [int(r.weight) if r.weight.isdigit() else 0 for r in rows]
    for row, weight in zip(rows, weights, strict=True):
        row.share = weight / sum(weights) if sum(weights) and weight else None
    context = {
        "section": "experiments",
        "rule": rule,
        "experiment": experiment,
        "form": form,
        "rows": rows,
        "unplaced": unplaced or [],
        "arm_errors": arm_errors or [],
        "ship_choices": [
            v.name for v in (experiment.variants.all() if experiment else []) if not v.holdout
        ],
    }
    context.update(_plan_context(data, rows, rule))
    return context


def _save(
    request: HttpRequest, rule: Rule, experiment: Experiment | None, action: str
) -> tuple[Experiment | None, ExperimentForm, list[ArmRow], list[str], list[str]]:
    editing = experiment is not None
    post = request.POST.copy()
    if experiment is not None:
        post["slug"] = experiment.slug
    initial = {"slug": experiment.slug} if experiment else None
    form = ExperimentForm(post, initial=initial, flows=_flows(), editing=editing)
    form.is_valid()
    rows = follow_up_forms(rows_from_post(request.POST), _templates(), bound=True)
    variants = variants_from_rows(rows)
    metric = metric_from_form(form)
    problems = experiment_validate(rule=rule, variants=variants, metric=metric)
    unplaced = attach_problems(problems, form, rows)
    arm_errors = [u for u in unplaced if u.startswith("Arms")]
    unplaced = [u for u in unplaced if not u.startswith("Arms")]
    slug = experiment.slug if experiment else form.cleaned_data.get("slug")
    if experiment is None and slug and Experiment.objects.filter(slug=slug).exists():
        form.add_error("slug", "An experiment with this slug already exists.")
    planned_ok = "planned_users_per_arm" not in form.errors
    if form.errors or any(r.has_errors for r in rows) or unplaced or arm_errors or not planned_ok:
        return None, form, rows, unplaced, arm_errors
    try:
        saved, changed = experiment_save(
            slug=slug,
            rule_slug=rule.slug,
            variants=variants,
            metric=metric,
            planned_users_per_arm=form.cleaned_data.get("planned_users_per_arm"),
            actor=request.user,
        )
        if action == "start" and saved.status != ExperimentStatus.RUNNING:
            saved = experiment_set_status(
                experiment=saved, status=ExperimentStatus.RUNNING, actor=request.user
            )
    except ValidationError as error:
        for field, errors in error.message_dict.items():
            target = field if field in form.fields else None
            for message in errors:
                form.add_error(target, message)
        return None, form, rows, unplaced, arm_errors
    if action == "start":
        messages.success(
            request, f"{saved.slug} is running: new enrollments are split between arms."
        )
    elif not changed:
        messages.info(request, f"No changes to {saved.slug}.")
    elif experiment is not None and saved.phase != experiment.phase:
        messages.warning(
            request,
            f"Saved {saved.slug}: the arms changed while it runs, so phase {saved.phase} started "
            "with a new seed. Earlier phases are analysed on their own.",
        )
    else:
        messages.success(request, f"Saved {saved.slug} ({saved.get_status_display().lower()}).")
    return saved, form, rows, unplaced, arm_errors


def _editor(request: HttpRequest, rule: Rule, experiment: Experiment | None) -> HttpResponse:
    editing = experiment is not None
    action = request.POST.get("action", "") if request.method == "POST" else ""
    target = htmx_target(request)

    if action == "start" and not request.user.has_perm(RUN_EXPERIMENT):
        raise PermissionDenied  # defining is growth's; starting is the experiment owner's
    if action in SAVE_ACTIONS:
        if experiment is not None and experiment.status == ExperimentStatus.STOPPED:
            messages.error(request, "A stopped experiment cannot change; copy it into a new one.")
            return redirect("triggers:experiment_edit", slug=experiment.slug)
        saved, form, rows, unplaced, arm_errors = _save(request, rule, experiment, action)
        if saved is not None:
            if action == "start":
                return redirect("triggers:experiment_results", slug=saved.slug)
            return redirect("triggers:experiment_edit", slug=saved.slug)
        context = _context(
            request, rule, experiment, form, rows, unplaced=unplaced, arm_errors=arm_errors
        )
        return render(request, EDITOR, context, status=422 if request.htmx else 200)

    if request.method == "POST":
        post = request.POST.copy()
        if experiment is not None:
            post["slug"] = experiment.slug
        form = ExperimentForm(initial=post.dict(), flows=_flows(), editing=editing)
        rows = apply_row_action(rows_from_post(request.POST), action)
    else:
        values, rows = _initial(experiment, rule)
        form = ExperimentForm(initial=values, flows=_flows(), editing=editing)
    follow_up_forms(rows, _templates(), bound=False)  # as typed, no errors before a save
    context = _context(request, rule, experiment, form, rows)
    if target == "arms":
        return render(request, f"{EDITOR}#arms-with-plan", context)
    return render(request, EDITOR, context)


@dashboard_write_required("triggers.add_experiment")
@require_http_methods(["GET", "POST"])
@vary_on_headers("HX-Request", "HX-Target")
def experiment_new(request: HttpRequest, rule_slug: str) -> HttpResponse:
    rule = get_object_or_404(Rule.objects.select_related("current_version"), slug=rule_slug)
    if rule.current_version is None:
        raise Http404("the rule has no version yet")
    return _editor(request, rule, None)


@dashboard_write_required("triggers.change_experiment")
@require_http_methods(["GET", "POST"])
@vary_on_headers("HX-Request", "HX-Target")
def experiment_edit(request: HttpRequest, slug: str) -> HttpResponse:
    experiment = get_object_or_404(
        Experiment.objects.select_related("rule__current_version"), slug=slug
    )
    return _editor(request, experiment.rule, experiment)


@dashboard_write_required("triggers.change_experiment")
@require_POST
def experiment_plan(request: HttpRequest) -> HttpResponse:
    """The ``#experiment-plan`` partial for the posted form (htmx, on change)."""
    rule = get_object_or_404(Rule, slug=request.POST.get("rule", ""))
    context = _plan_context(request.POST.dict(), rows_from_post(request.POST), rule)
    return render(request, f"{EDITOR}#experiment-plan", context)


@dashboard_write_required(RUN_EXPERIMENT)
@require_POST
def experiment_status(request: HttpRequest, slug: str) -> HttpResponse:
    """Start or stop through the service, audited."""
    experiment = get_object_or_404(Experiment, slug=slug)
    status = request.POST.get("status", "")
    if status not in (ExperimentStatus.RUNNING, ExperimentStatus.STOPPED):
        messages.error(request, "Unknown status.")
        return redirect("triggers:experiment_results", slug=slug)
    restarting = experiment.status == ExperimentStatus.STOPPED
    try:
        experiment = experiment_set_status(experiment=experiment, status=status, actor=request.user)
    except ValidationError as error:
        messages.error(request, f"Could not change the status: {' '.join(error.messages)}")
        return redirect("triggers:experiment_results", slug=slug)
    if status == ExperimentStatus.RUNNING and restarting:
        messages.success(
            request,
            f"{slug} is running again as phase {experiment.phase}: it counts from zero; earlier "
            "phases stay readable.",
        )
    elif status == ExperimentStatus.RUNNING:
        messages.success(request, f"{slug} is running.")
    else:
        messages.success(request, f"{slug} is stopped: nobody new is assigned.")
    return redirect("triggers:experiment_results", slug=slug)


def _ship_choices(arms: list[Any]) -> list[tuple[str, str]]:
    """(arm, label) for the ship menu: each variant, and the holdout as "stop sending"."""
    return [
        (a.name, "Stop sending (holdout wins)" if a.holdout else a.name)
        for a in sorted(arms, key=lambda arm: arm.holdout)
    ]


@dashboard_write_required(RUN_EXPERIMENT)
@require_POST
def experiment_ship_view(request: HttpRequest, slug: str) -> HttpResponse:
    """Ship one arm (the rule sends its follow-ups to everyone) or, for the holdout, stop sending
    (the rule is paused); either stops the experiment, audited.

    The first POST answers a confirmation showing the verdict's state; only a POST with
    ``confirm=1`` ships. Without a verdict the arm's name must be typed as well."""
    experiment = get_object_or_404(Experiment.objects.select_related("rule"), slug=slug)
    name = request.POST.get("variant", "")
    variant = experiment.variants.filter(name=name).first()
    if variant is None:
        messages.error(request, f"Could not ship: no arm named {name!r}.")
        return redirect("triggers:experiment_results", slug=slug)
    result = experiment_results(experiment, now=timezone.now(), phase=experiment.phase)
    comparison = next((c for c in result.analysis.comparisons if c.arm == name), None)
    context = {
        "section": "experiments",
        "experiment": experiment,
        "variant": variant,
        "result": result,
        "comparison": comparison,
        "needs_name": result.verdict is None,
        "typed_error": None,
    }
    if request.POST.get("confirm") != "1":
        return render(request, "dashboard/experiments/ship_confirm.html", context)
    if context["needs_name"] and request.POST.get("typed_name", "").strip() != name:
        context["typed_error"] = f"Type {name} exactly to ship without a verdict."
        return render(request, "dashboard/experiments/ship_confirm.html", context, status=400)
    try:
        experiment = experiment_ship(experiment=experiment, variant_name=name, actor=request.user)
    except ValidationError as error:
        messages.error(request, f"Could not ship: {' '.join(error.messages)}")
        return redirect("triggers:experiment_results", slug=slug)
    if variant.holdout:
        messages.success(
            request,
            f"Stopped sending: the holdout won, so {experiment.rule.name} is paused and sends "
            "nothing.",
        )
    else:
        messages.success(
            request, f"Shipped {name}: {experiment.rule.name} now sends its follow-ups to everyone."
        )
    return redirect("triggers:experiment_results", slug=slug)


# --- results --------------------------------------------------------------------------------------


@view_dashboard_required
@require_GET
def experiment_results_view(request: HttpRequest, slug: str) -> HttpResponse:
    experiment = get_object_or_404(
        Experiment.objects.select_related("rule", "shipped_variant"), slug=slug
    )
    try:
        phase = int(request.GET.get("phase") or experiment.phase)
    except ValueError:
        phase = experiment.phase
    phase = min(max(phase, 1), experiment.phase)
    result = experiment_results(experiment, now=timezone.now(), phase=phase)
    comparisons = {c.arm: c for c in result.analysis.comparisons}
    rows = [
        {"outcome": arm, "result": stats_arm, "comparison": comparisons.get(arm.counts.name)}
        for arm, stats_arm in zip(result.arms, result.analysis.arms, strict=True)
    ]
    context = {
        "section": "experiments",
        "experiment": experiment,
        "result": result,
        "rows": rows,
        "phases": range(1, experiment.phase + 1),
        "several": len(result.analysis.comparisons) > 1,
        "short_arms": [a for a in result.arms if a.more_needed],
        "analysis_json": result.analysis.as_dict(),
        "rates_figure": figures.rates_figure(result),
        "over_time_figure": figures.over_time_figure(result),
        "has_over_time": any(result.over_time.values()),
        "ship_choices": _ship_choices(list(experiment.variants.all())),
        "ab_calc_arguments": " ".join(shlex.quote(a) for a in result.ab_calc_arguments()),
        "window": (experiment.metric or {}).get("completed_within", ""),
    }
    return render(request, "dashboard/experiments/results.html", context)
