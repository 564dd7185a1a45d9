"""Forms of the rule and template editors.

The forms only read what people typed into the definition dict of DESIGN §3.4; the rule spec
(:func:`triggers.rules.spec.parse_rule`) validates it and reports problems with paths such as
``trigger.minutes`` or ``follow_ups[1].delay``; :func:`attach_problems` puts each one next to the
field it is about. Follow-ups are rows posted as ``follow_ups-<i>-<field>`` with a count in
``follow_ups-TOTAL``; adding, removing and moving a row re-renders the editor from what was typed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from dashboard.rows import apply_row_action as move_rows
from dashboard.rules.selectors import FlowInfo
from onboarding.configfile.errors import Problem
from onboarding.where_text import format_where, parse_where
from triggers.models import Channel
from triggers.rules.spec import EXIT_WHEN, MAX_FOLLOW_UPS, TRIGGER_KINDS
from triggers.services.activation import DEFAULT_MAX_IDLE_HOURS, MAX_IDLE_HOURS

KIND_LABELS = {
    "inactive_in_flow": "Inactive in onboarding",
    "step_abandoned": "Step skipped or abandoned",
    "repeated_event": "Repeated failure (event N times)",
    "inactive_sessions": "Inactive across sessions",
    "milestone": "Milestone (event N times)",
    "event": "Event",
}
# The form fields each trigger kind shows, in order.
KIND_FIELDS: dict[str, tuple[str, ...]] = {
    "inactive_in_flow": ("flow", "step", "minutes"),
    "step_abandoned": ("flow", "did", "missing", "within"),
    "repeated_event": ("event", "where", "times", "within"),
    "inactive_sessions": ("flow", "sessions"),
    "milestone": ("event", "where", "times", "flow"),
    "event": ("event", "where"),
}
FLOW_KINDS = ("inactive_in_flow", "step_abandoned", "inactive_sessions")
EXIT_LABELS = {
    "progressed": "They make progress in the flow",
    "completed": "They complete the flow",
    "never": "Never (send every follow-up)",
}
RESERVED_SLUGS = {
    "new",
    "preview",
    "templates",
    "trigger-fields",
    "experiments",
    "backtests",
    "sandbox",
    "caps-estimate",
}
ROW_PREFIX = "follow_ups"
ROW_FIELDS = ("channel", "template", "delay", "at", "unless_clicked_within")
EMPTY_ROW = {
    "channel": "email",
    "template": "",
    "delay": "0m",
    "at": "",
    "unless_clicked_within": "",
}
_ROW_PATH = re.compile(r"^follow_ups\[(\d+)\](?:\.(\w+))?$")


# --- key=value lines ----------------------------------------------------------------------------


# --- the rule form --------------------------------------------------------------------------------


def _select(**attrs: Any) -> forms.Select:
    return forms.Select(attrs=attrs)


def _int_or_text(value: Any) -> Any:
    """A number typed into a field the spec checks: the int if it is one, else the text."""
    if value in (None, ""):
        return None
    try:
        return int(str(value).strip())
    except ValueError:
        return str(value).strip()


class RuleForm(forms.Form):
    name = forms.CharField(max_length=200)
    slug = forms.SlugField(
        max_length=64, help_text="Lowercase letters, digits and hyphens; used in the config file."
    )
    priority = forms.IntegerField(
        initial=0, help_text="Higher wins when several rules want the same person."
    )
    shadow = forms.BooleanField(
        label="Shadow mode",
        required=False,
        help_text="Evaluate and record every decision, send nothing.",
    )
    kind = forms.ChoiceField(label="Trigger", choices=[(k, KIND_LABELS[k]) for k in TRIGGER_KINDS])
    flow = forms.CharField(required=False, widget=_select())
    step = forms.CharField(label="At step", required=False, widget=_select())
    minutes = forms.CharField(
        label="Idle for (minutes)",
        required=False,
        widget=forms.NumberInput(attrs={"min": 1, "placeholder": "5"}),
    )
    did = forms.CharField(label="Did step", required=False, widget=_select())
    missing = forms.CharField(label="But not step", required=False, widget=_select())
    within = forms.CharField(
        required=False, widget=forms.TextInput(attrs={"placeholder": "24h"}), max_length=16
    )
    event = forms.CharField(
        label="Event name",
        required=False,
        max_length=255,
        widget=forms.TextInput(attrs={"list": "event-names", "autocomplete": "off"}),
    )
    where = forms.CharField(
        label="Where (optional)",
        required=False,
        widget=forms.Textarea(attrs={"rows": 2, "placeholder": "plan=pro"}),
    )
    times = forms.CharField(
        required=False, widget=forms.NumberInput(attrs={"min": 1, "placeholder": "3"})
    )
    sessions = forms.CharField(
        required=False, widget=forms.NumberInput(attrs={"min": 2, "placeholder": "3"})
    )
    segment = forms.CharField(label="Only people in segment", required=False, widget=_select())
    exit_when = forms.ChoiceField(
        label="Stop the sequence when", choices=[(k, EXIT_LABELS[k]) for k in EXIT_WHEN]
    )
    reentry = forms.ChoiceField(
        label="Re-entry",
        choices=[("once", "Once ever"), ("once_per", "At most once per…")],
        widget=forms.RadioSelect,
        initial="once",
    )
    reentry_every = forms.CharField(
        label="Period", required=False, widget=forms.TextInput(attrs={"placeholder": "7d"})
    )
    quiet_start = forms.CharField(
        label="Quiet hours from",
        required=False,
        widget=forms.TimeInput(attrs={"type": "time"}, format="%H:%M"),
    )
    quiet_end = forms.CharField(
        label="to", required=False, widget=forms.TimeInput(attrs={"type": "time"}, format="%H:%M")
    )
    cap_max = forms.CharField(
        label="At most",
        required=False,
        widget=forms.NumberInput(attrs={"min": 1, "placeholder": "2"}),
    )
    cap_per = forms.CharField(
        label="messages per", required=False, widget=forms.TextInput(attrs={"placeholder": "7d"})
    )
    fallback_channel = forms.CharField(label="Fallback channel", required=False, widget=_select())
    fallback_template = forms.CharField(label="Fallback template", required=False, widget=_select())
    # On activation only (not part of the definition): triggers.services.activation.
    backfill = forms.BooleanField(
        label="Also enroll people who are idle right now", required=False, initial=False
    )
    backfill_hours = forms.IntegerField(
        label="Idle at most (hours)",
        required=False,
        min_value=1,
        max_value=MAX_IDLE_HOURS,
        initial=DEFAULT_MAX_IDLE_HOURS,
        widget=forms.NumberInput(attrs={"min": 1, "max": MAX_IDLE_HOURS}),
    )

    def __init__(
        self,
        *args: Any,
        flows: Mapping[str, FlowInfo],
        segments: Iterable[tuple[str, str]],
        templates: Mapping[str, str],
        editing: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.flows = flows
        self.templates = templates
        self.editing = editing
        if editing:
            self.fields["slug"].disabled = True
            self.fields["slug"].help_text = "The slug cannot change once the rule exists."
        kind = self.value_of("kind") or TRIGGER_KINDS[0]
        self.trigger_kind = kind if kind in TRIGGER_KINDS else TRIGGER_KINDS[0]
        flow_blank = "(no flow: any time)" if self.trigger_kind == "milestone" else "Choose a flow…"
        self._choices("flow", [("", flow_blank)] + [(s, f.name) for s, f in flows.items()])
        flow = flows.get(self.value_of("flow") or "")
        steps = (
            [(str(n), flow.step_label(n)) for n in range(1, len(flow.steps) + 1)] if flow else []
        )
        self._choices("step", [("", "Any step"), *steps])
        self._choices("did", [("", "Choose…"), *steps])
        self._choices("missing", [("", "Choose…"), *steps])
        self._choices("segment", [("", "Everyone"), *list(segments)])
        channels = [("", "None"), *list(Channel.choices)]
        self._choices("fallback_channel", channels)
        self._choices(
            "fallback_template",
            template_choices(templates, self.value_of("fallback_channel"), blank="None"),
        )
        if kind == "inactive_in_flow":
            self.fields["step"].help_text = "The step the person has to do next."

    def value_of(self, name: str) -> str:
        """What the field holds now, typed or initial (before any cleaning)."""
        if self.is_bound:
            return self.data.get(self.add_prefix(name)) or ""
        value = self.initial.get(name, self.fields[name].initial)
        return "" if value is None else str(value)

    def _choices(self, name: str, choices: list[tuple[str, str]]) -> None:
        current = self.value_of(name)
        if current and current not in {value for value, _ in choices}:
            choices = [*choices, (current, f"{current} (unknown)")]
        self.fields[name].widget.choices = choices

    def clean_slug(self) -> str:
        slug = self.cleaned_data["slug"]
        if not self.editing and slug in RESERVED_SLUGS:
            raise ValidationError("This slug is reserved for a page; choose another.")
        return slug

    def clean_where(self) -> dict[str, Any]:
        return parse_where(self.cleaned_data.get("where", ""))

    @property
    def kind_fields(self) -> list[forms.BoundField]:
        return [self[name] for name in KIND_FIELDS[self.trigger_kind]]


def template_choices(
    templates: Mapping[str, str], channel: str | None, *, blank: str = "Choose a template…"
) -> list[tuple[str, str]]:
    """The templates of ``channel`` (all of them, labelled with their channel, without one)."""
    if channel:
        return [("", blank)] + [(s, s) for s, c in templates.items() if c == channel]
    return [("", blank)] + [(s, f"{s} ({c})") for s, c in templates.items()]


class FollowUpForm(forms.Form):
    channel = forms.ChoiceField(choices=Channel.choices)
    template = forms.CharField(required=False, widget=_select())
    delay = forms.CharField(
        label="After",
        required=False,
        max_length=16,
        widget=forms.TextInput(attrs={"placeholder": "0m"}),
    )
    at = forms.CharField(
        label="At local time (optional)",
        required=False,
        widget=forms.TimeInput(attrs={"type": "time"}, format="%H:%M"),
    )
    unless_clicked_within = forms.CharField(
        label="Skip if the previous one was clicked within",
        help_text="Optional, after an email or in-app follow-up (e.g. 24h): skipped if that one "
        "was clicked within this long of its send; otherwise sent no earlier than this long "
        "after it.",
        required=False,
        max_length=16,
        widget=forms.TextInput(attrs={"placeholder": "e.g. 24h"}),
    )

    def __init__(self, *args: Any, templates: Mapping[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        channel = (
            self.data.get(self.add_prefix("channel"))
            if self.is_bound
            else self.initial.get("channel")
        )
        choices = template_choices(templates, channel or None)
        current = (
            self.data.get(self.add_prefix("template"))
            if self.is_bound
            else self.initial.get("template")
        )
        if current and current not in {value for value, _ in choices}:
            label = (
                f"{current} ({templates[current]})"
                if current in templates
                else f"{current} (unknown)"
            )
            choices.append((current, label))
        self.fields["template"].widget.choices = choices


# --- follow-up rows -------------------------------------------------------------------------------


def rows_from_post(data: Mapping[str, Any], *, prefix: str = ROW_PREFIX) -> list[dict[str, str]]:
    """The follow-up rows posted as ``<prefix>-<i>-<field>`` with a count in ``<prefix>-TOTAL``
    (the rule editor's ``follow_ups``; an experiment arm's ``arms-<i>-follow_ups``)."""
    try:
        total = min(int(data.get(f"{prefix}-TOTAL", 0)), MAX_FOLLOW_UPS)
    except (TypeError, ValueError):
        total = 0
    return [
        {name: data.get(f"{prefix}-{index}-{name}", "") or "" for name in ROW_FIELDS}
        for index in range(total)
    ]


def apply_row_action(rows: list[dict[str, str]], action: str) -> list[dict[str, str]]:
    def new_row(current: list[dict[str, str]]) -> dict[str, str] | None:
        if len(current) >= MAX_FOLLOW_UPS:
            return None
        last = current[-1] if current else EMPTY_ROW
        return {**EMPTY_ROW, "channel": last.get("channel") or "email", "delay": ""}

    return move_rows(rows, action, new_row)


def row_forms(
    rows: list[dict[str, str]],
    templates: Mapping[str, str],
    *,
    bound: bool,
    prefix: str = ROW_PREFIX,
) -> list[FollowUpForm]:
    forms_ = []
    for index, row in enumerate(rows):
        row_prefix = f"{prefix}-{index}"
        if bound:
            data = {f"{row_prefix}-{name}": value for name, value in row.items()}
            form = FollowUpForm(data, prefix=row_prefix, templates=templates)
            form.is_valid()
        else:
            form = FollowUpForm(prefix=row_prefix, initial=row, templates=templates)
        forms_.append(form)
    return forms_


def follow_up_items(rows: list[FollowUpForm]) -> list[dict[str, Any]]:
    """The definition's ``follow_ups`` from bound, cleaned rows (the rule's or an arm's)."""
    items = []
    for row in rows:
        values = row.cleaned_data
        item: dict[str, Any] = {
            "channel": values.get("channel") or row.data.get(row.add_prefix("channel")),
            "template": values.get("template") or None,
            "delay": (values.get("delay") or "").strip() or "0m",
        }
        if values.get("at"):
            item["at"] = values["at"]
        if (values.get("unless_clicked_within") or "").strip():
            item["unless_clicked_within"] = values["unless_clicked_within"].strip()
        items.append(item)
    return items


def follow_up_rows(items: Iterable[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Rows for stored follow-ups (the rule's or an arm's), as the editors show them."""
    return [
        {
            "channel": item.get("channel", "email"),
            "template": item.get("template", ""),
            "delay": item.get("delay", "0m"),
            "at": item.get("at", ""),
            "unless_clicked_within": item.get("unless_clicked_within", ""),
        }
        for item in items
    ]


# --- the definition and back ------------------------------------------------------------------


def build_definition(form: RuleForm, rows: list[FollowUpForm]) -> dict[str, Any]:
    """The definition dict from a bound, cleaned form (fields with errors are left out)."""
    data = form.cleaned_data
    kind = form.trigger_kind
    trigger: dict[str, Any] = {"kind": kind}
    for name in KIND_FIELDS[kind]:
        value = data.get(name)
        if name == "where":
            if value:
                trigger["where"] = value
        elif name in ("step", "minutes", "did", "missing", "times", "sessions"):
            number = _int_or_text(value)
            if number is not None:
                trigger[name] = number
        elif value:
            trigger[name] = value.strip()
    definition: dict[str, Any] = {"trigger": trigger}
    if data.get("segment"):
        definition["segment"] = data["segment"]
    definition["follow_ups"] = follow_up_items(rows)
    if data.get("exit_when"):
        definition["exit_when"] = data["exit_when"]
    if data.get("reentry") == "once_per":
        definition["reentry"] = {"once_per": (data.get("reentry_every") or "").strip() or None}
    else:
        definition["reentry"] = "once"
    if data.get("quiet_start") or data.get("quiet_end"):
        definition["quiet_hours"] = {
            "start": data.get("quiet_start") or "",
            "end": data.get("quiet_end") or "",
        }
    if data.get("cap_max") or data.get("cap_per"):
        definition["cap"] = {
            "max": _int_or_text(data.get("cap_max")),
            "per": (data.get("cap_per") or "").strip() or None,
        }
    if data.get("fallback_channel") or data.get("fallback_template"):
        definition["fallback"] = {
            "channel": data.get("fallback_channel") or None,
            "template": data.get("fallback_template") or None,
        }
    return definition


def initial_from_definition(definition: Mapping[str, Any]) -> tuple[dict[str, Any], list[dict]]:
    """The editor's initial values and follow-up rows for a stored definition."""
    trigger = definition.get("trigger") or {}
    initial: dict[str, Any] = {"kind": trigger.get("kind", TRIGGER_KINDS[0])}
    for name in (
        "flow",
        "step",
        "minutes",
        "did",
        "missing",
        "within",
        "event",
        "times",
        "sessions",
    ):
        if trigger.get(name) is not None:
            initial[name] = str(trigger[name])
    initial["where"] = format_where(trigger.get("where"))
    initial["segment"] = definition.get("segment") or ""
    initial["exit_when"] = definition.get("exit_when") or "progressed"
    reentry = definition.get("reentry", "once")
    if isinstance(reentry, dict):
        initial["reentry"], initial["reentry_every"] = "once_per", reentry.get("once_per", "")
    else:
        initial["reentry"] = "once"
    quiet = definition.get("quiet_hours") or {}
    initial["quiet_start"], initial["quiet_end"] = quiet.get("start", ""), quiet.get("end", "")
    cap = definition.get("cap") or {}
    initial["cap_max"] = str(cap["max"]) if cap.get("max") else ""
    initial["cap_per"] = cap.get("per", "")
    fallback = definition.get("fallback") or {}
    initial["fallback_channel"] = fallback.get("channel", "")
    initial["fallback_template"] = fallback.get("template", "")
    return initial, follow_up_rows(definition.get("follow_ups") or [])


# --- problems back to fields --------------------------------------------------------------------

# Definition paths → form fields (the trigger's own fields share their names).
_PATH_FIELDS = {
    "trigger": "kind",
    "segment": "segment",
    "exit_when": "exit_when",
    "reentry": "reentry",
    "reentry.once_per": "reentry_every",
    "quiet_hours": "quiet_start",
    "quiet_hours.start": "quiet_start",
    "quiet_hours.end": "quiet_end",
    "cap": "cap_max",
    "cap.max": "cap_max",
    "cap.per": "cap_per",
    "fallback": "fallback_template",
    "fallback.channel": "fallback_channel",
    "fallback.template": "fallback_template",
}


def _sentence(message: str) -> str:
    return message[:1].upper() + message[1:] + ("" if message.endswith(".") else ".")


def attach_problems(
    problems: Iterable[Problem], form: RuleForm, rows: list[FollowUpForm]
) -> list[str]:
    """Put each problem next to its field; return those that belong to no field."""
    unplaced = []
    for problem in problems:
        message = _sentence(problem.message)
        path = problem.path
        row = _ROW_PATH.match(path)
        if row is not None and int(row.group(1)) < len(rows):
            target = rows[int(row.group(1))]
            name = row.group(2) if row.group(2) in ROW_FIELDS else None
            if name is None or not target.has_error(name):
                target.add_error(name, message)
            continue
        if path == "follow_ups":
            unplaced.append(f"Follow-ups: {message}")
            continue
        name = _PATH_FIELDS.get(path)
        if name is None and path.startswith("trigger."):
            name = path.split(".", 1)[1]
            if name not in form.fields or name not in KIND_FIELDS[form.trigger_kind]:
                name = "kind"
        if name is None:
            unplaced.append(str(problem))
        elif not form.has_error(name):
            form.add_error(name, message)
    return unplaced
