"""Rule pages: the list, the editor (with its live preview and version history), status changes.

The editor is one form that works without JavaScript: choosing a trigger kind and "Apply",
adding, removing and moving follow-ups are submit buttons (``action=refresh``, ``add``,
``remove:1``, ``up:1``, ``down:1``) that re-render the form from what was typed, without saving.
With htmx the same controls swap only the partial they change (``#trigger-fields``,
``#follow-ups``, ``#fallback-fields``), and every change refreshes ``#rule-preview``. Saving goes
through :func:`triggers.services.rules.rule_save`, whose problems (``follow_ups[1].delay``) are
shown next to their fields.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.text import slugify
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers

from dashboard.decorators import dashboard_write_required, view_dashboard_required
from dashboard.kpis.engagement import opens_tracked
from dashboard.partials import htmx_target
from dashboard.rules import selectors
from dashboard.rules.caps import ESTIMATE_DAYS, caps_estimate, caps_in_force
from dashboard.rules.forms import (
    EMPTY_ROW,
    FLOW_KINDS,
    FollowUpForm,
    RuleForm,
    apply_row_action,
    attach_problems,
    build_definition,
    initial_from_definition,
    row_forms,
    rows_from_post,
)
from dashboard.selectors import known_event_names
from onboarding.models import Segment
from triggers.models import BacktestRun, MessageTemplate, Rule, RuleStatus
from triggers.rules.spec import TRIGGER_KINDS, parse_rule
from triggers.services.activation import (
    DEFAULT_MAX_IDLE_HOURS,
    BackfillError,
    activation_backfill,
    backfill_candidates,
    offers_backfill,
)
from triggers.services.backtests import backtest_start
from triggers.services.rules import DatabaseCatalog, RuleInvalid, rule_save, rule_set_status

EDITOR = "dashboard/rules/editor.html"
ROW_PARTIALS = {"follow-ups", "fallback-fields", "trigger-fields"}
SAVE_ACTIONS = {"save": None, "activate": RuleStatus.ACTIVE}


@view_dashboard_required
@require_GET
def rules_list(request: HttpRequest) -> HttpResponse:
    rows = selectors.rule_rows(now=timezone.now())
    context = {"section": "rules", "rows": rows, "opens_tracked": opens_tracked()}
    return render(request, "dashboard/rules/list.html", context)


# --- editor -----------------------------------------------------------------------------------


class _Lookups:
    """What the editor's selects offer: flows with steps, segments, templates by channel.

    Archived ones only to an archived rule (which may keep naming them): a rule that can run
    cannot choose them.
    """

    def __init__(self, *, include_archived: bool = False) -> None:
        live = {} if include_archived else {"archived_at": None}
        self.flows = selectors.flows_info(include_archived=include_archived)
        self.segments = list(
            Segment.objects.filter(**live).order_by("name").values_list("slug", "name")
        )
        self.templates = dict(
            MessageTemplate.objects.filter(**live).order_by("slug").values_list("slug", "channel")
        )

    def rule_form(self, *args: Any, **kwargs: Any) -> RuleForm:
        return RuleForm(
            *args, flows=self.flows, segments=self.segments, templates=self.templates, **kwargs
        )


def _default_exit(kind: str) -> str:
    return "progressed" if kind in FLOW_KINDS else "never"


def _display_state(
    lookups: _Lookups, values: dict[str, Any], rows: list[dict[str, str]], *, editing: bool
) -> tuple[RuleForm, list[FollowUpForm]]:
    """Unbound forms showing ``values`` (no errors): for GET and for re-renders."""
    form = lookups.rule_form(initial=values, editing=editing)
    has_flow = form.trigger_kind in FLOW_KINDS or (
        form.trigger_kind == "milestone" and values.get("flow")
    )
    if not has_flow and values.get("exit_when") in ("progressed", "completed"):
        form.initial["exit_when"] = "never"  # the only choice the spec accepts without a flow
    return form, row_forms(rows, lookups.templates, bound=False)


# A new rule can open filled in from a link (the funnel's "Act on this step"): the trigger only.
PREFILL_FIELDS = ("name", "kind", "flow", "step", "minutes", "did", "missing", "within", "segment")


def _prefill(data: QueryDict) -> dict[str, Any]:
    values = {key: data[key][:200] for key in PREFILL_FIELDS if data.get(key)}
    if values.get("kind") not in TRIGGER_KINDS:
        values.pop("kind", None)
    if values.get("name"):
        values["slug"] = slugify(values["name"])[:50].strip("-")
    return values


def _values(data: QueryDict) -> dict[str, Any]:
    return {key: data.get(key) for key in data if not key.startswith("follow_ups-")}


def _preview(
    lookups: _Lookups,
    values: dict[str, Any],
    rows_data: list[dict[str, str]],
    *,
    now: Any,
    rule: Rule | None = None,
) -> dict[str, Any]:
    """The live panel: who matches the trigger now, what activation does, the detection
    latency and the caps that apply."""
    form = lookups.rule_form({k: v for k, v in values.items() if v is not None})
    form.is_valid()
    definition = build_definition(form, row_forms(rows_data, lookups.templates, bound=True))
    activating = rule is None or rule.status != RuleStatus.ACTIVE
    context: dict[str, Any] = {
        "caps": caps_in_force(definition),
        "activating": activating,
        "activation_form": form,
    }
    trigger_only = {
        "trigger": definition["trigger"],
        "follow_ups": [{"channel": "in_app", "template": "preview"}],
        "exit_when": "never",
    }
    spec, problems = parse_rule(trigger_only, _TriggerCatalog())
    if spec is None:
        context["preview_problems"] = [
            (_field_label(form, p.path), p.message)
            for p in problems
            if p.path.startswith("trigger")
        ]
        return context
    context.update(
        population=selectors.trigger_population(
            spec.trigger, segment_slug=definition.get("segment"), now=now, flows=lookups.flows
        ),
        latency=selectors.detection_latency(spec.trigger),
        measured=selectors.measured_latency_text(rule, now=now)
        if rule is not None and rule.pk
        else None,
        first_delay=definition["follow_ups"][0]["delay"] if definition["follow_ups"] else "",
    )
    if activating and offers_backfill(spec.trigger.kind):
        context["backfill"] = _backfill_preview(form, definition, trigger_only, rule, now)
    return context


def _backfill_preview(
    form: RuleForm,
    definition: dict[str, Any],
    trigger_only: dict[str, Any],
    rule: Rule | None,
    now: Any,
) -> dict[str, Any]:
    """How many people "also enroll people who are idle right now" would enroll, as typed."""
    if "backfill_hours" in form.errors:
        return {"hours": form.data.get("backfill_hours"), "count": None}
    hours = form.cleaned_data.get("backfill_hours") or DEFAULT_MAX_IDLE_HOURS
    who = {**trigger_only, "segment": definition.get("segment"), "reentry": definition["reentry"]}
    spec, _ = parse_rule({k: v for k, v in who.items() if v is not None}, _TriggerCatalog())
    if spec is None:  # an unfinished re-entry period or segment: count as the trigger alone
        spec, _ = parse_rule(trigger_only, _TriggerCatalog())
    candidates = backfill_candidates(spec, rule=rule, now=now, max_idle_hours=hours)
    return {"hours": hours, "count": len(candidates), "segment": bool(definition.get("segment"))}


def _field_label(form: RuleForm, path: str) -> str:
    name = path.split(".", 1)[1] if "." in path else "kind"
    field = form.fields.get(name) or form.fields["kind"]
    return str(field.label or name.capitalize())


class _TriggerCatalog(DatabaseCatalog):
    """The real flows, and a stand-in template, to validate the trigger on its own."""

    def template_channel(self, template_slug: str) -> str | None:
        return "in_app"


def _editor_context(
    request: HttpRequest,
    lookups: _Lookups,
    form: RuleForm,
    rows: list[FollowUpForm],
    rule: Rule | None,
    *,
    unplaced: list[str] | None = None,
    preview: tuple[dict[str, Any], list[dict[str, str]]] | None = None,
) -> dict[str, Any]:
    now = timezone.now()
    context: dict[str, Any] = {
        "section": "rules",
        "rule": rule,
        "form": form,
        "rows": rows,
        "row_total": len(rows),
        "unplaced": unplaced or [],
        "event_names": known_event_names(now=now),
        "versions": selectors.rule_versions(rule) if rule else [],
    }
    if preview is not None:
        context.update(_preview(lookups, *preview, now=now, rule=rule))
    return context


def _save(
    request: HttpRequest, lookups: _Lookups, rule: Rule | None, action: str
) -> tuple[Rule | None, RuleForm, list[FollowUpForm], list[str]]:
    editing = rule is not None
    initial = {"slug": rule.slug} if rule else None
    form = lookups.rule_form(request.POST, initial=initial, editing=editing)
    rows = row_forms(rows_from_post(request.POST), lookups.templates, bound=True)
    form.is_valid()
    definition = build_definition(form, rows)
    _, problems = parse_rule(definition, DatabaseCatalog())
    unplaced = attach_problems(problems, form, rows)
    if form.errors or any(row.errors for row in rows) or unplaced:
        return None, form, rows, unplaced
    slug = rule.slug if rule else form.cleaned_data["slug"]
    if rule is None and Rule.objects.filter(slug=slug).exists():
        form.add_error("slug", "A rule with this slug already exists.")
        return None, form, rows, unplaced
    status = SAVE_ACTIONS[action] or (None if editing else RuleStatus.DRAFT)
    was_active = rule is not None and rule.status == RuleStatus.ACTIVE
    try:
        saved, changed = rule_save(
            slug=slug,
            name=form.cleaned_data["name"],
            definition=definition,
            priority=form.cleaned_data["priority"],
            status=status,
            shadow=form.cleaned_data["shadow"],
            actor=request.user,
        )
    except RuleInvalid as error:  # the world changed between the check and the save
        return None, form, rows, attach_problems(error.problems, form, rows)
    except ValidationError as error:
        for field, errors in error.message_dict.items():
            target = field if field in form.fields else None
            for message in errors:
                form.add_error(target, message)
        return None, form, rows, unplaced
    backfill = None
    if (
        action == "activate"
        and not was_active
        and form.cleaned_data.get("backfill")
        and offers_backfill(form.trigger_kind)
    ):
        hours = form.cleaned_data.get("backfill_hours") or DEFAULT_MAX_IDLE_HOURS
        try:
            backfill = activation_backfill(rule=saved, max_idle_hours=hours, actor=request.user)
        except BackfillError as error:  # activated, but nobody was enrolled: say why
            messages.error(request, f"Nobody idle right now was enrolled: {error.message}")
    if not changed:
        messages.info(request, f"No changes to {saved.name}.")
    elif action == "activate":
        also = ""
        if backfill is not None:
            people = "person" if backfill.enrolled == 1 else "people"
            also = (
                f" Also enrolled {backfill.enrolled} {people} idle right now"
                f" (idle at most {backfill.max_idle_hours} h)."
            )
        messages.success(request, f"Saved and activated {saved.name}.{also}")
    else:
        messages.success(request, f"Saved {saved.name} ({saved.get_status_display().lower()}).")
    return saved, form, rows, unplaced


def _editor(request: HttpRequest, rule: Rule | None) -> HttpResponse:
    lookups = _Lookups(include_archived=rule is not None and rule.status == RuleStatus.ARCHIVED)
    editing = rule is not None
    action = request.POST.get("action", "save") if request.method == "POST" else ""
    target = htmx_target(request)

    if action in SAVE_ACTIONS:
        saved, form, rows, unplaced = _save(request, lookups, rule, action)
        if saved is not None:
            return redirect("triggers:rule_edit", slug=saved.slug)
        preview = (_values(request.POST), rows_from_post(request.POST))
        context = _editor_context(
            request, lookups, form, rows, rule, unplaced=unplaced, preview=preview
        )
        return render(request, EDITOR, context, status=422 if request.htmx else 200)

    if request.method == "POST":
        values = _values(request.POST)
        if rule is not None:
            values["slug"] = rule.slug
        rows_data = apply_row_action(rows_from_post(request.POST), action)
    elif rule is not None and rule.current_version is not None:
        values, rows_data = initial_from_definition(rule.current_version.definition)
        values.update(name=rule.name, slug=rule.slug, priority=rule.priority, shadow=rule.shadow)
    else:
        values, rows_data = (
            {"kind": "inactive_in_flow", "minutes": "5", "priority": 0},
            [dict(EMPTY_ROW)],
        )
        values["exit_when"] = "progressed"
        values.update(_prefill(request.GET))
    form, rows = _display_state(lookups, values, rows_data, editing=editing)
    if target in ROW_PARTIALS:
        context = _editor_context(request, lookups, form, rows, rule)
        return render(request, f"{EDITOR}#{target}", context)
    context = _editor_context(request, lookups, form, rows, rule, preview=(values, rows_data))
    return render(request, EDITOR, context)


@dashboard_write_required("triggers.add_rule")
@require_http_methods(["GET", "POST"])
@vary_on_headers("HX-Request", "HX-Target")
def rule_new(request: HttpRequest) -> HttpResponse:
    return _editor(request, None)


@dashboard_write_required("triggers.change_rule")
@require_http_methods(["GET", "POST"])
@vary_on_headers("HX-Request", "HX-Target")
def rule_edit(request: HttpRequest, slug: str) -> HttpResponse:
    rule = get_object_or_404(Rule.objects.select_related("current_version", "state"), slug=slug)
    return _editor(request, rule)


@view_dashboard_required
@require_GET
def trigger_fields(request: HttpRequest) -> HttpResponse:
    """The ``#trigger-fields`` partial for the kind and flow in the query (htmx, on change)."""
    lookups = _Lookups()
    values = _values(request.GET)
    form, _rows = _display_state(lookups, values, [], editing=False)
    if not values.get("exit_when"):
        form.initial["exit_when"] = _default_exit(form.trigger_kind)
    context = {"form": form, "event_names": known_event_names(now=timezone.now())}
    return render(request, f"{EDITOR}#trigger-fields", context)


@dashboard_write_required("triggers.change_rule")
@require_POST
def rule_preview(request: HttpRequest) -> HttpResponse:
    """The ``#rule-preview`` partial for the posted form (htmx, on change, debounced)."""
    lookups = _Lookups()
    slug = request.POST.get("rule")
    rule = Rule.objects.filter(slug=slug).first() if slug else None
    context = _preview(
        lookups, _values(request.POST), rows_from_post(request.POST), now=timezone.now(), rule=rule
    )
    context["rule"] = rule
    if request.GET.get("part") == "activation-options":  # the option's own recount
        return render(request, f"{EDITOR}#activation-options", context)
    return render(request, f"{EDITOR}#rule-preview", context)


@dashboard_write_required("triggers.change_rule")
@require_POST
def rule_status(request: HttpRequest, slug: str) -> HttpResponse:
    """Pause, resume (activate) or archive a rule through the service, audited."""
    rule = get_object_or_404(Rule, slug=slug)
    status = request.POST.get("status", "")
    if status not in (RuleStatus.ACTIVE, RuleStatus.PAUSED, RuleStatus.ARCHIVED, RuleStatus.DRAFT):
        messages.error(request, "Unknown status.")
        return redirect("triggers:rule_edit", slug=rule.slug)
    try:
        rule = rule_set_status(rule=rule, status=status, actor=request.user)
    except ValidationError as error:
        messages.error(request, f"Could not change the status: {' '.join(error.messages)}")
        return redirect("triggers:rule_edit", slug=rule.slug)
    verb = {"active": "is active", "paused": "is paused", "archived": "is archived"}
    messages.success(request, f"{rule.name} {verb.get(status, 'is a draft')}.")
    return redirect("triggers:rule_edit", slug=rule.slug)


BACKTEST_DAYS = 30


@dashboard_write_required("triggers.add_backtestrun")
@require_POST
def rule_backtest(request: HttpRequest, slug: str) -> HttpResponse:
    """Queue "test against the last 30 days" for the saved rule; the panel polls its progress."""
    rule = get_object_or_404(Rule, slug=slug)
    now = timezone.now()
    run = backtest_start(rule, now - timedelta(days=BACKTEST_DAYS), now, request.user)
    if getattr(request, "htmx", False):
        return render(
            request,
            "dashboard/backtest_status.html",
            {"run": run, "data": {}, "finished": False},
        )
    return redirect("backtests:report", run_id=run.pk)


# --- the caps panel's estimate ----------------------------------------------------------------


@dashboard_write_required("triggers.add_backtestrun")
@require_POST
def rule_caps_estimate(request: HttpRequest) -> HttpResponse:
    """Queue a backtest of the form's definition over the last 14 days; the panel polls it."""
    lookups = _Lookups()
    form = lookups.rule_form(request.POST)
    form.is_valid()
    definition = build_definition(
        form, row_forms(rows_from_post(request.POST), lookups.templates, bound=True)
    )
    spec, problems = parse_rule(definition, DatabaseCatalog())
    if spec is None:
        context = {"estimate_problems": [str(p) for p in problems][:5]}
        return render(request, "dashboard/rules/_caps_estimate.html", context)
    slug = request.POST.get("rule")
    rule = Rule.objects.filter(slug=slug).first() if slug else None
    now = timezone.now()
    run = backtest_start(
        rule, now - timedelta(days=ESTIMATE_DAYS), now, request.user, definition=definition
    )
    if not request.htmx:
        return redirect("triggers:rule_caps_estimate_status", run_id=run.pk)
    return render(request, "dashboard/rules/_caps_estimate.html", {"run": run})


@view_dashboard_required
@require_GET
def rule_caps_estimate_status(request: HttpRequest, run_id: int) -> HttpResponse:
    """The estimate's panel: progress while the run works, then the suppressed share."""
    run = get_object_or_404(BacktestRun, pk=run_id)
    context = {"run": run, "estimate": caps_estimate(run)}
    return render(request, "dashboard/rules/_caps_estimate.html", context)
