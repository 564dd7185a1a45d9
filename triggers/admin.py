"""Admin for support staff: the manual-review queue, messages and the decision log.

Review actions go through ``triggers.services.review``, so each is audited. Messages and decisions
are evidence: view-only. The person page gains the person's messages and decisions, so "why did
(or didn't) this person get this message?" is answered in one place.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django_celery_beat.admin import PeriodicTaskAdmin
from django_celery_beat.models import PeriodicTask

from onboarding.models import Person
from triggers.models import (
    AuditLog,
    DecisionLog,
    Message,
    MessageTemplate,
    ReviewItem,
    ReviewStatus,
    Rule,
)
from triggers.services.review import (
    MANUAL_CHANNELS,
    review_dismiss,
    review_draft,
    review_edit_and_send,
    review_resend,
    review_switch_channel,
)

DECISIONS_ON_PERSON_PAGE = 50


class ViewOnly:
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def _person_link(person: Person) -> SafeString:
    url = reverse("admin:onboarding_person_change", args=[person.pk])
    return format_html('<a href="{}">{}</a>', url, person)


class EditAndSendForm(forms.Form):
    channel = forms.ChoiceField(choices=[(c, c.replace("_", "-")) for c in MANUAL_CHANNELS])
    subject = forms.CharField(required=False, max_length=300)
    body = forms.CharField(widget=forms.Textarea(attrs={"rows": 10, "cols": 80}))


@admin.register(ReviewItem)
class ReviewItemAdmin(admin.ModelAdmin):
    list_display = ["created_at", "status", "reason", "person", "channel", "rule"]
    list_filter = ["status", "reason", "message__channel"]
    list_select_related = ["message__person", "message__rule"]
    search_fields = ["message__person__external_id__exact", "message__person__email__iexact"]
    search_help_text = "Exact userId or email."
    readonly_fields = [
        "message_summary",
        "reason",
        "detail",
        "status",
        "resolved_at",
        "resolved_by",
    ]
    fields = readonly_fields
    actions = ["resend_selected", "switch_to_in_app", "dismiss_selected"]
    change_form_template = "admin/triggers/reviewitem/change_form.html"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="Person")
    def person(self, obj: ReviewItem) -> SafeString:
        return _person_link(obj.message.person)

    @admin.display(description="Channel")
    def channel(self, obj: ReviewItem) -> str:
        return obj.message.get_channel_display()

    @admin.display(description="Rule")
    def rule(self, obj: ReviewItem) -> str:
        return str(obj.message.rule)

    @admin.display(description="Message")
    def message_summary(self, obj: ReviewItem) -> SafeString:
        message = obj.message
        return format_html(
            "<p>{} to {} · step {} of “{}” · status <strong>{}</strong> · {} attempt(s)</p>"
            '<p><strong>Subject:</strong> {}</p><pre class="onramp-json">{}</pre>'
            '<p><a href="{}">Message details</a></p>',
            message.get_channel_display(),
            _person_link(message.person),
            display_step(message.step),
            message.rule,
            message.get_status_display(),
            message.attempts,
            message.subject or "–",
            message.body or "(not rendered)",
            reverse("admin:triggers_message_change", args=[message.pk]),
        )

    def _run(
        self, request: HttpRequest, queryset: QuerySet[ReviewItem], action, label: str
    ) -> None:
        done = 0
        open_items = queryset.filter(status=ReviewStatus.OPEN).select_related("message__person")
        for item in open_items:
            try:
                action(item)
                done += 1
            except ValidationError as error:
                self.message_user(request, f"{item}: {'; '.join(error.messages)}", messages.ERROR)
        if done:
            self.message_user(request, f"{label}: {done} item(s).", messages.SUCCESS)

    @admin.action(description="Resend as rendered", permissions=["change"])
    def resend_selected(self, request: HttpRequest, queryset: QuerySet[ReviewItem]) -> None:
        self._run(
            request, queryset, lambda i: review_resend(item_id=i.pk, actor=request.user), "Resent"
        )

    @admin.action(description="Switch to an in-app message", permissions=["change"])
    def switch_to_in_app(self, request: HttpRequest, queryset: QuerySet[ReviewItem]) -> None:
        self._run(
            request,
            queryset,
            lambda i: review_switch_channel(item_id=i.pk, actor=request.user, channel="in_app"),
            "Switched to in-app",
        )

    @admin.action(description="Dismiss", permissions=["change"])
    def dismiss_selected(self, request: HttpRequest, queryset: QuerySet[ReviewItem]) -> None:
        self._run(
            request,
            queryset,
            lambda i: review_dismiss(item_id=i.pk, actor=request.user),
            "Dismissed",
        )

    def get_urls(self):
        return [
            path(
                "<int:item_id>/edit-and-send/",
                self.admin_site.admin_view(self.edit_and_send_view),
                name="triggers_reviewitem_edit_and_send",
            ),
            *super().get_urls(),
        ]

    def edit_and_send_view(self, request: HttpRequest, item_id: int) -> HttpResponse:
        item = get_object_or_404(
            ReviewItem.objects.select_related("message__person", "message__template"), pk=item_id
        )
        if not self.has_change_permission(request, item):
            return HttpResponse(status=403)
        form = EditAndSendForm(request.POST or None, initial=review_draft(item))
        if request.method == "POST" and form.is_valid():
            try:
                review_edit_and_send(item_id=item.pk, actor=request.user, **form.cleaned_data)
            except ValidationError as error:
                if hasattr(error, "error_dict"):
                    for field, errors in error.message_dict.items():
                        form.add_error(field if field in form.fields else None, errors)
                else:
                    form.add_error(None, error.messages)
            else:
                self.message_user(request, "The edited message is on its way.", messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:triggers_reviewitem_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "title": "Edit and send",
            "item": item,
            "form": form,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/triggers/reviewitem/edit_and_send.html", context)


@admin.register(Message)
class MessageAdmin(ViewOnly, admin.ModelAdmin):
    list_display = [
        "created_at",
        "person",
        "rule",
        "step_number",
        "channel",
        "status",
        "reason",
        "due_at",
        "sent_at",
    ]
    list_filter = ["status", "channel", "rule"]
    list_select_related = ["person", "rule"]
    search_fields = [
        "person__external_id__exact",
        "person__email__iexact",
        "idempotency_key__exact",
    ]
    search_help_text = "Exact userId, email or idempotency key."
    show_full_result_count = False
    readonly_fields = [
        "idempotency_key",
        "person",
        "rule",
        "rule_version",
        "enrollment",
        "step_number",
        "channel",
        "template",
        "status",
        "reason",
        "due_at",
        "sent_at",
        "attempts",
        "next_attempt_at",
        "lease_until",
        "handed_at",
        "provider_id",
        "manual",
        "fallback_of",
        "subject",
        "body",
        "last_error",
        "opened_at",
        "clicked_at",
        "seen_at",
        "dismissed_at",
        "decisions",
    ]
    fields = readonly_fields  # "step" is 0-based in the ledger: the page shows step_number

    @admin.display(description="Step")
    def step_number(self, obj: Message) -> int:
        return display_step(obj.step)

    @admin.display(description="Decisions")
    def decisions(self, obj: Message) -> SafeString:
        rows = DecisionLog.objects.filter(message=obj).order_by("at", "pk")
        return _decision_table(rows)


def display_step(step: int | None) -> int | str:
    """A follow-up's position as people count it: the ledger's 0-based ``step`` plus one."""
    return "–" if step is None else step + 1


def _decision_step(detail: Any) -> int | str:
    step = detail.get("step") if isinstance(detail, dict) else None
    return display_step(step) if isinstance(step, int) else "–"


def _decision_detail(detail: Any) -> str:
    """The detail as JSON without ``step`` (0-based there; the step column shows it 1-based)."""
    if isinstance(detail, dict):
        detail = {key: value for key, value in detail.items() if key != "step"}
    return json.dumps(detail, sort_keys=True, default=str)


def _decision_table(rows) -> SafeString:
    items = list(rows)
    if not items:
        return format_html("<p>{}</p>", "No decisions recorded.")
    body = format_html_join(
        "",
        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
        (
            (
                f"{d.at:%Y-%m-%d %H:%M:%S}",
                d.rule,
                _decision_step(d.detail),
                d.outcome,
                d.reason or "–",
                _decision_detail(d.detail)[:300],
            )
            for d in items
        ),
    )
    return format_html(
        "<table><thead><tr><th>When</th><th>Rule</th><th>Step</th><th>Outcome</th><th>Reason</th>"
        "<th>Detail</th></tr></thead><tbody>{}</tbody></table>",
        body,
    )


@admin.register(DecisionLog)
class DecisionLogAdmin(ViewOnly, admin.ModelAdmin):
    list_display = ["at", "person", "rule", "step", "outcome", "reason"]
    list_filter = ["outcome", "reason", "rule"]
    list_select_related = ["person", "rule"]
    search_fields = ["person__external_id__exact", "person__email__iexact"]
    search_help_text = "Exact userId or email."
    show_full_result_count = False
    date_hierarchy = None
    fields = [
        "at",
        "person",
        "rule",
        "rule_version",
        "enrollment",
        "message",
        "step",
        "outcome",
        "reason",
        "detail_without_step",
    ]
    readonly_fields = fields

    @admin.display(description="Step")
    def step(self, obj: DecisionLog) -> int | str:
        return _decision_step(obj.detail)

    @admin.display(description="Detail")
    def detail_without_step(self, obj: DecisionLog) -> SafeString:
        return format_html('<pre class="onramp-json">{}</pre>', _decision_detail(obj.detail))


@admin.register(AuditLog)
class AuditLogAdmin(ViewOnly, admin.ModelAdmin):
    list_display = ["at", "actor_label", "action", "object_type", "object_id"]
    list_filter = ["action", "object_type"]
    search_fields = ["actor_label", "object_id__exact"]


@admin.register(Rule)
class RuleAdmin(ViewOnly, admin.ModelAdmin):
    list_display = ["name", "slug", "status", "priority", "current_version"]
    list_filter = ["status"]


@admin.register(MessageTemplate)
class MessageTemplateAdmin(ViewOnly, admin.ModelAdmin):
    list_display = ["slug", "channel", "subject", "updated_at"]
    list_filter = ["channel"]


# The person page (registered by ``onboarding``, which knows nothing of triggers) gains the
# person's messages and decisions.
_person_admin_class = type(admin.site._registry[Person])


class PersonWithMessagesAdmin(_person_admin_class):
    def get_readonly_fields(self, request: HttpRequest, obj: Any = None):
        return [*super().get_readonly_fields(request, obj), "message_history"]

    def get_fieldsets(self, request: HttpRequest, obj: Any = None):
        return [
            *super().get_fieldsets(request, obj),
            (
                "Follow-ups and decisions",
                {
                    "fields": ["message_history"],
                    "description": f"The latest {DECISIONS_ON_PERSON_PAGE} decisions of every rule about this person.",
                },
            ),
        ]

    @admin.display(description="Decisions")
    def message_history(self, obj: Person) -> SafeString:
        if obj.pk is None:
            return format_html("{}", "–")
        rows = DecisionLog.objects.filter(person=obj).select_related("rule").order_by("-at", "-pk")
        return _decision_table(rows[:DECISIONS_ON_PERSON_PAGE])


admin.site.unregister(Person)
admin.site.register(Person, PersonWithMessagesAdmin)


# --- The beat's schedule ---------------------------------------------------------------------
# django-celery-beat's actions name no permission, so any staff user who could see the periodic
# tasks could also switch off or run them. Each needs ``change_periodictask`` here (superusers only:
# no group has it, dashboard/permissions.py).


def _needs_change(name: str) -> Any:
    inherited = getattr(PeriodicTaskAdmin, name)

    @admin.action(description=inherited.short_description, permissions=["change"])
    def action(self: PeriodicTaskAdmin, request: HttpRequest, queryset: QuerySet) -> Any:
        return inherited(self, request, queryset)

    action.__name__ = name
    return action


class GuardedPeriodicTaskAdmin(PeriodicTaskAdmin):
    # The package's form template has an inline script that the CSP blocks; ours loads a file.
    change_form_template = "admin/triggers/periodictask/change_form.html"
    enable_tasks = _needs_change("enable_tasks")
    disable_tasks = _needs_change("disable_tasks")
    toggle_tasks = _needs_change("toggle_tasks")
    run_tasks = _needs_change("run_tasks")


admin.site.unregister(PeriodicTask)
admin.site.register(PeriodicTask, GuardedPeriodicTaskAdmin)
