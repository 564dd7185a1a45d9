"""The experiment set-up form: metric and plan fields, arms as rows, problems back to fields.

Arms are rows posted as ``arms-<i>-<field>`` (name, weight, holdout, follow_ups) with a count in
``arms-TOTAL``. A row's follow-ups are a YAML list in a textarea, in the configuration file's
shape (``- {channel: email, template: reminder, delay: 3d}``); empty means the rule's own
sequence. :func:`experiment_validate` reports problems with paths such as
``variants[1].weight`` or ``metric.completed_within``; :func:`attach_problems` puts each one next
to its field.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from django import forms

from dashboard.rows import apply_row_action as move_rows

MAX_ARMS = 8
ARM_FIELDS = ("name", "weight", "holdout", "follow_ups")
RESERVED_SLUGS = {"plan", "new"}
_ARM_PATH = re.compile(r"^variants\[(\d+)\](?:\.(\w+))?(.*)$")
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
    follow_ups: str = ""
    errors: dict[str, list[str]] = field(default_factory=dict)
    share: float | None = None  # weight / total weight, for display

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


def format_follow_ups(follow_ups: list[dict[str, Any]] | None) -> str:
    if not follow_ups:
        return ""
    return "".join(
        "- " + yaml.safe_dump(item, default_flow_style=True, sort_keys=False, width=10_000)
        for item in follow_ups
    )


def rows_from_variants(variants: Iterable[Any]) -> list[ArmRow]:
    return [
        ArmRow(
            name=v.name,
            weight=str(v.weight),
            holdout=v.holdout,
            follow_ups=format_follow_ups(v.follow_ups),
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
            follow_ups=data.get(f"arms-{i}-follow_ups") or "",
        )
        for i in range(total)
    ]


def apply_row_action(rows: list[ArmRow], action: str) -> list[ArmRow]:
    """Add an arm (before a trailing holdout, up to ``MAX_ARMS``) or remove one."""

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
    """The variants for the service; a follow-ups text that is not YAML is a row error."""
    variants = []
    for row in rows:
        variant: dict[str, Any] = {"name": row.name, "weight": _weight(row.weight)}
        if row.holdout:
            variant["holdout"] = True
        if row.follow_ups.strip():
            try:
                follow_ups = yaml.safe_load(row.follow_ups)
            except yaml.YAMLError as error:
                mark = getattr(error, "problem_mark", None)
                where = f" (line {mark.line + 1})" if mark is not None else ""
                row.add_error("follow_ups", f"Not valid YAML{where}.")
                follow_ups = None
            if follow_ups is not None and not isinstance(follow_ups, list):
                row.add_error(
                    "follow_ups", "Write a list: one '- {channel, template, delay}' a line."
                )
            elif follow_ups:
                variant["follow_ups"] = follow_ups
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


def _follow_up_label(rest: str) -> str:
    match = re.match(r"^\[(\d+)\](?:\.(\w+))?", rest)
    if match is None:
        return ""
    label = f"Follow-up {int(match.group(1)) + 1}"
    return f"{label}, {match.group(2)}: " if match.group(2) else f"{label}: "


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
            if name == "follow_ups":
                text = _follow_up_label(arm.group(3)) + text
            row.add_error(name, text)
            continue
        name = _METRIC_FIELDS.get(path) or (path if path in form.fields else None)
        if name is None:
            label = "Arms" if path == "variants" else path.capitalize() if path else ""
            unplaced.append(f"{label}: {text}" if label else text)
        elif not form.has_error(name):
            form.add_error(name, text)
    return unplaced
