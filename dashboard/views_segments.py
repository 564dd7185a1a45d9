"""Segments list and editor, with a live member count; saved through ``segment_save``.

Conditions are edited as rows (trait, behaviour, flow state). Changing a row's type swaps that
row's partial over htmx; without JavaScript the "Refresh" button re-renders the whole form. Every
change also posts the form to the preview endpoint, which answers the ``#segment-preview`` partial.
Definitions the rows cannot show (nested any/not groups, person fields) are edited as YAML/JSON.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from django.contrib import messages
from django.db.models import Q
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers

from dashboard.decorators import dashboard_write_required, view_dashboard_required
from dashboard.forms import (
    CONDITION_ERROR_FIELDS,
    ConditionForm,
    SegmentForm,
)
from dashboard.partials import htmx_target, render_page
from dashboard.rows import apply_row_action, is_row_action
from dashboard.segment_rows import (
    PREFIX,
    Built,
    advanced_definition,
    build_definition,
    definition_yaml,
    describe_condition,
    empty_row,
    row_from_post,
    rows_from_definition,
    rows_from_post,
)
from dashboard.selectors import known_event_names
from dashboard.views_lifecycle import SEGMENT, archived_filter, lifecycle_panel
from onboarding.configfile.errors import Problem, ProblemsError
from onboarding.models import OnboardingFlow, Segment
from onboarding.segments import segment_count_and_sample
from onboarding.services.segments import segment_problems, segment_save

SAMPLE_SIZE = 10
_CONDITION_PATH = re.compile(r"^conditions\[(\d+)\](?:\.(\w+))?")


# --- the editor ---------------------------------------------------------------------------------


def _flow_choices(keep: Collection[str] = ()) -> list[tuple[str, str]]:
    """The flows a condition may choose: not archived, plus those in ``keep`` (already chosen)."""
    flows = OnboardingFlow.objects.filter(Q(archived_at=None) | Q(slug__in=keep))
    return list(flows.order_by("name").values_list("slug", "name"))


def _condition_forms(
    rows: list[dict[str, Any]],
    flows: list[tuple[str, str]],
    errors: dict[int, list[tuple[str | None, str]]] | None = None,
) -> list[ConditionForm]:
    forms = []
    for index, row in enumerate(rows):
        form = ConditionForm(initial=row, prefix=f"{PREFIX}-{index}", flow_choices=flows)
        form.cleaned_data = {}
        for name, message in (errors or {}).get(index, []):
            form.add_error(name, message)
        forms.append(form)
    return forms


@dataclass
class EditorState:
    form: SegmentForm
    mode: str
    rows: list[dict[str, Any]]
    row_errors: dict[int, list[tuple[str | None, str]]] = field(default_factory=dict)


def _state_from_post(request: HttpRequest, segment: Segment | None) -> EditorState:
    data = request.POST
    form = SegmentForm(
        data, editing=segment is not None, initial={"slug": segment.slug} if segment else None
    )
    mode = "advanced" if data.get("mode") == "advanced" else "rows"
    return EditorState(form, mode, rows_from_post(data))


def _definition_of(state: EditorState, data: QueryDict) -> tuple[Any, Built | None, str | None]:
    """The definition the form describes; in rows mode also how conditions map to rows."""
    if state.mode == "advanced":
        definition, error = advanced_definition(data.get("advanced", ""))
        return definition, None, error
    built = build_definition(data.get("match", "all"), state.rows)
    state.row_errors.update(built.row_errors)
    return built.definition, built, None


def _place_problems(state: EditorState, problems: list[Problem], built: Built | None) -> None:
    form = state.form
    for problem in problems:
        path = problem.path
        if path in ("name", "slug", "match") and path in form.fields:
            form.add_error(path, problem.message)
            continue
        if built is not None:
            match = _CONDITION_PATH.match(path)
            if match is not None and int(match.group(1)) < len(built.row_of_condition):
                row = built.row_of_condition[int(match.group(1))]
                name = CONDITION_ERROR_FIELDS.get(match.group(2) or "")
                detail = path[match.end(1) + 1 :].lstrip(".")
                message = (
                    f"{detail}: {problem.message}" if name is None and detail else problem.message
                )
                state.row_errors.setdefault(row, []).append((name, message))
                continue
        form.add_error("advanced" if state.mode == "advanced" else None, str(problem))


def _save(request: HttpRequest, state: EditorState, segment: Segment | None) -> Segment | None:
    form = state.form
    form.is_valid()
    definition, built, error = _definition_of(state, request.POST)
    if error:
        form.add_error("advanced", error)
        return None
    slug = segment.slug if segment else form.cleaned_data.get("slug")
    if segment is None and slug and Segment.objects.filter(slug=slug).exists():
        form.add_error("slug", "A segment with this slug already exists.")
    _, problems = segment_problems(
        slug=slug or "placeholder",
        name=form.cleaned_data.get("name") or "placeholder",
        definition=definition,
    )
    _place_problems(state, problems, built)
    if form.errors or state.row_errors:
        return None
    saved = segment_save(slug=slug, name=form.cleaned_data["name"], definition=definition)
    verb = {"created": "Created", "updated": "Saved", "unchanged": "No changes to"}[saved.status]
    messages.success(request, f"{verb} segment {saved.object.name}.")
    return saved.object


def _apply_action(state: EditorState, action: str, request: HttpRequest) -> None:
    """Row actions and mode switches: change what the form shows, save nothing."""
    if is_row_action(action):
        state.rows = apply_row_action(state.rows, action, lambda _: empty_row())
    elif action == "advanced" and state.mode == "rows":
        built = build_definition(request.POST.get("match", "all"), state.rows)
        state.mode = "advanced"
        state.form = SegmentForm(
            initial={**_form_initial(request.POST), "advanced": definition_yaml(built.definition)},
            editing=state.form.fields["slug"].disabled,
        )
        return
    elif action == "rows" and state.mode == "advanced":
        definition, error = advanced_definition(request.POST.get("advanced", ""))
        shown = rows_from_definition(definition) if error is None else None
        if shown is None:
            state.form.is_valid()
            state.form.add_error(
                "advanced",
                error or "This definition has nested groups or person fields: edit it here.",
            )
            return
        state.mode = "rows"
        match_value, state.rows = shown
        state.form = SegmentForm(
            initial={**_form_initial(request.POST), "match": match_value},
            editing=state.form.fields["slug"].disabled,
        )
        return
    # Unbound again, so nothing shows as an error before the user saves.
    state.form = SegmentForm(
        initial=_form_initial(request.POST), editing=state.form.fields["slug"].disabled
    )


def _form_initial(data: QueryDict) -> dict[str, Any]:
    return {key: data.get(key, "") for key in ("name", "slug", "match", "advanced")}


def _initial_state(segment: Segment | None) -> EditorState:
    if segment is None:
        form = SegmentForm(initial={"match": "all", "mode": "rows"})
        return EditorState(form, "rows", [empty_row()])
    shown = rows_from_definition(segment.definition)
    initial = {"name": segment.name, "slug": segment.slug}
    if shown is None:
        form = SegmentForm(
            initial={**initial, "advanced": definition_yaml(segment.definition)}, editing=True
        )
        return EditorState(form, "advanced", [])
    match, rows = shown
    return EditorState(SegmentForm(initial={**initial, "match": match}, editing=True), "rows", rows)


def _editor(request: HttpRequest, segment: Segment | None) -> HttpResponse:
    preview: Preview | None = None
    if request.method == "POST":
        state = _state_from_post(request, segment)
        action = request.POST.get("action", "save")
        if action == "save":
            saved = _save(request, state, segment)
            if saved is not None:
                return redirect("dashboard:segments")
        else:
            _apply_action(state, action, request)
    else:
        state = _initial_state(segment)
    event_names: list[str] = []
    if htmx_target(request) != "segment-conditions":
        preview = _page_preview(state, request)
        event_names = known_event_names(now=timezone.now())
    flows = _flow_choices({row.get("flow") for row in state.rows if row.get("flow")})
    context = {
        "section": "segments",
        "segment": segment,
        "form": state.form,
        "mode": state.mode,
        "conditions": _condition_forms(state.rows, flows, state.row_errors),
        "total_rows": len(state.rows),
        "preview": preview,
        "lifecycle": lifecycle_panel(request, SEGMENT, segment) if segment else None,
        "event_names": event_names,
    }
    return render_page(
        request, "dashboard/segments/editor.html", context, partials=["segment-conditions"]
    )


@dashboard_write_required("onboarding.add_segment")
@require_http_methods(["GET", "POST"])
@vary_on_headers("HX-Request", "HX-Target")
def segment_new(request: HttpRequest) -> HttpResponse:
    return _editor(request, None)


@dashboard_write_required("onboarding.change_segment")
@require_http_methods(["GET", "POST"])
@vary_on_headers("HX-Request", "HX-Target")
def segment_edit(request: HttpRequest, slug: str) -> HttpResponse:
    return _editor(request, get_object_or_404(Segment, slug=slug))


# --- live preview and row swaps -----------------------------------------------------------------


def _page_preview(state: EditorState, request: HttpRequest) -> Preview:
    """The preview shown with a whole page: of what the form now describes."""
    if state.mode == "advanced":
        text = state.form["advanced"].value() or ""
        definition, error = advanced_definition(text)
        return Preview(problems=[error]) if error else _preview(definition)
    match = state.form["match"].value() or "all"
    built = build_definition(match, state.rows)
    if built.row_errors:
        return Preview(problems=["Fix the highlighted conditions to see who matches."])
    return _preview(built.definition, built)


@dataclass(frozen=True)
class Preview:
    count: int | None = None
    sample: list[Any] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _preview(definition: Any, built: Built | None = None) -> Preview:
    _, problems = segment_problems(slug="preview", name="preview", definition=definition)
    if problems:
        return Preview(problems=[_problem_label(p, built) for p in problems])
    result = segment_count_and_sample(definition, sample=SAMPLE_SIZE)
    return Preview(count=result.count, sample=result.sample)


def _problem_label(problem: Problem, built: Built | None) -> str:
    match = _CONDITION_PATH.match(problem.path)
    if (
        built is not None
        and match is not None
        and int(match.group(1)) < len(built.row_of_condition)
    ):
        row = built.row_of_condition[int(match.group(1))] + 1
        detail = problem.path[match.end(1) + 1 :].lstrip(".")
        return f"Condition {row}{f' · {detail}' if detail else ''}: {problem.message}"
    return str(problem)


@dashboard_write_required("onboarding.change_segment")
@require_POST
def segment_preview(request: HttpRequest) -> HttpResponse:
    state = _state_from_post(request, None)
    definition, built, error = _definition_of(state, request.POST)
    if error:
        preview = Preview(problems=[error])
    elif state.row_errors:
        preview = Preview(
            problems=[
                f"Condition {row + 1}: {message}"
                for row, errors in sorted(state.row_errors.items())
                for _, message in errors
            ]
        )
    else:
        preview = _preview(definition, built)
    return render(request, "dashboard/segments/editor.html#segment-preview", {"preview": preview})


@dashboard_write_required("onboarding.change_segment")
@require_POST
def condition_row(request: HttpRequest) -> HttpResponse:
    """One condition row, re-rendered for its (new) type: the htmx swap behind the type select."""
    try:
        index = max(0, min(int(request.POST.get("row", 0)), 99))
    except ValueError:
        index = 0
    row = row_from_post(request.POST, index)
    (form,) = _condition_forms([row], _flow_choices({row.get("flow") or ""}))
    form.prefix = f"{PREFIX}-{index}"
    return render(
        request,
        "dashboard/segments/editor.html#condition-row",
        {"condition": form, "index": index, "number": index + 1},
    )


@view_dashboard_required
@require_GET
def segments_list(request: HttpRequest) -> HttpResponse:
    rows = []
    archived = archived_filter(request, Segment)
    for segment in archived.apply(Segment.objects.order_by("name")):
        definition = segment.definition or {}
        conditions = definition.get("conditions") or []
        try:
            count = segment_count_and_sample(definition, sample=0).count
        except ProblemsError:  # no longer valid (it names a deleted flow, say): say so
            count = None
        rows.append(
            {
                "segment": segment,
                "count": count,
                "match": definition.get("match", "all"),
                "conditions": [describe_condition(c) for c in conditions],
            }
        )
    return render(
        request,
        "dashboard/segments/list.html",
        {"section": "segments", "rows": rows, "archived": archived},
    )
