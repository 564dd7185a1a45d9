"""A segment's members as ids from the trait index, when the index answers the tree exactly.

``onboarding_persontrait`` (:class:`~onboarding.models.PersonTrait`, maintained by triggers on
PostgreSQL) holds every person's top-level string and boolean traits, one narrow row per
(trait, value, person), keyed in that order. A tree made only of ``eq`` / ``in`` conditions on
such values, under ``all`` / ``any``, is then a set expression over index-only range scans, with
no read of the people's rows: the same set as :func:`.compile.compile_node` gives, since a trait
equal to a string or boolean is exactly a stored pair (``traits @> {"plan": "pro"}`` is true only
for an object whose ``plan`` is that string: DESIGN §4.3's typed equality). Anything else (``not``,
``neq``, numbers, dates, behaviour, flows, an empty group) returns None and the caller compiles
the tree as usual.
"""

# SQL text here interpolates only the table's name and placeholders; every value is a parameter.
# ruff: noqa: S608

from __future__ import annotations

import json
from typing import Any

from django.db import connection

from .tree import Group, Node, TraitCondition

TABLE = "onboarding_persontrait"
# What the triggers index (migration 0013): keys up to 256 bytes, values up to 1024 bytes of
# JSON text. A string of at most 170 UTF-8 bytes is at most 6 × 170 + 2 bytes as JSON text
# (every byte escaped as \u00XX at worst), so it is indexed whatever PostgreSQL escapes.
_MAX_KEY_BYTES = 256
_MAX_STRING_BYTES = 170


def _indexable(key: str, value: Any) -> bool:
    if len(key.encode()) > _MAX_KEY_BYTES:
        return False
    if isinstance(value, bool):
        return True
    return isinstance(value, str) and len(value.encode()) <= _MAX_STRING_BYTES


def _leaf(node: TraitCondition) -> tuple[str, list[Any]] | None:
    op, value = node.comparison.op, node.comparison.value
    values = [value] if op == "eq" else list(value) if op == "in" else None
    if values is None or not all(_indexable(node.trait, item) for item in values):
        return None
    if not values:  # ``in []``: nobody
        return f"SELECT person_id FROM {TABLE} WHERE false", []
    # PostgreSQL renders each value as the triggers stored it (jsonb's text form).
    texts = "(%s::jsonb)::text"
    if len(values) == 1:
        condition, params = f"value = {texts}", [json.dumps(values[0])]
    else:
        condition = f"value IN ({', '.join([texts] * len(values))})"
        params = [json.dumps(item) for item in values]
    return f"SELECT person_id FROM {TABLE} WHERE key = %s AND {condition}", [node.trait, *params]


def _ids(node: Node) -> tuple[str, list[Any]] | None:
    if isinstance(node, TraitCondition):
        return _leaf(node)
    if isinstance(node, Group) and node.conditions:
        parts = [_ids(child) for child in node.conditions]
        if any(part is None for part in parts):
            return None
        if len(parts) == 1:
            return parts[0]
        glue = " INTERSECT " if node.match == "all" else " UNION "
        sql = glue.join(f"({part_sql})" for part_sql, _ in parts)  # type: ignore[misc]
        return sql, [param for _, part_params in parts for param in part_params]  # type: ignore[misc]
    return None


def indexed_member_ids(root: Group) -> tuple[str, list[Any]] | None:
    """SQL selecting the members' ids (one column, each member at least once) from the trait
    index, or None when the tree is not one the index answers exactly, or off PostgreSQL."""
    if connection.vendor != "postgresql":
        return None
    return _ids(root)
