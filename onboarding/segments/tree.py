"""The typed filter tree of a segment (DESIGN §4.3), and its canonical dict form.

A definition is ``{match: all|any, conditions: [...]}``; :mod:`.parse` turns it into these nodes,
:mod:`.compile` turns the nodes into one query, and :func:`to_definition` writes the nodes back in
canonical form (defaults left out, durations in their canonical spelling), which is what is stored
in ``Segment.definition`` and exported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from onboarding.configfile.durations import format_duration

DEFAULT_STALLED_FOR = 3600

TRAIT_OPERATORS = (
    "eq",
    "neq",
    "contains",
    "in",
    "not_in",
    "gt",
    "gte",
    "lt",
    "lte",
    "before",
    "after",
    "within_last",
    "is_set",
    "is_not_set",
)
COUNT_OPERATORS = ("eq", "neq", "gt", "gte", "lt", "lte")
FLOW_STATES = ("entered", "completed", "stalled", "not_entered")

# Person fields a ``{person: …}`` condition can read, and the kind of value each holds.
PERSON_FIELDS: dict[str, Literal["text", "datetime"]] = {
    "email": "text",
    "phone": "text",
    "timezone": "text",
    "external_id": "text",
    "first_seen": "datetime",
    "last_seen": "datetime",
    "first_touch_device": "text",
    "first_touch_source": "text",
}
TEXT_FIELD_OPERATORS = ("eq", "neq", "contains", "in", "not_in", "is_set", "is_not_set")
DATETIME_FIELD_OPERATORS = ("gt", "gte", "lt", "lte", "before", "after", "within_last")


@dataclass(frozen=True, slots=True)
class DateBound:
    """A point in time: an absolute ISO 8601 date/datetime, or a duration before "now"."""

    iso: str | None = None
    ago_seconds: int | None = None

    def to_value(self) -> str:
        return self.iso if self.iso is not None else format_duration(self.ago_seconds or 0)


@dataclass(frozen=True, slots=True)
class Comparison:
    """``op`` applied to a value. ``value`` is already checked against ``op``:

    eq/neq: str, int, float or bool; contains: str; in/not_in: tuple of those scalars;
    gt/gte/lt/lte: a number or a :class:`DateBound`; before/after: a :class:`DateBound`;
    within_last: seconds (int); is_set/is_not_set: None.
    """

    op: str
    value: Any = None

    def value_for_export(self) -> Any:
        if isinstance(self.value, DateBound):
            return self.value.to_value()
        if self.op == "within_last":
            return format_duration(self.value)
        if isinstance(self.value, tuple):
            return list(self.value)
        return self.value

    def to_dict(self) -> dict[str, Any]:
        if self.op in ("is_set", "is_not_set"):
            return {"op": self.op}
        return {"op": self.op, "value": self.value_for_export()}


@dataclass(frozen=True, slots=True)
class TraitCondition:
    trait: str
    comparison: Comparison

    def to_dict(self) -> dict[str, Any]:
        return {"trait": self.trait, **self.comparison.to_dict()}


@dataclass(frozen=True, slots=True)
class PersonCondition:
    field: str
    comparison: Comparison

    def to_dict(self) -> dict[str, Any]:
        return {"person": self.field, **self.comparison.to_dict()}


@dataclass(frozen=True, slots=True)
class PropertyFilter:
    key: str
    comparison: Comparison


@dataclass(frozen=True, slots=True)
class Count:
    op: str = "gte"
    value: int = 1

    @property
    def is_default(self) -> bool:
        return (self.op, self.value) == ("gte", 1)


@dataclass(frozen=True, slots=True)
class BehaviourCondition:
    event: str
    where: tuple[PropertyFilter, ...] = ()
    count: Count = Count()
    within_seconds: int | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"event": self.event}
        if self.where:
            data["where"] = {
                f.key: (f.comparison.value if f.comparison.op == "eq" else f.comparison.to_dict())
                for f in self.where
            }
        if not self.count.is_default:
            data["count"] = {"op": self.count.op, "value": self.count.value}
        if self.within_seconds is not None:
            data["within"] = format_duration(self.within_seconds)
        return data


@dataclass(frozen=True, slots=True)
class FlowCondition:
    flow: str
    state: str
    step: int | None = None
    stalled_for_seconds: int = DEFAULT_STALLED_FOR

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"flow": self.flow, "state": self.state}
        if self.step is not None:
            data["step"] = self.step
        if self.state == "stalled" and self.stalled_for_seconds != DEFAULT_STALLED_FOR:
            data["for"] = format_duration(self.stalled_for_seconds)
        return data


@dataclass(frozen=True, slots=True)
class Group:
    match: Literal["all", "any"]
    conditions: tuple[Node, ...]

    def to_dict(self) -> dict[str, Any]:
        return {self.match: [c.to_dict() for c in self.conditions]}


@dataclass(frozen=True, slots=True)
class Not:
    condition: Node

    def to_dict(self) -> dict[str, Any]:
        return {"not": self.condition.to_dict()}


Node = TraitCondition | PersonCondition | BehaviourCondition | FlowCondition | Group | Not


def to_definition(root: Group) -> dict[str, Any]:
    """The canonical stored/exported form of a parsed definition."""
    return {"match": root.match, "conditions": [c.to_dict() for c in root.conditions]}


def flows_referenced(node: Node) -> set[str]:
    if isinstance(node, FlowCondition):
        return {node.flow}
    if isinstance(node, Group):
        return set().union(*(flows_referenced(c) for c in node.conditions))
    if isinstance(node, Not):
        return flows_referenced(node.condition)
    return set()
