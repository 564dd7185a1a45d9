"""The Settings page: the workspace delivery policy (global cap, default quiet hours and time
zone). Viewers read it; growth edits it; every save is written to the audit log."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from dashboard.decorators import dashboard_permission_required
from dashboard.forms_settings import WorkspaceSettingsForm
from onboarding.configfile.durations import format_duration
from triggers import workspace
from triggers.models import AuditLog

CHANGE = "triggers.change_workspacesettings"
HISTORY = 10
LABELS = {
    "global_cap_max": "Global cap",
    "global_cap_period_seconds": "Cap period",
    "quiet_hours": "Default quiet hours",
    "default_timezone": "Default time zone",
}


def _shown(name: str, value: object) -> str:
    if value in (None, ""):
        return "none"
    if name == "global_cap_period_seconds" and isinstance(value, int):
        return format_duration(value)
    return str(value)


def _changes(entry: AuditLog) -> list[tuple[str, str, str]]:
    """An audit entry's changes as (label, before, after), in the form's order."""
    return [
        (label, _shown(name, entry.changes[name][0]), _shown(name, entry.changes[name][1]))
        for name, label in LABELS.items()
        if name in entry.changes
    ]


@dashboard_permission_required("triggers.view_workspacesettings", write=CHANGE)
@require_http_methods(["GET", "POST"])
def workspace_settings(request: HttpRequest) -> HttpResponse:
    current = workspace.policy()
    form = WorkspaceSettingsForm.for_policy(
        current, request.POST if request.method == "POST" else None
    )
    if request.method == "POST" and form.is_valid():
        workspace.save_policy(**form.policy_values(), actor=request.user)
        messages.success(request, "Settings saved. Every worker applies them within seconds.")
        return redirect("dashboard:settings")
    entries = AuditLog.objects.filter(object_type="workspace_settings")[:HISTORY]
    history = [(entry, _changes(entry)) for entry in entries]
    context = {
        "form": form,
        "policy": current,
        "environment": workspace.environment_policy(),
        "can_change": request.user.has_perm(CHANGE),
        "history": history,
        "section": "settings",
    }
    return render(request, "dashboard/settings.html", context, status=400 if form.errors else 200)
