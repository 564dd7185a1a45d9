"""Writes to segments: create or update a segment, keyed by slug, with a validated definition.

The definition is stored in its canonical form (see :func:`onboarding.segments.normalize_definition`),
so the same filter written two ways is stored, compared and exported one way.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from onboarding.configfile.errors import Problem, ProblemsError
from onboarding.models import OnboardingFlow, Segment
from onboarding.segments import flows_named_by, normalize_definition

from .flows import Saved, SaveStatus, archive_changes


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def segment_problems(
    *, slug: str, name: str, definition: Any, flows: Mapping[str, int] | None = None
) -> tuple[dict[str, Any] | None, list[Problem]]:
    """The canonical definition (None if invalid) and every problem, with paths.

    Definition problems have the paths of the definition's own keys (``conditions[0].op``), as
    in a configuration file, where ``match`` and ``conditions`` sit beside ``slug``.
    """
    problems: list[Problem] = []
    # The definition is checked below, with paths; a placeholder keeps full_clean to the rest.
    segment = Segment(slug=slug, name=name, definition={"match": "all"})
    try:
        segment.full_clean(validate_unique=False, validate_constraints=False)
    except ValidationError as error:
        for field, messages in error.message_dict.items():
            problems += [Problem(field, message) for message in messages]
    try:
        normalized = normalize_definition(definition, flows=flows)
    except ProblemsError as error:
        problems += error.problems
        normalized = None
    return normalized, problems


def segment_status(
    *,
    slug: str,
    name: str,
    definition: Any,
    flows: Mapping[str, int] | None = None,
    archived: bool | None = None,
) -> SaveStatus:
    """What :func:`segment_save` would do, without writing (``definition`` must be valid)."""
    normalized = normalize_definition(definition, flows=flows)
    segment = Segment.objects.filter(slug=slug).first()
    if segment is None:
        return "created"
    if (
        segment.name == name
        and _canonical(segment.definition) == _canonical(normalized)
        and not archive_changes(segment, archived)
    ):
        return "unchanged"
    return "updated"


@transaction.atomic
def segment_save(
    *,
    slug: str,
    name: str,
    definition: Any,
    flows: Mapping[str, int] | None = None,
    archived: bool | None = None,
) -> Saved[Segment]:
    """Create or update the segment ``slug``; unchanged values write nothing.

    ``flows`` (slug → number of steps) are the flows a definition may name; by default those in
    the database. ``archived`` as for :func:`~onboarding.services.flows.flow_save`.
    """
    normalized, problems = segment_problems(
        slug=slug, name=name, definition=definition, flows=flows
    )
    if problems or normalized is None:
        raise ValidationError([str(problem) for problem in problems])
    # The flows it names are not archived or deleted while this is saved (the lifecycle locks the
    # flow it changes while it checks where the flow is used).
    list(
        OnboardingFlow.objects.select_for_update()
        .filter(slug__in=sorted(flows_named_by(normalized)))
        .order_by("slug")
    )
    segment = Segment.objects.select_for_update().filter(slug=slug).first()
    if segment is None:
        segment = Segment(slug=slug, name=name, definition=normalized)
        archive_changes(segment, archived)
        segment.full_clean()
        segment.save()
        return Saved(segment, "created")
    archiving = archive_changes(segment, archived)
    if (
        segment.name == name
        and _canonical(segment.definition) == _canonical(normalized)
        and not archiving
    ):
        return Saved(segment, "unchanged")
    segment.name = name
    segment.definition = normalized
    segment.full_clean()
    segment.save()
    return Saved(segment, "updated")
