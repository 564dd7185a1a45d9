"""The admin, where support staff look people and their events up.

Events and failed events are evidence: nobody edits them here, and only superusers may delete them.
Write keys are issued through ``onboarding.services.sources`` and shown once, in a message; the
stored hash is never displayed or editable.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from onboarding.models import Erasure, Event, FailedEvent, Identity, Person, Source
from onboarding.services.gdpr import person_erase, person_export
from onboarding.services.sources import IssuedKey, source_create, source_rotate

admin.site.site_header = "Onramp admin"
admin.site.site_title = "Onramp admin"
admin.site.index_title = "Support"
# Changelists of events are wide; the app list is one click away in the breadcrumbs.
admin.site.enable_nav_sidebar = False

TIMELINE_LIMIT = 200


LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def pretty_json(value: Any) -> SafeString:
    """JSON, indented, in a <pre>; escaped, so payloads cannot inject markup.

    A lone surrogate (``"\\ud800"`` in a payload decodes to one) cannot be encoded as UTF-8, so
    the page would fail: it is shown as its JSON escape, which is what the client sent.
    """
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    text = LONE_SURROGATE.sub(lambda match: f"\\u{ord(match[0]):04x}", text)
    return format_html('<pre class="onramp-json">{}</pre>', text)


def _show_key_once(request: HttpRequest, issued: IssuedKey, verb: str) -> None:
    messages.warning(
        request,
        format_html(
            '{} write key for “{}”: <code class="onramp-key">{}</code> — copy it now; '
            "it is not stored and will not be shown again.",
            verb,
            issued.source.name,
            issued.write_key,
        ),
    )


class ReadOnlyAdminMixin:
    """View-only for everyone; superusers may still delete (erasure, cleaning up test data)."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_superuser


# --- Sources ---------------------------------------------------------------------------------


class SourceAddForm(forms.ModelForm):
    class Meta:
        model = Source
        fields = ["name"]


ROTATION_GRACE_CHOICES = [
    ("0", "Immediately: the old key stops working now"),
    ("3600", "After 1 hour"),
    ("86400", "After 24 hours"),
    ("604800", "After 7 days"),
]


class RotateKeyForm(forms.Form):
    grace = forms.TypedChoiceField(
        label="The old key stops working",
        choices=ROTATION_GRACE_CHOICES,
        coerce=int,
        initial="0",
        widget=forms.RadioSelect,
    )


@admin.register(Source)
class SourceAdmin(admin.ModelAdmin):
    list_display = ["name", "key_prefix", "is_active", "created_at", "rotated_at"]
    list_filter = ["is_active"]
    search_fields = ["name"]
    readonly_fields = ["key_prefix", "created_at", "rotated_at", "previous_key_expires_at"]
    fields = ["name", "is_active", *readonly_fields]
    actions = ["rotate_write_key"]

    @admin.display(description="Write key")
    def key_prefix(self, obj: Source) -> SafeString:
        return format_html("<code>{}…</code>", obj.write_key_prefix)

    def get_form(self, request: HttpRequest, obj: Source | None = None, **kwargs: Any):
        if obj is None:
            kwargs["form"] = SourceAddForm
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request: HttpRequest, obj: Source | None = None) -> list[str]:
        return ["name"] if obj is None else self.fields

    def get_readonly_fields(self, request: HttpRequest, obj: Source | None = None) -> list[str]:
        return [] if obj is None else self.readonly_fields

    def save_model(self, request: HttpRequest, obj: Source, form: forms.Form, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        issued = source_create(name=form.cleaned_data["name"])
        obj.pk = issued.source.pk
        obj.refresh_from_db()
        _show_key_once(request, issued, "New")

    @admin.action(description="Rotate write key", permissions=["change"])
    def rotate_write_key(
        self, request: HttpRequest, queryset: QuerySet[Source]
    ) -> HttpResponse | None:
        form = RotateKeyForm(request.POST if "confirm" in request.POST else None)
        if form.is_bound and form.is_valid():
            grace = timedelta(seconds=form.cleaned_data["grace"])
            for source in queryset.order_by("name"):
                _show_key_once(request, source_rotate(name=source.name, grace=grace), "Rotated")
            return None
        return TemplateResponse(
            request,
            "admin/onboarding/source/rotate_confirmation.html",
            {
                **self.admin_site.each_context(request),
                "title": "Rotate write keys",
                "opts": self.model._meta,
                "sources": queryset.order_by("name"),
                "form": form,
                "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
            },
        )


# --- People ----------------------------------------------------------------------------------


class IdentityInline(admin.TabularInline):
    model = Identity
    fields = ["kind", "value", "created_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


ERASE_CONFIRMATION = "ERASE"


class EraseForm(forms.Form):
    confirmation = forms.CharField(label=f"Type {ERASE_CONFIRMATION} to confirm", max_length=20)

    def clean_confirmation(self) -> str:
        value = self.cleaned_data["confirmation"].strip()
        if value != ERASE_CONFIRMATION:
            raise forms.ValidationError(f"Type {ERASE_CONFIRMATION} in capitals to erase.")
        return value


@admin.register(Person)
class PersonAdmin(admin.ModelAdmin):
    actions = ["export_people", "erase_people"]
    list_display = ["id", "external_id", "email", "first_seen", "last_seen"]
    list_display_links = ["id", "external_id"]
    # Part of an id, an email or a name, any case: the trigram indexes of migration 0007 serve
    # these on PostgreSQL (the same lookups as the dashboard's people list).
    search_fields = [
        "external_id__icontains",
        "email__icontains",
        "identities__value__icontains",
        "traits__name__icontains",
        "traits__first_name__icontains",
        "traits__last_name__icontains",
    ]
    search_help_text = "Part of a userId, anonymousId, email or name (any case)."
    ordering = ["-last_seen"]
    show_full_result_count = False
    inlines = [IdentityInline]
    readonly_fields = [
        "external_id",
        "first_seen",
        "last_seen",
        "last_event_at",
        "traits_pretty",
        "event_timeline",
    ]
    fieldsets = [
        (None, {"fields": ["external_id", ("first_seen", "last_seen", "last_event_at")]}),
        ("Contact", {"fields": ["email", "phone", "timezone", "consent"]}),
        ("Traits", {"fields": ["traits_pretty"]}),
        (
            "Events",
            {
                "fields": ["event_timeline"],
                "description": f"The latest {TIMELINE_LIMIT} events, newest first.",
            },
        ),
    ]

    @admin.display(description="Traits")
    def traits_pretty(self, obj: Person) -> SafeString:
        return pretty_json(obj.traits)

    @admin.display(description="Timeline")
    def event_timeline(self, obj: Person) -> str:
        if obj.pk is None:
            return "–"
        events = list(
            obj.events.select_related("source").order_by("-timestamp", "-id")[:TIMELINE_LIMIT]
        )
        rows = [
            {
                "event": event,
                "url": reverse("admin:onboarding_event_change", args=[event.pk]),
                "properties": json.dumps(event.properties, sort_keys=True, ensure_ascii=False),
            }
            for event in events
        ]
        return render_to_string(
            "admin/onboarding/person/timeline.html",
            {
                "rows": rows,
                "limit": TIMELINE_LIMIT,
                "truncated": len(events) == TIMELINE_LIMIT,
                "all_events_url": reverse("admin:onboarding_event_changelist")
                + f"?person__id__exact={obj.pk}",
            },
        )

    # --- GDPR -----------------------------------------------------------------------------

    @admin.action(description="Export as JSON (GDPR access)", permissions=["view"])
    def export_people(self, request: HttpRequest, queryset: QuerySet[Person]) -> HttpResponse:
        people = list(queryset.order_by("pk"))
        exports = [person_export(person) for person in people]
        document = exports[0] if len(exports) == 1 else {"people": exports}
        name = f"person-{people[0].pk}" if len(people) == 1 else f"people-{len(people)}"
        response = HttpResponse(
            json.dumps(document, cls=DjangoJSONEncoder, indent=2, ensure_ascii=False),
            content_type="application/json; charset=utf-8",
        )
        response["Content-Disposition"] = f'attachment; filename="{name}.json"'
        response["Cache-Control"] = "no-store"
        for person in people:
            self.log_change(request, person, "Exported as JSON (GDPR)")
        return response

    @admin.action(description="Erase for good (GDPR erasure)…", permissions=["change"])
    def erase_people(self, request: HttpRequest, queryset: QuerySet[Person]) -> HttpResponse | None:
        form = EraseForm(request.POST if "confirm" in request.POST else None)
        people = list(queryset.order_by("pk"))
        if form.is_bound and form.is_valid():
            for person in people:
                label = str(person)
                erasure = person_erase(person, actor=request.user)
                self.message_user(
                    request,
                    f"Erased {label} (#{erasure.person_pk}): "
                    + ", ".join(f"{n} {t}" for t, n in erasure.deleted.items()),
                    messages.SUCCESS,
                )
            return None
        return TemplateResponse(
            request,
            "admin/onboarding/person/erase_confirmation.html",
            {
                **self.admin_site.each_context(request),
                "title": "Erase people",
                "opts": self.model._meta,
                "people": people,
                "form": form,
                "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
            },
        )


@admin.register(Erasure)
class ErasureAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """The audit trail of erasures: who, when, how many rows; no personal data."""

    list_display = ["erased_at", "erased_by_label", "person_pk", "deleted"]
    fields = ["erased_at", "erased_by_label", "person_pk", "deleted"]
    readonly_fields = fields

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


# --- Events ----------------------------------------------------------------------------------


class EventNameFilter(admin.SimpleListFilter):
    """Event names seen among the latest events; bounded, so it stays cheap on a big table.

    ``SELECT DISTINCT name`` over every event is a full scan; the names of the latest
    ``SAMPLE`` events cover what support staff look for, and any name still works as ``?name=``.
    """

    title = "name"
    parameter_name = "name"
    SAMPLE = 10_000
    MAX_NAMES = 50

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        recent = Event.objects.order_by("-received_at").values("id")[: self.SAMPLE]
        names = list(
            Event.objects.filter(id__in=recent)
            .exclude(name="")
            .order_by("name")
            .values_list("name", flat=True)
            .distinct()[: self.MAX_NAMES]
        )
        selected = self.value()
        if selected and selected not in names:
            names.insert(0, selected)
        return [(name, name) for name in names]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Event]) -> QuerySet[Event]:
        value = self.value()
        return queryset.filter(name=value) if value else queryset


@admin.register(Event)
class EventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["timestamp", "type", "name", "person_link", "source", "received_at"]
    list_display_links = ["timestamp"]
    list_filter = ["type", EventNameFilter, "source"]
    list_select_related = ["person", "source"]
    date_hierarchy = "timestamp"
    ordering = ["-timestamp", "-id"]
    show_full_result_count = False
    # Facet counts are one COUNT per filter choice over the whole table: too slow for events.
    show_facets = admin.ShowFacets.NEVER
    fields = [
        ("type", "name"),
        "person",
        "source",
        ("timestamp", "received_at"),
        "message_id",
        ("user_id", "anonymous_id"),
        "properties_pretty",
        "context_pretty",
    ]
    readonly_fields = ["properties_pretty", "context_pretty"]

    @admin.display(description="Person", ordering="person")
    def person_link(self, obj: Event) -> SafeString:
        url = reverse("admin:onboarding_person_change", args=[obj.person_id])
        return format_html('<a href="{}">{}</a>', url, obj.person)

    @admin.display(description="Properties")
    def properties_pretty(self, obj: Event) -> SafeString:
        return pretty_json(obj.properties)

    @admin.display(description="Context")
    def context_pretty(self, obj: Event) -> SafeString:
        return pretty_json(obj.context)


# --- Failed events ---------------------------------------------------------------------------


@admin.register(FailedEvent)
class FailedEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["received_at", "source", "endpoint", "index", "code", "path", "short_message"]
    list_filter = ["code", "source", "endpoint"]
    list_select_related = ["source"]
    date_hierarchy = "received_at"
    show_full_result_count = False
    fields = [
        ("received_at", "source"),
        ("endpoint", "index"),
        ("code", "path"),
        "message",
        "payload_pretty",
    ]
    readonly_fields = ["payload_pretty"]

    @admin.display(description="Message")
    def short_message(self, obj: FailedEvent) -> str:
        return obj.message if len(obj.message) <= 80 else obj.message[:79] + "…"

    @admin.display(description="Payload")
    def payload_pretty(self, obj: FailedEvent) -> SafeString:
        try:
            return pretty_json(json.loads(obj.payload))
        except ValueError:
            # Not JSON (that may be why it failed): show the raw text.
            return format_html('<pre class="onramp-json">{}</pre>', obj.payload)
