"""Archive, restore and delete flows, segments and message templates (issue 15 item 8).

Each page that edits one of them shows the "Archive or delete" panel (``lifecycle_panel``): where
the object is used, and the buttons its role allows. The buttons post here; the rules are
``triggers.services.lifecycle``'s. A refusal answers 409 with the places that use the object,
linked, and offers to archive when that is allowed. Deleting asks for a confirmation first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.contrib import messages
from django.db import models
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from dashboard.decorators import dashboard_write_required
from onboarding.models import OnboardingFlow, Segment
from triggers.models import MessageTemplate
from triggers.services import lifecycle
from triggers.services.usage import usage_of

REFUSED = "dashboard/lifecycle/refused.html"
CONFIRM = "dashboard/lifecycle/confirm_delete.html"


@dataclass(frozen=True)
class Kind:
    label: str  # "flow"
    model: type[models.Model]
    change: str  # the permission to archive and restore
    delete: str  # the permission to delete
    page: str  # URL name of the object's page (args: slug)
    listing: str  # URL name of the list it appears in
    namespace: str  # of its archive/unarchive/delete URLs: "<namespace>:<label>_archive"

    def url(self, action: str, obj: Any) -> str:
        return reverse(f"{self.namespace}:{self.label}_{action}", args=[obj.slug])


FLOW = Kind(
    "flow",
    OnboardingFlow,
    "onboarding.change_onboardingflow",
    "onboarding.delete_onboardingflow",
    "dashboard:flow_edit",
    "dashboard:flows",
    "dashboard",
)
SEGMENT = Kind(
    "segment",
    Segment,
    "onboarding.change_segment",
    "onboarding.delete_segment",
    "dashboard:segment_edit",
    "dashboard:segments",
    "dashboard",
)
TEMPLATE = Kind(
    "template",
    MessageTemplate,
    "triggers.change_messagetemplate",
    "triggers.delete_messagetemplate",
    "triggers:template_edit",
    "triggers:templates",
    "triggers",
)


@dataclass(frozen=True)
class ArchivedFilter:
    """A list's "show archived" switch (``?archived=1``): archived objects are hidden by default."""

    shown: bool
    count: int

    def apply(self, queryset: models.QuerySet) -> models.QuerySet:
        return queryset if self.shown else queryset.filter(archived_at=None)


def archived_filter(request: HttpRequest, model: type[models.Model]) -> ArchivedFilter:
    count = model.objects.exclude(archived_at=None).count()
    return ArchivedFilter(request.GET.get("archived") == "1", count)


def display_name(obj: Any) -> str:
    return getattr(obj, "name", "") or obj.slug


def lifecycle_panel(request: HttpRequest, kind: Kind, obj: Any) -> dict[str, Any]:
    """The context of ``dashboard/lifecycle/_panel.html`` for an object's page."""
    return {
        "kind": kind.label,
        "object_name": display_name(obj),
        "archived_at": obj.archived_at,
        "usage": usage_of(obj),
        "can_change": request.user.has_perm(kind.change),
        "can_delete": request.user.has_perm(kind.delete),
        "archive_url": kind.url("archive", obj),
        "unarchive_url": kind.url("unarchive", obj),
        "delete_url": kind.url("delete", obj),
    }


def _refused(request: HttpRequest, kind: Kind, obj: Any, error: lifecycle.InUse) -> HttpResponse:
    context = {
        **lifecycle_panel(request, kind, obj),
        "action": error.action,
        "usage": error.usage,
        "places": error.places,
        "page_url": reverse(kind.page, args=[obj.slug]),
    }
    return render(request, REFUSED, context, status=409)


def _archive_view(kind: Kind) -> Callable[..., HttpResponse]:
    @dashboard_write_required(kind.change)
    @require_POST
    def view(request: HttpRequest, slug: str) -> HttpResponse:
        obj = get_object_or_404(kind.model, slug=slug)
        try:
            lifecycle.archive(obj=obj, actor=request.user)
        except lifecycle.InUse as error:
            return _refused(request, kind, obj, error)
        messages.success(
            request,
            f"Archived {kind.label} {display_name(obj)}: hidden from lists and pickers, "
            "still readable here. Unarchive restores it.",
        )
        return redirect(kind.page, slug)

    return view


def _unarchive_view(kind: Kind) -> Callable[..., HttpResponse]:
    @dashboard_write_required(kind.change)
    @require_POST
    def view(request: HttpRequest, slug: str) -> HttpResponse:
        obj = get_object_or_404(kind.model, slug=slug)
        lifecycle.unarchive(obj=obj, actor=request.user)
        messages.success(request, f"Restored {kind.label} {display_name(obj)}.")
        return redirect(kind.page, slug)

    return view


def _delete_view(kind: Kind) -> Callable[..., HttpResponse]:
    @dashboard_write_required(kind.delete)
    @require_POST
    def view(request: HttpRequest, slug: str) -> HttpResponse:
        obj = get_object_or_404(kind.model, slug=slug)
        usage = usage_of(obj)
        if not usage.can_delete:
            return _refused(request, kind, obj, lifecycle.InUse("delete", usage))
        if request.POST.get("confirm") != "yes":
            context = {
                **lifecycle_panel(request, kind, obj),
                "page_url": reverse(kind.page, args=[slug]),
            }
            return render(request, CONFIRM, context)
        try:
            lifecycle.delete(obj=obj, actor=request.user)
        except lifecycle.InUse as error:
            return _refused(request, kind, obj, error)
        messages.success(request, f"Deleted {kind.label} {display_name(obj)}.")
        return redirect(kind.listing)

    return view


flow_archive = _archive_view(FLOW)
flow_unarchive = _unarchive_view(FLOW)
flow_delete = _delete_view(FLOW)
segment_archive = _archive_view(SEGMENT)
segment_unarchive = _unarchive_view(SEGMENT)
segment_delete = _delete_view(SEGMENT)
template_archive = _archive_view(TEMPLATE)
template_unarchive = _unarchive_view(TEMPLATE)
template_delete = _delete_view(TEMPLATE)
