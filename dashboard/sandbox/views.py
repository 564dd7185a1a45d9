"""The sandbox: send a template to yourself, and play a scripted person through the rules.

Nothing here reaches a real person: test sends go to the marketer's own address and write no
ledger row; a simulated person lives in a transaction that is always rolled back.
"""

from __future__ import annotations

import re
from typing import Any

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from dashboard.decorators import view_dashboard_required
from onboarding.configfile.durations import DurationError, parse_duration
from onboarding.where_text import parse_where
from triggers.models import MessageTemplate, Rule, RuleStatus
from triggers.rendering import TemplateProblem
from triggers.simulation.sandbox import SandboxError, simulate_person, test_send

_SCRIPT_LINE = re.compile(r"^\s*(\S+)\s+(.+?)\s*(\{.*\})?\s*$")
MAX_SCRIPT_LINES = 50


class TestSendForm(forms.Form):
    template = forms.ModelChoiceField(
        queryset=MessageTemplate.objects.filter(archived_at=None).order_by("slug")
    )
    to_email = forms.EmailField(label="Send to", help_text="Your own address.")


class SimulateForm(forms.Form):
    rules = forms.ModelMultipleChoiceField(
        queryset=Rule.objects.exclude(status=RuleStatus.ARCHIVED).filter(
            current_version__isnull=False
        ),
        help_text="The rules to play the person through (as they are saved).",
    )
    traits = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="key=value lines, e.g. first_name=Ada",
    )
    script = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 6}),
        help_text='One event a line: "offset event name", e.g. "0m Signed Up" then "1m Email '
        'Verified"; properties as JSON at the end: "2m Profile Completed {"completionPercentage": 50}".',
    )
    after = forms.CharField(
        initial="1h", help_text="How long to keep the clock running after the last event."
    )

    def clean_traits(self) -> dict[str, Any]:
        return parse_where(self.cleaned_data.get("traits") or "")

    def clean_after(self) -> int:
        try:
            seconds = parse_duration(self.cleaned_data["after"])
        except DurationError as error:
            raise ValidationError(str(error)) from None
        if not 0 < seconds <= 7 * 86400:
            raise ValidationError("Between 1s and 7d.")
        return seconds

    def clean_script(self) -> list[tuple[float, str, dict[str, Any]]]:
        lines = [line for line in self.cleaned_data["script"].splitlines() if line.strip()]
        if len(lines) > MAX_SCRIPT_LINES:
            raise ValidationError(f"At most {MAX_SCRIPT_LINES} events.")
        script = []
        for number, line in enumerate(lines, start=1):
            match = _SCRIPT_LINE.match(line)
            if not match:
                raise ValidationError(f"Line {number}: write an offset and an event name.")
            offset, name, props = match.groups()
            try:
                seconds = parse_duration(offset)
            except DurationError:
                raise ValidationError(
                    f"Line {number}: {offset!r} is not a duration like 90s or 5m."
                ) from None
            try:
                properties = parse_where(props) if props else {}
            except ValidationError as error:
                raise ValidationError(f"Line {number}: {' '.join(error.messages)}") from None
            script.append((float(seconds), name, properties))
        return script


TEST_SEND_PERMISSION = "triggers.change_messagetemplate"


@view_dashboard_required
@require_http_methods(["GET", "POST"])
def sandbox(request: HttpRequest) -> HttpResponse:
    send_form = TestSendForm(initial={"to_email": request.user.email})
    simulate_form = SimulateForm(initial={"rules": Rule.objects.filter(status=RuleStatus.ACTIVE)})
    simulation = None
    if request.method == "POST" and request.POST.get("action") == "test_send":
        # Sending is writing (an email leaves, audited); simulating a person writes nothing.
        if not request.user.has_perm(TEST_SEND_PERMISSION):
            raise PermissionDenied
        send_form = TestSendForm(request.POST)
        if send_form.is_valid():
            try:
                test_send(
                    template=send_form.cleaned_data["template"],
                    to_email=send_form.cleaned_data["to_email"],
                    actor=request.user,
                )
            except (SandboxError, TemplateProblem) as error:
                send_form.add_error("template", str(error))
            else:
                messages.success(request, f"Test sent to {send_form.cleaned_data['to_email']}.")
                return redirect("triggers:sandbox")
    elif request.method == "POST" and request.POST.get("action") == "simulate":
        simulate_form = SimulateForm(request.POST)
        if simulate_form.is_valid():
            data = simulate_form.cleaned_data
            simulation = simulate_person(
                list(data["rules"]),
                data["script"],
                traits=data["traits"],
                after_seconds=data["after"],
            )
    context = {
        "send_form": send_form,
        "simulate_form": simulate_form,
        "simulation": simulation,
        "section": "rules",
    }
    return render(request, "dashboard/sandbox.html", context)
