"""Forms of the funnel, flow and segment pages.

Forms only parse what people type (dates, durations, ``key=value`` lines) into the values the
services take; the services validate and write. Problems the services report with a path
(``steps[2].event``, ``conditions[1].value``) are put back next to the matching field.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, timedelta
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.db.models import Q

from onboarding.configfile.durations import DurationError, format_duration, parse_duration
from onboarding.models import Segment
from onboarding.segments.tree import COUNT_OPERATORS, FLOW_STATES, TRAIT_OPERATORS
from onboarding.where_text import parse_where

DEFAULT_RANGE_DAYS = 30
RELATIVE_RANGES = {"7d": 7, "30d": 30, "90d": 90}
MAX_WINDOW_SECONDS = 365 * 86400
COMMON_BREAKDOWNS = ("device", "source", "plan")
# Daily points over longer ranges are mostly noise at onboarding volumes; weeks read better.
AUTO_WEEKLY_AFTER_DAYS = 21


# --- small parsers ------------------------------------------------------------------------------


class DurationField(forms.CharField):
    """A duration written ``90s``, ``5m``, ``24h`` or ``7d``; cleans to whole seconds (> 0)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", 16)
        super().__init__(**kwargs)
        self.widget.attrs.setdefault("placeholder", "7d")
        self.widget.attrs.setdefault("inputmode", "text")

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return format_duration(value)
        return value

    def clean(self, value: Any) -> int | None:
        text = super().clean(value)
        if not text:
            return None
        try:
            seconds = parse_duration(text)
        except DurationError as error:
            raise ValidationError(
                f"Write a duration such as 90s, 5m, 24h or 7d ({error})."
            ) from None
        if seconds <= 0:
            raise ValidationError("Must be longer than zero.")
        return seconds


def offer_unarchived(form: forms.Form, name: str) -> None:
    """Offer in the ``name`` select what is not archived, plus the value the form was given
    (a saved URL that names an archived segment still works)."""
    field = form.fields[name]
    chosen = form.data.get(name) if form.is_bound else None
    field.queryset = field.queryset.filter(Q(archived_at=None) | Q(slug=chosen or ""))


# --- funnel filters ---------------------------------------------------------------------------


class FunnelFilterForm(forms.Form):
    """The funnel page's filter bar; its state is the query string, so a URL is a saved view."""

    since = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    segment = forms.ModelChoiceField(
        queryset=Segment.objects.order_by("name"),
        to_field_name="slug",
        required=False,
        empty_label="Everyone",
    )
    breakdown = forms.CharField(
        required=False,
        max_length=100,
        widget=forms.TextInput(attrs={"list": "breakdown-properties", "placeholder": "none"}),
    )
    interval = forms.ChoiceField(
        choices=[("", "Auto"), ("day", "Day"), ("week", "Week")], required=False
    )
    range = forms.ChoiceField(
        choices=[
            ("", "Dates"),
            ("7d", "Last 7 days"),
            ("30d", "Last 30 days"),
            ("90d", "Last 90 days"),
        ],
        required=False,
        label="Range",
    )
    window = DurationField(
        required=False,
        label="Window",
        help_text="This query's conversion window (90s, 5m, 24h, 7d); empty: the flow's own.",
    )

    def __init__(self, data: Mapping[str, Any] | None, *, today: date) -> None:
        super().__init__(data)
        self.today = today
        offer_unarchived(self, "segment")

    def clean_window(self) -> int | None:
        seconds = self.cleaned_data.get("window")
        if seconds is not None and not 0 < seconds <= MAX_WINDOW_SECONDS:
            raise ValidationError("Between 1 second and 365 days.")
        return seconds

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        relative = RELATIVE_RANGES.get(cleaned.get("range") or "")
        if relative is not None:  # a relative range moves with today: the URL stays "last N days"
            cleaned["until"] = self.today
            cleaned["since"] = self.today - timedelta(days=relative - 1)
        until = cleaned.get("until") or self.today
        since = cleaned.get("since") or until - timedelta(days=DEFAULT_RANGE_DAYS - 1)
        if since > until:
            self.add_error("since", "Must be on or before the end date.")
        cleaned["since"], cleaned["until"] = since, until
        cleaned["breakdown"] = (cleaned.get("breakdown") or "").strip() or None
        if not cleaned.get("interval"):
            cleaned["interval"] = "day" if (until - since).days < AUTO_WEEKLY_AFTER_DAYS else "week"
        return cleaned


# --- flow editor ------------------------------------------------------------------------------


class FlowForm(forms.Form):
    name = forms.CharField(max_length=200)
    slug = forms.SlugField(
        max_length=64,
        help_text="Lowercase letters, digits and hyphens; used in URLs and configuration files.",
    )
    window = DurationField(
        help_text="How long after entering people have to reach the last step: 90s, 5m, 24h, 7d."
    )

    def __init__(self, *args: Any, editing: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if editing:
            self.fields["slug"].disabled = True
            self.fields["slug"].help_text = "The slug names the flow everywhere; it cannot change."


class StepForm(forms.Form):
    name = forms.CharField(
        max_length=200, widget=forms.TextInput(attrs={"placeholder": "Signed up"})
    )
    event = forms.CharField(
        max_length=255, widget=forms.TextInput(attrs={"placeholder": "Signed Up"})
    )
    where = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 1, "placeholder": "key=value, one per line"}),
    )
    optional = forms.BooleanField(required=False)
    critical = forms.BooleanField(required=False)

    def clean_where(self) -> dict[str, Any]:
        return parse_where(self.cleaned_data.get("where") or "")


StepFormSet = forms.formset_factory(StepForm, extra=0)
STEP_FIELDS = ("name", "event", "where", "optional", "critical")


# --- segment editor ---------------------------------------------------------------------------

CONDITION_KINDS = [("trait", "Trait"), ("event", "Behaviour"), ("flow", "Flow state")]
_OPERATOR_LABELS = {
    "eq": "equals",
    "neq": "does not equal",
    "contains": "contains",
    "in": "is one of",
    "not_in": "is none of",
    "gt": ">",
    "gte": "≥",
    "lt": "<",
    "lte": "≤",
    "before": "before",
    "after": "after",
    "within_last": "within the last",
    "is_set": "is set",
    "is_not_set": "is not set",
}


class SegmentForm(forms.Form):
    name = forms.CharField(max_length=200)
    slug = forms.SlugField(max_length=64)
    match = forms.ChoiceField(
        choices=[("all", "all"), ("any", "any")], widget=forms.Select, initial="all"
    )
    mode = forms.ChoiceField(
        choices=[("rows", "Conditions"), ("advanced", "Advanced")],
        initial="rows",
        required=False,
        widget=forms.HiddenInput,
    )
    advanced = forms.CharField(
        required=False,
        label="Definition (YAML or JSON)",
        widget=forms.Textarea(attrs={"rows": 12, "class": "mono", "spellcheck": "false"}),
    )

    def __init__(self, *args: Any, editing: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if editing:
            self.fields["slug"].disabled = True


class ConditionForm(forms.Form):
    """One condition row. ``kind`` decides which fields are shown and read."""

    kind = forms.ChoiceField(choices=CONDITION_KINDS, label="Type")
    # trait
    trait = forms.CharField(required=False, widget=forms.TextInput(attrs={"placeholder": "plan"}))
    op = forms.ChoiceField(
        required=False,
        choices=[(op, _OPERATOR_LABELS[op]) for op in TRAIT_OPERATORS],
        label="Operator",
    )
    value = forms.CharField(
        required=False,
        widget=forms.TextInput(attrs={"placeholder": "pro"}),
        help_text="Lists: comma-separated. Quote text that looks like a number.",
    )
    # behaviour
    event = forms.CharField(
        required=False,
        # Suggestions from dashboard/_event_names.html, as in the rule editor.
        widget=forms.TextInput(
            attrs={"placeholder": "Signed Up", "list": "event-names", "autocomplete": "off"}
        ),
    )
    where = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2, "placeholder": "device=ios"}),
    )
    count_op = forms.ChoiceField(
        required=False,
        choices=[(op, _OPERATOR_LABELS[op]) for op in COUNT_OPERATORS],
        initial="gte",
        label="Times",
    )
    count_value = forms.IntegerField(required=False, min_value=0, initial=1, label="Count")
    within = forms.CharField(
        required=False,
        label="In the last",
        widget=forms.TextInput(attrs={"placeholder": "30d"}),
    )
    # flow state
    flow = forms.CharField(required=False, widget=forms.Select)
    state = forms.ChoiceField(
        required=False, choices=[(s, s.replace("_", " ")) for s in FLOW_STATES]
    )
    step = forms.IntegerField(required=False, min_value=1)
    stalled_for = forms.CharField(
        required=False,
        label="Stalled for",
        widget=forms.TextInput(attrs={"placeholder": "1h"}),
    )

    def __init__(self, *args: Any, flow_choices: list[tuple[str, str]] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["flow"].widget.choices = [("", "Choose a flow"), *flow_choices]


ConditionFormSet = forms.formset_factory(ConditionForm, extra=0)
CONDITION_FIELDS = tuple(ConditionForm.base_fields)
# Problem path part (after ``conditions[i].``) → the row field that shows it.
CONDITION_ERROR_FIELDS = {
    "trait": "trait",
    "op": "op",
    "value": "value",
    "event": "event",
    "where": "where",
    "count": "count_value",
    "within": "within",
    "flow": "flow",
    "state": "state",
    "step": "step",
    "for": "stalled_for",
}
