"""The experiment set-up form: metric and plan fields, arms as rows, problems back to fields.

Arms are rows posted as ``arms-<i>-<field>`` (name, weight, holdout) with a count in
``arms-TOTAL``. An arm's own follow-ups are rows of the rule editor's kind (channel, template,
after, at: ``dashboard.rules.forms.FollowUpForm``, the same partial) posted as
``arms-<i>-follow_ups-<j>-<field>`` with a count in ``arms-<i>-follow_ups-TOTAL``; none means the
rule's own sequence. Both levels use the one row editor (:mod:`dashboard.rows`): an arm's
follow-up actions are prefixed, ``arms-1-follow_ups:add`` or ``arms-1-follow_ups:remove:0``.
:func:`experiment_validate` reports problems with paths such as ``variants[1].weight`` or
``variants[0].follow_ups[1].template``; :func:`attach_problems` puts each one next to its field.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django import forms

from dashboard.rows import apply_row_action as move_rows
from dashboard.rules.forms import (
    FollowUpForm,
    follow_up_items,
    follow_up_rows,
    row_forms,
)
from dashboard.rules.forms import (
    apply_row_action as follow_up_row_action,
)
from dashboard.rules.forms import (
    rows_from_post as follow_up_rows_from_post,
)

MAX_ARMS = 8
ARM_FIELDS = ("name", "weight", "holdout", "follow_ups")
FOLLOW_UP_FIELDS = ("channel", "template", "delay", "at")
RESERVED_SLUGS = {"plan", "new"}
_ARM_PATH = re.compile(r"^variants\[(\d+)\](?:\.(\w+))?(.*)$")
_FOLLOW_UP_PATH = re.compile(r"^\[(\d+)\](?:\.(\w+))?$")
_ARM_FOLLOW_UP_ACTION = re.compile(r"^arms-(\d+)-follow_ups:(.+)$")
_METRIC_FIELDS = {
    "metric.flow": "flow",
    "metric.completed_within": "completed_within",
    "metric.reengaged_within": "reengaged_within",
}


class ExperimentForm(forms.Form):
    slug = forms.SlugField(
        max_length=64, help_text="Lowercase letters, digits and hyphens; used in the config file."
    )
    flow = forms.ChoiceField(label="Converts by completing")
    completed_within = forms.CharField(
        label="Within",
        max_length=16,
        initial="14d",
        widget=forms.TextInput(attrs={"placeholder": "14d"}),
        help_text="Of assignment; only closed windows count.",
    )
    reengaged_within = forms.CharField(
        label="Re-engaged within",
        max_length=16,
        required=False,
        widget=forms.TextInput(attrs={"placeholder": "24h"}),
        help_text="Secondary: any event this soon; 24h when empty.",
    )
    planned_users_per_arm = forms.IntegerField(
        label="Planned users (largest arm)",
        min_value=1,
        required=False,
        help_text="No verdict before this; smaller arms need their share of it.",
    )
    minimum_effect = forms.FloatField(
        label="Smallest effect (points)",
        min_value=0.1,
        max_value=99,
        required=False,
        initial=2,
        widget=forms.NumberInput(attrs={"step": "0.5", "placeholder": "2"}),
    )
    baseline = forms.FloatField(
        label="Baseline rate (%)",
        min_value=0.1,
        max_value=99.9,
        required=False,
        widget=forms.NumberInput(attrs={"step": "0.1"}),
        help_text="Leave empty to use the flow's recent rate.",
    )

    def __init__(self, *args: Any, flows: Iterable[tuple[str, str]], editing: bool, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.editing = editing
        choices = [("", "Choose a flow…"), *flows]
        current = self.data.get("flow") if self.is_bound else self.initial.get("flow")
        if current and current not in {value for value, _ in choices}:
            choices.append((current, f"{current} (unknown)"))
        self.fields["flow"].choices = choices
        if editing:
            self.fields["slug"].disabled = True
            self.fields["slug"].help_text = "The slug cannot change once the experiment exists."

    def clean_slug(self) -> str:
        slug = self.cleaned_data["slug"]
        if not self.editing and slug in RESERVED_SLUGS:
            raise forms.ValidationError("This slug is reserved for a page; choose another.")
        return slug


@dataclass
class ArmRow:
    name: str = ""
    weight: str = ""
    holdout: bool = False
    # The arm's own follow-ups as rows ({channel, template, delay, at}); none: the rule's own.
    follow_ups: list[dict[str, str]] = field(default_factory=list)
    errors: dict[str, list[str]] = field(default_factory=dict)
    share: float | None = None  # weight / total weight, for display
    # Set by follow_up_forms(): the rows as forms, errors attached to their fields.
    forms: list[FollowUpForm] = field(default_factory=list)
    index: int = 0

    @property
    def prefix(self) -> str:
        return f"arms-{self.index}-follow_ups"

    @property
    def action_prefix(self) -> str:
        return f"{self.prefix}:"

    @property
    def owner(self) -> str:
        return f"arm {self.index + 1}'s "

    def add_error(self, name: str | None, message: str) -> None:
        self.errors.setdefault(name or "__all__", []).append(message)

    @property
    def has_errors(self) -> bool:
        return bool(self.errors)

    def error_list(self, name: str) -> list[str]:
        return self.errors.get(name, [])

    # Template access without a custom filter.
    @property
    def name_errors(self) -> list[str]:
        return self.error_list("name")

    @property
    def weight_errors(self) -> list[str]:
        return self.error_list("weight")

    @property
    def holdout_errors(self) -> list[str]:
        return self.error_list("holdout")

    @property
    def follow_ups_errors(self) -> list[str]:
        return self.error_list("follow_ups")

    @property
    def other_errors(self) -> list[str]:
        return self.error_list("__all__")


DEFAULT_ARMS = [
    ArmRow(name="treatment", weight="50"),
    ArmRow(name="holdout", weight="50", holdout=True),
]


def rows_from_variants(variants: Iterable[Any]) -> list[ArmRow]:
    return [
        ArmRow(
            name=v.name,
            weight=str(v.weight),
            holdout=v.holdout,
            follow_ups=follow_up_rows(v.follow_ups or []),
        )
        for v in variants
    ]


def rows_from_post(data: Mapping[str, Any]) -> list[ArmRow]:
    try:
        total = min(int(data.get("arms-TOTAL", 0)), MAX_ARMS)
    except (TypeError, ValueError):
        total = 0
    return [
        ArmRow(
            name=(data.get(f"arms-{i}-name") or "").strip(),
            weight=(data.get(f"arms-{i}-weight") or "").strip(),
            holdout=bool(data.get(f"arms-{i}-holdout")),
            follow_ups=follow_up_rows_from_post(data, prefix=f"arms-{i}-follow_ups"),
        )
        for i in range(total)
    ]


def follow_up_forms(
    rows: list[ArmRow], templates: Mapping[str, str], *, bound: bool
) -> list[ArmRow]:
    """Give each arm its index and its follow-ups as forms (the rule editor's rows), templates
    limited to each row's channel; bound forms when the rows came from a post."""
    for index, row in enumerate(rows):
        row.index = index
        row.forms = row_forms(row.follow_ups, templates, bound=bound, prefix=row.prefix)
    return rows


def apply_row_action(rows: list[ArmRow], action: str) -> list[ArmRow]:
    """Add an arm (before a trailing holdout, up to ``MAX_ARMS``) or remove one; or, for
    ``arms-<i>-follow_ups:<action>``, add, remove or move one of arm i's follow-ups."""
    nested = _ARM_FOLLOW_UP_ACTION.match(action)
    if nested is not None:
        index = int(nested.group(1))
        if 0 <= index < len(rows) and not rows[index].holdout:
            row = rows[index]
            row.follow_ups = follow_up_row_action(row.follow_ups, nested.group(2))
        return rows

    def new_arm(current: list[ArmRow]) -> ArmRow | None:
        if len(current) >= MAX_ARMS:
            return None
        return ArmRow(
            name=f"variant-{len(current) + 1}", weight=current[0].weight if current else "50"
        )

    def before_holdout(current: list[ArmRow]) -> int:
        return len(current) - 1 if current and current[-1].holdout else len(current)

    return move_rows(rows, action, new_arm, add_at=before_holdout)


def _weight(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        return text or None


def variants_from_rows(rows: list[ArmRow]) -> list[dict[str, Any]]:
    """The variants for the service; an arm's follow-ups from its (bound) row forms. A holdout
    sends nothing, so its rows, if any were typed before ticking it, are left out."""
    variants = []
    for row in rows:
        variant: dict[str, Any] = {"name": row.name, "weight": _weight(row.weight)}
        if row.holdout:
            variant["holdout"] = True
        elif row.forms:
            variant["follow_ups"] = follow_up_items(row.forms)
        variants.append(variant)
    return variants


def metric_from_form(form: ExperimentForm) -> dict[str, Any]:
    data = form.data
    metric: dict[str, Any] = {
        "flow": (data.get("flow") or "").strip(),
        "completed_within": (data.get("completed_within") or "").strip(),
    }
    if (data.get("reengaged_within") or "").strip():
        metric["reengaged_within"] = data["reengaged_within"].strip()
    return metric


def _sentence(message: str) -> str:
    return message[:1].upper() + message[1:] + ("" if message.endswith(".") else ".")


def attach_problems(
    problems: Iterable[tuple[str, str]], form: ExperimentForm, rows: list[ArmRow]
) -> list[str]:
    """Put each (path, message) next to its field; return those that belong to no field."""
    unplaced = []
    for path, message in problems:
        text = _sentence(message)
        arm = _ARM_PATH.match(path)
        if arm is not None and int(arm.group(1)) < len(rows):
            row = rows[int(arm.group(1))]
            name = arm.group(2) if arm.group(2) in ARM_FIELDS else None
            follow_up = _FOLLOW_UP_PATH.match(arm.group(3)) if name == "follow_ups" else None
            if follow_up is not None and int(follow_up.group(1)) < len(row.forms):
                form_ = row.forms[int(follow_up.group(1))]
                field_name = follow_up.group(2) if follow_up.group(2) in FOLLOW_UP_FIELDS else None
                if field_name is None or not form_.has_error(field_name):
                    form_.add_error(field_name, text)
                continue
            row.add_error(name, text)
            continue
        name = _METRIC_FIELDS.get(path) or (path if path in form.fields else None)
        if name is None:
            label = "Arms" if path == "variants" else path.capitalize() if path else ""
            unplaced.append(f"{label}: {text}" if label else text)
        elif not form.has_error(name):
            form.add_error(name, text)
    return unplaced
