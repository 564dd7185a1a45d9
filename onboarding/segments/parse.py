"""Parse and validate a segment definition into the typed tree of :mod:`.tree`.

Every problem is collected with its path (``conditions[2].count.value: must be a non-negative
integer``) and raised together as a :class:`~onboarding.configfile.errors.ProblemsError`, so an
editor or an import can show them all at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

from onboarding.configfile.durations import DurationError, is_duration, parse_duration
from onboarding.configfile.errors import Problem, ProblemsError, join_path

from .tree import (
    COUNT_OPERATORS,
    DATETIME_FIELD_OPERATORS,
    DEFAULT_STALLED_FOR,
    FLOW_STATES,
    PERSON_FIELDS,
    TEXT_FIELD_OPERATORS,
    TRAIT_OPERATORS,
    BehaviourCondition,
    Comparison,
    Count,
    DateBound,
    FlowCondition,
    Group,
    Node,
    Not,
    PersonCondition,
    PropertyFilter,
    TraitCondition,
)

CONDITION_KINDS = ("trait", "person", "event", "flow", "any", "all", "not")
_SCALAR_HINT = "must be a string, number or boolean"
_MAX_DEPTH = 20


class _Invalid(Exception):
    """Raised inside the parser after a problem was recorded, to skip the rest of a node."""


def parse_iso_datetime(text: str) -> datetime | None:
    """An aware UTC datetime for an ISO 8601 date or datetime string (naive means UTC), or None."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        try:
            moment = datetime.combine(date.fromisoformat(text), datetime.min.time())
        except ValueError:
            return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | bool | int | float) and (
        not isinstance(value, float) or value == value  # NaN never matches anything
    )


class _Parser:
    def __init__(self, flows: Mapping[str, int]) -> None:
        self.flows = flows
        self.problems: list[Problem] = []

    def fail(self, path: str, message: str) -> _Invalid:
        self.problems.append(Problem(path, message))
        return _Invalid()

    # -- structure ---------------------------------------------------------------------------

    def root(self, data: Any, path: str) -> Group | None:
        if not isinstance(data, Mapping):
            self.fail(path, "must be a mapping with match and conditions")
            return None
        unknown = [key for key in data if key not in ("match", "conditions")]
        for key in unknown:
            self.fail(join_path(path, str(key)), "unknown key")
        match = data.get("match", "all")
        if match not in ("all", "any"):
            self.fail(join_path(path, "match"), f"must be all or any, not {match!r}")
        conditions = data.get("conditions", [])
        items = self.condition_list(conditions, join_path(path, "conditions"), allow_empty=True)
        if items is None or match not in ("all", "any") or unknown:
            return None
        return Group(match, items)

    def condition_list(
        self, data: Any, path: str, *, allow_empty: bool, depth: int = 0
    ) -> tuple[Node, ...] | None:
        if not isinstance(data, list):
            self.fail(path, "must be a list of conditions")
            return None
        if not data and not allow_empty:
            self.fail(path, "must not be empty")
            return None
        nodes = [self.condition(item, join_path(path, i), depth) for i, item in enumerate(data)]
        if any(node is None for node in nodes):
            return None
        return tuple(node for node in nodes if node is not None)

    def condition(self, data: Any, path: str, depth: int) -> Node | None:
        if depth > _MAX_DEPTH:
            self.fail(path, f"nested more than {_MAX_DEPTH} levels deep")
            return None
        if not isinstance(data, Mapping):
            self.fail(path, "must be a mapping (a condition)")
            return None
        kinds = [kind for kind in CONDITION_KINDS if kind in data]
        if len(kinds) != 1:
            found = f" (found {', '.join(kinds)})" if kinds else ""
            self.fail(path, f"must have exactly one of {', '.join(CONDITION_KINDS)}{found}")
            return None
        kind = kinds[0]
        try:
            if kind in ("any", "all"):
                self.only_keys(data, path, {kind})
                items = self.condition_list(
                    data[kind], join_path(path, kind), allow_empty=False, depth=depth + 1
                )
                return None if items is None else Group(kind, items)
            if kind == "not":
                self.only_keys(data, path, {"not"})
                inner = self.condition(data["not"], join_path(path, "not"), depth + 1)
                return None if inner is None else Not(inner)
            if kind == "trait":
                return self.trait(data, path)
            if kind == "person":
                return self.person(data, path)
            if kind == "event":
                return self.behaviour(data, path)
            return self.flow(data, path)
        except _Invalid:
            return None

    def only_keys(self, data: Mapping, path: str, allowed: set[str]) -> None:
        unknown = [key for key in data if key not in allowed]
        for key in unknown:
            self.fail(join_path(path, str(key)), "unknown key")
        if unknown:
            raise _Invalid

    def name(self, data: Mapping, key: str, path: str) -> str:
        value = data.get(key)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(join_path(path, key), "must be a non-empty string")
        return value

    # -- leaves ------------------------------------------------------------------------------

    def key_name(self, name: str, path: str) -> str:
        # SQLite's JSON paths cannot escape a double quote inside a quoted key.
        if '"' in name:
            raise self.fail(path, 'must not contain a double quote (")')
        return name

    def trait(self, data: Mapping, path: str) -> TraitCondition:
        self.only_keys(data, path, {"trait", "op", "value"})
        trait = self.key_name(self.name(data, "trait", path), join_path(path, "trait"))
        return TraitCondition(trait, self.comparison(data, path, TRAIT_OPERATORS))

    def person(self, data: Mapping, path: str) -> PersonCondition:
        self.only_keys(data, path, {"person", "op", "value"})
        field = data.get("person")
        if not isinstance(field, str) or field not in PERSON_FIELDS:
            raise self.fail(
                join_path(path, "person"),
                f"unknown person field {field!r} (one of {', '.join(PERSON_FIELDS)})",
            )
        if PERSON_FIELDS[field] == "text":
            allowed = TEXT_FIELD_OPERATORS
        else:
            allowed = DATETIME_FIELD_OPERATORS
        comparison = self.comparison(data, path, allowed, what=f"person field {field!r}")
        if (
            PERSON_FIELDS[field] == "datetime"
            and comparison.op in ("gt", "gte", "lt", "lte")
            and not isinstance(comparison.value, DateBound)
        ):
            raise self.fail(join_path(path, "value"), "must be an ISO 8601 date or datetime")
        return PersonCondition(field, comparison)

    def comparison(
        self, data: Mapping, path: str, allowed: tuple[str, ...], what: str = ""
    ) -> Comparison:
        op_path, value_path = join_path(path, "op"), join_path(path, "value")
        op = data.get("op")
        if op is None:
            raise self.fail(op_path, "required")
        if op not in TRAIT_OPERATORS:
            raise self.fail(op_path, f"unknown operator {op!r} (one of {', '.join(allowed)})")
        if op not in allowed:
            raise self.fail(op_path, f"operator {op!r} does not apply to {what}")
        has_value = "value" in data
        value = data.get("value")
        if isinstance(value, datetime | date):
            value = value.isoformat()
        if op in ("is_set", "is_not_set"):
            if has_value:
                raise self.fail(value_path, f"must not be given with {op}")
            return Comparison(op)
        if not has_value:
            raise self.fail(value_path, "required")
        if op in ("eq", "neq"):
            if not _is_scalar(value):
                raise self.fail(value_path, _SCALAR_HINT)
            return Comparison(op, value)
        if op == "contains":
            if not isinstance(value, str) or not value:
                raise self.fail(value_path, "must be a non-empty string")
            return Comparison(op, value)
        if op in ("in", "not_in"):
            if not isinstance(value, list) or not value:
                raise self.fail(value_path, "must be a non-empty list")
            for index, item in enumerate(value):
                if not _is_scalar(item):
                    self.fail(join_path(value_path, index), _SCALAR_HINT)
            if not all(_is_scalar(item) for item in value):
                raise _Invalid
            return Comparison(op, tuple(value))
        if op in ("gt", "gte", "lt", "lte"):
            if _is_number(value):
                return Comparison(op, value)
            if isinstance(value, str) and parse_iso_datetime(value) is not None:
                return Comparison(op, DateBound(iso=value))
            raise self.fail(value_path, "must be a number or an ISO 8601 date")
        if op in ("before", "after"):
            if isinstance(value, str) and parse_iso_datetime(value) is not None:
                return Comparison(op, DateBound(iso=value))
            if is_duration(value):
                return Comparison(op, DateBound(ago_seconds=self.duration(value, value_path)))
            raise self.fail(value_path, "must be an ISO 8601 date or a duration ago such as 30d")
        # within_last
        seconds = self.duration(value, value_path)
        if seconds <= 0:
            raise self.fail(value_path, "must be a positive duration")
        return Comparison(op, seconds)

    def duration(self, value: Any, path: str) -> int:
        try:
            return parse_duration(value)
        except DurationError as error:
            raise self.fail(path, str(error)) from None

    def behaviour(self, data: Mapping, path: str) -> BehaviourCondition:
        self.only_keys(data, path, {"event", "where", "count", "within"})
        event = self.name(data, "event", path)
        where = self.where(data.get("where", {}), join_path(path, "where"))
        count = self.count(data.get("count"), join_path(path, "count"))
        within = None
        if "within" in data:
            within = self.duration(data["within"], join_path(path, "within"))
            if within <= 0:
                raise self.fail(join_path(path, "within"), "must be a positive duration")
        return BehaviourCondition(event, where, count, within)

    def where(self, data: Any, path: str) -> tuple[PropertyFilter, ...]:
        if data is None:
            return ()
        if not isinstance(data, Mapping):
            raise self.fail(path, "must be a mapping of property: value")
        filters: list[PropertyFilter] = []
        invalid = False
        for key, value in data.items():
            key_path = join_path(path, str(key))
            if not isinstance(key, str) or not key:
                self.fail(key_path, "property names must be non-empty strings")
                invalid = True
                continue
            try:
                self.key_name(key, key_path)
                if isinstance(value, Mapping):
                    self.only_keys(value, key_path, {"op", "value"})
                    comparison = self.comparison(value, key_path, TRAIT_OPERATORS)
                else:
                    if isinstance(value, datetime | date):
                        value = value.isoformat()
                    if not _is_scalar(value):
                        raise self.fail(key_path, f"{_SCALAR_HINT}, or a mapping with op and value")
                    comparison = Comparison("eq", value)
            except _Invalid:
                invalid = True
                continue
            filters.append(PropertyFilter(key, comparison))
        if invalid:
            raise _Invalid
        return tuple(filters)

    def count(self, data: Any, path: str) -> Count:
        if data is None:
            return Count()
        if not isinstance(data, Mapping):
            raise self.fail(path, "must be a mapping with op and value")
        self.only_keys(data, path, {"op", "value"})
        op = data.get("op", "gte")
        problems = len(self.problems)
        if op not in COUNT_OPERATORS:
            self.fail(
                join_path(path, "op"),
                f"unknown operator {op!r} (one of {', '.join(COUNT_OPERATORS)})",
            )
        value = data.get("value")
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            self.fail(join_path(path, "value"), "must be a non-negative integer")
        if len(self.problems) > problems:
            raise _Invalid
        return Count(op, value)

    def flow(self, data: Mapping, path: str) -> FlowCondition:
        self.only_keys(data, path, {"flow", "state", "step", "for"})
        slug = self.name(data, "flow", path)
        steps = self.flows.get(slug)
        if steps is None:
            raise self.fail(join_path(path, "flow"), f"unknown flow {slug!r}")
        state = data.get("state")
        if state not in FLOW_STATES:
            message = "required" if state is None else f"unknown state {state!r}"
            raise self.fail(
                join_path(path, "state"), f"{message} (one of {', '.join(FLOW_STATES)})"
            )
        step = data.get("step")
        if step is not None:
            step_path = join_path(path, "step")
            if state not in ("entered", "stalled"):
                raise self.fail(step_path, f"applies only to entered and stalled, not {state}")
            # "At step N" is the step the person has to do next: they reached N-1, not N.
            if isinstance(step, bool) or not isinstance(step, int) or step < 2:
                raise self.fail(
                    step_path, "must be a step number from 2 (the step after the entry)"
                )
            if steps and step > steps:  # 0: a flow whose steps are themselves invalid
                raise self.fail(
                    step_path, f"must be a step number from 2 to {steps} (flow {slug!r})"
                )
        stalled_for = DEFAULT_STALLED_FOR
        if "for" in data:
            if state != "stalled":
                raise self.fail(join_path(path, "for"), "applies only to state stalled")
            stalled_for = self.duration(data["for"], join_path(path, "for"))
        return FlowCondition(slug, state, step, stalled_for)


def flow_step_counts() -> dict[str, int]:
    """``{flow slug: number of steps}`` for every flow in the database."""
    from django.db.models import Count as CountRows

    from onboarding.models import OnboardingFlow

    rows = OnboardingFlow.objects.annotate(n=CountRows("steps")).values_list("slug", "n")
    return dict(rows)


def parse_definition(
    definition: Any, *, flows: Mapping[str, int] | None = None, path: str = ""
) -> Group:
    """The typed tree of ``definition``, or :class:`ProblemsError` listing every problem.

    ``flows`` maps the flow slugs a flow condition may name to their number of steps; by default
    the flows in the database (an import passes the flows as they will be after it).
    """
    parser = _Parser(flow_step_counts() if flows is None else flows)
    root = parser.root(definition, path)
    if parser.problems or root is None:
        raise ProblemsError(parser.problems or [Problem(path, "invalid")])
    return root
