"""The Settings page's form: the workspace delivery policy (triggers/workspace.py validates)."""

from __future__ import annotations

from typing import Any
from zoneinfo import available_timezones

from django import forms

from dashboard.forms import DurationField
from triggers.workspace import MAX_CAP, Policy, PolicyError, validate

# The form's field for each of the service's names.
_FIELD = {"global_cap_period_seconds": "global_cap_period"}


class WorkspaceSettingsForm(forms.Form):
    global_cap_max = forms.IntegerField(
        label="Global cap: follow-ups per person",
        min_value=1,
        max_value=MAX_CAP,
        help_text="At most this many follow-ups reach one person, from all rules and channels…",
    )
    global_cap_period = DurationField(
        label="…in any rolling period of",
        help_text="90s, 5m, 24h or 7d. A rule's own cap applies as well.",
    )
    quiet_hours = forms.CharField(
        label="Default quiet hours",
        required=False,
        max_length=32,
        help_text="In each person's local time, e.g. 21:00-08:00; empty for none. A rule's own "
        "quiet hours replace these. A follow-up due inside them waits until they end.",
    )
    default_timezone = forms.ChoiceField(
        label="Default time zone",
        help_text="For people whose time zone is unknown: local send times and quiet hours.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["default_timezone"].choices = [(z, z) for z in sorted(available_timezones())]
        self.fields["quiet_hours"].widget.attrs.update(placeholder="21:00-08:00", size=12)

    @classmethod
    def for_policy(cls, policy: Policy, data: Any = None) -> WorkspaceSettingsForm:
        return cls(
            data,
            initial={
                "global_cap_max": policy.global_cap_max,
                "global_cap_period": policy.global_cap_period_seconds,
                "quiet_hours": policy.quiet_hours,
                "default_timezone": policy.default_timezone,
            },
        )

    def policy_values(self) -> dict[str, Any]:
        return {
            "global_cap_max": self.cleaned_data["global_cap_max"],
            "global_cap_period_seconds": self.cleaned_data["global_cap_period"],
            "quiet_hours": (self.cleaned_data.get("quiet_hours") or "").strip(),
            "default_timezone": self.cleaned_data["default_timezone"],
        }

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if not self.errors:
            try:
                validate(**self.policy_values())
            except PolicyError as error:
                self.add_error(_FIELD.get(error.field, error.field), str(error))
        return cleaned
