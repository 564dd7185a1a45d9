"""Compile a segment's typed tree to one query over :class:`~onboarding.models.Person`.

Trait conditions read ``Person.traits`` through the typed JSON reads of :mod:`.jsonsql`;
behaviour, flow and first-touch conditions are correlated ``EXISTS`` / scalar subqueries, so a
whole segment is one ``SELECT … FROM person WHERE …``. Every leaf is two-valued (never SQL NULL),
so ``not`` and ``neq`` include people who lack the trait, as a marketer expects.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.db.models import (
    BooleanField,
    Exists,
    Expression,
    F,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
)
from django.db.models import (
    Count as CountRows,
)
from django.db.models.fields.json import KeyTextTransform, KeyTransform
from django.db.models.functions import Coalesce
from django.db.models.lookups import (
    Exact,
    GreaterThan,
    GreaterThanOrEqual,
    IContains,
    In,
    IsNull,
    LessThan,
    LessThanOrEqual,
)
from django.utils import timezone

from onboarding.models import Event, FlowProgress, Person

from .jsonsql import (
    JSONEquals,
    JSONNumber,
    JSONString,
    JSONTimestamp,
    JSONType,
    TimestampBound,
)
from .parse import parse_iso_datetime
from .tree import (
    PERSON_FIELDS,
    BehaviourCondition,
    Comparison,
    DateBound,
    FlowCondition,
    Group,
    Node,
    Not,
    PersonCondition,
    TraitCondition,
)

_ORDER_LOOKUPS = {
    "gt": GreaterThan,
    "gte": GreaterThanOrEqual,
    "lt": LessThan,
    "lte": LessThanOrEqual,
}
_FALSE = Q(pk__in=[])


def _true(condition: Expression) -> Q:
    """``condition`` as a two-valued filter: NULL (unknown) counts as false."""
    return Q(Coalesce(condition, Value(False), output_field=BooleanField()))


def _bound(value: DateBound, now: datetime) -> datetime:
    if value.iso is not None:
        moment = parse_iso_datetime(value.iso)
        assert moment is not None  # checked by the parser
        return moment
    return now - timedelta(seconds=value.ago_seconds or 0)


def _scalar_equals(column: str, key: str, value: Any) -> Q:
    if isinstance(value, int | float) and not isinstance(value, bool):
        # Numbers compare as floats (1 equals 1.0), which JSON containment would not do exactly.
        return _true(Exact(JSONNumber(column, key), float(value)))
    return Q(JSONEquals(column, key, value))  # two-valued, and indexable as it stands


def json_comparison(column: str, key: str, comparison: Comparison, now: datetime) -> Q:
    """A filter on one key of a JSON column (``traits``, or ``properties`` in an event query)."""
    op, value = comparison.op, comparison.value
    if op == "eq":
        return _scalar_equals(column, key, value)
    if op == "neq":
        return ~_scalar_equals(column, key, value)
    if op in ("in", "not_in"):
        matches = _FALSE
        for item in value:
            matches |= _scalar_equals(column, key, item)
        return matches if op == "in" else ~matches
    if op == "contains":
        return _true(IContains(JSONString(column, key), value))
    if op in ("is_set", "is_not_set"):
        is_set = _true(
            In(JSONType(column, key), ["string", "number", "boolean", "object", "array"])
        )
        return is_set if op == "is_set" else ~is_set
    if op in _ORDER_LOOKUPS:
        lookup = _ORDER_LOOKUPS[op]
        if isinstance(value, DateBound):
            return _true(lookup(JSONTimestamp(column, key), TimestampBound(_bound(value, now))))
        return _true(lookup(JSONNumber(column, key), float(value)))
    moment = JSONTimestamp(column, key)
    if op == "before":
        return _true(LessThan(moment, TimestampBound(_bound(value, now))))
    if op == "after":
        return _true(GreaterThan(moment, TimestampBound(_bound(value, now))))
    if op == "within_last":
        since = now - timedelta(seconds=value)
        return _true(GreaterThanOrEqual(moment, TimestampBound(since))) & _true(
            LessThanOrEqual(moment, TimestampBound(now))
        )
    raise ValueError(f"unknown operator {op!r}")


def _first_event_context(*path: str) -> Subquery:
    """A text value from the ``context`` of the person's earliest event."""
    expression: Any = "context"
    for part in path[:-1]:
        expression = KeyTransform(part, expression)
    first = (
        Event.objects.filter(person_id=OuterRef("pk"))
        .order_by("timestamp", "id")
        .annotate(value=KeyTextTransform(path[-1], expression))
        .values("value")[:1]
    )
    return Subquery(first)


_PERSON_EXPRESSIONS = {
    "first_touch_device": lambda: _first_event_context("device", "type"),
    "first_touch_source": lambda: _first_event_context("campaign", "source"),
}


def _text_field(field: str, comparison: Comparison) -> Q:
    op, value = comparison.op, comparison.value
    lhs = _PERSON_EXPRESSIONS[field]() if field in _PERSON_EXPRESSIONS else F(field)

    def equals(item: Any) -> Q:
        return _true(Exact(lhs, str(item)))

    if op == "eq":
        return equals(value)
    if op == "neq":
        return ~equals(value)
    if op in ("in", "not_in"):
        matches = _true(In(lhs, [str(item) for item in value]))
        return matches if op == "in" else ~matches
    if op == "contains":
        return _true(IContains(lhs, value))
    is_set = _true(~Q(IsNull(lhs, True)) & ~Q(Exact(lhs, "")))
    return is_set if op == "is_set" else ~is_set


def _datetime_field(field: str, comparison: Comparison, now: datetime) -> Q:
    op, value = comparison.op, comparison.value
    if op == "within_last":
        return Q(**{f"{field}__gte": now - timedelta(seconds=value), f"{field}__lte": now})
    if op in ("before", "after"):
        op = "lt" if op == "before" else "gt"
    return Q(**{f"{field}__{op}": _bound(value, now)})


def _behaviour(condition: BehaviourCondition, now: datetime) -> Q:
    events = Event.objects.filter(
        person_id=OuterRef("pk"), name=condition.event, timestamp__lte=now
    )
    if condition.within_seconds is not None:
        events = events.filter(timestamp__gte=now - timedelta(seconds=condition.within_seconds))
    for item in condition.where:
        events = events.filter(json_comparison("properties", item.key, item.comparison, now))
    op, n = condition.count.op, condition.count.value
    if (op, n) in (("gte", 1), ("gt", 0), ("neq", 0)):
        return Q(Exists(events))
    if (op, n) in (("eq", 0), ("lte", 0), ("lt", 1)):
        return ~Q(Exists(events))
    if op == "lt" and n == 0:
        return _FALSE
    counted = events.order_by().values("person_id").annotate(n=CountRows("id")).values("n")
    total = Coalesce(Subquery(counted), Value(0))
    if op == "eq":
        return Q(Exact(total, n))
    if op == "neq":
        return ~Q(Exact(total, n))
    return Q(_ORDER_LOOKUPS[op](total, n))


def _flow(condition: FlowCondition, now: datetime) -> Q:
    progress = FlowProgress.objects.filter(person_id=OuterRef("pk"), flow__slug=condition.flow)
    if condition.state == "not_entered":
        return ~Q(Exists(progress))
    if condition.step is not None:
        # At step N: step N is the one to do next, so the furthest step reached is N - 1.
        progress = progress.filter(furthest_step=condition.step - 1)
    if condition.state == "entered":
        progress = progress.filter(entered_at__lte=now)
    elif condition.state == "completed":
        progress = progress.filter(completed_at__isnull=False, completed_at__lte=now)
    else:  # stalled
        idle_since = now - timedelta(seconds=condition.stalled_for_seconds)
        progress = progress.filter(completed_at__isnull=True, reached_at__lte=idle_since)
    return Q(Exists(progress))


def compile_node(node: Node, now: datetime) -> Q:
    if isinstance(node, Group):
        if not node.conditions:
            return Q() if node.match == "all" else _FALSE
        parts = [compile_node(child, now) for child in node.conditions]
        combined = parts[0]
        for part in parts[1:]:
            combined = combined & part if node.match == "all" else combined | part
        return combined
    if isinstance(node, Not):
        return ~compile_node(node.condition, now)
    if isinstance(node, TraitCondition):
        return json_comparison("traits", node.trait, node.comparison, now)
    if isinstance(node, PersonCondition):
        if PERSON_FIELDS[node.field] == "datetime":
            return _datetime_field(node.field, node.comparison, now)
        return _text_field(node.field, node.comparison)
    if isinstance(node, BehaviourCondition):
        return _behaviour(node, now)
    if isinstance(node, FlowCondition):
        return _flow(node, now)
    raise TypeError(f"not a segment node: {node!r}")


def members(root: Group, now: datetime | None = None) -> QuerySet[Person]:
    return Person.objects.filter(compile_node(root, now or timezone.now()))
