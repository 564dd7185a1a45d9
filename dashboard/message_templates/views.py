"""Message template pages: the list and the editor, with a preview rendered for a real person.

Saving goes through :func:`triggers.services.templates.template_save`, which validates the Liquid
and raises ``ValidationError`` keyed by field; the errors are shown next to those fields. The
preview renders what is typed (saved or not) strictly, exactly as delivery would: a variable with
no value and no ``default`` is reported instead of sending "Hi ,".
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers

from dashboard.decorators import dashboard_write_required, view_dashboard_required
from dashboard.kpis.engagement import NONE, engagement_by, opens_tracked
from dashboard.rules import selectors
from dashboard.views_lifecycle import TEMPLATE, archived_filter, lifecycle_panel
from triggers.models import Channel, MessageTemplate
from triggers.rendering import TemplateProblem, person_context
from triggers.rendering import render as render_liquid
from triggers.services.templates import SUBJECT_CHANNELS, template_save

EDITOR = "dashboard/templates/editor.html"
ENGAGEMENT_WINDOW = timedelta(days=30)  # the list's clicks and opens: messages sent in it
# How strict rendering reports a variable with no value and no default.
_UNDEFINED = re.compile(r"^'([^']+)' is undefined")


class TemplateForm(forms.Form):
    slug = forms.SlugField(max_length=64)
    channel = forms.ChoiceField(choices=Channel.choices)
    subject = forms.CharField(
        required=False,
        max_length=300,
        help_text="Email only. Liquid, e.g. {{ first_name | default: 'there' }}.",
    )
    body = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 10, "spellcheck": "true"}),
        help_text="Liquid. Traits are top-level variables; give each a default.",
    )
    person = forms.CharField(
        label="Preview for",
        required=False,
        help_text="External id or email; empty: the most recently seen person.",
    )

    def __init__(self, *args: Any, editing: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if editing:
            self.fields["slug"].disabled = True
        self.fields["person"].widget.attrs["placeholder"] = "user-123 or ada@example.com"


@view_dashboard_required
@require_GET
def templates_list(request: HttpRequest) -> HttpResponse:
    usage = selectors.template_usage()
    archived = archived_filter(request, MessageTemplate)
    now = timezone.now()
    engagement = engagement_by("template_id", since=now - ENGAGEMENT_WINDOW, until=now)
    rows = [
        {
            "template": template,
            "rules": usage.get(template.slug, []),
            "engagement": engagement.get(template.pk, NONE),
        }
        for template in archived.apply(MessageTemplate.objects.order_by("channel", "slug"))
    ]
    context = {
        "section": "rules",
        "rows": rows,
        "archived": archived,
        "opens_tracked": opens_tracked(),
    }
    return render(request, "dashboard/templates/list.html", context)


def _preview_context(data: dict[str, Any]) -> dict[str, Any]:
    """Render the typed subject and body for the chosen person (strict, like delivery)."""
    channel = data.get("channel") or "email"
    person, found = selectors.recent_person(data.get("person") or "")
    context: dict[str, Any] = {
        "preview_person": person,
        "preview_query": (data.get("person") or "").strip(),
        "preview_found": found,
        "preview_has_subject": channel in SUBJECT_CHANNELS,
    }
    if person is None:
        return context
    try:
        rendered = render_liquid(
            data.get("subject", "") if channel in SUBJECT_CHANNELS else "",
            data.get("body", ""),
            person_context(person),
        )
    except TemplateProblem as problem:
        context["preview_problem"] = problem
        missing = _UNDEFINED.match(problem.message)
        context["preview_missing"] = missing.group(1) if missing else ""
    else:
        context["rendered"] = rendered
    context["preview_traits"] = sorted((person.traits or {}).keys())
    return context


def _editor(request: HttpRequest, template: MessageTemplate | None) -> HttpResponse:
    editing = template is not None
    action = request.POST.get("action", "save") if request.method == "POST" else ""
    if request.method == "POST":
        initial = {"slug": template.slug} if template else None
        form = TemplateForm(request.POST, editing=editing, initial=initial)
        data = {**request.POST.dict(), **({"slug": template.slug} if template else {})}
        if action == "save" and form.is_valid():
            slug = template.slug if template else form.cleaned_data["slug"]
            if template is None and MessageTemplate.objects.filter(slug=slug).exists():
                form.add_error("slug", "A template with this slug already exists.")
            else:
                try:
                    saved, changed = template_save(
                        slug=slug,
                        channel=form.cleaned_data["channel"],
                        subject=form.cleaned_data["subject"],
                        body=form.cleaned_data["body"],
                        actor=request.user,
                    )
                except ValidationError as error:
                    for field, errors in error.message_dict.items():
                        for message in errors:
                            message = message[:1].upper() + message[1:]
                            form.add_error(field if field in form.fields else None, message)
                else:
                    verb = "Saved" if changed else "No changes to"
                    messages.success(request, f"{verb} template {saved.slug}.")
                    return redirect("triggers:template_edit", slug=saved.slug)
        elif action != "save":
            form = TemplateForm(initial=data, editing=editing)
    else:
        data = (
            {
                "slug": template.slug,
                "channel": template.channel,
                "subject": template.subject,
                "body": template.body,
            }
            if template
            else {"channel": "email", "subject": "", "body": ""}
        )
        data["person"] = request.GET.get("person", "")
        form = TemplateForm(initial=data, editing=editing)
    context = {
        "section": "rules",
        "template": template,
        "form": form,
        "used_by": selectors.template_usage().get(template.slug, []) if template else [],
        "lifecycle": lifecycle_panel(request, TEMPLATE, template) if template else None,
        **_preview_context(data),
    }
    return render(request, EDITOR, context)


@dashboard_write_required("triggers.add_messagetemplate")
@require_http_methods(["GET", "POST"])
@vary_on_headers("HX-Request", "HX-Target")
def template_new(request: HttpRequest) -> HttpResponse:
    return _editor(request, None)


@dashboard_write_required("triggers.change_messagetemplate")
@require_http_methods(["GET", "POST"])
@vary_on_headers("HX-Request", "HX-Target")
def template_edit(request: HttpRequest, slug: str) -> HttpResponse:
    return _editor(request, get_object_or_404(MessageTemplate, slug=slug))


@dashboard_write_required("triggers.change_messagetemplate")
@require_POST
def template_preview(request: HttpRequest) -> HttpResponse:
    """The ``#template-preview`` partial for the posted subject, body and person (htmx)."""
    return render(request, f"{EDITOR}#template-preview", _preview_context(request.POST.dict()))
