"""Segments: the filter language of DESIGN §4.3, parsed to a typed tree and compiled to one query.

Public API::

    parse_definition(definition, flows=None) -> Group      # or ProblemsError with paths
    normalize_definition(definition, flows=None) -> dict   # canonical form, as stored/exported
    compile_segment(definition, now=None) -> Q             # over Person
    members_queryset(segment_or_definition, now=None) -> QuerySet[Person]
    member_ids(segment_or_definition, now=None) -> (sql, params)  # one id column, for IN (…)
    segment_count_and_sample(definition, sample=10, now=None) -> SegmentPreview
    flows_named_by(definition) -> set[str]                 # the flow slugs its conditions name

The language reference is docs/configuration-as-code.md ("Segments").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import Q, QuerySet
from django.utils import timezone

from onboarding.models import Person, Segment

from .compile import compile_node
from .index import indexed_member_ids
from .parse import parse_definition
from .tree import Group, to_definition

__all__ = [
    "SegmentPreview",
    "compile_segment",
    "flows_named_by",
    "member_ids",
    "members_queryset",
    "normalize_definition",
    "parse_definition",
    "segment_count_and_sample",
    "to_definition",
]


def normalize_definition(
    definition: Any, *, flows: Mapping[str, int] | None = None
) -> dict[str, Any]:
    """The canonical form of a valid definition (raises ProblemsError otherwise)."""
    return to_definition(parse_definition(definition, flows=flows))


def compile_segment(definition: Any, now: datetime | None = None) -> Q:
    """A filter over :class:`Person` for ``definition`` (a dict, or an already parsed tree).

    Relative conditions (``within``, ``within_last``, ``stalled for``) are evaluated at ``now``.
    """
    root = definition if isinstance(definition, Group) else parse_definition(definition)
    return compile_node(root, now or timezone.now())


def members_queryset(
    segment_or_definition: Segment | Any, now: datetime | None = None
) -> QuerySet[Person]:
    definition = (
        segment_or_definition.definition
        if isinstance(segment_or_definition, Segment)
        else segment_or_definition
    )
    return Person.objects.filter(compile_segment(definition, now))


def member_ids(
    segment_or_definition: Segment | Any, now: datetime | None = None
) -> tuple[str, list[Any]]:
    """The members' ids as SQL of one column with its parameters, for ``person_id IN (…)``: the
    same set as :func:`members_queryset`. On PostgreSQL a tree of string and boolean trait
    equalities is answered from the trait index alone (:mod:`.index`: no read of the people's
    rows); any other tree is the compiled query over the people."""
    definition = (
        segment_or_definition.definition
        if isinstance(segment_or_definition, Segment)
        else segment_or_definition
    )
    root = definition if isinstance(definition, Group) else parse_definition(definition)
    indexed = indexed_member_ids(root)
    if indexed is not None:
        return indexed
    people = Person.objects.filter(compile_node(root, now or timezone.now()))
    sql, params = people.values("pk").query.sql_with_params()
    return sql, list(params)


@dataclass(frozen=True)
class SegmentPreview:
    count: int
    sample: list[Person]


def segment_count_and_sample(
    definition: Any, sample: int = 10, now: datetime | None = None
) -> SegmentPreview:
    """The live count and the most recently seen members, for the segment editor."""
    people = members_queryset(definition, now)
    return SegmentPreview(
        count=people.count(), sample=list(people.order_by("-last_seen", "-pk")[:sample])
    )


def flows_named_by(definition: Any) -> set[str]:
    """The flow slugs a segment definition's conditions name, at any depth of any/all/not."""
    found: set[str] = set()
    stack = [definition]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            if isinstance(node.get("flow"), str):
                found.add(node["flow"])
            stack.extend(node.get(key) for key in ("conditions", "any", "all", "not"))
    return found
