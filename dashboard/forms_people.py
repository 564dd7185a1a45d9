"""The people list's filters (a GET form)."""

from __future__ import annotations

from django import forms

from onboarding.models import OnboardingFlow, Segment

from .forms import offer_unarchived
from .people import PeopleFilter

STATE_CHOICES = [
    ("", "Any state"),
    ("entered", "Entered"),
    ("completed", "Completed"),
    ("stalled", "Stalled"),
    ("not_entered", "Not entered"),
]
SEEN_CHOICES = [
    ("", "Any time"),
    ("1d", "Last 24 hours"),
    ("7d", "Last 7 days"),
    ("30d", "Last 30 days"),
]


class PeopleFilterForm(forms.Form):
    q = forms.CharField(required=False, max_length=200, label="Search")
    flow = forms.ModelChoiceField(
        queryset=OnboardingFlow.objects.order_by("name"),
        required=False,
        to_field_name="slug",
        empty_label="Any flow",
    )
    state = forms.ChoiceField(choices=STATE_CHOICES, required=False, label="Flow state")
    segment = forms.ModelChoiceField(
        queryset=Segment.objects.order_by("name"),
        required=False,
        to_field_name="slug",
        empty_label="Everyone",
    )
    seen = forms.ChoiceField(choices=SEEN_CHOICES, required=False, label="Last seen")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        offer_unarchived(self, "flow")
        offer_unarchived(self, "segment")

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("state") and not cleaned.get("flow"):
            self.add_error("flow", "Choose the flow whose state to filter on.")
        return cleaned

    def criteria(self) -> PeopleFilter:
        data = self.cleaned_data
        flow = data.get("flow")
        return PeopleFilter(
            q=data.get("q") or "",
            flow=flow.slug if flow else "",
            state=data.get("state") or "",
            segment=data.get("segment"),
            seen=data.get("seen") or "",
        )

    @property
    def filtered(self) -> bool:
        return any(self.data.get(name) for name in self.fields)
