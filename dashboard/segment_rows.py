"""Segment definitions as the editor's condition rows, and in words for the list page.

Plain functions, no requests: ``rows_from_definition`` turns a stored definition into rows (or
says it needs the YAML editor), ``build_definition`` turns posted rows back into a definition and
keeps which row each condition came from so that problems land next to the right row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from django.core.exceptions import ValidationError
from django.http import QueryDict

from dashboard.forms import CONDITION_FIELDS
from onboarding.where_text import format_scalar, format_where, parse_scalar, parse_where

PREFIX = "conditions"
_PRIMARY = {"trait": "trait", "event": "event", "flow": "flow"}
_LIST_OPS = ("in", "not_in")
_TEXT_OPS = ("contains", "before", "after", "within_last")
_NO_VALUE_OPS = ("is_set", "is_not_set")


def empty_row(kind: str = "trait") -> dict[str, Any]:
    return {
        "kind": kind,
        "trait": "",
        "op": "eq",
        "value": "",
        "event": "",
        "where": "",
        "count_op": "gte",
        "count_value": 1,
        "within": "",
        "flow": "",
        "state": "entered",
        "step": None,
        "stalled_for": "",
    }


# --- definition ↔ rows --------------------------------------------------------------------------


def _value_text(op: str, value: Any) -> str:
    if op in _NO_VALUE_OPS or value is None:
        return ""
    if op in _LIST_OPS and isinstance(value, list):
        return ", ".join(format_scalar(item) for item in value)
    if op in _TEXT_OPS and isinstance(value, str):
        return value
    return format_scalar(value)


def rows_from_definition(definition: Any) -> tuple[str, list[dict[str, Any]]] | None:
    """``(match, rows)`` for a definition the rows can show, else None (edit it as YAML)."""
    if not isinstance(definition, dict):
        return None
    rows = []
    for condition in definition.get("conditions") or []:
        if not isinstance(condition, dict):
            return None
        row = empty_row()
        if "trait" in condition:
            op = condition.get("op", "eq")
            row.update(
                kind="trait",
                trait=condition["trait"],
                op=op,
                value=_value_text(op, condition.get("value")),
            )
        elif "event" in condition:
            count = condition.get("count") or {}
            row.update(
                kind="event",
                event=condition["event"],
                where=format_where(condition.get("where")),
                count_op=count.get("op", "gte"),
                count_value=count.get("value", 1),
                within=condition.get("within", ""),
            )
        elif "flow" in condition:
            row.update(
                kind="flow",
                flow=condition["flow"],
                state=condition.get("state", "entered"),
                step=condition.get("step"),
                stalled_for=condition.get("for", ""),
            )
        else:
            return None
        rows.append(row)
    return definition.get("match", "all"), rows


def rows_from_post(data: QueryDict) -> list[dict[str, Any]]:
    try:
        total = min(int(data.get(f"{PREFIX}-TOTAL_FORMS", 0)), 100)
    except ValueError:
        total = 0
    return [row_from_post(data, index) for index in range(total)]


def row_from_post(data: QueryDict, index: int) -> dict[str, Any]:
    row = empty_row()
    for name in CONDITION_FIELDS:
        key = f"{PREFIX}-{index}-{name}"
        if key in data:
            row[name] = data.get(key, "")
    if row["kind"] not in _PRIMARY:
        row["kind"] = "trait"
    return row


@dataclass
class Built:
    """A definition built from rows, which row each condition came from, and row-level errors."""

    definition: dict[str, Any]
    row_of_condition: list[int] = field(default_factory=list)
    row_errors: dict[int, list[tuple[str | None, str]]] = field(default_factory=dict)


def _is_blank(row: dict[str, Any]) -> bool:
    return not str(row.get(_PRIMARY[row["kind"]]) or "").strip()


def _condition(row: dict[str, Any], errors: list[tuple[str | None, str]]) -> dict[str, Any]:
    kind = row["kind"]
    if kind == "trait":
        op = row["op"] or "eq"
        condition: dict[str, Any] = {"trait": row["trait"].strip(), "op": op}
        text = str(row["value"] or "").strip()
        if op in _LIST_OPS:
            condition["value"] = [parse_scalar(part) for part in text.split(",") if part.strip()]
        elif op in _TEXT_OPS:
            condition["value"] = text
        elif op not in _NO_VALUE_OPS:
            condition["value"] = parse_scalar(text)
        return condition
    if kind == "event":
        condition = {"event": row["event"].strip()}
        try:
            where = parse_where(row["where"] or "")
        except ValidationError as error:
            errors.append(("where", error.messages[0]))
            where = {}
        if where:
            condition["where"] = where
        try:
            count = int(row["count_value"]) if str(row["count_value"]).strip() else 1
        except ValueError:
            errors.append(("count_value", "Enter a whole number."))
            count = 1
        if (row["count_op"] or "gte", count) != ("gte", 1):
            condition["count"] = {"op": row["count_op"] or "gte", "value": count}
        if str(row["within"] or "").strip():
            condition["within"] = row["within"].strip()
        return condition
    condition = {"flow": row["flow"], "state": row["state"] or "entered"}
    step = str(row["step"] or "").strip()
    if step:
        try:
            condition["step"] = int(step)
        except ValueError:
            errors.append(("step", "Enter a step number."))
    if str(row["stalled_for"] or "").strip():
        condition["for"] = row["stalled_for"].strip()
    return condition


def build_definition(match: str, rows: list[dict[str, Any]]) -> Built:
    built = Built({"match": match, "conditions": []})
    for index, row in enumerate(rows):
        if _is_blank(row):
            continue
        errors: list[tuple[str | None, str]] = []
        built.definition["conditions"].append(_condition(row, errors))
        built.row_of_condition.append(index)
        if errors:
            built.row_errors[index] = errors
    return built


def advanced_definition(text: str) -> tuple[Any, str | None]:
    try:
        value = yaml.safe_load(text) if text.strip() else {"match": "all", "conditions": []}
    except yaml.YAMLError as error:
        return None, f"Not valid YAML or JSON: {error}"
    return value, None


def definition_yaml(definition: Any) -> str:
    return yaml.safe_dump(definition, sort_keys=False, allow_unicode=True, width=100)


# --- in words (the list page) -------------------------------------------------------------------


def _describe_filter(key: str, value: Any) -> str:
    if isinstance(value, dict):
        shown = value.get("value")
        if isinstance(shown, list):
            shown = ", ".join(str(item) for item in shown)
        return f"{key} {str(value.get('op', '')).replace('_', ' ')} {shown}".strip()
    return f"{key}={value}"


def describe_condition(condition: Any) -> str:
    """A short human reading of one stored condition, for the list page."""
    if not isinstance(condition, dict):
        return "?"
    if "trait" in condition:
        op = condition.get("op", "eq").replace("_", " ")
        value = condition.get("value")
        return f"{condition['trait']} {op}" + ("" if value is None else f" {value}")
    if "person" in condition:
        return (
            f"{condition['person']} {condition.get('op', '')} {condition.get('value', '')}".strip()
        )
    if "event" in condition:
        text = f"did {condition['event']}"
        if condition.get("where"):
            text += (
                " ("
                + ", ".join(_describe_filter(k, v) for k, v in condition["where"].items())
                + ")"
            )
        if condition.get("count"):
            text += f" {condition['count'].get('op')} {condition['count'].get('value')} times"
        if condition.get("within"):
            text += f" in the last {condition['within']}"
        return text
    if "flow" in condition:
        text = f"{condition['flow']}: {condition.get('state', '').replace('_', ' ')}"
        if condition.get("step"):
            text += f" at step {condition['step']}"
        return text
    for key in ("any", "all"):
        if key in condition:
            return f"{key} of {len(condition[key])} conditions"
    if "not" in condition:
        return "not (" + describe_condition(condition["not"]) + ")"
    return "?"
